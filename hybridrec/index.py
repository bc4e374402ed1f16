"""hnswlib indexes over item vectors, labelled by item row: the cosine index over every item (recommend's
candidates, similar items without a score term), and the trusted index (similar.py) over the items anybody had."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import hnswlib
import numpy as np

from hybridrec.data.idmap import IdMap
from hybridrec.errors import ModelFileError, QueryError

# below this many items a build takes seconds on one thread, which keeps the graph reproducible
PARALLEL_BUILD_ITEMS = 20_000


def build_threads(setting: int, n_items: int, torch_threads: int = 0) -> int:
    """Threads for an index build: `index.threads` when set; else one below PARALLEL_BUILD_ITEMS items, and above
    it `train.threads` when set, otherwise every core this process may use (hnswlib's build scales with cores)."""
    if setting > 0:
        return setting
    if n_items < PARALLEL_BUILD_ITEMS:
        return 1
    if torch_threads > 0:
        return torch_threads
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


SPACES = ("cosine", "ip")
TRUSTED = "trusted"  # the stem of similar.build_trusted_index's files in a model folder


class ItemIndex:
    """Approximate nearest neighbours by cosine (or inner product: `space` "ip"); labels are IdMap rows, answers
    are raw ids and similarities. `half`: for the trusted index, the evidence half its vectors were weighed with."""

    def __init__(
        self,
        ids: IdMap,
        dim: int,
        M: int = 16,
        ef_construction: int = 200,
        ef_search: int = 100,
        space: str = "cosine",
        half: float | None = None,
    ):
        self.ids = ids
        self.dim = dim
        self.M = M
        self.ef_construction = ef_construction
        self.ef_search = ef_search
        self.space = space
        self.half = half
        self._index: hnswlib.Index | None = None
        self.deleted: set[int] = set()  # rows retired with mark_deleted: never returned, still counted in len()

    def build(
        self, vectors: np.ndarray, seed: int = 100, threads: int = 1, rows: np.ndarray | None = None
    ) -> ItemIndex:
        """Insert every item (or the items `rows`, one vector each). One thread gives the same graph for the same
        vectors; more threads give one of equal quality in less time (the insertion order, so the graph, then
        depends on timing): `build_threads`."""
        index = hnswlib.Index(space=self.space, dim=self.dim)
        index.init_index(
            max_elements=max(len(vectors), 1), ef_construction=self.ef_construction, M=self.M, random_seed=seed
        )
        index.set_num_threads(max(threads, 1))
        if len(vectors):
            data = np.ascontiguousarray(vectors, dtype=np.float32)
            labels = np.arange(len(vectors)) if rows is None else np.asarray(rows, np.int64)
            index.add_items(data, labels, num_threads=max(threads, 1))
        index.set_ef(self.ef_search)
        self._index = index
        return self

    def __len__(self) -> int:
        return 0 if self._index is None else self._index.get_current_count()

    def mark_deleted(self, rows: np.ndarray) -> None:
        """Retire items (remove_items): hnswlib keeps them in the graph for routing but never returns them; the
        mark is saved in its file. Marking a retired row again is a no-op, and so is a row the index does not hold
        (the trusted index holds only the items anybody had)."""
        assert self._index is not None  # built or loaded
        for row in np.asarray(rows, np.int64):
            if int(row) in self.deleted:
                continue
            try:
                self._index.mark_deleted(int(row))
            except RuntimeError as exc:  # already marked in the file: the same state
                if "Label not found" in str(exc):
                    continue
                if "already deleted" not in str(exc):
                    raise
            self.deleted.add(int(row))

    def add(self, vectors: np.ndarray, rows: np.ndarray) -> None:
        """Insert new items (rows already added to the IdMap) without rebuilding."""
        assert self._index is not None  # built or loaded
        needed = len(self) + len(rows)
        if needed > self._index.get_max_elements():
            self._index.resize_index(max(needed, 2 * self._index.get_max_elements()))
        self._index.add_items(np.ascontiguousarray(vectors, dtype=np.float32), np.asarray(rows))

    def query_rows(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(rows, cosine similarities) for a batch of query vectors, k clamped to the index size."""
        if k <= 0:
            raise QueryError(f"k must be positive, got {k}")
        k = min(k, len(self) - len(self.deleted))
        if k <= 0:
            return np.zeros((len(vectors), 0), np.int64), np.zeros((len(vectors), 0), np.float32)
        assert self._index is not None  # len(self) > 0
        self._index.set_ef(max(self.ef_search, k))
        labels, distances = self._index.knn_query(np.ascontiguousarray(vectors, dtype=np.float32), k=k)
        return labels.astype(np.int64), (1.0 - distances).astype(np.float32)

    def query(
        self, vector: np.ndarray, k: int, exclude: set[str] | frozenset[str] = frozenset()
    ) -> tuple[list[str], np.ndarray]:
        """Top-k raw ids for one vector, skipping `exclude` (for example the query item itself)."""
        rows, sims = self.query_rows(vector.reshape(1, -1), k + len(exclude))
        keep = [j for j, r in enumerate(rows[0]) if self.ids.raw(r) not in exclude][:k]
        return self.ids.raws(rows[0][keep]), sims[0][keep]

    def save(self, folder: Path, stem: str = "items") -> None:
        """`{stem}.hnsw` and its description (index.json for the cosine index, `{stem}.json` for another)."""
        folder.mkdir(parents=True, exist_ok=True)
        assert self._index is not None  # built or loaded
        self._index.save_index(str(folder / f"{stem}.hnsw"))
        meta: dict[str, object] = {"dim": self.dim, "M": self.M, "ef_construction": self.ef_construction}
        meta["ef_search"] = self.ef_search
        if stem != "items":
            meta |= {"space": self.space, "half": self.half}
        (folder / description_name(stem)).write_text(json.dumps(meta | {"count": len(self)}))

    @classmethod
    def load(cls, folder: Path, ids: IdMap, items: int | None = None, stem: str = "items") -> ItemIndex:
        """The saved index over `items` items (default: every id of `ids`; fewer where items joined the catalogue
        after the model was loaded and before its index was first read): the cosine index holds each of them,
        another index (stem) any number of them, each labelled by its row."""
        expected = len(ids) if items is None else items
        described = folder / description_name(stem)
        try:
            meta = json.loads(described.read_text())
            out = cls(ids, int(meta["dim"]), int(meta["M"]), int(meta["ef_construction"]), int(meta["ef_search"]))
            count = int(meta["count"])
            if stem != "items":
                out.space, out.half = str(meta["space"]), float(meta["half"])
        except (OSError, ValueError, KeyError, TypeError, RecursionError) as exc:
            raise ModelFileError(f"{described}: not a valid index description ({exc})") from None
        if count > expected or (stem == "items" and count != expected):
            raise ModelFileError(f"{described}: describes {count} items, the model has {expected}")
        if out.space not in SPACES:
            raise ModelFileError(f"{described}: space {out.space!r} is not one of {SPACES}")
        path = folder / f"{stem}.hnsw"
        check_hnsw_file(path, out.dim, out.M, count, labels=expected)
        try:
            index = hnswlib.Index(space=out.space, dim=out.dim)
            index.load_index(str(path), max_elements=max(count, 1))
        except (OSError, RuntimeError, ValueError, KeyError) as exc:
            raise ModelFileError(f"{path}: cannot load the item index ({exc})") from None
        if index.get_current_count() != count:
            raise ModelFileError(f"{path}: holds {index.get_current_count()} items, expected {count}")
        index.set_ef(out.ef_search)  # ef is not stored in hnswlib's file
        out._index = index
        return out


_HNSW_HEADER = struct.Struct("<QQQQQQiIQQQdQ")  # hnswlib's saveIndex: offsets, sizes, maxlevel, entry point, M...


def description_name(stem: str) -> str:
    """The JSON file that describes index `stem` (index.json for the cosine index, as models before 0.2 have it)."""
    return "index.json" if stem == "items" else f"{stem}.json"


def check_hnsw_file(path: Path, dim: int, M: int, count: int, labels: int | None = None) -> None:
    """Check an hnswlib index file of `count` nodes, labelled below `labels` (default: count), against the layout
    its parameters imply before hnswlib reads it.

    hnswlib trusts its file: a crafted header or link (an entry point, level or neighbour out of range) makes it
    read out of bounds and crash the process. The checksum catches accidents; this catches a file made to match
    it. Checked: every header field, the file size, and that every link points at an existing node on its level.
    All in numpy over the file's words, no Python step per node: the upper levels' variable-length records are
    walked by pointer doubling (`_record_starts`), so a 5e5-item index is checked in a fraction of a second.
    """

    def bad(why: str) -> ModelFileError:
        return ModelFileError(f"{path}: not a valid item index ({why})")

    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ModelFileError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if len(raw) < _HNSW_HEADER.size:
        raise bad("shorter than its header")
    (offset0, max_elements, cur, per_element, label_offset, data_offset, max_level, entry, max_m, max_m0, m, _mult,
     _efc) = _HNSW_HEADER.unpack_from(raw)  # fmt: skip
    links0 = max_m0 * 4 + 4
    expected = {
        "offsetLevel0": (offset0, 0), "M": (m, M), "maxM": (max_m, M), "maxM0": (max_m0, 2 * M),
        "offsetData": (data_offset, links0), "label_offset": (label_offset, links0 + 4 * dim),
        "size_data_per_element": (per_element, links0 + 4 * dim + 8), "cur_element_count": (cur, count),
    }  # fmt: skip
    for name, (got, want) in expected.items():
        if got != want:
            raise bad(f"{name} is {got}, expected {want}")
    if max_elements < cur or not 0 <= max_level <= 64 or (cur and entry >= cur):
        raise bad("header out of range")
    level0_end = _HNSW_HEADER.size + cur * per_element
    if len(raw) < level0_end + 4 * cur:  # the level-0 block, then at least one size word per node
        raise bad("truncated")
    element = np.dtype(  # one node's level-0 record, read in place (no copy of the block)
        {"names": ["n", "links", "label"], "formats": ["<u2", ("<u4", (max_m0,)), "<u8"],
         "offsets": [0, 4, label_offset], "itemsize": per_element}
    )  # fmt: skip
    block = np.frombuffer(raw, element, cur, _HNSW_HEADER.size)
    n_links, links, stored = block["n"], block["links"], block["label"]
    label_limit = count if labels is None else labels
    used = np.arange(max_m0)[None, :] < n_links[:, None]
    if (n_links > max_m0).any() or ((links >= cur) & used).any() or (stored >= max(label_limit, 1)).any():
        raise bad("a level-0 link or label out of range")
    if (len(raw) - level0_end) % 4:
        raise bad("trailing bytes")
    words = np.frombuffer(raw, np.uint32, (len(raw) - level0_end) // 4, level0_end)
    per_level = max_m * 4 + 4  # bytes of one upper level's list: a count word, then max_m links
    starts = _record_starts(words, per_level, max_level, cur)
    if starts is None:
        raise bad("the upper-level link lists are malformed, truncated or followed by trailing bytes")
    levels = words[starts].astype(np.int64) // per_level
    if cur and levels[entry] != max_level:
        raise bad("the entry point is not on the top level")
    node = np.repeat(np.arange(cur), levels)  # one row per (node, upper level)
    level = np.arange(len(node)) - np.repeat(np.cumsum(levels) - levels, levels) + 1
    first = starts[node] + 1 + (level - 1) * (per_level // 4)  # word index of that level's count word
    n_up = words[first] & 0xFFFF  # the count is a uint16 at the start of the word (little endian)
    targets = words[first[:, None] + 1 + np.arange(max_m)[None, :]]
    used = np.arange(max_m)[None, :] < n_up[:, None]
    wrong = (n_up > max_m) | ((targets >= cur) & used).any(axis=1)
    if not wrong.any():
        wrong = ((levels[np.minimum(targets, max(cur - 1, 0))] < level[:, None]) & used).any(axis=1)
    if wrong.any():
        at = int(np.argmax(wrong))
        raise bad(f"node {node[at]} links out of range on level {level[at]}")


def _record_starts(words: np.ndarray, per_level: int, max_level: int, cur: int) -> np.ndarray | None:
    """Word index of each node's upper-level record (a size word, then that many bytes of link lists) after the
    level-0 block, or None when the records do not end exactly at the file's end. Record k + 1 starts where
    record k ends, a walk of `cur` steps; pointer doubling takes it in log2(cur) passes over the words instead."""
    n = len(words)
    size = words.astype(np.int64)
    ok = (size % per_level == 0) & (size // per_level <= max_level)
    step = np.arange(1, n + 1) + size // 4  # where the next record starts
    fail = n + 1  # absorbing: a malformed record, or a record starting at the end of the file
    jump = np.append(np.where(ok & (step <= n), step, fail), [fail, fail])
    pos = np.zeros(cur + 1, np.int64)  # pos[k]: where record k starts; pos[cur] must be the end
    rank = np.arange(cur + 1)
    bit = 0
    while (1 << bit) <= cur:
        take = (rank >> bit) & 1 == 1
        pos[take] = jump[pos[take]]
        bit += 1
        if (1 << bit) <= cur:
            jump = jump[jump]
    return pos[:cur] if pos[cur] == n else None
