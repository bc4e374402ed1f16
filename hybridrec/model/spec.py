"""Plain records a saved model keeps (what each tower takes in, how training went), with no torch import: the
query path reads them."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class TowerSpec:
    """The inputs of one tower: widths of its text and numeric blocks, its categorical vocabularies and, for the
    user tower, the history bag (`history_items` = catalogue size, 0 = none; `history_positions` > 0 = one learned
    weight per position of a history that long)."""

    text_dim: int = 0
    numeric_dim: int = 0
    vocab_sizes: tuple[int, ...] = ()
    history_items: int = 0
    history_positions: int = 0

    def to_json(self) -> dict:
        return {**asdict(self), "vocab_sizes": list(self.vocab_sizes)}

    @classmethod
    def from_json(cls, payload: dict) -> TowerSpec:
        spec = cls(**{**payload, "vocab_sizes": tuple(int(v) for v in payload["vocab_sizes"])})
        numbers = [spec.text_dim, spec.numeric_dim, spec.history_items, spec.history_positions, *spec.vocab_sizes]
        if not all(isinstance(n, int) and not isinstance(n, bool) and 0 <= n < 2**31 for n in numbers):
            raise ValueError(f"tower spec holds a size that is not a small non-negative integer: {payload!r}")
        return spec


@dataclass
class TrainResult:
    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    best_score: float = math.inf
    stopped_early: bool = False
    resumed_from: int = 0  # the epoch a resumed run continued after (0: not resumed)
    metric: str = ""  # what `val` in history is: "rmse", "1-AUC" or "train loss" (no validation rows)
    refit_rows: int = 0  # train.refit: the rows the kept epoch count was trained on again (0: no refit)
