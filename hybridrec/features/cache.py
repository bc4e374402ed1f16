"""On-disk embedding cache keyed by (encoder, text), so a second fit re-encodes nothing.

One folder per encoder key holds shards, `shard-<time>-<pid>-<id>.npz`: the texts' hashes, their vectors and one
checksum over the shard's hashes and vectors together (shards of the first 0.3 layout carry one checksum per entry
and are read too). A writer only ever adds a shard (written under a temporary name, then renamed), so fits sharing
the cache never lose each other's entries and a miss never rewrites what is cached. Past MAX_SHARDS shards the
writer merges the smaller half into one (size-tiered: an entry is rewritten a logarithmic number of times, not at
every merge); parts are removed only once the merged shard is in place. A reader checks every shard (plain stored
zip members no bigger than the file, types, shapes, finiteness, the checksum, so swapped rows or altered values are
caught) and drops a damaged one with one warning line: its texts are encoded again. It is only a cache, never a
reason to fail or to use a wrong vector. A future layout must take another file name, so that this reader skips it
instead of dropping it as damaged (the race behind "arrays of different lengths": fits of the per-entry layout and
of the per-shard one sharing a cache dropped each other's shards).
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
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np

from hybridrec.errors import ModelFileError
from hybridrec.progress import Rate, get_logger

CACHE_ENV = "HYBRIDREC_CACHE_DIR"
DEFAULT_CACHE_DIR = ".hybridrec-cache"
MAX_SHARDS = 16  # more shards than this: the next writer merges the smaller half of them into one
STALE_TEMP_SECONDS = 3600  # a temporary file this old is a killed writer's, removed by the next merge
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


def _entry_checks(keys: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """The first 0.3 layout's checksums, one per entry over its hash and its vector's bytes."""
    rows = np.ascontiguousarray(vectors, dtype=np.float32)
    return np.array(
        [hashlib.blake2b(k + rows[i].tobytes(), digest_size=8).hexdigest().encode() for i, k in enumerate(keys)],
        dtype=_CHECK,
    )


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


class Entries(Mapping):
    """Every cached entry of one folder: text hash -> its vector. The shards' own arrays (never copied into one
    matrix: at 5e5 texts that copy is 0.8 GB) and a hash -> global row dict (a dict of row views cost a Python
    object per entry)."""

    def __init__(self, rows: dict[bytes, int], blocks: list[np.ndarray], width: int):
        self.rows = rows
        self.blocks = blocks
        self.starts = np.cumsum([0] + [len(b) for b in blocks])
        self.dim = width

    def take(self, rows: list[int]) -> np.ndarray:
        """The vectors of global rows `rows`, in order."""
        at = np.asarray(rows, np.int64)
        out = np.empty((len(at), self.dim), np.float32)
        block = np.searchsorted(self.starts, at, side="right") - 1
        for b in np.unique(block):
            mask = block == b
            out[mask] = self.blocks[b][at[mask] - self.starts[b]]
        return out

    def __getitem__(self, key: bytes) -> np.ndarray:
        return self.take([self.rows[key]])[0]

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def width(self) -> int | None:
        return self.dim if len(self.rows) else None


def _stored_members(path: Path, size: int) -> None:
    """np.savez writes plain stored members: a compressed one (a zip bomb) or one bigger than the file is refused
    before numpy allocates what its header declares."""
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise DamagedShard(f"unreadable ({type(exc).__name__})") from None
    names = sorted(i.filename for i in infos)
    if names != ["checks.npy", "keys.npy", "vectors.npy"]:
        raise DamagedShard("unexpected members")
    if any(i.compress_type != zipfile.ZIP_STORED or i.file_size > size for i in infos):
        raise DamagedShard("compressed or oversized members")


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
        keys, vectors = self._check_shard(path, stat.st_size)
        _VERIFIED[memo] = (keys, vectors)
        if self.dim is not None and vectors.shape[1] != self.dim:
            raise OtherWidth()
        return keys, vectors

    def _check_shard(self, path: Path, size: int) -> tuple[np.ndarray, np.ndarray]:
        _stored_members(path, size)
        try:
            with np.load(path, allow_pickle=False) as z:
                keys, vectors, checks = z["keys"], z["vectors"], z["checks"]
        except FileNotFoundError:
            raise
        except Exception as exc:  # noqa: BLE001 - any unreadable shard (bad zip, pickled array, missing member)
            raise DamagedShard(f"unreadable ({type(exc).__name__})") from None
        if keys.dtype != _HASH or checks.dtype != _CHECK or keys.ndim != 1 or vectors.ndim != 2:
            raise DamagedShard("wrong array types")
        if not np.issubdtype(vectors.dtype, np.floating) or len(keys) != len(vectors):
            raise DamagedShard("arrays of different lengths")
        if len(checks) != 1 and len(checks) != len(keys):  # one per shard; the first 0.3 layout: one per entry
            raise DamagedShard("a checksum array of the wrong length")
        if not np.all(np.isfinite(vectors)):
            raise DamagedShard("vectors that are not finite")
        expected = _checks(keys, vectors) if len(checks) == 1 else _entry_checks(keys, vectors)
        if not np.array_equal(expected, checks):
            raise DamagedShard("entries that do not match the checksum")
        return keys, vectors.astype(np.float32, copy=False)

    def _sound_shards(self) -> list[tuple[Path, np.ndarray, np.ndarray]]:
        """Every shard that passes its checks and has this cache's width (the first sound shard's when none is
        set); damaged ones are removed with one warning line."""
        out = []
        width: int | None = self.dim
        listed = self._shards()
        here, present = str(self.folder), {str(p) for p in listed}
        for memo in [m for m in _VERIFIED if str(Path(m[0]).parent) == here and m[0] not in present]:
            del _VERIFIED[memo]  # merged away (by this process or another): its arrays are not kept
        for shard in listed:
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
            out.append((shard, keys, vectors))
        return out

    def _load(self) -> Entries:
        """Every valid cached entry (hash -> vector); damaged shards are removed with one warning line."""
        self._migrate_legacy()
        shards = self._sound_shards()
        if not shards:
            return Entries({}, [], self.dim or 0)
        keys = np.concatenate([k for _, k, _ in shards])
        # the first shard holding a text wins (the same text gives the same vector in every shard anyway)
        rows = dict(zip(reversed(keys.tolist()), range(len(keys) - 1, -1, -1)))
        return Entries(rows, [v for _, _, v in shards], int(shards[0][2].shape[1]))

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
    def _write_shard(self, keys: np.ndarray, vectors: np.ndarray) -> Path:
        """One new shard under a name no other writer uses (time, process, random), published by a rename: a
        reader sees the whole shard or none of it. OSError when it cannot be written (nothing is left behind)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=".tmp-", suffix=".npz")
        try:
            with os.fdopen(fd, "wb") as fh:
                np.savez(fh, keys=keys, vectors=vectors, checks=_checks(keys, vectors))
            final = self.folder / f"shard-{time.time_ns():020d}-{os.getpid()}-{uuid.uuid4().hex[:8]}.npz"
            os.replace(tmp, final)
            return final
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _store(self, keys: np.ndarray, vectors: np.ndarray) -> None:
        """Add one shard; a write that fails (full disk, no permission) costs only the caching, with a warning."""
        try:
            self._write_shard(np.asarray(keys, _HASH), np.asarray(vectors, np.float32))
        except OSError as exc:
            _warn(f"text cache {self.folder}: cannot write ({exc.strerror or exc}); continuing without caching")
            return
        if len(self._shards()) > MAX_SHARDS:
            self._compact()

    def _compact(self) -> None:
        """Merge the smaller half of the shards (at least two) into one. Parts are removed only after the merged
        shard is in place, and only those that were read, so a concurrent writer's new shard is never lost; two
        writers merging at once leave duplicates, which the next merge folds."""
        self._remove_stale_temps()
        shards = self._sound_shards()
        if len(shards) <= MAX_SHARDS // 2:
            return
        shards.sort(key=lambda s: len(s[1]))
        parts = shards[: max(2, len(shards) // 2)]
        merged_keys, first = np.unique(np.concatenate([k for _, k, _ in parts]), return_index=True)
        merged = np.concatenate([v for _, _, v in parts])[first]
        try:
            self._write_shard(merged_keys, merged)
        except OSError:  # not written: keep the parts
            return
        for shard, _, _ in parts:
            try:
                shard.unlink()
            except OSError:
                pass

    def _remove_stale_temps(self) -> None:
        now = time.time()
        try:
            for tmp in self.folder.glob(".tmp-*.npz"):
                if now - tmp.stat().st_mtime > STALE_TEMP_SECONDS:
                    tmp.unlink()
        except OSError:
            pass

    # ------------------------------------------------------------------------------------------------- encoding
    def encode(self, encoder, texts: list[str], label: str = "") -> np.ndarray:
        """Vectors for `texts`, encoding only those not cached yet and storing them for next time. `label` names
        the texts for progress output (empty: none)."""
        entries = self._load()
        hashes = [_text_hash(t).encode() for t in texts]
        missing = list(dict.fromkeys(h for h in hashes if h not in entries.rows))
        self.misses += len(missing)
        cached = len(set(hashes)) - len(missing)
        self.hits += cached
        if not hashes:
            return np.zeros((0, self.dim if self.dim is not None else int(encoder.dim)), np.float32)
        if not missing:
            LOG.log(_level(label), f"{label or 'texts'}: {len(set(hashes)):,} texts, all from the embedding cache")
            return entries.take([entries.rows[h] for h in hashes])
        by_hash = dict(zip(hashes, texts))
        fresh = _encode_chunks(encoder, [by_hash[h] for h in missing], label, cached)
        if fresh.ndim != 2 or len(fresh) != len(missing):
            raise RuntimeError(f"the text encoder returned {fresh.shape} for {len(missing)} texts")
        if self.dim is not None and fresh.shape[1] != self.dim:  # the model's text width is not this encoder's
            raise ModelFileError(
                f"the text encoder {self.key!r} gives vectors of width {fresh.shape[1]}, the model's text "
                f"features expect {self.dim}"
            )
        if entries.width is not None and entries.width != fresh.shape[1]:
            _warn(f"text cache {self.folder}: cached vectors are not {fresh.shape[1]} wide; rebuilding it")
            for shard in self._shards():
                shard.unlink(missing_ok=True)
            self.dim = fresh.shape[1]
            return self.encode(encoder, texts, label)
        finite = np.all(np.isfinite(fresh), axis=1)  # never cache a NaN the encoder gave
        keys = np.array(missing, dtype=_HASH)
        if finite.any():
            self._store(keys[finite], fresh[finite])
        fresh_rows = {h: i for i, h in enumerate(missing)}
        out = np.empty((len(hashes), fresh.shape[1]), np.float32)
        cached_at = [i for i, h in enumerate(hashes) if h in entries.rows]
        if cached_at:
            out[cached_at] = entries.take([entries.rows[hashes[i]] for i in cached_at])
        new_at = [i for i, h in enumerate(hashes) if h not in entries.rows]
        out[new_at] = fresh[[fresh_rows[hashes[i]] for i in new_at]]
        return out


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
    precision, tokens = getattr(encoder, "precision", None), getattr(encoder, "max_seq_length", None)
    how = "".join(f", {part}" for part in (precision, f"cut at {tokens} tokens" if tokens else None) if part)
    speed = f"{rate.per_second:,.0f} texts/s{how}"
    LOG.log(_level(label), f"{label or 'texts'}: encoded {len(texts):,} texts in {seconds:.1f} s ({speed}){from_cache}")
    return np.concatenate(blocks) if blocks else np.zeros((0, int(encoder.dim)), np.float32)


def _level(label: str) -> int:
    return logging.INFO if label else logging.DEBUG
