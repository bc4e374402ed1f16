"""A closed-form linear content model as a score term, for cold-start items:
`{type: content_ridge, l2: 300, recommend_weight: 0.5}`.

A cold item is only its content. The network reads content through towers trained mostly on warm items, whose ID
embeddings carry much of what they learn; a ridge regression from an item's content tokens to who has it is the
other classic answer (LightFM without the factorisation): convex, exact, and wrong in different places. Scores are
score(u, i) = x_u F_s (F_s' F_s + l2 I)^-1 f_i, with x_u the items u has, F_s their token rows and f_i item i's
tokens. Stored as the projection F (F_s' F_s + l2 I)^-1 (items x tokens), so a user's profile is the sum of the
projection rows of their items and any item with tokens, new ones included, can be scored. Numpy and scipy only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from hybridrec.errors import ConfigError, ModelFileError
from hybridrec.features.categorical import OOV
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
    uses_ranking_loss,
)

if TYPE_CHECKING:
    from scipy import sparse

# the tokens x tokens system is dense, and so is the items x tokens projection: past these they no longer fit a laptop
MAX_TOKENS = 20_000
MAX_CELLS = 50_000_000


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
        raise ConfigError("the items have no categorical, word or binned features")
    if n_tokens > MAX_TOKENS or n_items * n_tokens > MAX_CELLS:
        raise ConfigError(
            f"{n_items} items x {n_tokens} content tokens is more than a dense ridge allows ({MAX_TOKENS} tokens,"
            f" {MAX_CELLS} cells); raise features.min_count"
        )


def fit_projection(tokens: sparse.csr_matrix, fitted_items: np.ndarray, l2: float) -> np.ndarray:
    """F (F_s' F_s + l2 I)^-1 over every item, with F_s the token rows of `fitted_items` (those with
    interactions): the ridge regression of each user's items on the tokens, shared by all users."""
    fs = tokens[np.unique(fitted_items)]
    gram = (fs.T @ fs).toarray().astype(np.float64)
    gram[np.diag_indices_from(gram)] += l2
    inverse = np.linalg.inv(gram)
    return np.asarray(tokens @ inverse, dtype=np.float32)


@dataclass
class ContentRidgeParams(TermParams):
    l2: float = 300.0  # ridge penalty


@register_term
class ContentRidgeTerm(ScoreTerm):
    """score(u, i) = (the sum of the projection rows of u's items) . (item i's tokens)."""

    type = "content_ridge"
    Params = ContentRidgeParams
    params: ContentRidgeParams

    def __init__(self, params: ContentRidgeParams):
        super().__init__(params)
        self.projection: np.ndarray | None = None
        self.tokens: sparse.csr_matrix | None = None
        self.history: UserHistory | None = None

    @classmethod
    def check(cls, params: TermParams, config) -> None:
        assert isinstance(params, ContentRidgeParams)  # built from cls.Params
        if params.l2 <= 0:
            raise ConfigError(f"l2: {params.l2!r} must be > 0")
        if config.model.variant == "id-only":
            raise ConfigError("an id-only model uses no item content; drop this term")
        if params.recommend_weight > 0 and not uses_ranking_loss(config):
            raise ConfigError(
                "needs a ranking train.loss (bpr, softmax or sampled-softmax): the blend is a ranking score, not a"
                " rating"
            )

    def fit(self, ctx: FitContext) -> None:
        tokens = ctx.content_tokens().tocsr().astype(np.float32)
        check_size(*tokens.shape)
        self.history = UserHistory.distinct(ctx.users, ctx.items, ctx.n_users)
        self.projection = fit_projection(tokens, self.history.items, self.params.l2)
        self.tokens = tokens

    def profiles(self, user_rows: np.ndarray) -> np.ndarray:
        """users x tokens: each user's ridge coefficients."""
        assert self.history is not None and self.projection is not None
        had = self.history.sparse(user_rows, len(self.projection))
        return np.asarray(had @ self.projection, dtype=np.float32)

    def for_tokens(self, user_rows: np.ndarray, tokens: sparse.csr_matrix) -> np.ndarray:
        """users x items for items given by their token rows (items outside the catalogue, too)."""
        return np.asarray((tokens @ self.profiles(user_rows).T).T, dtype=np.float32)

    def score(self, user_rows: np.ndarray, item_rows: np.ndarray | None = None) -> np.ndarray:
        assert self.tokens is not None
        tokens = self.tokens if item_rows is None else self.tokens[np.asarray(item_rows)]
        return self.for_tokens(user_rows, tokens)

    def score_history(
        self,
        item_rows_per_user: list[np.ndarray],
        item_rows: np.ndarray | None = None,
        weights: list[np.ndarray] | None = None,
    ) -> np.ndarray:
        assert self.projection is not None and self.tokens is not None
        profiles = np.asarray(history_matrix(item_rows_per_user, len(self.projection), weights) @ self.projection)
        tokens = self.tokens if item_rows is None else self.tokens[np.asarray(item_rows)]
        return np.asarray((tokens @ profiles.astype(np.float32).T).T, dtype=np.float32)

    def score_new(self, user_rows: np.ndarray, new: NewItems) -> np.ndarray:
        return self.for_tokens(user_rows, new.content_tokens())

    def extend(self, new: NewItems) -> None:
        """New catalogue items: scored through their tokens; nobody has them, so no projection rows."""
        from scipy import sparse

        assert self.projection is not None and self.tokens is not None
        self.projection = np.concatenate([self.projection, np.zeros((new.count, self.projection.shape[1]), np.float32)])
        self.tokens = sparse.vstack([self.tokens, new.content_tokens()], format="csr")

    def save(self, folder: Path) -> None:
        assert self.projection is not None and self.tokens is not None and self.history is not None
        arrays = {
            "projection": self.projection,
            "tokens_indptr": self.tokens.indptr,
            "tokens_indices": self.tokens.indices,
        }
        for name, array in arrays.items():
            np.save(folder / f"{name}.npy", np.asarray(array), allow_pickle=False)
        save_history(folder, self.history)

    @classmethod
    def load(cls, files: TermFiles, params: TermParams, n_users: int, n_items: int) -> ContentRidgeTerm:
        assert isinstance(params, ContentRidgeParams)  # built from cls.Params
        from scipy import sparse

        projection = files.npy("projection")
        indptr, indices = files.npy("tokens_indptr"), files.npy("tokens_indices")
        if projection.ndim != 2 or projection.shape[0] != n_items or not np.all(np.isfinite(projection)):
            raise ModelFileError(f"{files.where}: the content ridge projection does not fit {n_items} items")
        too_wide = len(indices) and (indices.min() < 0 or indices.max() >= projection.shape[1])
        bad_rows = len(indptr) != n_items + 1 or indptr[0] != 0 or indptr[-1] != len(indices)
        if too_wide or bad_rows or np.any(np.diff(indptr) < 0):
            raise ModelFileError(f"{files.where}: content ridge token rows do not match the projection")
        history = files.history(n_users, n_items)
        term = cls(params)
        ones = np.ones(len(indices), np.float32)
        term.projection, term.history = projection, history
        term.tokens = sparse.csr_matrix((ones, indices, indptr), shape=projection.shape)
        return term
