"""The one interface every benchmarked model implements (hybridrec included), and shared helpers.

Raw ids only: adapters map ids to their own rows internally. Tasks:
  rating   predict(user_ids, item_ids) -> predicted ratings                    (P1)
  ranking  score(user_ids, item_ids) -> (n_users, n_items) scores, higher=better (P2, P3)
  similar  similar(item_id, k) -> up to k raw item ids, best first, never the query (P4)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import sparse

from hybridrec.data.dataset import Dataset
from hybridrec.evaluation.metrics import recall_ndcg_at_k, top_k_indices

THREADS = 2
# LightFM and implicit's BPR update shared weights from several threads at once (Hogwild SGD): on more than one
# thread the same seed gives different numbers from run to run, so they train on one
SGD_THREADS = 1


@dataclass
class Context:
    """What a model may use besides the training rows: validation rows (for early stopping / tuning), the
    catalogue's content, the cold items and the hybridrec Dataset of the split."""

    protocol: str
    dataset_key: str
    task: str  # rating | ranking | cold | similar
    validation: pd.DataFrame
    dataset: Dataset  # the split's hybridrec Dataset (items, users, schema; interactions = all split rows)
    documents: dict[str, str]  # item id -> metadata text
    feature_tokens: dict[str, list[str]]  # item id -> content tokens (LightFM item features)
    cold_items: list[str] = field(default_factory=list)
    implicit: bool = False  # ratings are interaction weights (P2 implicit view, Online Retail)
    seed: int = 42
    quick: bool = False


class Model:
    """Base adapter. `params` are the hyperparameters (recorded with each result); learned state ends in `_`."""

    name = "model"
    tasks: frozenset[str] = frozenset()

    def __init__(self, **params):
        self.params = params

    def config(self) -> dict:
        return dict(self.params)

    def fit(self, train: pd.DataFrame, items: pd.DataFrame, ctx: Context) -> Model:
        raise NotImplementedError

    def predict(self, user_ids, item_ids) -> np.ndarray:
        raise NotImplementedError

    def score(self, user_ids, item_ids) -> np.ndarray:
        raise NotImplementedError

    def similar(self, item_id: str, k: int) -> list[str]:
        raise NotImplementedError


class MatrixModel(Model):
    """Models over a users x items matrix: the catalogue (all items of the split's dataset) fixes the columns."""

    def _index(self, train: pd.DataFrame, items: pd.DataFrame, ctx: Context, positives_only: bool = True) -> None:
        self.item_ids_ = np.asarray(items["item_id"], dtype=object)
        self.item_row_ = {i: r for r, i in enumerate(self.item_ids_)}
        self.user_ids_ = np.asarray(sorted(set(train["user_id"]) | set(ctx.validation["user_id"])), dtype=object)
        self.user_row_ = {u: r for r, u in enumerate(self.user_ids_)}
        self.X_ = self.matrix(train, ctx, positives_only)

    def matrix(self, frame: pd.DataFrame, ctx: Context, positives_only: bool = True) -> sparse.csr_matrix:
        """Binary user x item matrix; explicit data keeps ratings >= 4 when positives_only (cold-start protocol)."""
        if positives_only and not ctx.implicit and ctx.task == "cold":
            frame = frame[frame["rating"] >= 4.0]
        rows = np.fromiter((self.user_row_.get(u, -1) for u in frame["user_id"]), np.int64, len(frame))
        cols = np.fromiter((self.item_row_.get(i, -1) for i in frame["item_id"]), np.int64, len(frame))
        ok = (rows >= 0) & (cols >= 0)
        x = sparse.csr_matrix(
            (np.ones(int(ok.sum()), np.float32), (rows[ok], cols[ok])), shape=(len(self.user_ids_), len(self.item_ids_))
        )
        x.data[:] = 1.0  # duplicates summed above: back to binary
        return x

    def rows(self, user_ids) -> np.ndarray:
        return np.fromiter((self.user_row_.get(u, -1) for u in user_ids), np.int64)

    def cols(self, item_ids) -> np.ndarray:
        return np.fromiter((self.item_row_.get(i, -1) for i in item_ids), np.int64)

    def _score_rows(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Scores of known user rows x known item columns."""
        raise NotImplementedError

    def score(self, user_ids, item_ids) -> np.ndarray:
        rows, cols = self.rows(user_ids), self.cols(item_ids)
        out = np.zeros((len(rows), len(cols)), np.float64)
        ur, ic = rows >= 0, cols >= 0
        if ur.any() and ic.any():
            out[np.ix_(ur, ic)] = self._score_rows(rows[ur], cols[ic])
        return out

    def validation_ndcg(self, ctx: Context, max_users: int = 3000) -> float:
        """Full-ranking NDCG@10 of the validation rows (training items excluded), for choosing hyperparameters."""
        val = ctx.validation
        if not ctx.implicit and ctx.task == "cold":
            val = val[val["rating"] >= 4.0]
        rows, cols = self.rows(val["user_id"]), self.cols(val["item_id"])
        ok = (rows >= 0) & (cols >= 0)
        if not ok.any():
            return float("nan")
        relevant = pd.DataFrame({"u": rows[ok], "i": cols[ok]}).groupby("u")["i"].agg(set)
        users = relevant.index.to_numpy()
        if len(users) > max_users:
            users = np.sort(np.random.default_rng(0).choice(users, max_users, replace=False))
        scores = self._score_rows(users, np.arange(len(self.item_ids_)))
        top = top_k_indices(scores, 10, [self.X_[u].indices for u in users])
        return recall_ndcg_at_k(top, [relevant[u] for u in users], 10)["ndcg"]

    def _similar_from(self, sims: np.ndarray, item_id: str, k: int) -> list[str]:
        """Top-k of a similarity row (the query excluded; items with no similarity at all are never returned)."""
        c = self.item_row_[item_id]
        s = np.array(sims, dtype=np.float64)
        s[c] = -np.inf
        s[~np.isfinite(s)] = -np.inf
        top = np.argpartition(-s, min(k, len(s) - 1))[: k + 1]
        top = top[np.argsort(-s[top], kind="stable")]
        return [self.item_ids_[t] for t in top if np.isfinite(s[t]) and s[t] > -np.inf][:k]


def cosine_rows(m: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero)."""
    norm = np.linalg.norm(m, axis=1, keepdims=True)
    return m / np.where(norm > 0, norm, 1.0)
