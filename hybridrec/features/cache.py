"""On-disk embedding cache keyed by (encoder, text), so a second fit re-encodes nothing."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
import time
from pathlib import Path

import numpy as np

from hybridrec.progress import Rate, get_logger


def _text_hash(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()


class EmbeddingCache:
    """One folder per encoder key holding `keys.json` (text hash -> row) and `vectors.npy`, rewritten atomically."""

    def __init__(self, root: str | Path, encoder_key: str):
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", encoder_key)[:80]
        digest = hashlib.sha1(encoder_key.encode()).hexdigest()[:8]
        self.folder = Path(root) / f"{slug}-{digest}"
        self.hits = 0
        self.misses = 0

    def _load(self) -> tuple[dict[str, int], np.ndarray | None]:
        keys_path, vec_path = self.folder / "keys.json", self.folder / "vectors.npy"
        if not (keys_path.exists() and vec_path.exists()):
            return {}, None
        try:
            keys = json.loads(keys_path.read_text())
            vectors = np.load(vec_path, allow_pickle=False)
        except (ValueError, OSError):
            return {}, None  # a damaged cache is only a cache: start over
        if len(keys) != len(vectors):
            return {}, None
        return keys, vectors

    def encode(self, encoder, texts: list[str], label: str = "") -> np.ndarray:
        """Vectors for `texts`, encoding only those not cached yet and storing them for next time. `label` names
        the texts for progress output (empty: none)."""
        keys, vectors = self._load()
        hashes = [_text_hash(t) for t in texts]
        missing = list(dict.fromkeys(h for h in hashes if h not in keys))
        self.misses += len(missing)
        cached = len(set(hashes)) - len(missing)
        self.hits += cached
        if missing:
            by_hash = dict(zip(hashes, texts))
            fresh = _encode_chunks(encoder, [by_hash[h] for h in missing], label, cached)
            start = 0 if vectors is None else len(vectors)
            keys.update({h: start + i for i, h in enumerate(missing)})
            vectors = fresh if vectors is None else np.concatenate([vectors, fresh.astype(vectors.dtype)])
            self._store(keys, vectors)
        elif hashes:
            LOG.log(_level(label), f"{label or 'texts'}: {len(set(hashes)):,} texts, all from the embedding cache")
        assert vectors is not None  # cached or just encoded (only empty `texts` on an empty cache leave None)
        return np.asarray(vectors[[keys[h] for h in hashes]], dtype=np.float32)

    def _store(self, keys: dict[str, int], vectors: np.ndarray) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        fd, tmp_vec = tempfile.mkstemp(dir=self.folder, suffix=".npy")
        with os.fdopen(fd, "wb") as fh:
            np.save(fh, vectors, allow_pickle=False)
        fd, tmp_keys = tempfile.mkstemp(dir=self.folder, suffix=".json")
        with os.fdopen(fd, "w") as fh:
            json.dump(keys, fh)
        # vectors first: a reader pairing new keys with old vectors would see a length mismatch and rebuild.
        os.replace(tmp_vec, self.folder / "vectors.npy")
        os.replace(tmp_keys, self.folder / "keys.json")


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
