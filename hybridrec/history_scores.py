"""The item-item term (model.item_item) at query time, in numpy: no torch on the serving path."""

from __future__ import annotations

from pathlib import Path

import numpy as np

FILES = ("item_item", "history_indptr", "history_items")
QUERY_NORMS = "item_query_norms"  # optional: ||bought-with vector|| per item, for similar items


class HistoryItemScores:
    """score(u, i) = sum over u's training history of W[j, i] / sqrt(len(history)), with W in item-row space."""

    def __init__(
        self, matrix: np.ndarray, indptr: np.ndarray, items: np.ndarray, query_norms: np.ndarray | None = None
    ):
        self.matrix = matrix.astype(np.float32, copy=False)
        self.indptr = indptr.astype(np.int64, copy=False)
        self.items = items.astype(np.int64, copy=False)
        # the norm of each item's "bought with it" user vector (see similar_scores); None when not computed
        self.query_norms = None if query_norms is None else query_norms.astype(np.float32, copy=False)

    def check(self, n_users: int, n_items: int) -> str | None:
        """Why these arrays do not fit a model of this size (None when they do)."""
        if self.matrix.shape != (n_items, n_items):
            return f"item-item weights are {self.matrix.shape}, expected ({n_items}, {n_items})"
        if len(self.indptr) != n_users + 1 or self.indptr[-1] != len(self.items) or np.any(np.diff(self.indptr) < 0):
            return "user histories do not match the users"
        if len(self.items) and (self.items.min() < 0 or self.items.max() >= n_items):
            return "user histories name items outside the catalogue"
        if self.query_norms is not None and self.query_norms.shape != (n_items,):
            return "item query norms do not match the items"
        return None

    def for_users(self, user_rows: np.ndarray, item_rows: np.ndarray | None = None) -> np.ndarray:
        """users x items (all items when item_rows is None): one sparse (users x items) @ W product."""
        users = history_rows(self.indptr, self.items, user_rows, self.matrix.shape[0], per_sqrt_length=True)
        cols = self.matrix if item_rows is None else self.matrix[:, item_rows]
        return np.asarray(users @ cols, dtype=np.float32)

    def for_pairs(self, user_rows: np.ndarray, item_rows: np.ndarray) -> np.ndarray:
        """Aligned (user, item) rows -> one score each."""
        return pairs_from_users(self.for_users, user_rows, item_rows)

    def similar_scores(
        self, row: int, blended: np.ndarray, item_norms: np.ndarray, weight: float, pairwise: float = 1.0
    ) -> np.ndarray:
        """Similar-item scores for item `row` over the catalogue. `blended` is the index's score, (1 - w) cos(own, v)
        + w cos(q, v), with q the user vector of someone whose history is only this item; the "bought with it" part
        is that user's logit without item bias, <q, v> plus the mutual pairwise weight (W[row, i] + W[i, row]) / 2:
        buying together goes both ways, and the column adds the evidence of i's buyers going on to this item. That
        share is normalised the way <q, v> is in the cosine, divided by ||q|| ||v||, and scaled by `pairwise`
        (model.similar_item_item_weight)."""
        if self.query_norms is None or self.query_norms[row] <= 0:
            return blended
        scale = self.query_norms[row] * np.where(item_norms > 0, item_norms, np.inf)
        mutual = 0.5 * (self.matrix[row] + self.matrix[:, row])
        return blended + weight * pairwise * mutual / scale

    def with_new_items(self, n_new: int) -> HistoryItemScores:
        """New catalogue items (add_items) have no history weights: zero rows and columns."""
        n = self.matrix.shape[0] + n_new
        grown = np.zeros((n, n), np.float32)
        grown[: self.matrix.shape[0], : self.matrix.shape[1]] = self.matrix
        norms = None if self.query_norms is None else np.concatenate([self.query_norms, np.zeros(n_new, np.float32)])
        return HistoryItemScores(grown, self.indptr, self.items, norms)

    def save(self, folder: Path) -> None:
        for name, array in zip(FILES, (self.matrix, self.indptr, self.items)):
            np.save(folder / f"{name}.npy", array, allow_pickle=False)
        if self.query_norms is not None:
            np.save(folder / f"{QUERY_NORMS}.npy", self.query_norms, allow_pickle=False)


def history_rows(indptr: np.ndarray, items: np.ndarray, user_rows: np.ndarray, n_items: int, per_sqrt_length: bool):
    """The users' histories as a sparse (users x items) matrix: 1 per item had, or 1/sqrt(history length)."""
    from scipy import sparse

    user_rows = np.asarray(user_rows, dtype=np.int64)
    starts, ends = indptr[user_rows], indptr[user_rows + 1]
    lengths = ends - starts
    history = [items[s:e] for s, e in zip(starts, ends)]
    columns = np.concatenate(history) if history else np.zeros(0, np.int64)
    per_user = 1.0 / np.sqrt(np.maximum(lengths, 1)) if per_sqrt_length else np.ones(len(lengths))
    weights = np.repeat(per_user, lengths).astype(np.float32)
    row_starts = np.concatenate([[0], np.cumsum(lengths)])
    return sparse.csr_matrix((weights, columns, row_starts), shape=(len(user_rows), n_items))


def pairs_from_users(for_users, user_rows: np.ndarray, item_rows: np.ndarray, block: int = 1024) -> np.ndarray:
    """Aligned (user, item) rows -> one score each from a users x all-items scorer; each distinct user once."""
    user_rows, item_rows = np.asarray(user_rows), np.asarray(item_rows)
    users, inverse = np.unique(user_rows, return_inverse=True)
    out = np.zeros(len(user_rows), np.float32)
    for start in range(0, len(users), block):
        scores = for_users(users[start : start + block])
        mine = (inverse >= start) & (inverse < start + block)
        out[mine] = scores[inverse[mine] - start, item_rows[mine]]
    return out
