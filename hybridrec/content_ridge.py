"""A closed-form linear content model beside the network, for cold-start items (model.content_ridge_weight).

A cold item is only its content. The network reads content through towers trained mostly on warm items, whose ID
embeddings carry much of what they learn; a ridge regression from an item's content tokens to who has it is the
other classic answer (LightFM without the factorisation): convex, exact, and wrong in different places. Scores are
score(u, i) = x_u F_s (F_s' F_s + l2 I)^-1 f_i, with x_u the items u has, F_s their token rows and f_i item i's
tokens. Stored as the projection F (F_s' F_s + l2 I)^-1 (items x tokens), so a user's profile is the sum of the
projection rows of their items and any item with tokens, new ones included, can be scored. Numpy and scipy only.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from hybridrec.errors import ConfigError
from hybridrec.features.categorical import OOV
from hybridrec.history_scores import history_rows, pairs_from_users

if TYPE_CHECKING:
    from scipy import sparse

# the tokens x tokens system is dense, and so is the items x tokens projection: past these they no longer fit a laptop
MAX_TOKENS = 20_000
MAX_CELLS = 50_000_000
FILES = ("content_ridge", "content_tokens_indptr", "content_tokens_indices", "content_indptr", "content_items")
# users and items sampled at fit time to put the ridge's scores on the network's scale
SCALE_USERS, SCALE_ITEMS = 1000, 5000


def token_matrix(categorical: list[np.ndarray], vocab_sizes: list[int]) -> sparse.csr_matrix:
    """Items x tokens, 1 where the item has the value: one block per categorical, multi-valued, word or binned
    numeric column of the item features; padding and the out-of-vocabulary slot are no token."""
    from scipy import sparse

    blocks = []
    for codes, size in zip(categorical, vocab_sizes):
        rows = np.repeat(np.arange(len(codes)), codes.shape[1])
        cols = codes.ravel()
        keep = cols > OOV
        block = sparse.csr_matrix(
            (np.ones(int(keep.sum()), np.float32), (rows[keep], cols[keep] - OOV - 1)),
            shape=(len(codes), max(size - OOV - 1, 0)),
        )
        block.data[:] = 1.0  # a value repeated in a cell counts once
        blocks.append(block)
    n = len(categorical[0]) if categorical else 0
    return sparse.hstack(blocks, format="csr") if blocks else sparse.csr_matrix((n, 0), dtype=np.float32)


def check_size(n_items: int, n_tokens: int) -> None:
    """Fail before training, not after it, when the dense solve or projection would not fit."""
    if n_tokens == 0:
        raise ConfigError("model.content_ridge_weight: the items have no categorical, word or binned features")
    if n_tokens > MAX_TOKENS or n_items * n_tokens > MAX_CELLS:
        raise ConfigError(
            f"model.content_ridge_weight: {n_items} items x {n_tokens} content tokens is more than a dense ridge "
            f"allows ({MAX_TOKENS} tokens, {MAX_CELLS} cells); raise features.min_count"
        )


def fit_projection(tokens: sparse.csr_matrix, fitted_items: np.ndarray, l2: float) -> np.ndarray:
    """F (F_s' F_s + l2 I)^-1 over every item, with F_s the token rows of `fitted_items` (those with
    interactions): the ridge regression of each user's items on the tokens, shared by all users."""
    fs = tokens[np.unique(fitted_items)]
    gram = (fs.T @ fs).toarray().astype(np.float64)
    gram[np.diag_indices_from(gram)] += l2
    inverse = np.linalg.inv(gram)
    return np.asarray(tokens @ inverse, dtype=np.float32)


