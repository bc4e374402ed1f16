"""The display table (title, price, category per item) held by column: a loaded model of 5e5 items keeps three
lists instead of 5e5 small row lists (building those took longer than reading the file), and a row is made only
when a query asks for it."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, overload

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
    """items.json's payload (model format 3): one list per display column, which JSON reads and modelcheck checks
    in C-level passes (a list of 5e5 small lists took seconds)."""
    if isinstance(rows, DisplayTable):
        columns: list[list] = [list(column) for column in rows.columns]
    else:
        columns = [[row[k] for row in rows] for k in range(len(DISPLAY_COLUMNS))]
    return {"columns": list(DISPLAY_COLUMNS), "by_column": dict(zip(DISPLAY_COLUMNS, columns))}
