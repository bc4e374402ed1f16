"""P1-P4: fit a model on a split's files and score it with hybridrec.evaluation.metrics' functions.

Each runner returns a result dict (metrics, timings) for one (protocol, dataset, model); the runner never sees
model internals, only the adapter interface in benchmarks.adapters.base.
"""

from __future__ import annotations

import sys
import time

import numpy as np
import pandas as pd

from benchmarks import data
from benchmarks.adapters.base import Context, Model
from hybridrec.evaluation.metrics import (
    hit_rate_ndcg_sampled,
    mae,
    per_user_auc,
    precision_at_k,
    ranking_metrics,
    recall_ndcg_at_k,
    rmse,
    top_k_indices,
)

K = 10
DATASETS = {
    "P1": ["ml-100k", "goodbooks-399", "ml-1m-half"],
    "P2": ["ml-1m-half", "goodbooks-399"],
    "P3": ["ml-100k", "goodbooks-399"],
    "P4": ["online-retail", "amazon-gift-cards", "ml-100k", "ml-1m-half"],
}
TASK = {"P1": "rating", "P2": "ranking", "P3": "cold", "P4": "similar"}


def context(split: data.BenchSplit, task: str, implicit: bool, quick: bool, seed: int = data.SEED) -> Context:
    ds = data.dataset_for(split, implicit=implicit)
    return Context(
        protocol=split.protocol,
        dataset_key=split.dataset,
        task=task,
        validation=split.validation,
        dataset=ds,
        documents=data.item_documents(ds),
        feature_tokens=data.item_feature_tokens(ds),
        cold_items=split.cold_items,
        implicit=implicit,
        seed=seed,
        quick=quick,
    )


def _fit(model: Model, split: data.BenchSplit, ctx: Context) -> float:
    t0 = time.perf_counter()
    model.fit(split.train, ctx.dataset.items, ctx)
    return time.perf_counter() - t0


# P1 ----------------------------------------------------------------------------------------------------------------
def p1(make, dataset: str, quick: bool, seed: int = data.SEED) -> dict:
    folds = (["u1"] if quick else [f"u{k}" for k in range(1, 6)]) if dataset == "ml-100k" else ["random"]
    per_fold = []
    for fold in folds:
        split = data.p1_split(dataset, fold)
        ctx = context(split, "rating", implicit=False, quick=quick, seed=seed)
        model = make()
        fit_s = _fit(model, split, ctx)
        t0 = time.perf_counter()
        pred = model.predict(split.test["user_id"].tolist(), split.test["item_id"].tolist())
        pred_s = time.perf_counter() - t0
        print(f"   fold {fold}: fit {fit_s:.1f}s", file=sys.stderr, flush=True)
        pred = np.clip(pred, 1.0, 5.0)  # every model is clipped to the rating scale, as Surprise does
        y = split.test["rating"].to_numpy()
        per_fold.append(
            {
                "fold": fold,
                "rmse": rmse(y, pred),
                "mae": mae(y, pred),
                "fit_seconds": fit_s,
                "predictions_per_second": len(y) / max(pred_s, 1e-9),
            }
        )
    mean = {k: float(np.mean([f[k] for f in per_fold])) for k in per_fold[0] if k != "fold"}
    return {
        "metrics": {"rmse": mean["rmse"], "mae": mean["mae"]},
        "fit_seconds": mean["fit_seconds"],
        "speed": {"predictions_per_second": mean["predictions_per_second"]},
        "folds": per_fold,
        "config": model.config(),
        "split": {"folds": folds, **split.info, "n_train": len(split.train), "n_test": len(split.test)},
    }


# P2 ----------------------------------------------------------------------------------------------------------------
def p2(make, dataset: str, quick: bool, tune: bool = False, seed: int = data.SEED) -> dict:
    split = data.p2_split(dataset)
    split = data.tuning_split(split) if tune else split
    ctx = context(split, "ranking", implicit=True, quick=quick, seed=seed)
    model = make()
    fit_s = _fit(model, split, ctx)
    items = ctx.dataset.items["item_id"].tolist()
    col = {i: c for c, i in enumerate(items)}
    test = split.test.merge(split.negatives, on=["user_id", "item_id"], how="left")
    seen = pd.concat([split.train, split.validation]).groupby("user_id")["item_id"].agg(list).to_dict()
    users = test["user_id"].tolist()
    pos_col = np.array([col[i] for i in test["item_id"]])
    neg_col = np.array([[col[i] for i in negs] for negs in test["negs"]])
    tops, pos_scores, neg_scores = [], [], []
    t0 = time.perf_counter()
    for start in range(0, len(users), 1024):
        batch = slice(start, start + 1024)
        s = np.asarray(model.score(users[batch], items), dtype=np.float64)
        r = np.arange(s.shape[0])
        pos_scores.append(s[r, pos_col[batch]])
        neg_scores.append(np.take_along_axis(s, neg_col[batch], axis=1))
        exclude = [[col[i] for i in seen.get(u, [])] for u in users[batch]]
        tops.append(top_k_indices(s, K, exclude))
    score_s = time.perf_counter() - t0
    hr, ndcg_s = hit_rate_ndcg_sampled(np.concatenate(pos_scores), np.vstack(neg_scores), K)
    full = recall_ndcg_at_k(np.vstack(tops), [{c} for c in pos_col], K)
    return {
        "metrics": {
            f"recall@{K}": full["recall"],
            f"ndcg@{K}": full["ndcg"],
            f"hr@{K}_sampled": hr,
            f"ndcg@{K}_sampled": ndcg_s,
        },
        "fit_seconds": fit_s,
        "speed": {"users_scored_per_second": len(users) / max(score_s, 1e-9), "n_items": len(items)},
        "config": model.config(),
        "split": {**split.info, "n_train": len(split.train), "n_test_users": len(users)},
    }


