"""The display table (title, price, category per item) held by column: a loaded model of 5e5 items keeps three
lists instead of 5e5 small row lists (building those took longer than reading the file), and a row is made only
when a query asks for it. A saved table (format 4) is one JSON row per line, found by byte offsets: a query reads
the rows it shows (`DisplayFile`), not the catalogue's 50 MB."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, overload

import numpy as np

DISPLAY_COLUMNS = ("title", "price", "category")


class DisplayTable(Sequence):
    """Rows [title, price or None, category] by item row, over three column lists."""

    def __init__(self, titles: list[str], prices: list[float | None], categories: list[str]):
        self.columns: tuple[list[Any], list[Any], list[Any]] = (titles, prices, categories)

    def __len__(self) -> int:
        return len(self.columns[0])

    @overload
    def __getitem__(self, row: int) -> list: ...

    @overload
    def __getitem__(self, row: slice) -> list[list]: ...

    def __getitem__(self, row: int | slice) -> list | list[list]:
        if isinstance(row, slice):
            return [self[k] for k in range(*row.indices(len(self)))]
        return [column[row] for column in self.columns]

    def __setitem__(self, row: int, value: Sequence) -> None:
        for column, cell in zip(self.columns, value, strict=True):
            column[row] = cell

    def __iter__(self) -> Iterator[list]:
        return map(list, zip(*self.columns))

    def __add__(self, rows: Sequence[Sequence]) -> DisplayTable:
        """A new table with `rows` appended (new items)."""
        titles, prices, categories = ([*column, *(r[k] for r in rows)] for k, column in enumerate(self.columns))
        return DisplayTable(titles, prices, categories)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and len(other) == len(self) and all(a == b for a, b in zip(self, other))

    __hash__ = None  # type: ignore[assignment]  # mutable, like the list it stands for


def display_columns(rows: Sequence[Sequence]) -> dict[str, Any]:
    """items.json's payload (model format 3, which earlier folders hold): one list per display column, which JSON
    reads and modelcheck checks in C-level passes (a list of 5e5 small lists took seconds)."""
    if isinstance(rows, DisplayTable):
        columns: list[list] = [list(column) for column in rows.columns]
    else:
        columns = [[row[k] for row in rows] for k in range(len(DISPLAY_COLUMNS))]
    return {"columns": list(DISPLAY_COLUMNS), "by_column": dict(zip(DISPLAY_COLUMNS, columns))}


ROWS_FILE, OFFSETS_FILE = "display/rows.jsonl", "display/offsets.npy"


def write_display(folder: Path, rows: Sequence[Sequence]) -> None:
    """display/rows.jsonl (row k on line k: [title, price or null, category], ASCII JSON) and display/offsets.npy
    (n + 1 byte offsets: row k is bytes offsets[k] to offsets[k + 1]). ValueError on a price that is not finite."""
    lines = [json.dumps([r[0], r[1], r[2]], allow_nan=False).encode("ascii") + b"\n" for r in rows]
    offsets = np.zeros(len(lines) + 1, np.int64)
    np.cumsum([len(line) for line in lines], out=offsets[1:])
    folder.mkdir(exist_ok=True)
    (folder / Path(ROWS_FILE).name).write_bytes(b"".join(lines))
    np.save(folder / Path(OFFSETS_FILE).name, offsets, allow_pickle=False)


class DisplayFile(Sequence):
    """A saved display table read a row at a time: `data` the bytes of rows.jsonl (a memory map), `offsets` its
    checked row offsets, `parse(k, raw)` the row k from its bytes, checked ([title, price or None, category]), and
    `table(raws)` the whole table from every row's bytes, checked (what the title matcher, a save and the export
    read). Once whole, rows come from the table."""

    def __init__(
        self,
        data: Any,
        offsets: np.ndarray,
        parse: Callable[[int, bytes], list],
        table: Callable[[list[bytes]], DisplayTable],
    ):
        self._data, self._offsets, self._parse, self._read_all = data, offsets, parse, table
        self._table: DisplayTable | None = None

    def whole(self) -> DisplayTable:
        if self._table is None:
            bounds = self._offsets.tolist()
            self._table = self._read_all([self._data[a:b] for a, b in zip(bounds[:-1], bounds[1:])])
        return self._table

    def __len__(self) -> int:
        return len(self._offsets) - 1

    @overload
    def __getitem__(self, row: int) -> list: ...

    @overload
    def __getitem__(self, row: slice) -> list[list]: ...

    def __getitem__(self, row: int | slice) -> list | list[list]:
        if self._table is not None or isinstance(row, slice):
            return self.whole()[row]
        k = range(len(self))[row]  # IndexError past the end, negative rows from the end
        return self._parse(k, self._data[int(self._offsets[k]) : int(self._offsets[k + 1])])

    def __setitem__(self, row: int, value: Sequence) -> None:
        self.whole()[row] = value

    def __iter__(self) -> Iterator[list]:
        return iter(self.whole())

    def __add__(self, rows: Sequence[Sequence]) -> DisplayTable:
        return self.whole() + rows

    def __eq__(self, other: object) -> bool:
        return self.whole() == other

    __hash__ = None  # type: ignore[assignment]
