"""Metrics against hand-computed values, sklearn, and a popularity baseline on MovieLens 100K."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from hybridrec.config import SplitConfig
from hybridrec.data.splits import split_interactions
from hybridrec.evaluation.metrics import (
    hit_rate_ndcg_sampled,
    mae,
    per_user_auc,
    precision_at_k,
    ranking_metrics,
    recall_ndcg_at_k,
    rmse,
    roc_auc,
    top_k_indices,
)

# ---------- rating errors ----------


def test_rmse_and_mae_by_hand() -> None:
    assert rmse([1, 2, 3], [1, 2, 5]) == pytest.approx(math.sqrt(4 / 3))
    assert mae([1, 2, 3], [1, 2, 5]) == pytest.approx(2 / 3)
    assert rmse(np.array([4.0, 2.0]), np.array([3.0, 3.0])) == pytest.approx(1.0)
    assert mae([1.5], [1.5]) == 0.0


def test_rating_errors_reject_mismatched_or_empty_input() -> None:
    with pytest.raises(ValueError, match="y_pred"):
        rmse([1, 2], [1])
    with pytest.raises(ValueError, match="no predictions"):
        mae([], [])


# ---------- sampled HR / NDCG (NCF protocol) ----------


def negatives_around(pos: float, above: int, total: int = 99) -> np.ndarray:
    """`above` negatives scoring higher than pos, the rest lower."""
    return np.r_[np.full(above, pos + 1.0), np.full(total - above, pos - 1.0)]


def test_positive_ranked_third_among_100() -> None:
    hr, ndcg = hit_rate_ndcg_sampled(np.array([0.5]), negatives_around(0.5, 2)[None, :], k=10)
    assert hr == 1.0
    assert ndcg == pytest.approx(1 / math.log2(4))


def test_rank_ten_is_a_hit_rank_eleven_is_not() -> None:
    pos = np.array([0.0, 0.0])
    neg = np.stack([negatives_around(0.0, 9), negatives_around(0.0, 10)])
    hr, ndcg = hit_rate_ndcg_sampled(pos, neg, k=10)
    assert hr == pytest.approx(0.5)
    assert ndcg == pytest.approx((1 / math.log2(11)) / 2)


def test_ties_count_against_the_positive() -> None:
    # one negative ties the positive: the positive ranks 2nd, not 1st
    neg = np.r_[0.5, np.zeros(98)][None, :]
    assert hit_rate_ndcg_sampled(np.array([0.5]), neg, k=1) == (0.0, 0.0)
    assert hit_rate_ndcg_sampled(np.array([0.5]), neg, k=2)[1] == pytest.approx(1 / math.log2(3))
    # constant scores earn nothing
    assert hit_rate_ndcg_sampled(np.zeros(5), np.zeros((5, 99)), k=10) == (0.0, 0.0)
    # a NaN positive is a miss, not a top hit
    assert hit_rate_ndcg_sampled(np.array([np.nan]), np.zeros((1, 99)), k=10) == (0.0, 0.0)


def test_random_scores_give_hr_near_k_over_m_plus_one() -> None:
    rng = np.random.default_rng(0)
    hr, ndcg = hit_rate_ndcg_sampled(rng.random(20_000), rng.random((20_000, 99)), k=10)
    assert hr == pytest.approx(10 / 100, abs=0.01)
    assert 0 < ndcg < hr


def test_sampled_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match="shape"):
        hit_rate_ndcg_sampled(np.zeros(3), np.zeros((2, 5)))


# ---------- full ranking ----------


def test_recall_ndcg_precision_by_hand() -> None:
    out = recall_ndcg_at_k([["a", "b", "c", "d", "e"]], [{"b", "e", "z"}], k=5)
    assert out["recall"] == pytest.approx(2 / 3)  # 2 hits / min(5, 3)
    assert out["precision"] == pytest.approx(2 / 5)
    dcg = 1 / math.log2(3) + 1 / math.log2(6)
    idcg = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    assert out["ndcg"] == pytest.approx(dcg / idcg)


def test_recall_denominator_is_min_of_k_and_relevant() -> None:
    out = recall_ndcg_at_k([["a", "b"]], [{"a", "b", "c", "d"}], k=2)
    assert out == {"recall": 1.0, "ndcg": pytest.approx(1.0), "precision": 1.0}


def test_users_without_relevant_items_are_skipped() -> None:
    alone = recall_ndcg_at_k([["a", "x"]], [{"a"}])
    with_empty = recall_ndcg_at_k([["a", "x"], ["q", "r"]], [{"a"}, set()])
    assert alone == with_empty == {"recall": 1.0, "ndcg": 1.0, "precision": 0.5}
    assert all(math.isnan(v) for v in recall_ndcg_at_k([["a"]], [set()]).values())


def test_k_truncates_and_duplicates_do_not_double_count() -> None:
    assert recall_ndcg_at_k([["x", "a"]], [{"a"}], k=1)["recall"] == 0.0
    out = recall_ndcg_at_k([["a", "a", "b"]], [{"a", "c"}], k=3)
    assert out["recall"] == pytest.approx(1 / 2)
    assert out["precision"] == pytest.approx(1 / 3)


def test_integer_item_arrays_work() -> None:
    out = recall_ndcg_at_k(np.array([[3, 1, 2], [0, 4, 5]]), [{1}, {5, 9}])
    assert out["recall"] == pytest.approx((1 + 1 / 2) / 2)
    assert out["ndcg"] == pytest.approx((1 / math.log2(3) + (1 / math.log2(4)) / (1 + 1 / math.log2(3))) / 2)


def test_top_k_indices_orders_excludes_and_pads() -> None:
    scores = np.array([[1.0, 3.0, 3.0, 0.0, 2.0], [5.0, np.nan, 1.0, 1.0, 0.0]])
    top = top_k_indices(scores, 3, exclude=[[1], [0, 2, 3, 4]])
    assert top.tolist() == [[2, 4, 0], [-1, -1, -1]]  # NaN never ranks, excluded never appear
    assert top_k_indices(scores[:1], 7).tolist() == [[1, 2, 4, 0, 3, -1, -1]]  # ties: lower index first
    assert scores[0, 1] == 3.0  # the caller's matrix is left alone


def test_top_k_matches_full_sort_on_random_scores() -> None:
    rng = np.random.default_rng(1)
    scores = rng.random((50, 300))
    expected = np.argsort(-scores, axis=1, kind="stable")[:, :10]
    assert (top_k_indices(scores, 10) == expected).all()


def test_ranking_metrics_matrix_and_callback_agree_and_skip_empty_users() -> None:
    rng = np.random.default_rng(2)
    scores = rng.random((40, 60))
    relevant = [set(rng.choice(60, size=int(rng.integers(0, 4)), replace=False).tolist()) for _ in range(40)]
    exclude = [set(rng.choice(60, size=5, replace=False).tolist()) - rel for rel in relevant]
    seen_rows: list[int] = []

    def score_rows(rows: np.ndarray) -> np.ndarray:
        seen_rows.extend(rows.tolist())
        return scores[rows]

    by_matrix = ranking_metrics(scores, relevant, k=10, exclude=exclude)
    by_callback = ranking_metrics(score_rows, relevant, k=10, exclude=exclude, batch_size=7)
    assert by_matrix == by_callback
    assert sorted(seen_rows) == [i for i, rel in enumerate(relevant) if rel]
    top = top_k_indices(scores, 10, exclude)
    keep = [i for i, rel in enumerate(relevant) if rel]
    assert by_matrix == recall_ndcg_at_k(top[keep], [relevant[i] for i in keep], k=10)


def test_excluded_relevant_item_cannot_hit() -> None:
    scores = np.array([[9.0, 1.0, 0.5]])
    assert ranking_metrics(scores, [{0}], k=1)["recall"] == 1.0
    assert ranking_metrics(scores, [{0}], k=1, exclude=[{0}])["recall"] == 0.0


# ---------- AUC ----------


def test_auc_by_hand_with_ties() -> None:
    # positives 1, 3 vs negatives 1, 2: pairs 0.5 + 0 + 1 + 1 = 2.5 of 4
    assert roc_auc(np.array([1, 1, 2, 3]), np.array([0, 1, 0, 1])) == pytest.approx(0.625)
    assert roc_auc(np.zeros(6), np.array([1, 0, 1, 0, 0, 1])) == 0.5
    assert math.isnan(roc_auc(np.array([0.1, 0.2]), np.array([1, 1])))


def test_per_user_auc_matches_sklearn_and_skips_single_class_users() -> None:
    rng = np.random.default_rng(3)
    data = {}
    for u in range(60):
        n = int(rng.integers(2, 40))
        labels = rng.random(n) < 0.3
        scores = np.round(rng.normal(size=n) + labels, 1)  # rounding makes ties
        data[f"u{u}"] = (scores, labels.astype(int))
    data["all-pos"] = (np.array([0.1, 0.9]), np.array([1, 1]))
    data["all-neg"] = (np.array([0.3]), np.array([0]))
    expected = [roc_auc_score(y, s) for s, y in data.values() if 0 < y.sum() < len(y)]
    assert per_user_auc(data) == pytest.approx(np.mean(expected), abs=1e-12)
    assert math.isnan(per_user_auc({"x": (np.array([1.0]), np.array([1]))}))


# ---------- similar items ----------


def test_precision_at_k_by_hand() -> None:
    neighbours = {"a": ["a", "b", "c", "x"], "b": ["y", "z", "a"], "c": ["q"]}
    truth = {"a": {"b", "x", "m"}, "b": {"a"}, "c": set(), "d": {"a"}}
    # a: self dropped -> [b, c, x][:2] = [b, c] -> 1/2; b: [y, z] -> 0; c skipped; d: no list -> 0
    assert precision_at_k(neighbours, truth, k=2) == pytest.approx((0.5 + 0 + 0) / 3)
    assert precision_at_k(neighbours, truth, k=3) == pytest.approx((2 / 3 + 1 / 3 + 0) / 3)
    assert math.isnan(precision_at_k(neighbours, {"a": set()}))


# ---------- real data: popularity beats chance on MovieLens 100K ----------


def test_popularity_baseline_on_movielens(ml100k: pd.DataFrame) -> None:
    split = split_interactions(ml100k, SplitConfig(kind="leave-last-out", validation_fraction=0.0), seed=0)
    users = sorted(ml100k["user_id"].unique())
    items = sorted(ml100k["item_id"].unique())
    u_ix = {u: i for i, u in enumerate(users)}
    i_ix = {it: j for j, it in enumerate(items)}
    popularity = np.zeros(len(items))
    np.add.at(popularity, split.train["item_id"].map(i_ix).to_numpy(), 1.0)
    seen = [set() for _ in users]
    for u, it in zip(split.train["user_id"], split.train["item_id"], strict=True):
        seen[u_ix[u]].add(i_ix[it])
    relevant = [set() for _ in users]
    for u, it in zip(split.test["user_id"], split.test["item_id"], strict=True):
        relevant[u_ix[u]].add(i_ix[it])

    pop = ranking_metrics(lambda rows: np.tile(popularity, (len(rows), 1)), relevant, k=10, exclude=seen)
    rng = np.random.default_rng(0)
    chance = ranking_metrics(rng.random((len(users), len(items))), relevant, k=10, exclude=seen)
    assert 0.0 <= chance["recall"] < 0.03 < pop["recall"] <= 1.0
    assert pop["ndcg"] > chance["ndcg"]
    assert pop["precision"] == pytest.approx(pop["recall"] / 10)  # one relevant item per user

    # sampled protocol: the held-out item against 99 unseen items
    pos, neg = [], []
    for u in range(len(users)):
        (target,) = relevant[u]
        pool = np.setdiff1d(np.arange(len(items)), list(seen[u] | {target}))
        pos.append(popularity[target])
        neg.append(popularity[rng.choice(pool, size=99, replace=False)])
    hr, ndcg = hit_rate_ndcg_sampled(np.array(pos), np.stack(neg), k=10)
    assert hr > 0.3 and 0 < ndcg < hr