# P3 ----------------------------------------------------------------------------------------------------------------
def p3(make, dataset: str, quick: bool, tune: bool = False, draw: int | None = None, seed: int = data.SEED) -> dict:
    split = data.p3_split(dataset, draw)
    if not tune:
        return _p3_fold(make, split, quick, seed)
    # tuning: the mean over nested cold-item folds (data.p3_tuning_folds)
    folds = [_p3_fold(make, fold, quick, seed) for fold in data.p3_tuning_folds(split)]
    out = dict(folds[-1])  # a copy: the last fold's own metrics must stay in `folds` below
    out["metrics"] = {k: float(np.mean([f["metrics"][k] for f in folds])) for k in out["metrics"]}
    out["fit_seconds"] = float(np.mean([f["fit_seconds"] for f in folds]))
    out["folds"] = [{"fold": f["split"]["tuning"], **f["metrics"]} for f in folds]
    return out


def _p3_fold(make, split: data.BenchSplit, quick: bool, seed: int) -> dict:
    ctx = context(split, "cold", implicit=False, quick=quick, seed=seed)
    model = make()
    fit_s = _fit(model, split, ctx)
    # cold columns in a seeded random order: a scorer that ties (constant or zero-overlap scores) then gets a random
    # top-k among the tied items, not the lowest item ids (goodbooks numbers its books by popularity)
    cold = [str(i) for i in np.random.default_rng(data.SEED).permutation(np.array(split.cold_items, dtype=object))]
    col = {i: c for c, i in enumerate(cold)}
    pos = split.test[split.test["rating"] >= data.POSITIVE]
    pos = pos[pos["user_id"].isin(set(split.train["user_id"]))]  # users with a training history
    relevant = pos.groupby("user_id")["item_id"].agg(lambda s: {col[i] for i in s})
    users = relevant.index.tolist()
    t0 = time.perf_counter()
    scores = np.vstack(
        [np.asarray(model.score(users[s : s + 1024], cold), np.float64) for s in range(0, len(users), 1024)]
    )
    score_s = time.perf_counter() - t0
    labels = np.zeros(scores.shape, np.int8)
    for j, rel in enumerate(relevant):
        labels[j, list(rel)] = 1
    auc = per_user_auc({u: (scores[j], labels[j]) for j, u in enumerate(users)})
    ranks = ranking_metrics(scores, list(relevant), k=K)
    return {
        "metrics": {"cold_auc": auc, f"cold_recall@{K}": ranks["recall"], f"cold_ndcg@{K}": ranks["ndcg"]},
        "fit_seconds": fit_s,
        "speed": {"users_scored_per_second": len(users) / max(score_s, 1e-9)},
        "config": model.config(),
        "split": {**split.info, "n_train": len(split.train), "cold_items": len(cold), "test_users": len(users)},
    }


# P4 ----------------------------------------------------------------------------------------------------------------
def p4(make, dataset: str, quick: bool, tune: bool = False, seed: int = data.SEED) -> dict:
    split = data.p4_split(dataset)
    split = data.tuning_split(split) if tune else split
    implicit = dataset == "online-retail"
    ctx = context(split, "similar", implicit=implicit, quick=quick, seed=seed)
    model = make()
    fit_s = _fit(model, split, ctx)
    truths = {name: {i: set(t) for i, t in truth.items() if t} for name, truth in split.truth.items()}
    queries = sorted(set().union(*truths.values()))
    t0 = time.perf_counter()
    neighbours = {i: model.similar(i, K) for i in queries}
    sim_s = time.perf_counter() - t0
    metrics = {name: precision_at_k(neighbours, truth, K) for name, truth in truths.items()}
    first = next(iter(truths.values()))
    counts = split.train["item_id"].value_counts()
    metrics["rare_share"] = rare_share(neighbours, counts)
    metrics["truth_rare_share"] = rare_share(first, counts)
    metrics["mean_truth_size"] = float(np.mean([len(t) for t in first.values()]))
    metrics["full_lists"] = sum(len(n) >= K for n in neighbours.values()) / max(len(neighbours), 1)
    return {
        "metrics": metrics,
        "fit_seconds": fit_s,
        "speed": {"similar_ms": 1000 * sim_s / max(len(queries), 1)},
        "config": model.config(),
        "split": {**split.info, "n_train": len(split.train), **{f"queries {n}": len(t) for n, t in truths.items()}},
    }


RARE = 5  # an item with fewer training interactions than this is "rare" in P4's list shares


def rare_share(lists: dict, counts: pd.Series) -> float:
    """The mean share of each list taken by items with fewer than RARE training interactions: a similar-items
    model that fills its lists with rarely seen items beyond the truth's own share is guessing (DESIGN.md's third
    cause)."""
    shares = [np.mean([counts.get(i, 0) < RARE for i in items]) for items in lists.values() if len(items)]
    return float(np.mean(shares)) if shares else 0.0


RUNNERS = {"P1": p1, "P2": p2, "P3": p3, "P4": p4}
TUNABLE = {"P2", "P3", "P4"}  # protocols with a nested tuning split (--tune; P4: Online Retail only)
