"""The canonical dataset every reader produces and every later stage consumes."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import pandas as pd

from hybridrec.errors import DataError

INTERACTION_COLUMNS = ["user_id", "item_id", "rating", "timestamp", "review"]


@dataclass
class FeatureSchema:
    """Which columns of an entity table are text, numeric, single-valued or multi-valued categorical."""

    title: str | None = "title"
    text: list[str] = field(default_factory=list)
    numeric: list[str] = field(default_factory=list)
    categorical: list[str] = field(default_factory=list)
    multi: list[str] = field(default_factory=list)

    def columns(self) -> list[str]:
        head = [self.title] if self.title else []
        return head + self.text + self.numeric + self.categorical + self.multi


@dataclass
class ReadReport:
    """Counts of rows a reader read and skipped on purpose, by reason: nothing is dropped silently."""

    source: str = ""
    rows_read: int = 0
    skipped: Counter = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)

    def skip(self, reason: str, n: int = 1) -> None:
        if n:
            self.skipped[reason] += n

    @property
    def n_skipped(self) -> int:
        return sum(self.skipped.values())

    def check(self, max_bad_fraction: float) -> None:
        """Turn skipping into an error once too large a share of the input was bad."""
        if self.rows_read and self.n_skipped / self.rows_read > max_bad_fraction:
            reasons = ", ".join(f"{k}: {v}" for k, v in self.skipped.most_common())
            raise DataError(
                f"{self.source}: {self.n_skipped} of {self.rows_read} rows skipped "
                f"(> {max_bad_fraction:.0%} allowed; {reasons})"
            )

    def summary(self) -> str:
        parts = [f"{self.rows_read} rows read"]
        parts += [f"{v} skipped ({k})" for k, v in self.skipped.most_common()]
        return f"{self.source}: " + ", ".join(parts + self.notes)


@dataclass
class Dataset:
    """Interactions, item table and optional user table, all keyed by raw string ids.

    interactions: user_id (str), item_id (str), rating (float; purchase weight for implicit data),
        timestamp (int64 epoch seconds, 0 when unknown), review (str, "" when none), and optionally
        fold ("train"/"test") when the source ships its own split.
    items: item_id (str, unique) plus the columns named in item_schema; multi-valued columns hold lists.
    users: user_id (str, unique) plus the columns named in user_schema, or None.
    """

    name: str
    interactions: pd.DataFrame
    items: pd.DataFrame
    users: pd.DataFrame | None = None
    item_schema: FeatureSchema = field(default_factory=FeatureSchema)
    user_schema: FeatureSchema = field(default_factory=lambda: FeatureSchema(title=None))
    feedback: Literal["explicit", "implicit"] = "explicit"
    rating_range: tuple[float, float] | None = (1.0, 5.0)
    reports: Sequence[ReadReport] = field(default_factory=list)

    def validate(self) -> Dataset:
        """Check the canonical columns and types; a reader bug or a bad table surfaces here, named."""
        missing = [c for c in INTERACTION_COLUMNS if c not in self.interactions.columns]
        if missing:
            raise DataError(f"{self.name}: interactions lack columns {missing}")
        if self.interactions.empty:
            if self.reports:  # say which file, and what happened to its rows
                first = self.reports[0]
                detail = first.summary().removeprefix(f"{first.source}: ")
                raise DataError(f"{first.source}: no interactions were read ({detail})")
            raise DataError(f"{self.name}: no interactions were read")
        if "item_id" not in self.items.columns:
            raise DataError(f"{self.name}: item table lacks column 'item_id'")
        if self.items["item_id"].duplicated().any():
            dup = self.items.loc[self.items["item_id"].duplicated(), "item_id"].iloc[0]
            raise DataError(f"{self.name}: item table repeats item_id {dup!r}")
        absent = [c for c in self.item_schema.columns() if c not in self.items.columns]
        if absent:
            raise DataError(f"{self.name}: item table lacks configured columns {absent}")
        return self
