"""Held-out evaluation of a fitted HybridRecommender: ratings, top-N (sampled and full ranking), cold items.

Streams: test users are scored a chunk at a time, the chunk sized so its scores and their work arrays stay within
`budget` bytes (EVAL_BUDGET_BYTES), and each chunk's scores serve both the full ranking and the 99 sampled
negatives of its rows; per-user sets are sorted numpy arrays (streaming.py). Any chunking gives the same metrics,
exactly. The library's fit never imports this: evaluation is the job's (cli/job.py) and the benchmarks'."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial

import numpy as np
import pandas as pd

from hybridrec.evaluation.metrics import mae, mean_auc, ranking_gains, rmse, roc_auc, sampled_gains, top_k_indices
from hybridrec.evaluation.streaming import (
    EVAL_BUDGET_BYTES,
    NEGATIVE_BYTES,
    SCORE_CELL_BYTES,
    ItemSets,
    chunk_rows,
    gather_rows,
    sampled_negatives,
)
from hybridrec.model.history import UserHistory

POSITIVE_RATING = 4.0  # explicit data: a rating >= 4 counts as a positive for ranking metrics
SAMPLED_NEGATIVES = 99  # NCF protocol: each test positive against 99 items its user never had
PAIR_BYTES = 1024  # per scored (user, item) pair of `predict`: user and item vectors and their product, dim <= 64


def positives(test: pd.DataFrame, feedback: str) -> pd.DataFrame:
    return test if feedback == "implicit" else test[test["rating"] >= POSITIVE_RATING]


def evaluate(
    rec,
    test: pd.DataFrame,
    cold_items: list[str] | None = None,
    k: int = 10,
    seed: int = 0,
    budget: int = EVAL_BUDGET_BYTES,
    max_users: int = 0,
) -> dict:
    """Metrics on a test split. Explicit data: RMSE and MAE. Warm items: HR/NDCG@k against 99 sampled
    negatives and full-ranking Recall/NDCG@k. Cold-item splits: per-user AUC and Recall@k among cold items.
    `budget`: bytes one chunk of scores may take (the metrics do not depend on it). `max_users` > 0: the ranking
    metrics over that many test users drawn with `seed` (`test_users` and `ranked_users` then say so)."""
    out: dict = {"n_test": int(len(test))}
    if test.empty:
        return out
    known = test["user_id"].isin(rec.users_.raw_ids) & test["item_id"].isin(rec.items_.raw_ids)
    test = test[known]
    if rec.feedback_ == "explicit" and rec.config.train.loss in ("auto", "mse") and len(test):
        # a ranking loss (bpr, softmax) makes scores, not ratings: RMSE would be meaningless
        block = chunk_rows(1, PAIR_BYTES, budget)
        pred = np.concatenate(
            [
                rec.predict(test["user_id"].iloc[a : a + block], test["item_id"].iloc[a : a + block])
                for a in range(0, len(test), block)
            ]
        )
        out["rmse"], out["mae"] = rmse(test["rating"], pred), mae(test["rating"], pred)
    pos = positives(test, rec.feedback_)
    if pos.empty:
        return out
    users = pos["user_id"].unique() if max_users > 0 else ()
    if 0 < max_users < len(users):  # ids are normalised strings: sorted, the draw depends on the seed alone
        drawn = np.random.default_rng(seed).choice(np.sort(users), max_users, replace=False)
        pos = pos[pos["user_id"].isin(drawn)]
        out.update(test_users=len(users), ranked_users=max_users)
    if cold_items:
        out.update(_cold_item_metrics(rec, pos, cold_items, k, budget))
    else:
        out.update(_warm_ranking_metrics(rec, pos, k, seed, budget))
    return out


@dataclass
class _Chunk:
    """One chunk of test users: their rows, the chunk's test rows as (local user, item row, row number in the
    test set), and the users' scores against every column scored."""

    users: np.ndarray
    local: np.ndarray
    items: np.ndarray
    row_ids: np.ndarray
    scores: np.ndarray


