"""hnswlib cosine index over item vectors that takes and returns raw item ids, never row numbers."""

from __future__ import annotations

import json
from pathlib import Path

import hnswlib
import numpy as np

from hybridrec.data.idmap import IdMap
from hybridrec.errors import ModelFileError, QueryError


class ItemIndex:
    """Approximate nearest neighbours by cosine; labels are IdMap rows, answers are raw ids and similarities."""

    def __init__(self, ids: IdMap, dim: int, M: int = 16, ef_construction: int = 200, ef_search: int = 100):
        self.ids = ids
        self.dim = dim
        self.M = M
        self.ef_construction = ef_construction
        self.ef_search = ef_search
        self._index: hnswlib.Index | None = None

    def build(self, vectors: np.ndarray, seed: int = 100) -> ItemIndex:
        index = hnswlib.Index(space="cosine", dim=self.dim)
        index.init_index(
            max_elements=max(len(vectors), 1), ef_construction=self.ef_construction, M=self.M, random_seed=seed
        )
        index.set_num_threads(1)  # one thread: the same vectors always give the same graph
        if len(vectors):
            index.add_items(np.ascontiguousarray(vectors, dtype=np.float32), np.arange(len(vectors)))
        index.set_ef(self.ef_search)
        self._index = index
        return self

    def __len__(self) -> int:
        return 0 if self._index is None else self._index.get_current_count()

    def add(self, vectors: np.ndarray, rows: np.ndarray) -> None:
        """Insert new items (rows already added to the IdMap) without rebuilding."""
        needed = len(self) + len(rows)
        if needed > self._index.get_max_elements():
            self._index.resize_index(max(needed, 2 * self._index.get_max_elements()))
        self._index.add_items(np.ascontiguousarray(vectors, dtype=np.float32), np.asarray(rows))

    def query_rows(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(rows, cosine similarities) for a batch of query vectors, k clamped to the index size."""
        if k <= 0:
            raise QueryError(f"k must be positive, got {k}")
        k = min(k, len(self))
        if k == 0:
            return np.zeros((len(vectors), 0), np.int64), np.zeros((len(vectors), 0), np.float32)
        self._index.set_ef(max(self.ef_search, k))
        labels, distances = self._index.knn_query(np.ascontiguousarray(vectors, dtype=np.float32), k=k)
        return labels.astype(np.int64), (1.0 - distances).astype(np.float32)

    def query(self, vector: np.ndarray, k: int, exclude: set[str] = frozenset()) -> tuple[list[str], np.ndarray]:
        """Top-k raw ids for one vector, skipping `exclude` (for example the query item itself)."""
        rows, sims = self.query_rows(vector.reshape(1, -1), k + len(exclude))
        keep = [j for j, r in enumerate(rows[0]) if self.ids.raw(r) not in exclude][:k]
        return self.ids.raws(rows[0][keep]), sims[0][keep]

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self._index.save_index(str(folder / "items.hnsw"))
        meta = {"dim": self.dim, "M": self.M, "ef_construction": self.ef_construction, "ef_search": self.ef_search}
        (folder / "index.json").write_text(json.dumps(meta | {"count": len(self)}))

    @classmethod
    def load(cls, folder: Path, ids: IdMap) -> ItemIndex:
        try:
            meta = json.loads((folder / "index.json").read_text())
            out = cls(ids, meta["dim"], meta["M"], meta["ef_construction"], meta["ef_search"])
            index = hnswlib.Index(space="cosine", dim=out.dim)
            index.load_index(str(folder / "items.hnsw"), max_elements=max(meta["count"], 1))
        except (OSError, RuntimeError, ValueError, KeyError) as exc:
            raise ModelFileError(f"{folder / 'items.hnsw'}: cannot load the item index ({exc})") from None
        if index.get_current_count() != meta["count"] or meta["count"] != len(ids):
            raise ModelFileError(
                f"{folder / 'items.hnsw'}: holds {index.get_current_count()} items, expected {len(ids)}"
            )
        index.set_ef(out.ef_search)  # ef is not stored in hnswlib's file
        out._index = index
        return out
