"""The popularity baseline a held-out result is read against, scored by the same code on the same split.

Ranking: every user gets the items seen most often in the training rows (ties: the pessimistic rule of the metric).
Ratings: an item's mean training rating, the global training mean for an item with none. It offers the parts of
HybridRecommender that `holdout.evaluate` calls, so `evaluate(PopularityBaseline(rec, train), test, ...)` runs the
exact protocol (same users, same sampled negatives, same exclusions) as `evaluate(rec, test, ...)`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from hybridrec.evaluation.streaming import ItemSets


class PopularityBaseline:
    """Item popularity from training counts, over a fitted recommender's catalogue and users.

    Parameters
    ----------
    rec : HybridRecommender
        The fitted model whose ids, seen items and settings the baseline shares.
    train : DataFrame
        The training rows the model was fitted on (`item_id`, `rating`).
    """

    def __init__(self, rec, train: pd.DataFrame):
        self.users_, self.items_ = rec.users_, rec.items_
        self.feedback_, self.config = rec.feedback_, rec.config
        self.seen_ = rec.seen_  # training and validation items per user (UserHistory): what rankings leave out
        rows = self.items_.indices(train["item_id"])
        n_items = len(self.items_)
        self.counts = np.bincount(rows, minlength=n_items).astype(np.float64)
        # the same counts in float32 while exact (below 2**24): full-ranking rows of half the bytes, the same order
        self.counts32 = self.counts.astype(np.float32) if self.counts.max(initial=0) < 2**24 else None
        self.order = np.lexsort(
            (np.arange(n_items), -self.counts)
        )  # every user's ranking: by count, ties to the lower row
        ratings = train["rating"].to_numpy(np.float64)
        sums = np.bincount(rows, weights=ratings, minlength=n_items)
        global_mean = float(ratings.mean()) if len(ratings) else 0.0
        self.item_mean = np.where(self.counts > 0, sums / np.maximum(self.counts, 1), global_mean)

    def score_matrix(self, user_rows: np.ndarray, item_rows: np.ndarray | None = None) -> np.ndarray:
        counts = self.counts32 if self.counts32 is not None else self.counts
        cols = counts if item_rows is None else counts[np.asarray(item_rows, np.int64)]
        return np.tile(cols, (len(user_rows), 1))

    def full_ranking_top_k(self, n_users: int, k: int, exclude: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        """What `top_k_indices` gives on `n_users` rows of `score_matrix` minus the `exclude` (row, item) pairs,
        without ranking the whole catalogue per user: each row's top k are the first k items of the one popularity
        order that the row does not exclude (-1 past the end)."""
        rows, items = (np.asarray(a, np.int64) for a in exclude)
        width = min(len(self.order), k + int(np.bincount(rows, minlength=n_users).max(initial=0)))
        candidates = np.broadcast_to(self.order[:width], (n_users, width))
        excluded = ItemSets.from_pairs(rows, items, n_users, len(self.order))
        free = ~excluded.contains(np.arange(n_users, dtype=np.int64)[:, None], candidates)
        rank = np.cumsum(free, axis=1) - 1
        at_row, at_col = np.nonzero(free & (rank < k))
        top = np.full((n_users, k), -1, dtype=np.int64)
        top[at_row, rank[at_row, at_col]] = candidates[at_row, at_col]
        return top

    def score_pairs(self, user_rows: np.ndarray, item_rows: np.ndarray) -> np.ndarray:
        return self.counts[np.asarray(item_rows, np.int64)]

    def predict(self, user_ids, item_ids) -> np.ndarray:
        return self.item_mean[self.items_.indices(item_ids)]
