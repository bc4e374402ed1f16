"""Short baselines kept in the harness: popularity, item-kNN on co-occurrence, EASE, TF-IDF content kNN."""

from __future__ import annotations

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.preprocessing import normalize

from benchmarks.adapters.base import MatrixModel
from hybridrec.scoring.ease import closed_form_weights


class Popularity(MatrixModel):
    """Every user gets the most-interacted items; `similar` returns them too, whatever the query."""

    name = "popularity"
    tasks = frozenset({"ranking", "similar"})

    def fit(self, train, items, ctx):
        self._index(train, items, ctx)
        self.pop_ = np.asarray(self.X_.sum(0), dtype=np.float64).ravel()
        return self

    def _score_rows(self, rows, cols):
        return np.broadcast_to(self.pop_[cols], (len(rows), len(cols)))

    def similar(self, item_id, k):
        return self._similar_from(self.pop_, item_id, k)


class ItemKNN(MatrixModel):
    """Item-item cosine on the binary co-occurrence matrix, each item keeping its `neighbours` strongest links;
    a user's score for an item is the summed similarity to the items they have."""

    name = "itemknn"
    tasks = frozenset({"ranking", "similar"})

    def __init__(self, neighbours: int = 100):
        super().__init__(neighbours=neighbours)

    def fit(self, train, items, ctx):
        self._index(train, items, ctx)
        co = (self.X_.T @ self.X_).toarray().astype(np.float32)
        n = np.sqrt(np.diag(co)).astype(np.float32)
        denom = np.outer(n, n)
        sim = np.divide(co, denom, out=np.zeros_like(co), where=denom > 0)
        np.fill_diagonal(sim, 0.0)
        self.full_sim_ = sim.copy()
        k = self.params["neighbours"]
        if k and k < sim.shape[0]:
            drop = np.argpartition(-sim, k, axis=0)[k:, :]  # per column j keep the k strongest i
            np.put_along_axis(sim, drop, 0.0, axis=0)
        self.sim_ = sim
        return self

    def _score_rows(self, rows, cols):
        return np.asarray(self.X_[rows] @ self.sim_[:, cols])

    def similar(self, item_id, k):
        return self._similar_from(self.full_sim_[self.item_row_[item_id]], item_id, k)


class EASE(MatrixModel):
    """EASE (Steck 2019): B = I - P / diag(P) with P = (X^T X + lambda I)^-1, zero diagonal; scores x_u B.
    lambda is chosen on the validation rows (full-ranking NDCG@10) from a fixed grid."""

    name = "ease"
    tasks = frozenset({"ranking", "similar"})
    GRID = (10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0)

    def fit(self, train, items, ctx):
        self._index(train, items, ctx)
        g = (self.X_.T @ self.X_).toarray().astype(np.float64)
        grid = self.params.get("lambdas") or ((500.0,) if ctx.quick else self.GRID)
        best = None
        for lam in grid:
            self.B_ = closed_form_weights(g, lam)  # the formula hybridrec's similar items blend in
            ndcg = self.validation_ndcg(ctx)
            if best is None or np.nan_to_num(ndcg, nan=-1.0) > np.nan_to_num(best[0], nan=-1.0):
                best = (ndcg, lam, self.B_)
        self.val_ndcg_, self.lambda_, self.B_ = best
        self.params["lambda"] = self.lambda_
        return self

    def _score_rows(self, rows, cols):
        return np.asarray(self.X_[rows] @ self.B_[:, cols])

    def similar(self, item_id, k):
        return self._similar_from(self.B_[self.item_row_[item_id]], item_id, k)


class TfidfKNN(MatrixModel):
    """Content only: TF-IDF of each item's metadata text; `similar` = text cosine, a user's score for an item =
    cosine between the item and the sum of the (unit) vectors of the items the user has (positives only on
    explicit data)."""

    name = "tfidf-knn"
    tasks = frozenset({"ranking", "cold", "similar"})

    def fit(self, train, items, ctx):
        self._index(train, items, ctx)
        docs = [ctx.documents.get(i, "") for i in self.item_ids_]
        vec = TfidfVectorizer(sublinear_tf=True, min_df=1, token_pattern=r"(?u)\b\w[\w'-]*\b")
        self.V_ = vec.fit_transform(docs).astype(np.float32).tocsr()  # rows are unit length
        self.P_ = normalize((self.X_ @ self.V_).tocsr())  # user profiles, unit length, sparse
        return self

    def _score_rows(self, rows, cols):
        return (self.P_[rows] @ self.V_[cols].T).toarray()

    def similar(self, item_id, k):
        row = self.V_[self.item_row_[item_id]]
        return self._similar_from((self.V_ @ row.T).toarray().ravel(), item_id, k)
