"""Raw id <-> row index, persisted per entity so that no caller ever handles row numbers."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import cast

import numpy as np

from hybridrec.errors import QueryError

_INT_AS_FLOAT = re.compile(r"^[+-]?\d+\.0+$")
# a line of "\n".join(ids) that normalize_id could change: an integer written as a float
_MAYBE_INT_AS_FLOAT = re.compile(r"^[+-]?\d+\.0+$", re.MULTILINE)


def normalize_id(raw: object) -> str:
    """Raw ids are strings everywhere: 42, 42.0, "42" and "42.0" are the same id (files disagree on the type);
    "042" stays "042" (CSV id columns are read as text, so leading zeros survive)."""
    if isinstance(raw, float) and raw.is_integer():
        return str(int(raw))
    if isinstance(raw, (np.floating,)) and float(raw).is_integer():
        return str(int(raw))
    text = str(raw).strip()
    if _INT_AS_FLOAT.match(text):  # "42.0": an integer id written by a float column
        return text.split(".", 1)[0].lstrip("+")
    return text


def first_unnormalized(ids: list[str]) -> int | None:
    """The first row whose id normalize_id would change, or None: str.strip mapped over the ids and one regex pass
    over them joined, then the per-id check only when either finds a candidate (an id holding a newline can look
    like one). A saved id map is checked this way, so 5e5 ids load without a Python call per id."""
    joined = "\n".join(ids)
    floats = "." in joined and _MAYBE_INT_AS_FLOAT.search(joined) is not None
    if not floats and list(map(str.strip, ids)) == ids:
        return None
    return next((row for row, raw in enumerate(ids) if normalize_id(raw) != raw), None)


class IdMap:
    """An ordered, append-only mapping between raw ids (strings) and contiguous row indices."""

    def __init__(self, raw_ids: Iterable[object] = (), entity: str = "item") -> None:
        self.entity = entity
        self._raws: list[str] = []
        self._index: dict[str, int] = {}
        self.extend(raw_ids)

    def extend(self, raw_ids: Iterable[object]) -> list[int]:
        """Add ids not yet known (in order); return the indices of all given ids."""
        out = []
        for raw in raw_ids:
            key = normalize_id(raw)
            idx = self._index.get(key)
            if idx is None:
                idx = len(self._raws)
                self._index[key] = idx
                self._raws.append(key)
            out.append(idx)
        return out

    def __len__(self) -> int:
        return len(self._raws)

    def __contains__(self, raw: object) -> bool:
        return normalize_id(raw) in self._index

    def index(self, raw: object) -> int:
        """Row index of one raw id; an unknown id is a QueryError naming it."""
        try:
            return self._index[normalize_id(raw)]
        except KeyError:
            raise QueryError(f"unknown {self.entity} id {normalize_id(raw)!r}") from None

    def indices(self, raws: Iterable[object]) -> np.ndarray:
        """Row indices of raw ids; the first unknown one is a QueryError naming it. Ids that are strings in normal
        form already (what the readers give) are looked up by one C-level map over the dict: a fit of 1.7M rows
        spent 16 s in a Python call per id."""
        values = raws if isinstance(raws, list) else list(raws)
        if set(map(type, values)) <= {str} and first_unnormalized(cast(list[str], values)) is None:
            try:
                return np.fromiter(map(self._index.__getitem__, values), dtype=np.int64, count=len(values))
            except KeyError:
                pass  # the per-id path names the unknown id
        return np.fromiter((self.index(r) for r in values), dtype=np.int64, count=len(values))

    def get(self, raw: object, default: int = -1) -> int:
        return self._index.get(normalize_id(raw), default)

    def raw(self, index: int) -> str:
        return self._raws[int(index)]

    def raws(self, indices: Sequence[int] | np.ndarray) -> list[str]:
        return [self._raws[int(i)] for i in indices]

    @property
    def raw_ids(self) -> list[str]:
        return list(self._raws)

    def to_json(self) -> dict:
        return {"entity": self.entity, "ids": self._raws}

    @classmethod
    def of_normalized(cls, ids: list[str], entity: str = "item") -> IdMap:
        """The map of `ids`, strings already in normal form (a saved id map, checked by its reader), built in one
        dict call; ValueError when an id repeats."""
        out = cls(entity=entity)
        out._raws = list(ids)
        out._index = dict(zip(out._raws, range(len(out._raws))))
        if len(out._index) != len(out._raws):
            raise ValueError("duplicate ids")
        return out

    def ready(self) -> IdMap:
        """This map, in memory (a LazyIdMap reads its file here: a server calls it before serving)."""
        return self

    @classmethod
    def from_json(cls, payload: dict) -> IdMap:
        ids = payload["ids"]
        mapping = cls(ids, entity=payload.get("entity", "item"))
        if len(mapping) != len(ids):
            raise ValueError("id map holds duplicate ids")
        return mapping


class LazyIdMap(IdMap):
    """A saved model's id map, read and checked on first use: a query about items never reads the users' map
    (2e6 users: 25 MB of JSON and ~0.6 s of every CLI `similar`). `read` returns the checked IdMap; `size` is the
    count the model records, which the read map must have."""

    def __init__(self, read: Callable[[], IdMap], size: int, entity: str) -> None:
        self.entity = entity
        self._read, self._size = read, size
        self._map: IdMap | None = None
        self._lock = threading.Lock()

    def ready(self) -> IdMap:
        if self._map is None:
            with self._lock:
                if self._map is None:
                    self._map = self._read()
        return self._map

    @property
    def _raws(self) -> list[str]:  # type: ignore[override]
        return self.ready()._raws

    @property
    def _index(self) -> dict[str, int]:  # type: ignore[override]
        return self.ready()._index

    def __len__(self) -> int:
        return self._size if self._map is None else len(self._map)
