"""Categorical vocabularies with a minimum count and an out-of-vocabulary slot; single or multi-valued."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # only named in hints: loading a model for a query never imports pandas for it
    import pandas as pd

PAD, OOV = 0, 1
MAX_VALUES = 32  # a multi-valued cell keeps at most this many values (tags, categories)


def cell_values(cell: object, limit: int = MAX_VALUES) -> list[str]:
    """A cell as a list of non-empty strings: lists stay lists, scalars become one value, missing becomes none."""
    if isinstance(cell, (list, tuple, np.ndarray)):
        values = [str(v).strip() for v in cell]
    elif cell is None or (isinstance(cell, float) and np.isnan(cell)):
        values = []
    else:
        values = [str(cell).strip()]
    return [v for v in values if v][:limit]


@dataclass
class Vocabulary:
    """Index 0 pads, 1 is out-of-vocabulary; values seen fewer than min_count times in training map to 1."""

    column: str
    values: list[str]
    max_values: int = MAX_VALUES  # longer cells keep their first max_values values

    @classmethod
    def fit(cls, cells: pd.Series, min_count: int = 2, max_values: int = MAX_VALUES) -> Vocabulary:
        counts = Counter(v for cell in cells for v in cell_values(cell, max_values))
        kept = sorted(v for v, c in counts.items() if c >= min_count)
        return cls(str(cells.name), kept, max_values)

    @property
    def size(self) -> int:
        return len(self.values) + 2

    def transform(self, cells: pd.Series) -> np.ndarray:
        """(n, width) int64 of value indices, PAD-filled; width is the longest cell (at least 1)."""
        lookup = {v: i + 2 for i, v in enumerate(self.values)}
        rows = [[lookup.get(v, OOV) for v in cell_values(cell, self.max_values)] for cell in cells]
        width = max([1] + [len(r) for r in rows])
        out = np.full((len(rows), width), PAD, dtype=np.int64)
        for i, r in enumerate(rows):
            out[i, : len(r)] = r
        return out

    def to_json(self) -> dict:
        return {"column": self.column, "values": self.values, "max_values": self.max_values}

    @classmethod
    def from_json(cls, payload: dict) -> Vocabulary:
        return cls(payload["column"], list(payload["values"]), int(payload.get("max_values", MAX_VALUES)))
