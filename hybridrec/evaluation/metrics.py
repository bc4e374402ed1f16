"""Evaluation metrics as plain numpy functions, so they can be tested by hand and reused by any model.

Nothing here imports torch or a model: callers turn predictions into arrays (or give a scoring callback).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Hashable, Mapping, Sequence
from typing import TypeVar

import numpy as np

ScoreSource = np.ndarray | Callable[[np.ndarray], np.ndarray]
Key = TypeVar("Key", bound=Hashable)  # Mapping keys are invariant: one TypeVar lets any id type through


def _pair(y_true: Sequence[float] | np.ndarray, y_pred: Sequence[float] | np.ndarray) -> np.ndarray:
    t = np.asarray(y_true, dtype=np.float64).ravel()
    p = np.asarray(y_pred, dtype=np.float64).ravel()
    if t.shape != p.shape:
        raise ValueError(f"y_true has {t.size} values but y_pred has {p.size}")
    if t.size == 0:
        raise ValueError("no predictions to score")
    return p - t


def rmse(y_true: Sequence[float] | np.ndarray, y_pred: Sequence[float] | np.ndarray) -> float:
    """Root mean squared rating error: punishes large misses more than MAE does."""
    return float(np.sqrt(np.mean(_pair(y_true, y_pred) ** 2)))


def mae(y_true: Sequence[float] | np.ndarray, y_pred: Sequence[float] | np.ndarray) -> float:
    """Mean absolute rating error: the typical miss, in rating units."""
    return float(np.mean(np.abs(_pair(y_true, y_pred))))


def hit_rate_ndcg_sampled(pos_scores: np.ndarray, neg_scores: np.ndarray, k: int = 10) -> tuple[float, float]:
    """HR@k and NDCG@k of each positive ranked among itself and its m sampled negatives (NCF protocol).

    Ties count against the positive (pessimistic), so a model that scores everything equally gets
    no credit. Returns the means over the n positives.
    """
    hit, ndcg = sampled_gains(pos_scores, neg_scores, k)
    return float(hit.mean()), float(ndcg.mean())


def sampled_gains(pos_scores: np.ndarray, neg_scores: np.ndarray, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Per positive: hit@k (bool) and NDCG@k among its m sampled negatives (what `hit_rate_ndcg_sampled`
    averages), so evaluation can score chunks of positives and average once at the end."""
    pos = np.asarray(pos_scores, dtype=np.float64).ravel()
    neg = np.asarray(neg_scores, dtype=np.float64)
    if neg.ndim != 2 or neg.shape[0] != pos.size:
        raise ValueError(f"neg_scores must have shape ({pos.size}, m), got {neg.shape}")
    if pos.size == 0:
        raise ValueError("no positives to score")
    if k <= 0:
        raise ValueError(f"k must be positive, got {k}")
    rank = (neg >= pos[:, None]).sum(axis=1)  # 0-based rank of the positive
    rank[np.isnan(pos)] = neg.shape[1]  # NaN compares False everywhere: rank it last, not first
    hit = rank < k
    return hit, np.where(hit, 1.0 / np.log2(rank + 2.0), 0.0)


def recall_ndcg_at_k(
    topk_items: Sequence[Sequence[Hashable]] | np.ndarray,
    relevant: Sequence[Collection[Hashable]],
    k: int | None = None,
) -> dict[str, float]:
    """Recall, NDCG and precision of top-k lists against each user's relevant set, averaged over users.

    recall@k = |hits| / min(k, |relevant|), so a user with more relevant items than k can still
    reach 1; precision@k = |hits| / k; NDCG uses binary gains with the ideal list of min(k, |relevant|)
    hits. Users with no relevant items are skipped (they cannot be scored); k defaults to each list's
    length. All values are NaN when no user has a relevant item.
    """
    if len(topk_items) != len(relevant):
        raise ValueError(f"{len(topk_items)} top-k lists but {len(relevant)} relevant sets")
    discounts = 1.0 / np.log2(np.arange(2, 2 + _max_len(topk_items, k) + 1))
    recalls, ndcgs, precisions = [], [], []
    for row, rel in zip(topk_items, relevant, strict=True):
        rel = set(rel)
        if not rel:
            continue
        kk = len(row) if k is None else k
        if kk <= 0:
            raise ValueError(f"k must be positive, got {kk}")
        seen: set = set()
        dcg, hits = 0.0, 0
        for pos, item in enumerate(list(row)[:kk]):
            if item in rel and item not in seen:
                seen.add(item)
                hits += 1
                dcg += discounts[pos]
        ideal = min(kk, len(rel))
        recalls.append(hits / ideal)
        precisions.append(hits / kk)
        ndcgs.append(dcg / discounts[:ideal].sum())
    if not recalls:
        return {"recall": float("nan"), "ndcg": float("nan"), "precision": float("nan")}
    return {
        "recall": float(np.mean(recalls)),
        "ndcg": float(np.mean(ndcgs)),
        "precision": float(np.mean(precisions)),
    }


