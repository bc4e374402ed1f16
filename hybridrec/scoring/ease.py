"""EASE (Steck 2019), a closed-form item-item model, as a score term: `{type: ease, l2: 500, similar_weight: 0.5}`.

The fused vectors say which products are alike in content and in who buys them, compressed to `model.dim`
numbers. On co-purchase data the full-rank pairwise evidence ("bought with j, so i") is sharper than any low-rank
vector, and EASE's least-squares weights are the strongest cheap form of it. Numpy only: no torch when serving.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hybridrec.errors import ConfigError, ModelFileError
from hybridrec.model.history import UserHistory
from hybridrec.scoring.base import (
    FitContext,
    NewItems,
    ScoreTerm,
    TermFiles,
    TermParams,
    history_matrix,
    register_term,
    save_history,
)

# items x items float64 Gram matrix and its inverse: past this they no longer fit a laptop
MAX_ITEMS = 20_000


def closed_form_weights(gram: np.ndarray, l2: float) -> np.ndarray:
    """B = I - P / diag(P) with P = (G + l2 I)^-1 and a zero diagonal: each item's column is the ridge regression
    of that item on all the others, with the item itself excluded."""
    a = np.array(gram, dtype=np.float64, copy=True)
    a[np.diag_indices_from(a)] += l2
    p = np.linalg.inv(a)
    b = -p / np.diag(p)[None, :]
    np.fill_diagonal(b, 0.0)
    return b.astype(np.float32)


@dataclass
class EaseParams(TermParams):
    l2: float = 500.0  # ridge penalty; larger moves towards popular co-purchases


@register_term
class EaseTerm(ScoreTerm):
    """score(u, i) = sum over u's training items j of B[j, i]; similar(i) = B[i]."""

    type = "ease"
    behavioural = True
    Params = EaseParams
    params: EaseParams

    def __init__(self, params: EaseParams):
        super().__init__(params)
        self.weights: np.ndarray | None = None
        self.history: UserHistory | None = None

    @classmethod
    def check(cls, params: TermParams, config) -> None:
        assert isinstance(params, EaseParams)  # built from cls.Params
        if params.l2 <= 0:
            raise ConfigError(f"l2: {params.l2!r} must be > 0")

    def check_catalogue(self, n_items: int) -> None:
        if n_items > MAX_ITEMS:
            raise ConfigError(
                f"{n_items} items, more than the {MAX_ITEMS} a dense EASE term allows (items x items in memory); "
                "drop {type: ease} from model.terms (the sparse {type: cooccurrence} term scales with interactions)"
            )

    def fit(self, ctx: FitContext) -> None:
        from scipy import sparse

        self.check_catalogue(ctx.n_items)
        self.history = UserHistory.distinct(ctx.users, ctx.items, ctx.n_users)
        x = sparse.csr_matrix(
            (np.ones(len(self.history.items), np.float64), self.history.items, self.history.indptr),
            shape=(ctx.n_users, ctx.n_items),
        )
        self.weights = closed_form_weights((x.T @ x).toarray(), self.params.l2)

    def score(self, user_rows: np.ndarray, item_rows: np.ndarray | None = None) -> np.ndarray:
        assert self.weights is not None and self.history is not None
        had = self.history.sparse(user_rows, len(self.weights))
        cols = self.weights if item_rows is None else self.weights[:, item_rows]
        return np.asarray(had @ cols, dtype=np.float32)

    def score_history(
        self,
        item_rows_per_user: list[np.ndarray],
        item_rows: np.ndarray | None = None,
        weights: list[np.ndarray] | None = None,
    ) -> np.ndarray:
        assert self.weights is not None
        had = history_matrix(item_rows_per_user, len(self.weights), weights)
        cols = self.weights if item_rows is None else self.weights[:, item_rows]
        return np.asarray(had @ cols, dtype=np.float32)

    def similar(self, item_row: int) -> np.ndarray:
        assert self.weights is not None
        return self.weights[item_row]

    def extend(self, new: NewItems) -> None:
        """New items were bought with nothing: zero rows and columns."""
        assert self.weights is not None
        self.weights = np.pad(self.weights, ((0, new.count), (0, new.count)))

    def save(self, folder: Path) -> None:
        assert self.weights is not None and self.history is not None
        np.save(folder / "weights.npy", self.weights, allow_pickle=False)
        save_history(folder, self.history)

    @classmethod
    def load(cls, files: TermFiles, params: TermParams, n_users: int, n_items: int) -> EaseTerm:
        assert isinstance(params, EaseParams)  # built from cls.Params
        term = cls(params)
        weights = files.npy("weights")
        if weights.shape != (n_items, n_items) or weights.dtype != np.float32:
            raise ModelFileError(f"{files.where}: EASE weights are {weights.shape}, expected ({n_items}, {n_items})")
        history = files.history(n_users, n_items)
        term.weights, term.history = weights, history
        return term
