"""What every model of the scale benchmark shares: the time split, the evaluated users and the quality metric
(full-ranking recall@10 by `hybridrec.evaluation.metrics`), the latency summary, and the JSON a child hands back.

Users and items are the generator's integer ids, which are also matrix rows and columns: user u is row u, item i
column i, for every model.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import sparse

from hybridrec.evaluation.metrics import ranking_metrics

K = 10
POSITIVE = 4  # a test rating >= 4 is relevant (hybridrec's own rule for explicit data)
EVAL_USERS = 20_000  # at most this many test users are ranked (the same seeded sample for every model)
LATENCY_QUERIES = 300  # in-process `similar` calls timed per model


@dataclass
class Split:
    """The time split of one data folder: rows before the cutoff train, rows from it on are test."""

    n_users: int
    n_items: int
    train: sparse.csr_matrix  # binary users x items of the training rows (what a user has: excluded from ranking)
    n_train: int
    users: np.ndarray  # evaluated users: a training row and a relevant test row each
    relevant: list[np.ndarray]  # their relevant test items
    popular: np.ndarray  # warm items, most trained first (queries for `similar`)


def load_split(folder: Path, eval_users: int = EVAL_USERS, seed: int = 0) -> Split:
    import pyarrow.parquet as pq

    meta = json.loads((folder / "meta.json").read_text())
    table = pq.read_table(folder / "interactions.parquet", columns=["user_id", "item_id", "rating", "timestamp"])
    users = table.column("user_id").to_numpy()
    items = table.column("item_id").to_numpy()
    test = table.column("timestamp").to_numpy() >= meta["cutoff"]
    rating = table.column("rating").to_numpy()
    del table
    n_users, n_items = int(meta["requested"]["users"]), int(meta["items"])
    tr = ~test
    x = sparse.csr_matrix(
        (np.ones(int(tr.sum()), np.float32), (users[tr], items[tr])), shape=(n_users, n_items), dtype=np.float32
    )
    pos = test & (rating >= POSITIVE)
    pu, pi = users[pos], items[pos]
    known = np.diff(x.indptr)[pu] > 0
    pu, pi = pu[known], pi[known]
    order = np.argsort(pu, kind="stable")
    pu, pi = pu[order], pi[order]
    evaluated, starts = np.unique(pu, return_index=True)
    groups = np.split(pi, starts[1:])
    if len(evaluated) > eval_users:
        keep = np.sort(np.random.default_rng(seed).choice(len(evaluated), eval_users, replace=False))
        evaluated, groups = evaluated[keep], [groups[j] for j in keep]
    counts = np.asarray(x.sum(0)).ravel()
    popular = np.argsort(-counts, kind="stable")
    return Split(n_users, n_items, x, int(tr.sum()), evaluated, groups, popular[counts[popular] > 0])


def recall_at_k(split: Split, score_rows: Callable[[np.ndarray], np.ndarray], batch: int = 512) -> dict[str, float]:
    """Full-catalogue recall/NDCG@10 of the evaluated users, their training items excluded. `score_rows` maps
    user ids to (len, n_items) scores in item-id order."""
    rows = split.users
    exclude = [split.train.indices[split.train.indptr[u] : split.train.indptr[u + 1]] for u in rows]
    result = ranking_metrics(lambda j: score_rows(rows[j]), split.relevant, k=K, exclude=exclude, batch_size=batch)
    return {f"recall@{K}": result["recall"], f"ndcg@{K}": result["ndcg"], "eval_users": int(len(rows))}


def latencies(query: Callable[[int], object], items: np.ndarray, n: int = LATENCY_QUERIES) -> dict[str, float]:
    """p50/p99 milliseconds of `query(item)` over the first n of `items` (after one untimed warm-up call)."""
    items = items[:n]
    if not len(items):
        return {}
    query(int(items[0]))
    times = []
    for item in items:
        t = time.perf_counter()
        query(int(item))
        times.append((time.perf_counter() - t) * 1000.0)
    return {"similar_p50_ms": float(np.percentile(times, 50)), "similar_p99_ms": float(np.percentile(times, 99))}


def similar_queries(split: Split, n: int = LATENCY_QUERIES, seed: int = 0) -> np.ndarray:
    """n warm items drawn by popularity rank (a mix of head and tail), the same for every model."""
    pool = split.popular
    return pool[np.sort(np.random.default_rng(seed).choice(len(pool), min(n, len(pool)), replace=False))]


def folder_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def write_json(path: Path, record: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=1, default=float) + "\n")
    tmp.replace(path)