def _max_len(rows: Sequence[Sequence[Hashable]] | np.ndarray, k: int | None) -> int:
    longest = max((len(r) for r in rows), default=0)
    return max(longest, k or 0)


def top_k_indices(
    scores: np.ndarray,
    k: int,
    exclude: Sequence[Collection[int]] | None = None,
    exclude_pairs: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """Per row, the column indices of the k highest scores, best first (ties: lower index first).

    exclude[i] lists columns row i must never return (items the user already has in train); exclude_pairs
    (rows, columns) says the same as two aligned arrays (no Python loop per row). Slots that only excluded or
    NaN-scored items could fill are -1, so they can never count as hits. Working memory: a copy of the scores
    (float32 scores stay float32: the same order, half the bytes, else float64) and a byte a cell.
    """
    work = np.float32 if np.asarray(scores).dtype == np.float32 else np.float64
    s = np.array(scores, dtype=work, ndmin=2)  # a copy: exclusions are written into it
    n_rows, n_cols = s.shape
    if k <= 0:
        raise ValueError(f"k must be positive, got {k}")
    s[np.isnan(s)] = -np.inf
    if exclude is not None:
        if len(exclude) != n_rows:
            raise ValueError(f"{len(exclude)} exclusion lists for {n_rows} score rows")
        for i, cols in enumerate(exclude):
            if len(cols):
                s[i, np.fromiter(cols, dtype=np.int64, count=len(cols))] = -np.inf
    if exclude_pairs is not None:
        s[np.asarray(exclude_pairs[0], np.int64), np.asarray(exclude_pairs[1], np.int64)] = -np.inf
    top = np.full((n_rows, k), -1, dtype=np.int64)
    if not n_rows or not n_cols:
        return top
    rows, cols, values = _candidates(s, min(k, n_cols))
    del s
    order = np.lexsort((cols, -values, rows))  # by row, then score descending, then column
    rows, cols, values = rows[order], cols[order], values[order]
    rank = np.arange(len(rows)) - np.searchsorted(rows, rows)  # position within the row's candidates
    keep = (rank < k) & (values > -np.inf)
    top[rows[keep], rank[keep]] = cols[keep]
    return top


def _candidates(s: np.ndarray, kk: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row, column, score) of every cell at least as high as a per-row bound that the row's kk-th highest score
    is sure to reach: split the row into blocks (up to 32 x kk), the bound is the kk-th highest block maximum
    (kk blocks each hold a score that high). A few cells more than kk a row, found with one pass of reductions
    and comparisons instead of a partition of the whole row (3-5x faster than argpartition at 6e4 columns)."""
    n_cols = s.shape[1]
    blocks = min(n_cols, 32 * kk)
    starts = (np.arange(blocks, dtype=np.int64) * n_cols) // blocks
    maxima = np.maximum.reduceat(s, starts, axis=1)
    bound = np.partition(maxima, blocks - kk, axis=1)[:, blocks - kk]
    rows, cols = np.divmod(np.flatnonzero(s >= bound[:, None]), n_cols)  # 2-D nonzero is 30x slower
    return rows, cols, s[rows, cols]


def ranking_gains(hit: np.ndarray, n_relevant: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """Per user: recall, NDCG and precision@k from the hits of a top-k list (`hit[u, j]`: the j-th item is
    relevant) and the user's count of distinct relevant items (> 0), by the formulas of `recall_ndcg_at_k`
    and in its order of additions, so the two agree exactly; evaluation averages these over all users."""
    hit = np.asarray(hit, bool)
    n_relevant = np.asarray(n_relevant, np.int64)
    if k <= 0:
        raise ValueError(f"k must be positive, got {k}")
    if hit.ndim != 2 or hit.shape[1] > k or hit.shape[0] != n_relevant.size:
        raise ValueError(f"hit must have shape ({n_relevant.size}, <= {k}), got {hit.shape}")
    discounts = 1.0 / np.log2(np.arange(2, 2 + k + 1))
    dcg = np.zeros(len(hit))
    for j in range(hit.shape[1]):  # left to right, as recall_ndcg_at_k adds them
        dcg += np.where(hit[:, j], discounts[j], 0.0)
    ideal = np.minimum(k, n_relevant)
    ideal_dcg = np.array([discounts[:m].sum() for m in range(k + 1)])
    hits = hit.sum(axis=1)
    return {"recall": hits / ideal, "ndcg": dcg / ideal_dcg[ideal], "precision": hits / k}


def ranking_metrics(
    scores: ScoreSource,
    relevant: Sequence[Collection[int]],
    k: int = 10,
    exclude: Sequence[Collection[int]] | None = None,
    batch_size: int = 1024,
) -> dict[str, float]:
    """Full-catalogue recall/NDCG/precision@k: rank every item for each user row, minus excluded ones.

    scores is a (n_users, n_items) matrix or a callback mapping an array of user rows to their
    (len(rows), n_items) scores, so large catalogues are scored in batches without a full matrix.
    relevant[i] and exclude[i] hold item columns for user row i; users with nothing relevant are
    not scored at all. A relevant item that is also excluded can never be a hit.
    """
    if exclude is not None and len(exclude) != len(relevant):
        raise ValueError(f"{len(exclude)} exclusion lists for {len(relevant)} users")
    rows = np.array([i for i, rel in enumerate(relevant) if len(rel)], dtype=np.int64)
    tops = []
    for start in range(0, len(rows), max(batch_size, 1)):
        batch = rows[start : start + batch_size]
        block = scores[batch] if isinstance(scores, np.ndarray) else np.asarray(scores(batch))
        if block.shape[0] != len(batch):
            raise ValueError(f"scores for {len(batch)} users came back with {block.shape[0]} rows")
        tops.append(top_k_indices(block, k, [exclude[i] for i in batch] if exclude is not None else None))
    topk = np.vstack(tops) if tops else np.empty((0, k), dtype=np.int64)
    return recall_ndcg_at_k(topk, [relevant[i] for i in rows], k)


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks with ties sharing their average rank (what makes tied pairs count 0.5 in AUC)."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    starts = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]])
    ends = np.r_[starts[1:], xs.size]
    group = np.repeat(np.arange(starts.size), ends - starts)
    ranks = np.empty(xs.size, dtype=np.float64)
    ranks[order] = ((starts + ends - 1) / 2.0 + 1.0)[group]
    return ranks


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """ROC-AUC from ranks (Mann-Whitney U): P(random positive outscores random negative), ties 0.5."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).ravel().astype(bool)
    if s.shape != y.shape:
        raise ValueError(f"{s.size} scores but {y.size} labels")
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    rank_sum = _average_ranks(s)[y].sum()
    return float((rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def per_user_auc(scores_by_user: Mapping[Hashable, tuple[np.ndarray, np.ndarray]]) -> float:
    """Mean ROC-AUC over users that have both positives and negatives (others say nothing); NaN if none."""
    return mean_auc([roc_auc(s, y) for s, y in scores_by_user.values()])


def mean_auc(aucs: Sequence[float] | np.ndarray) -> float:
    """The mean of per-user AUCs, leaving out the NaN of users with one class only; NaN if none is left."""
    defined = [a for a in aucs if not np.isnan(a)]
    return float(np.mean(defined)) if defined else float("nan")


def precision_at_k(
    neighbours: Mapping[Key, Sequence[Hashable]],
    truth: Mapping[Key, Collection[Hashable]],
    k: int = 10,
) -> float:
    """Mean |top-k neighbours ∩ truth| / k over items with a non-empty truth set (similar-items quality).

    An item is dropped from its own neighbour list first (an index returns the query itself), and an
    item with truth but no neighbour list scores 0 rather than being skipped. NaN if no item has truth.
    """
    if k <= 0:
        raise ValueError(f"k must be positive, got {k}")
    values = []
    for item, true_set in truth.items():
        true_set = set(true_set)
        if not true_set:
            continue
        found = [n for n in neighbours.get(item, []) if n != item][:k]
        values.append(len(set(found) & true_set) / k)
    return float(np.mean(values)) if values else float("nan")
