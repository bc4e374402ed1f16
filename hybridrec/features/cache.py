"""On-disk embedding cache keyed by (encoder, text), so a second fit re-encodes nothing.

One folder per encoder key holds shards, `shard-<time>-<id>.npz`: the texts' hashes, their vectors and one
checksum over the shard's hashes and vectors together. A writer only ever adds a shard (written under a temporary
name, then renamed), so fits sharing the cache never lose each other's entries. A reader checks every shard
(types, shapes, finiteness, the checksum, so swapped rows or altered values are caught) and drops a
damaged one with one warning line on stderr: its texts are encoded again. It is only a cache, never a reason to
fail or to use a wrong vector.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

from hybridrec.errors import ModelFileError
from hybridrec.progress import Rate, get_logger

CACHE_ENV = "HYBRIDREC_CACHE_DIR"
DEFAULT_CACHE_DIR = ".hybridrec-cache"
MAX_SHARDS = 16  # more shards than this are merged into one by the next writer
_HASH = np.dtype("S40")  # sha1 hex of the text
_CHECK = np.dtype("S16")  # blake2b-64 hex of (hash, vector bytes)


def default_cache_dir() -> str:
    """The text cache of a loaded model's queries: $HYBRIDREC_CACHE_DIR, else `.hybridrec-cache` (the default of
    `features.cache_dir`). Never a folder named by the model itself."""
    return os.environ.get(CACHE_ENV) or DEFAULT_CACHE_DIR


def _text_hash(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()


def _checks(keys: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """One checksum over the shard, binding every text hash to its vector in order: a swapped row or a changed
    value fails it. Computed in one pass over the bytes (a per-entry hash in Python cost seconds per query on a
    large cache)."""
    digest = hashlib.blake2b(digest_size=8)
    digest.update(np.ascontiguousarray(keys).tobytes())
    digest.update(np.ascontiguousarray(vectors, dtype=np.float32).tobytes())
    return np.array([digest.hexdigest().encode()], dtype=_CHECK)


# shards already checked by this process, by (path, size, mtime): a served model's queries read each once
_VERIFIED: dict[tuple[str, int, int], tuple[np.ndarray, np.ndarray]] = {}


class DamagedShard(Exception):
    """A cache shard that fails a check; it is dropped and its texts encoded again."""


class OtherWidth(Exception):
    """A sound shard of vectors of another width than the caller expects: skipped, never deleted (the caller's
    expectation comes from a model file, which may be the wrong one)."""


def _warn(message: str) -> None:
    """One line (a WARNING record of `hybridrec.cache`; printed on stderr when logging is not configured)."""
    logging.getLogger("hybridrec.cache").warning(message)


class EmbeddingCache:
    """The cache of one encoder (`encoder_key`); `dim`, when known, is the width every cached vector must have."""

    def __init__(self, root: str | Path, encoder_key: str, dim: int | None = None):
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", encoder_key)[:80]
        digest = hashlib.sha1(encoder_key.encode()).hexdigest()[:8]
        self.folder = Path(root) / f"{slug}-{digest}"
        self.key = encoder_key
        self.dim = dim
        self.hits = 0
        self.misses = 0

    # ------------------------------------------------------------------------------------------------- reading
    def _shards(self) -> list[Path]:
        try:
            return sorted(p for p in self.folder.glob("shard-*.npz") if not p.is_symlink())
        except OSError:
            return []

    def _read_shard(self, path: Path) -> tuple[np.ndarray, np.ndarray]:
        stat = path.stat()  # FileNotFoundError: merged away by a concurrent writer
        memo = (str(path), stat.st_size, stat.st_mtime_ns)
        if memo in _VERIFIED:
            keys, vectors = _VERIFIED[memo]
            if self.dim is not None and vectors.shape[1] != self.dim:
                raise OtherWidth()
            return keys, vectors
        keys, vectors = self._check_shard(path)
        _VERIFIED[memo] = (keys, vectors)
        if self.dim is not None and vectors.shape[1] != self.dim:
            raise OtherWidth()
        return keys, vectors

    def _check_shard(self, path: Path) -> tuple[np.ndarray, np.ndarray]:
        try:
            with np.load(path, allow_pickle=False) as z:
                keys, vectors, checks = z["keys"], z["vectors"], z["checks"]
        except FileNotFoundError:
            raise
        except Exception as exc:  # noqa: BLE001 - any unreadable shard (bad zip, pickled array, missing member)
            raise DamagedShard(f"unreadable ({type(exc).__name__})") from None
        if keys.dtype != _HASH or checks.dtype != _CHECK or keys.ndim != 1 or vectors.ndim != 2:
            raise DamagedShard("wrong array types")
        if not np.issubdtype(vectors.dtype, np.floating) or len(keys) != len(vectors) or len(checks) != 1:
            raise DamagedShard("arrays of different lengths")
        if not np.all(np.isfinite(vectors)):
            raise DamagedShard("vectors that are not finite")
        if not np.array_equal(_checks(keys, vectors), checks):
            raise DamagedShard("entries that do not match the checksum")
        return keys, vectors.astype(np.float32, copy=False)

    def _load(self) -> dict[bytes, np.ndarray]:
        """Every valid cached entry (hash -> vector); damaged shards are removed with one warning line."""
        self._migrate_legacy()
        entries: dict[bytes, np.ndarray] = {}
        width: int | None = self.dim
        for shard in self._shards():
            try:
                keys, vectors = self._read_shard(shard)
                if width is not None and vectors.shape[1] != width:
                    raise OtherWidth()
            except (FileNotFoundError, OtherWidth):  # merged away by a concurrent writer; or another width
                continue
            except DamagedShard as why:
                self._drop(shard, str(why))
                continue
            width = vectors.shape[1]
            for key, row in zip(keys.tolist(), vectors):
                entries.setdefault(key, row)
        return entries

    def _drop(self, shard: Path, why: str) -> None:
        _warn(f"text cache {shard}: {why}; dropped, its texts will be encoded again")
        try:
            shard.unlink()
        except OSError:
            pass

    def _migrate_legacy(self) -> None:
        """The 0.2 layout (keys.json + vectors.npy, one file rewritten by every writer) becomes one shard after a
        check; a damaged one is dropped like a damaged shard."""
        keys_path, vec_path = self.folder / "keys.json", self.folder / "vectors.npy"
        if not (keys_path.exists() or vec_path.exists()):
            return
        try:
            if keys_path.is_symlink() or vec_path.is_symlink():
                raise ValueError("a link")
            keys = json.loads(keys_path.read_text())
            vectors = np.load(vec_path, allow_pickle=False)
            rows = list(keys.values()) if isinstance(keys, dict) else None
            ok = (
                rows is not None
                and vectors.ndim == 2
                and np.issubdtype(vectors.dtype, np.floating)
                and all(isinstance(r, int) and not isinstance(r, bool) and 0 <= r < len(vectors) for r in rows)
                and len(set(rows)) == len(rows)
                and all(isinstance(k, str) and re.fullmatch(r"[0-9a-f]{40}", k) for k in keys)
            )
            if not ok:
                raise ValueError("inconsistent keys")
            if self.dim is not None and vectors.shape[1] != self.dim:
                return  # sound, but not what this caller expects: leave it
            assert isinstance(keys, dict)
            hashes = np.array([k.encode() for k in keys], dtype=_HASH)
            picked = np.asarray(vectors[np.asarray(rows, np.int64)] if rows else vectors[:0], np.float32)
            finite = np.all(np.isfinite(picked), axis=1)
            if len(hashes):
                self._store(hashes[finite], picked[finite])
        except Exception as exc:  # noqa: BLE001 - only a cache: anything wrong means start over
            _warn(f"text cache {self.folder}: the old-layout cache is damaged ({type(exc).__name__}); dropped")
        for path in (keys_path, vec_path):
            try:
                path.unlink()
            except OSError:
                pass

    # ------------------------------------------------------------------------------------------------- writing
    def _store(self, keys: np.ndarray, vectors: np.ndarray) -> None:
        """Add one shard; a write that fails (full disk, no permission) costs only the caching, with a warning."""
        tmp = None
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=".tmp-", suffix=".npz")
            with os.fdopen(fd, "wb") as fh:
                np.savez(fh, keys=keys, vectors=vectors, checks=_checks(keys, vectors))
            os.replace(tmp, self.folder / f"shard-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.npz")
            tmp = None
        except OSError as exc:
            _warn(f"text cache {self.folder}: cannot write ({exc.strerror or exc}); continuing without caching")
        finally:
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
        if len(self._shards()) > MAX_SHARDS:
            self._compact()

    def _compact(self) -> None:
        """Merge every shard into one. Shards are removed only after the merged one is in place, and only those
        that were read, so a concurrent writer's new shard is never lost."""
        shards, keys, vectors = [], [], []
        for shard in self._shards():
            try:
                k, v = self._read_shard(shard)
            except (FileNotFoundError, DamagedShard, OtherWidth):
                continue
            shards.append(shard)
            keys.append(k)
            vectors.append(v)
        if len(shards) < 2 or len({v.shape[1] for v in vectors}) != 1:
            return
        merged_keys, first = np.unique(np.concatenate(keys), return_index=True)
        merged = np.concatenate(vectors)[first]
        if not self._store_merged(merged_keys, merged):  # not written: keep the parts
            return
        for shard in shards:
            try:
                shard.unlink()
            except OSError:
                pass

    def _store_merged(self, keys: np.ndarray, vectors: np.ndarray) -> bool:
        tmp = None
        try:
            fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=".tmp-", suffix=".npz")
            with os.fdopen(fd, "wb") as fh:
                np.savez(fh, keys=keys, vectors=vectors, checks=_checks(keys, vectors))
            os.replace(tmp, self.folder / f"shard-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.npz")
            tmp = None
            return True
        except OSError:
            return False
        finally:
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)

    # ------------------------------------------------------------------------------------------------- encoding
    def encode(self, encoder, texts: list[str], label: str = "") -> np.ndarray:
        """Vectors for `texts`, encoding only those not cached yet and storing them for next time. `label` names
        the texts for progress output (empty: none)."""
        entries = self._load()
        hashes = [_text_hash(t).encode() for t in texts]
        missing = list(dict.fromkeys(h for h in hashes if h not in entries))
        self.misses += len(missing)
        cached = len(set(hashes)) - len(missing)
        self.hits += cached
        if missing:
            by_hash = dict(zip(hashes, texts))
            fresh = _encode_chunks(encoder, [by_hash[h] for h in missing], label, cached)
            if fresh.ndim != 2 or len(fresh) != len(missing):
                raise RuntimeError(f"the text encoder returned {fresh.shape} for {len(missing)} texts")
            if self.dim is not None and fresh.shape[1] != self.dim:  # the model's text width is not this encoder's
                raise ModelFileError(
                    f"the text encoder {self.key!r} gives vectors of width {fresh.shape[1]}, the model's text "
                    f"features expect {self.dim}"
                )
            if entries and next(iter(entries.values())).shape[0] != fresh.shape[1]:
                _warn(f"text cache {self.folder}: cached vectors are not {fresh.shape[1]} wide; rebuilding it")
                for shard in self._shards():
                    shard.unlink(missing_ok=True)
                self.dim = fresh.shape[1]
                return self.encode(encoder, texts, label)
            finite = np.all(np.isfinite(fresh), axis=1)  # never cache a NaN the encoder gave
            keys = np.array(missing, dtype=_HASH)
            if finite.any():
                self._store(keys[finite], fresh[finite])
            entries.update(zip(missing, fresh))
        elif hashes:
            LOG.log(_level(label), f"{label or 'texts'}: {len(set(hashes)):,} texts, all from the embedding cache")
        if not hashes:
            return np.zeros((0, self.dim if self.dim is not None else int(encoder.dim)), np.float32)
        return np.stack([entries[h] for h in hashes]).astype(np.float32, copy=False)


