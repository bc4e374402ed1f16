"""Held-out evaluation of a fitted HybridRecommender: ratings, top-N (sampled and full ranking), cold items."""

from __future__ import annotations

import numpy as np
import pandas as pd

from hybridrec.evaluate import hit_rate_ndcg_sampled, mae, per_user_auc, ranking_metrics, rmse

POSITIVE_RATING = 4.0  # explicit data: a rating >= 4 counts as a positive for ranking metrics


def score_matrix(rec, user_rows: np.ndarray, item_rows: np.ndarray | None = None) -> np.ndarray:
    """Full-head scores of users x items (all items when item_rows is None), unclipped."""
    v = rec.item_vectors_ if item_rows is None else rec.item_vectors_[item_rows]
    b = rec.item_bias_ if item_rows is None else rec.item_bias_[item_rows]
    u, bu = rec.user_vectors_[user_rows], rec.user_bias_[user_rows]
    scores = rec.global_mean_ + bu[:, None] + b[None, :] + u @ v.T
    for term in rec.score_terms:
        scores = scores + term.for_users(user_rows, item_rows)
    if rec.config.model.mlp_residual:
        n_u, n_i = scores.shape
        scores = scores + np.reshape(rec.residual(np.repeat(u, n_i, 0), np.tile(v, (n_u, 1))), (n_u, n_i))
    return scores


def positives(test: pd.DataFrame, feedback: str) -> pd.DataFrame:
    return test if feedback == "implicit" else test[test["rating"] >= POSITIVE_RATING]


def evaluate(rec, test: pd.DataFrame, cold_items: list[str] | None = None, k: int = 10, seed: int = 0) -> dict:
    """Metrics on a test split. Explicit data: RMSE and MAE. Warm items: HR/NDCG@k against 99 sampled
    negatives and full-ranking Recall/NDCG@k. Cold-item splits: per-user AUC and Recall@k among cold items."""
    out: dict = {"n_test": int(len(test))}
    if test.empty:
        return out
    known = test["user_id"].isin(rec.users_.raw_ids) & test["item_id"].isin(rec.items_.raw_ids)
    test = test[known]
    if rec.feedback_ == "explicit" and rec.config.train.loss in ("auto", "mse"):
        # a ranking loss (bpr, softmax) makes scores, not ratings: RMSE would be meaningless
        pred = rec.predict(test["user_id"], test["item_id"])
        out["rmse"], out["mae"] = rmse(test["rating"], pred), mae(test["rating"], pred)
    pos = positives(test, rec.feedback_)
    if pos.empty:
        return out
    if cold_items:
        out.update(_cold_item_metrics(rec, pos, cold_items, k))
    else:
        out.update(_warm_ranking_metrics(rec, pos, k, seed))
    return out


def _warm_ranking_metrics(rec, pos: pd.DataFrame, k: int, seed: int) -> dict:
    users = rec.users_.indices(pos["user_id"])
    items = rec.items_.indices(pos["item_id"])
    user_rows = np.unique(users)
    relevant = [set() for _ in user_rows]
    where = {u: j for j, u in enumerate(user_rows)}
    for u, i in zip(users, items):
        relevant[where[u]].add(int(i))
    exclude = [rec._seen(u) for u in user_rows]
    full = ranking_metrics(lambda rows: score_matrix(rec, user_rows[rows]), relevant, k=k, exclude=exclude)
    # NCF protocol: each test positive against 99 items the user never interacted with.
    rng = np.random.default_rng(seed)
    n_items = len(rec.items_)
    neg = rng.integers(0, n_items, size=(len(users), 99))
    user_test = pos.groupby(users)["item_id"].agg(lambda s: set(rec.items_.indices(s).tolist())).to_dict()
    for r, u in enumerate(users):
        taken = set(rec._seen(u).tolist()) | user_test[u]
        for c in range(99):
            while int(neg[r, c]) in taken:
                neg[r, c] = rng.integers(0, n_items)
    pos_scores = rec._score_pairs(
        rec.user_vectors_[users],
        rec.user_bias_[users],
        rec.item_vectors_[items],
        rec.item_bias_[items],
        clip=False,
        rows=(users, items),
    )
    flat_u = np.repeat(users, 99)
    neg_scores = rec._score_pairs(
        rec.user_vectors_[flat_u],
        rec.user_bias_[flat_u],
        rec.item_vectors_[neg.ravel()],
        rec.item_bias_[neg.ravel()],
        clip=False,
        rows=(flat_u, neg.ravel()),
    )
    hr, ndcg = hit_rate_ndcg_sampled(pos_scores, neg_scores.reshape(-1, 99), k)
    return {f"hr@{k}_sampled": hr, f"ndcg@{k}_sampled": ndcg, f"recall@{k}": full["recall"], f"ndcg@{k}": full["ndcg"]}


def _cold_item_metrics(rec, pos: pd.DataFrame, cold_items: list[str], k: int) -> dict:
    """Each test user's positives among ALL cold items (unrated cold items count as negatives)."""
    cold_rows = rec.items_.indices([c for c in cold_items if c in rec.items_])
    col = {int(r): j for j, r in enumerate(cold_rows)}
    pos = pos[pos["item_id"].isin(set(cold_items))]
    users = rec.users_.indices(pos["user_id"])
    items = rec.items_.indices(pos["item_id"])
    user_rows = np.unique(users)
    scores = score_matrix(rec, user_rows, cold_rows)
    labels = np.zeros_like(scores, dtype=np.int8)
    where = {u: j for j, u in enumerate(user_rows)}
    for u, i in zip(users, items):
        labels[where[u], col[int(i)]] = 1
    auc = per_user_auc({u: (scores[j], labels[j]) for j, u in enumerate(user_rows)})
    relevant = [set(np.flatnonzero(labels[j]).tolist()) for j in range(len(user_rows))]
    ranks = ranking_metrics(scores, relevant, k=k)
    return {"cold_auc": auc, f"cold_recall@{k}": ranks["recall"], "cold_items": len(cold_rows)}


def co_view_truth(items: pd.DataFrame, columns: tuple[str, ...] = ("also_buy", "also_view")) -> dict[str, set[str]]:
    """Behavioural ground truth for similar items: also_buy ∪ also_view, restricted to items in the table."""
    known = set(items["item_id"])
    truth = {}
    for row in items.itertuples(index=False):
        related = set()
        for col in columns:
            related |= set(getattr(row, col) or [])
        truth[row.item_id] = (related & known) - {row.item_id}
    return truth


def similar_precision(rec, truth: dict[str, set[str]], k: int = 10) -> float:
    """Mean precision@k of `similar_items` against a truth set per item (items with empty truth are skipped)."""
    from hybridrec.evaluate import precision_at_k

    neighbours = {item: rec.similar_items(item, k)[0] for item, rel in truth.items() if rel and item in rec.items_}
    return precision_at_k(neighbours, {i: truth[i] for i in neighbours}, k)