def cell_bytes(rec) -> int:
    """Bytes a (user, item) score cell costs while a chunk is scored and ranked: SCORE_CELL_BYTES, and with the
    MLP residual each cell's pair also goes through it (the user and item vectors repeated per pair, their
    3 x dim input and the hidden layer, float32)."""
    towers = getattr(rec, "towers_", None)
    if towers is None or towers.residual is None:
        return SCORE_CELL_BYTES
    dim, hidden = towers.user_vectors.shape[1], rec.config.model.hidden
    return SCORE_CELL_BYTES + 4 * (5 * dim + 2 * hidden)


def _user_chunks(score, users: np.ndarray, items: np.ndarray, n_cols: int, budget: int, cell: int) -> Iterator[_Chunk]:
    """Test rows grouped by user, a budget-sized chunk of users at a time, with `score(user_rows)` of the chunk."""
    order = np.argsort(users, kind="stable")
    users, items = users[order], items[order]
    user_rows, starts = np.unique(users, return_index=True)
    bounds = np.append(starts, len(users))
    per = chunk_rows(n_cols, cell, budget)
    for a in range(0, len(user_rows), per):
        b = min(a + per, len(user_rows))
        r0, r1 = bounds[a], bounds[b]
        local = np.repeat(np.arange(b - a, dtype=np.int64), np.diff(bounds[a : b + 1]))
        yield _Chunk(user_rows[a:b], local, items[r0:r1], order[r0:r1], np.asarray(score(user_rows[a:b])))


def _ranked(chunk: _Chunk, k: int, n_cols: int, exclude: tuple[np.ndarray, np.ndarray] | None, ranker=None) -> dict:
    """The chunk's per-user recall / NDCG / precision@k of its relevant items, `exclude` pairs left out.
    `ranker`: a scorer's own `full_ranking_top_k(n_users, k, exclude)` over the whole catalogue: the lists
    `top_k_indices` gives on its scores, found cheaper (the popularity baseline ranks every user by one order)."""
    relevant = ItemSets.from_pairs(chunk.local, chunk.items, len(chunk.users), n_cols)
    if ranker is not None and exclude is not None:
        top = ranker(len(chunk.users), k, exclude)
    else:
        top = top_k_indices(chunk.scores, k, exclude_pairs=exclude)
    hit = relevant.contains(np.arange(len(chunk.users))[:, None], top)
    return ranking_gains(hit, relevant.sizes(), k)


def _mean(parts: list[np.ndarray]) -> float:
    return float(np.concatenate(parts).mean()) if parts else float("nan")


def _means(rows: dict[str, np.ndarray]) -> dict[str, float]:
    return {name: float(values.mean()) if len(values) else float("nan") for name, values in rows.items()}


def full_ranking(rec, pos: pd.DataFrame, k: int, exclude: UserHistory, budget: int = EVAL_BUDGET_BYTES) -> dict:
    """Full-catalogue recall / NDCG / precision@k of the positive rows `pos` (users and items the model knows):
    each of their users gets every item ranked, minus its items in `exclude` (what the user already has: training
    and validation items for a held-out test; only the training items when `tune` scores the validation rows)."""
    return _means(full_ranking_rows(rec, pos, k, exclude, budget))


def full_ranking_rows(
    rec, pos: pd.DataFrame, k: int, exclude: UserHistory, budget: int = EVAL_BUDGET_BYTES
) -> dict[str, np.ndarray]:
    """`full_ranking`'s per-row values (their means are its metrics), in an order fixed by `pos` and the model's
    user index: two models of the same users and rows can be compared row by row (`tune` does, for noise)."""
    return _rank_and_sample(rec, pos, k, exclude, None, budget)[0]


