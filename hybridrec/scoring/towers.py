"""The towers' score, mu + b_u + b_i + <u, v> (+ an MLP residual): the one place this formula lives.

`head` and `head_matrix` work on numpy arrays and torch tensors alike, so the network trains with the same code
that serves queries. `TowerScores` holds the exported vectors and answers in numpy: no torch on the query path
(unless the model has the MLP residual).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

# (user vectors, item vectors) of aligned rows -> the MLP residual per row
Residual = Callable[[np.ndarray, np.ndarray], np.ndarray]


def head(mu: Any, b_u: Any, b_i: Any, u: Any, v: Any) -> Any:
    """Scores of aligned (user, item) rows: mu + b_u + b_i + <u, v>."""
    return mu + b_u + b_i + (u * v).sum(-1)


def head_matrix(mu: Any, b_u: Any, b_i: Any, u: Any, v: Any) -> Any:
    """Scores of every user row against every item row: (users x items). The dot products are added in place:
    the same sums in the same order as mu + b_u + b_i + u v^T, one (users x items) array fewer (evaluation
    scores a whole catalogue per user chunk)."""
    scores = mu + b_u[:, None] + b_i[None, :]
    scores += u @ v.T
    return scores


def unit_rows(m: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1 (zero rows stay zero)."""
    norm = np.linalg.norm(m, axis=1, keepdims=True)
    return (m / np.where(norm > 0, norm, 1.0)).astype(np.float32)


@dataclass
class TowerScores:
    """The towers' output for every known user and item, and the scores made from it.

    `item_queries` are what similar items query with when they are not the item vectors themselves (the
    "bought with it" blend of `model.user_history.similar_weight`)."""

    global_mean: float
    user_vectors: np.ndarray
    user_bias: np.ndarray
    item_vectors: np.ndarray
    item_bias: np.ndarray
    item_queries: np.ndarray | None = None
    residual: Residual | None = None

    @property
    def n_users(self) -> int:
        return len(self.user_vectors)

    @property
    def n_items(self) -> int:
        return len(self.item_vectors)

    def for_vectors(self, u: np.ndarray, b_u: np.ndarray, v: np.ndarray, b_i: np.ndarray) -> np.ndarray:
        """Scores of aligned rows of given vectors (users or items the tables do not hold, such as new items)."""
        scores = head(self.global_mean, b_u, b_i, u, v)
        if self.residual is not None:
            scores = scores + self.residual(u, v)
        return np.asarray(scores, dtype=np.float32)

    def pairs(self, user_rows: np.ndarray, item_rows: np.ndarray) -> np.ndarray:
        """Scores of aligned (user row, item row) pairs."""
        u, i = np.asarray(user_rows), np.asarray(item_rows)
        return self.for_vectors(self.user_vectors[u], self.user_bias[u], self.item_vectors[i], self.item_bias[i])

    def matrix(self, user_rows: np.ndarray, item_rows: np.ndarray | None = None) -> np.ndarray:
        """users x items (all items when item_rows is None)."""
        return self.for_users(self.user_vectors[user_rows], self.user_bias[user_rows], item_rows)

    def for_users(self, u: np.ndarray, b_u: np.ndarray, item_rows: np.ndarray | None = None) -> np.ndarray:
        """users x items for given user vectors and biases (users the tables do not hold, such as unknown users)."""
        v = self.item_vectors if item_rows is None else self.item_vectors[item_rows]
        b = self.item_bias if item_rows is None else self.item_bias[item_rows]
        scores = head_matrix(self.global_mean, b_u, b, u, v)
        if self.residual is not None:
            n_u, n_i = scores.shape
            flat = self.residual(np.repeat(u, n_i, 0), np.tile(v, (n_u, 1)))
            scores = scores + np.reshape(flat, (n_u, n_i))
        return np.asarray(scores, dtype=np.float32)

    def query_vector(self, row: int) -> np.ndarray:
        """What the index is queried with for similar items of item `row`."""
        return (self.item_queries if self.item_queries is not None else self.item_vectors)[row]

    def similar_scores(self, row: int) -> np.ndarray:
        """Cosine of item `row`'s query vector with every item vector: the index's scores, computed exactly."""
        query = self.query_vector(row).astype(np.float64)
        if self.item_queries is None:  # item queries are already a blend of unit vectors
            query = query / max(float(np.linalg.norm(query)), np.finfo(np.float32).tiny)
        norms = np.linalg.norm(self.item_vectors, axis=1)
        return (self.item_vectors @ query) / np.where(norms > 0, norms, np.inf)

    def extend(self, vectors: np.ndarray, bias: np.ndarray) -> None:
        """New catalogue items from content: they have no history, so they query with their own vector."""
        self.item_vectors = np.concatenate([self.item_vectors, vectors.astype(np.float32)])
        self.item_bias = np.concatenate([self.item_bias, bias.astype(np.float32)])
        if self.item_queries is not None:
            self.item_queries = np.concatenate([self.item_queries, unit_rows(vectors)])


def similar_queries(vectors: np.ndarray, bought_with: np.ndarray | None, weight: float) -> np.ndarray | None:
    """What similar items query the index with: None (the item vectors themselves) unless a history weight is
    set; items no user history holds keep their own vector."""
    if bought_with is None or weight <= 0:
        return None
    own, bought = unit_rows(vectors), unit_rows(bought_with)
    missing = ~np.any(bought_with != 0, axis=1)
    bought[missing] = own[missing]
    return ((1.0 - weight) * own + weight * bought).astype(np.float32)
