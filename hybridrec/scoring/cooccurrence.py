"""Item-item co-occurrence as a score term: `{type: cooccurrence, similar_weight: 0.9}`.

"People who had this also had that", with three classic guards: cosine normalisation (a popular item is not
everybody's neighbour), shrinkage towards zero for pairs seen together only a few times (an item rated by three
people does not earn a place beside Toy Story from one shared fan), and a discount on very active users (a wholesale
customer who bought 2,000 products says less about any one pair than a shopper who bought 20: each user counts
1 / n_u ** user_discount, the inverse-user-frequency of item kNN). Kept sparse, the `neighbours` strongest per
item, and computed in blocks of items, so it scales with the interactions, not with items x items. Any recipe can
fit it, ratings models included: their item vectors learn to predict a rating, not who consumes what together.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from hybridrec.errors import ConfigError, ModelFileError
from hybridrec.model.history import UserHistory
from hybridrec.scoring.base import FitContext, NewItems, ScoreTerm, TermFiles, TermParams, register_term, save_history

if TYPE_CHECKING:
    from scipy import sparse

BLOCK = 2048  # items per block of the co-occurrence product


@dataclass
class CooccurrenceParams(TermParams):
    neighbours: int = 100  # strongest neighbours kept per item
    # similarity x n / (n + shrink), n = users who had both; chosen over the P4 datasets (lodo-similar.md)
    shrink: float = 100.0
    # each user's weight in the co-counts: 1 / (items they had) ** user_discount; chosen over the P4 datasets
    # with the evidence share (lodo-similar.md, 2026-12-05: the best worst margin over both recipes and 3 seeds)
    user_discount: float = 0.7


def cooccurrence_neighbours(
    x: sparse.csr_matrix, neighbours: int, shrink: float, user_discount: float = 0.0
) -> sparse.csr_matrix:
    """items x items: cosine of the binary user x item matrix's columns (each user weighted by
    1 / n_u ** user_discount), shrunk by the raw co-count, top `neighbours` per row, no diagonal."""
    from scipy import sparse

    x = sparse.csr_matrix(x, dtype=np.float64)
    per_user = np.maximum(np.diff(x.indptr), 1).astype(np.float64)
    weighted = sparse.diags(per_user**-user_discount) @ x
    xt = x.T.tocsr()
    norms = np.asarray(weighted.sum(axis=0)).ravel()  # the weighted item counts (binary x: the sum is the square)
    n_items = x.shape[1]
    rows, cols, vals = [], [], []
    for start in range(0, n_items, BLOCK):
        # co-counts of these items with every item, raw and user-weighted (the same pattern: weights are > 0)
        raw = (xt[start : start + BLOCK] @ x).tocsr()
        raw.sort_indices()
        soft = raw
        if user_discount:  # no discount: the weighted co-counts are the raw ones, not a second product
            soft = (xt[start : start + BLOCK] @ weighted).tocsr()
            soft.sort_indices()
            assert raw.nnz == soft.nnz
        block = raw.tocoo()
        i, j, c, w = block.row + start, block.col, block.data, soft.data
        keep = i != j
        i, j, c, w = i[keep], j[keep], c[keep], w[keep]
        sim = w / np.sqrt(norms[i] * norms[j]) * (c / (c + shrink))
        order = np.lexsort((-sim, i))
        i, j, sim = i[order], j[order], sim[order]
        first = np.searchsorted(i, i, side="left")
        rank = np.arange(len(i)) - first
        top = rank < neighbours
        rows.append(i[top])
        cols.append(j[top])
        vals.append(sim[top].astype(np.float32))
    if not rows:
        return sparse.csr_matrix((n_items, n_items), dtype=np.float32)
    return sparse.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n_items, n_items)
    )


@register_term
class CooccurrenceTerm(ScoreTerm):
    """similar(i) = the shrunk cosine of i with every item; score(u, i) = the sum over u's items j of S[j, i]."""

    type = "cooccurrence"
    behavioural = True
    Params = CooccurrenceParams

    def __init__(self, params: TermParams):
        super().__init__(params)
        self._neighbours: sparse.csr_matrix | None = None
        self._rows: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # loaded (indptr, indices, values)
        self.history: UserHistory | None = None

    @property
    def neighbours(self) -> sparse.csr_matrix | None:
        """items x items, the strongest per row; a loaded term makes the matrix from its rows on first use (a
        similar-items query reads one row, and needs no scipy: ~0.1 s of a CLI query's start)."""
        if self._neighbours is None and self._rows is not None:
            from scipy import sparse

            indptr, indices, values = self._rows
            n = len(indptr) - 1
            self._neighbours = sparse.csr_matrix((values, indices, indptr), shape=(n, n))
        return self._neighbours

    @neighbours.setter
    def neighbours(self, matrix: sparse.csr_matrix | None) -> None:
        self._neighbours, self._rows = matrix, None

    @classmethod
    def check(cls, params: TermParams, config) -> None:
        assert isinstance(params, CooccurrenceParams)
        if params.neighbours < 1 or params.neighbours > 10_000:
            raise ConfigError(f"neighbours: {params.neighbours!r} is out of range [1, 10000]")
        if params.shrink < 0:
            raise ConfigError(f"shrink: {params.shrink!r} must be >= 0")
        if not 0 <= params.user_discount <= 1:
            raise ConfigError(f"user_discount: {params.user_discount!r} is out of range [0, 1]")

    def fit(self, ctx: FitContext) -> None:
        from scipy import sparse

        assert isinstance(self.params, CooccurrenceParams)
        self.history = UserHistory.distinct(ctx.users, ctx.items, ctx.n_users)
        ones = np.ones(len(self.history.items), np.float32)
        x = sparse.csr_matrix((ones, self.history.items, self.history.indptr), shape=(ctx.n_users, ctx.n_items))
        self.neighbours = cooccurrence_neighbours(
            x, self.params.neighbours, self.params.shrink, self.params.user_discount
        )

    def score(self, user_rows: np.ndarray, item_rows: np.ndarray | None = None) -> np.ndarray:
        assert self.neighbours is not None and self.history is not None
        had = self.history.sparse(user_rows, self.neighbours.shape[0])
        product = had @ self.neighbours
        cols = product if item_rows is None else product[:, np.asarray(item_rows)]
        return np.asarray(cols.toarray(), dtype=np.float32)

    def similar(self, item_row: int) -> np.ndarray:
        assert self.neighbours is not None
        return np.asarray(self.neighbours[item_row].toarray()).ravel()

    def similar_entries(self, item_row: int) -> tuple[np.ndarray, np.ndarray]:
        if self._rows is not None:
            indptr, indices, values = self._rows
        else:
            assert self.neighbours is not None
            indptr, indices, values = self.neighbours.indptr, self.neighbours.indices, self.neighbours.data
        start, end = indptr[item_row], indptr[item_row + 1]
        return indices[start:end].astype(np.int64), values[start:end].astype(np.float64)

    def extend(self, new: NewItems) -> None:
        """New items were had by nobody: empty rows and columns."""
        from scipy import sparse

        assert self.neighbours is not None
        n = self.neighbours.shape[0] + new.count
        m = self.neighbours.tocoo()
        self.neighbours = sparse.csr_matrix((m.data, (m.row, m.col)), shape=(n, n))

    def save(self, folder: Path) -> None:
        assert self.neighbours is not None and self.history is not None
        m = self.neighbours
        arrays = {
            "indptr": m.indptr.astype(np.int64),
            "indices": m.indices.astype(np.int64),
            "values": m.data.astype(np.float32),
        }
        for name, array in arrays.items():
            np.save(folder / f"{name}.npy", array, allow_pickle=False)
        save_history(folder, self.history)

    @classmethod
    def load(cls, files: TermFiles, params: TermParams, n_users: int, n_items: int) -> CooccurrenceTerm:
        # each similar query reads a row of each at random: mapped now, not a fault at a time in the first queries
        indptr, indices, values = (files.npy(name, populate=True) for name in ("indptr", "indices", "values"))
        shapes_ok = indptr.ndim == indices.ndim == values.ndim == 1 and len(indices) == len(values)
        if not shapes_ok or len(indptr) != n_items + 1 or indptr[0] != 0 or indptr[-1] != len(indices):
            raise ModelFileError(f"{files.where}: co-occurrence rows do not match {n_items} items")
        if values.dtype != np.float32:  # finite: files.npy checked it
            raise ModelFileError(f"{files.where}: co-occurrence values are not float32")
        if not (np.issubdtype(indptr.dtype, np.integer) and np.issubdtype(indices.dtype, np.integer)):
            raise ModelFileError(f"{files.where}: co-occurrence rows are not integer arrays")
        scan = not files.known("indptr", "indices")
        bad = scan and (
            np.any(np.diff(indptr) < 0) or (len(indices) and (indices.min() < 0 or indices.max() >= n_items))
        )
        if bad:
            raise ModelFileError(f"{files.where}: co-occurrence neighbours name items outside the catalogue")
        history = files.history(n_users, n_items)
        term = cls(params)
        term._rows = (indptr, indices, values)
        term.history = history
        return term