# ----------------------------------------------------------------------------------------------------- progress
LOG = get_logger("features")
CHUNK = 256  # texts per encoder call at most (about 20 calls for fewer texts): the display moves after each


def _encode_chunks(encoder, texts: list[str], label: str, cached: int) -> np.ndarray:
    """Encode in chunks of CHUNK texts, with a progress record (texts/s) after each and one summary line: INFO for
    a named `label` (a fit's item texts), DEBUG for queries."""
    rate = Rate(LOG, "encode", f"encoding {label or 'texts'}", len(texts))
    rate.advance(0)
    start = time.perf_counter()
    blocks = []
    chunk = min(CHUNK, max(32, -(-len(texts) // 20)))
    for lo in range(0, len(texts), chunk):
        blocks.append(np.asarray(encoder.encode(texts[lo : lo + chunk]), np.float32))
        rate.advance(len(blocks[-1]))
    seconds = time.perf_counter() - start
    from_cache = f"; {cached:,} more from the embedding cache" if cached else ""
    speed = f"{rate.per_second:,.0f} texts/s"
    LOG.log(_level(label), f"{label or 'texts'}: encoded {len(texts):,} texts in {seconds:.1f} s ({speed}){from_cache}")
    return np.concatenate(blocks) if blocks else np.zeros((0, int(encoder.dim)), np.float32)


def _level(label: str) -> int:
    return logging.INFO if label else logging.DEBUG
