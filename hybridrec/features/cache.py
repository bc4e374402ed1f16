"""On-disk embedding cache keyed by (encoder, text), so a second fit re-encodes nothing."""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from pathlib import Path

import numpy as np


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

    def encode(self, encoder, texts: list[str], show_progress: bool = False) -> np.ndarray:
        """Vectors for `texts`, encoding only those not cached yet and storing them for next time."""
        keys, vectors = self._load()
        hashes = [_text_hash(t) for t in texts]
        missing = list(dict.fromkeys(h for h in hashes if h not in keys))
        self.misses += len(missing)
        self.hits += len(set(hashes)) - len(missing)
        if missing:
            by_hash = dict(zip(hashes, texts))
            fresh = encoder.encode([by_hash[h] for h in missing], show_progress=show_progress)
            start = 0 if vectors is None else len(vectors)
            keys.update({h: start + i for i, h in enumerate(missing)})
            vectors = fresh if vectors is None else np.concatenate([vectors, fresh.astype(vectors.dtype)])
            self._store(keys, vectors)
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