def _rank_and_sample(
    rec, pos: pd.DataFrame, k: int, exclude: UserHistory, seed: int | None, budget: int
) -> tuple[dict, dict]:
    """Full-ranking metrics of `pos`, and (with a seed) the sampled ones, from one pass of scores per chunk."""
    users = rec.users_.indices(pos["user_id"])
    items = rec.items_.indices(pos["item_id"])
    n_items = len(rec.items_)
    full: dict[str, list[np.ndarray]] = {"recall": [], "ndcg": [], "precision": []}
    hits: list[np.ndarray] = []
    ndcgs: list[np.ndarray] = []
    row_block = chunk_rows(SAMPLED_NEGATIVES, NEGATIVE_BYTES, budget)
    for chunk in _user_chunks(rec.score_matrix, users, items, n_items, budget, cell_bytes(rec)):
        excluded = gather_rows(exclude.indptr, exclude.items, chunk.users)
        for name, values in _ranked(chunk, k, n_items, excluded, getattr(rec, "full_ranking_top_k", None)).items():
            full[name].append(values)
        if seed is None:
            continue
        seen = gather_rows(rec.seen_.indptr, rec.seen_.items, chunk.users)
        taken = ItemSets.from_pairs(
            np.concatenate([seen[0], chunk.local]), np.concatenate([seen[1], chunk.items]), len(chunk.users), n_items
        )
        for a in range(0, len(chunk.local), row_block):
            local, items_ = chunk.local[a : a + row_block], chunk.items[a : a + row_block]
            neg, has = sampled_negatives(local, taken, SAMPLED_NEGATIVES, seed, chunk.row_ids[a : a + row_block])
            if not has.any():
                continue
            local, items_, neg = local[has], items_[has], neg[has]
            hit, ndcg = sampled_gains(chunk.scores[local, items_], chunk.scores[local[:, None], neg], k)
            hits.append(hit)
            ndcgs.append(ndcg)
    sampled = {"hr": _mean(hits), "ndcg": _mean(ndcgs)} if hits else {}
    empty = np.zeros(0)
    return {name: np.concatenate(parts) if parts else empty for name, parts in full.items()}, sampled


def _warm_ranking_metrics(rec, pos: pd.DataFrame, k: int, seed: int, budget: int) -> dict:
    rows, sampled = _rank_and_sample(rec, pos, k, rec.seen_, seed, budget)
    full = _means(rows)
    out = {f"recall@{k}": full["recall"], f"ndcg@{k}": full["ndcg"]}
    if not sampled:  # no test user has an item left to draw: only the full ranking says anything
        return out
    return {f"hr@{k}_sampled": sampled["hr"], f"ndcg@{k}_sampled": sampled["ndcg"], **out}


def _cold_item_metrics(rec, pos: pd.DataFrame, cold_items: list[str], k: int, budget: int) -> dict:
    """Each test user's positives among ALL cold items (unrated cold items count as negatives)."""
    cold_rows = rec.items_.indices([c for c in cold_items if c in rec.items_])
    column = np.full(len(rec.items_), -1, np.int64)
    column[cold_rows] = np.arange(len(cold_rows))
    pos = pos[pos["item_id"].isin(set(cold_items))]
    users = rec.users_.indices(pos["user_id"])
    cols = column[rec.items_.indices(pos["item_id"])]
    aucs: list[float] = []
    recalls: list[np.ndarray] = []
    score = partial(rec.score_matrix, item_rows=cold_rows)
    for chunk in _user_chunks(score, users, cols, len(cold_rows), budget, cell_bytes(rec)):
        labels = np.zeros(chunk.scores.shape, dtype=np.int8)
        labels[chunk.local, chunk.items] = 1
        aucs.extend(roc_auc(chunk.scores[j], labels[j]) for j in range(len(chunk.users)))
        recalls.append(_ranked(chunk, k, len(cold_rows), None)["recall"])
    return {"cold_auc": mean_auc(aucs), f"cold_recall@{k}": _mean(recalls), "cold_items": len(cold_rows)}


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