class ContentRidgeScores:
    """score(u, i) = scale x (the sum of the projection rows of u's items) . (item i's tokens)."""

    def __init__(
        self,
        projection: np.ndarray,
        tokens: sparse.csr_matrix,
        indptr: np.ndarray,
        items: np.ndarray,
        scale: float = 1.0,
    ):
        self.projection = projection.astype(np.float32, copy=False)
        self.tokens = tokens.tocsr().astype(np.float32)
        self.indptr = indptr.astype(np.int64, copy=False)
        self.items = items.astype(np.int64, copy=False)
        self.scale = float(scale)

    @classmethod
    def fit(
        cls, tokens: sparse.csr_matrix, users: np.ndarray, items: np.ndarray, n_users: int, l2: float
    ) -> ContentRidgeScores:
        """From (user row, item row) interactions; repeats count once."""
        pairs = np.unique(np.stack([users, items]).astype(np.int64), axis=1)
        indptr = np.searchsorted(pairs[0], np.arange(n_users + 1)).astype(np.int64)
        return cls(fit_projection(tokens, pairs[1], l2), tokens, indptr, pairs[1])

    def profiles(self, user_rows: np.ndarray) -> np.ndarray:
        """users x tokens: each user's ridge coefficients."""
        had = history_rows(self.indptr, self.items, user_rows, len(self.projection), per_sqrt_length=False)
        return np.asarray(had @ self.projection, dtype=np.float32)

    def for_users(self, user_rows: np.ndarray, item_rows: np.ndarray | None = None) -> np.ndarray:
        """users x items (all items when item_rows is None)."""
        tokens = self.tokens if item_rows is None else self.tokens[np.asarray(item_rows)]
        return self.for_tokens(user_rows, tokens)

    def for_tokens(self, user_rows: np.ndarray, tokens: sparse.csr_matrix) -> np.ndarray:
        """users x items for items given by their token rows (items outside the catalogue, too)."""
        return (self.scale * np.asarray((tokens @ self.profiles(user_rows).T).T)).astype(np.float32)

    def for_pairs(self, user_rows: np.ndarray, item_rows: np.ndarray) -> np.ndarray:
        return pairs_from_users(self.for_users, user_rows, item_rows)

    def with_new_items(self, tokens: sparse.csr_matrix) -> ContentRidgeScores:
        """New catalogue items (add_items): scored through their tokens; nobody has them, so no projection rows."""
        from scipy import sparse

        grown = np.concatenate([self.projection, np.zeros((tokens.shape[0], self.projection.shape[1]), np.float32)])
        return ContentRidgeScores(
            grown, sparse.vstack([self.tokens, tokens], format="csr"), self.indptr, self.items, self.scale
        )

    def check(self, n_users: int, n_items: int) -> str | None:
        """Why these arrays do not fit a model of this size (None when they do)."""
        if self.projection.shape[0] != n_items or self.tokens.shape != self.projection.shape:
            return f"content ridge arrays are {self.projection.shape} and {self.tokens.shape}, expected {n_items} rows"
        if len(self.indptr) != n_users + 1 or self.indptr[-1] != len(self.items) or np.any(np.diff(self.indptr) < 0):
            return "content ridge histories do not match the users"
        if len(self.items) and (self.items.min() < 0 or self.items.max() >= n_items):
            return "content ridge histories name items outside the catalogue"
        if not np.isfinite(self.scale):
            return "content ridge scale is not a number"
        return None

    def save(self, folder: Path) -> None:
        arrays = (self.projection, self.tokens.indptr, self.tokens.indices, self.indptr, self.items)
        for name, array in zip(FILES, arrays):
            np.save(folder / f"{name}.npy", np.asarray(array), allow_pickle=False)

    @classmethod
    def from_arrays(cls, arrays: list[np.ndarray], scale: float) -> ContentRidgeScores:
        from scipy import sparse

        projection, token_indptr, token_indices, indptr, items = arrays
        too_wide = len(token_indices) and token_indices.max() >= projection.shape[1]
        if len(token_indptr) != len(projection) + 1 or too_wide:
            raise ValueError("content ridge token rows do not match the projection")
        ones = np.ones(len(token_indices), np.float32)
        tokens = sparse.csr_matrix((ones, token_indices, token_indptr), shape=projection.shape)
        return cls(projection, tokens, indptr, items, scale)


def blend_scale(model_scores: np.ndarray, ridge_scores: np.ndarray, weight: float) -> float:
    """The factor on the ridge's scores that gives it `weight` of the blend once both are put on one spread:
    weight / (1 - weight) x spread(model) / spread(ridge), the spreads taken over a sample of users x items. One
    number for all users, so a score never depends on which other items are scored with it. 0 when the ridge is
    flat (no user has an item with tokens)."""
    model_spread, ridge_spread = float(np.std(model_scores)), float(np.std(ridge_scores))
    if not np.isfinite(ridge_spread) or ridge_spread <= 0 or not np.isfinite(model_spread):
        return 0.0
    return weight / (1.0 - weight) * model_spread / ridge_spread
