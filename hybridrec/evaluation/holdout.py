"""Held-out evaluation of a fitted HybridRecommender: ratings, top-N (sampled and full ranking), cold items.

The library's fit never imports this: evaluation is the job's (cli/job.py) and the benchmarks'."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from hybridrec.evaluation.metrics import hit_rate_ndcg_sampled, mae, per_user_auc, ranking_metrics, rmse

POSITIVE_RATING = 4.0  # explicit data: a rating >= 4 counts as a positive for ranking metrics


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


def full_ranking(rec, pos: pd.DataFrame, k: int, exclude_of: Callable[[int], np.ndarray]) -> dict[str, float]:
    """Full-catalogue recall / NDCG / precision@k of the positive rows `pos` (users and items the model knows):
    each of their users gets every item ranked, minus `exclude_of(user_row)` (what the user already has: training
    and validation items for a held-out test; only the training items when `tune` scores the validation rows)."""
    users = rec.users_.indices(pos["user_id"])
    items = rec.items_.indices(pos["item_id"])
    user_rows = np.unique(users)
    relevant: list[set[int]] = [set() for _ in user_rows]
    where = {u: j for j, u in enumerate(user_rows)}
    for u, i in zip(users, items):
        relevant[where[u]].add(int(i))
    exclude = [exclude_of(u) for u in user_rows]
    return ranking_metrics(lambda rows: rec.score_matrix(user_rows[rows]), relevant, k=k, exclude=exclude)


def _warm_ranking_metrics(rec, pos: pd.DataFrame, k: int, seed: int) -> dict:
    full = full_ranking(rec, pos, k, rec.seen_rows)
    users = rec.users_.indices(pos["user_id"])
    items = rec.items_.indices(pos["item_id"])
    user_rows = np.unique(users)
    # NCF protocol: each test positive against 99 items the user never interacted with.
    user_test = pos.groupby(users)["item_id"].agg(lambda s: rec.items_.indices(s)).to_dict()
    taken = {u: np.union1d(rec.seen_rows(u), user_test[u]) for u in user_rows}
    neg, has = sampled_negatives(users, taken, len(rec.items_), 99, np.random.default_rng(seed))
    users, items, neg = users[has], items[has], neg[has]
    if not len(users):
        return {f"recall@{k}": full["recall"], f"ndcg@{k}": full["ndcg"]}
    pos_scores = rec.score_pairs(users, items)
    neg_scores = rec.score_pairs(np.repeat(users, neg.shape[1]), neg.ravel())
    hr, ndcg = hit_rate_ndcg_sampled(pos_scores, neg_scores.reshape(-1, neg.shape[1]), k)
    return {f"hr@{k}_sampled": hr, f"ndcg@{k}_sampled": ndcg, f"recall@{k}": full["recall"], f"ndcg@{k}": full["ndcg"]}


def sampled_negatives(
    users: np.ndarray, taken: dict, n_items: int, count: int, rng: np.random.Generator, rounds: int = 20
) -> tuple[np.ndarray, np.ndarray]:
    """`count` items per row that its user never had, drawn uniformly and redrawn in whole vectors (never a
    Python loop per draw). Returns (rows x count negatives, which rows have them): a user who had nearly every
    item gets an exact draw from what is left, and one who had every item is left out instead of looping forever."""
    neg = rng.integers(0, n_items, size=(len(users), count))
    bad = np.zeros(neg.shape, bool)
    for _ in range(rounds):
        bad = np.stack([np.isin(neg[r], taken[u]) for r, u in enumerate(users)]) if len(users) else bad
        if not bad.any():
            break
        neg[bad] = rng.integers(0, n_items, size=int(bad.sum()))
    has = np.ones(len(users), bool)
    for r in np.flatnonzero(bad.any(axis=1)) if bad.any() else []:  # rare: users who had most of the catalogue
        free = np.setdiff1d(np.arange(n_items), taken[users[r]])
        if len(free):
            neg[r] = rng.choice(free, size=count, replace=len(free) < count)
        else:
            has[r] = False
    return neg, has


def _cold_item_metrics(rec, pos: pd.DataFrame, cold_items: list[str], k: int) -> dict:
    """Each test user's positives among ALL cold items (unrated cold items count as negatives)."""
    cold_rows = rec.items_.indices([c for c in cold_items if c in rec.items_])
    col = {int(r): j for j, r in enumerate(cold_rows)}
    pos = pos[pos["item_id"].isin(set(cold_items))]
    users = rec.users_.indices(pos["user_id"])
    items = rec.items_.indices(pos["item_id"])
    user_rows = np.unique(users)
    scores = rec.score_matrix(user_rows, cold_rows)
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
    from hybridrec.evaluation.metrics import precision_at_k

    neighbours = {item: rec.similar_items(item, k)[0] for item, rel in truth.items() if rel and item in rec.items_}
    return precision_at_k(neighbours, {i: truth[i] for i in neighbours}, k)


def training_overlap(rec, test: pd.DataFrame) -> int:
    """How many test rows are (user, item) pairs the model was fitted on (its training and validation rows): metrics
    over them would be inflated. Zero for the split the fit made; more when `evaluate` re-reads other data or
    splits it differently."""
    if test.empty:
        return 0
    users = np.fromiter((rec.users_.get(u) for u in test["user_id"]), np.int64, len(test))
    items = np.fromiter((rec.items_.get(i) for i in test["item_id"]), np.int64, len(test))
    known = (users >= 0) & (items >= 0)
    n_items = np.int64(len(rec.items_))
    seen = rec.seen_
    owners = np.repeat(np.arange(len(seen.indptr) - 1, dtype=np.int64), np.diff(seen.indptr))
    trained = owners * n_items + seen.items.astype(np.int64)
    return int(np.isin(users[known] * n_items + items[known], trained).sum())
