"""Streaming held-out evaluation and validation: chunked scores give exactly the metrics of one pass, memory is
bounded by the chunk budget, sampled negatives end for a user who had every item, and so does a whole fit."""

from __future__ import annotations

import json
import tracemalloc

import numpy as np
import pandas as pd
import pytest
from conftest import assert_ok
from hardening import time_limit

from hybridrec.evaluation.holdout import evaluate, full_ranking
from hybridrec.evaluation.metrics import hit_rate_ndcg_sampled, ranking_metrics
from hybridrec.evaluation.streaming import (
    EVAL_BUDGET_BYTES,
    SCORE_CELL_BYTES,
    ItemSets,
    chunk_rows,
    gather_rows,
    sampled_negatives,
)


class TowerModel:
    """What `evaluate` reads of a fitted recommender, with random towers; it records each score_matrix call."""

    def __init__(self, n_users: int, n_items: int, dim: int = 8, seen_per_user: int = 6, seed: int = 0):
        from hybridrec.config import Config
        from hybridrec.data.idmap import IdMap
        from hybridrec.model.history import UserHistory
        from hybridrec.scoring.towers import TowerScores

        rng = np.random.default_rng(seed)
        self.users_ = IdMap((f"u{i}" for i in range(n_users)), "user")
        self.items_ = IdMap((f"i{i}" for i in range(n_items)), "item")
        self.feedback_, self.config = "implicit", Config()
        u, v = rng.standard_normal((n_users, dim)), rng.standard_normal((n_items, dim))
        self.towers_ = TowerScores(0.0, u.astype(np.float32), np.zeros(n_users, np.float32), v.astype(np.float32),
                                   rng.standard_normal(n_items).astype(np.float32))  # fmt: skip
        seen_users = np.repeat(np.arange(n_users), seen_per_user)
        self.seen_ = UserHistory.from_rows(seen_users, rng.integers(0, n_items, len(seen_users)), n_users)
        self.calls: list[tuple[int, int]] = []

    def score_matrix(self, user_rows: np.ndarray, item_rows: np.ndarray | None = None) -> np.ndarray:
        out = self.towers_.matrix(user_rows, item_rows)
        self.calls.append(out.shape)
        return out


def synthetic_test(model: TowerModel, n_rows: int, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    users = rng.integers(0, len(model.users_), n_rows)
    items = rng.integers(0, len(model.items_), n_rows)
    return pd.DataFrame({"user_id": [f"u{u}" for u in users], "item_id": [f"i{i}" for i in items], "rating": 1.0})


# ============================================================================ the same metrics, whatever the chunks
def test_chunked_evaluation_equals_one_pass_exactly_and_the_full_ranking_matches_the_set_reference():
    model = TowerModel(300, 500)
    test = synthetic_test(model, 2_000)
    one_pass = evaluate(model, test, k=10, seed=5)
    assert model.calls == [(len(set(test["user_id"])), 500)]
    model.calls.clear()
    budget = 7 * 500 * SCORE_CELL_BYTES  # 7 users a chunk, and 3 test rows a sampled block
    chunked = evaluate(model, test, k=10, seed=5, budget=budget)
    assert len(model.calls) > 20 and max(rows for rows, _ in model.calls) == 7
    assert chunked == one_pass and set(one_pass) >= {"hr@10_sampled", "ndcg@10_sampled", "recall@10", "ndcg@10"}

    # the reference: Python sets per user and the whole score matrix at once (the pre-streaming code path)
    users = model.users_.indices(test["user_id"])
    items = model.items_.indices(test["item_id"])
    rows = np.unique(users)
    relevant = [set(items[users == u].tolist()) for u in rows]
    exclude = [set(model.seen_.of(u).tolist()) for u in rows]
    reference = ranking_metrics(model.towers_.matrix(rows), relevant, k=10, exclude=exclude)
    assert one_pass["recall@10"] == reference["recall"] and one_pass["ndcg@10"] == reference["ndcg"]
    assert full_ranking(model, test, 10, model.seen_, budget=budget) == reference


def test_sampled_metrics_match_a_direct_computation_on_the_same_negatives():
    model = TowerModel(120, 300)
    test = synthetic_test(model, 800, seed=2)
    users = model.users_.indices(test["user_id"])
    items = model.items_.indices(test["item_id"])
    local, seen = gather_rows(model.seen_.indptr, model.seen_.items, np.arange(120))
    taken = ItemSets.from_pairs(np.concatenate([local, users]), np.concatenate([seen, items]), 120, 300)
    neg, has = sampled_negatives(users, taken, 99, seed=3)
    assert has.all() and not taken.contains(users[:, None], neg).any()
    scores = model.towers_.matrix(np.arange(120))
    hr, ndcg = hit_rate_ndcg_sampled(scores[users, items], scores[users[:, None], neg], k=10)
    got = evaluate(model, test, k=10, seed=3, budget=5 * 300 * SCORE_CELL_BYTES)
    assert got["hr@10_sampled"] == pytest.approx(hr, abs=1e-12)
    assert got["ndcg@10_sampled"] == pytest.approx(ndcg, abs=1e-12)


def test_a_real_fit_gives_the_same_metrics_in_small_chunks(demo_model):
    rec, split, cfg = demo_model.rec, demo_model.split, demo_model.config
    whole = evaluate(rec, split.test, split.cold_items, k=cfg.evaluate.k, seed=cfg.seed)
    tiny = 3 * len(rec.items_) * SCORE_CELL_BYTES  # three users a chunk
    assert evaluate(rec, split.test, split.cold_items, k=cfg.evaluate.k, seed=cfg.seed, budget=tiny) == whole
    assert {k: v for k, v in whole.items() if k not in ("n_test", "cold_items")} == demo_model.metrics  # the job's


def test_cold_item_metrics_do_not_depend_on_the_chunks():
    model = TowerModel(80, 200, seed=4)
    test = synthetic_test(model, 600, seed=5)
    cold = [f"i{i}" for i in range(0, 200, 3)]
    whole = evaluate(model, test, cold, k=5)
    assert whole == evaluate(model, test, cold, k=5, budget=2 * len(cold) * SCORE_CELL_BYTES)
    assert whole["cold_items"] == len(cold) and 0.0 <= whole["cold_auc"] <= 1.0


def test_top_k_is_the_k_best_with_ties_to_the_lower_column_whatever_the_exclusions():
    from hybridrec.evaluation.metrics import top_k_indices

    rng = np.random.default_rng(8)
    for trial in range(60):
        n_rows, n_cols, k = int(rng.integers(1, 6)), int(rng.integers(1, 900)), int(rng.integers(1, 25))
        scores = rng.integers(0, 3, (n_rows, n_cols)).astype(np.float32 if trial % 2 else np.float64)  # many ties
        scores[rng.random(scores.shape) < 0.1] = np.nan
        excluded = [rng.choice(n_cols, size=int(rng.integers(0, n_cols + 1)), replace=False) for _ in range(n_rows)]
        rows = np.repeat(np.arange(n_rows), [len(e) for e in excluded])
        top = top_k_indices(scores, k, exclude_pairs=(rows, np.concatenate(excluded)))
        for r in range(n_rows):
            allowed = np.setdiff1d(np.flatnonzero(~np.isnan(scores[r])), excluded[r])
            best = allowed[np.lexsort((allowed, -scores[r, allowed]))][:k]
            assert top[r].tolist() == [*best.tolist(), *[-1] * (k - len(best))]


def test_the_popularity_baseline_ranks_like_top_k_on_its_scores_and_evaluates_the_same():
    from hybridrec.evaluation.baseline import PopularityBaseline
    from hybridrec.evaluation.metrics import top_k_indices

    model = TowerModel(60, 40, seen_per_user=5, seed=9)
    rng = np.random.default_rng(9)
    train = pd.DataFrame({"item_id": [f"i{i}" for i in rng.integers(0, 30, 300)], "rating": 1.0})  # ties, zeros
    baseline = PopularityBaseline(model, train)
    rows = np.repeat(np.arange(6), [0, 3, 39, 40, 12, 1])  # row 3 excludes every item, row 2 all but one
    items = np.concatenate([rng.choice(40, size=n, replace=False) for n in (0, 3, 39, 40, 12, 1)])
    for k in (1, 10, 50):
        expected = top_k_indices(baseline.score_matrix(np.arange(6)), k, exclude_pairs=(rows, items))
        assert (baseline.full_ranking_top_k(6, k, (rows, items)) == expected).all()

    class Plain:  # the same scorer without its own ranking: evaluation ranks its score rows
        def __getattr__(self, name):
            if name == "full_ranking_top_k":
                raise AttributeError(name)
            return getattr(baseline, name)

    test = synthetic_test(model, 400, seed=10)
    assert evaluate(baseline, test, k=10, seed=1) == evaluate(Plain(), test, k=10, seed=1)


# ================================================================================== negatives of a power user
def test_negatives_end_for_a_user_who_had_every_item_and_are_exact_for_crowded_users():
    n_items = 50
    taken_lists = {0: np.arange(n_items), 1: np.arange(40), 2: np.array([3, 7]), 3: np.arange(n_items - 1)}
    owners = np.repeat(list(taken_lists), [len(v) for v in taken_lists.values()])
    taken = ItemSets.from_pairs(owners, np.concatenate(list(taken_lists.values())), 4, n_items)
    rows = np.array([0, 1, 2, 3, 0, 2])
    with time_limit(20):
        neg, has = sampled_negatives(rows, taken, 99, seed=0)
    assert has.tolist() == [False, True, True, True, False, True]
    assert (neg[~has] == -1).all()
    for j in np.flatnonzero(has):
        assert not np.isin(neg[j], taken_lists[rows[j]]).any()
    assert set(neg[1].tolist()) == set(range(40, 50))  # 99 draws from the 10 items left: all of them
    assert (neg[3] == n_items - 1).all()
    # the same rows give the same draws whatever else is drawn beside them (what makes chunking exact)
    again, _ = sampled_negatives(rows[2:3], taken, 99, seed=0, rows=np.array([2]))
    assert (again[0] == neg[2]).all()


def test_a_fit_where_a_user_has_seen_every_item_ends_with_metrics(tmp_path, text_cache_dir):
    from hybridrec_cli.main import app
    from typer.testing import CliRunner

    items = [f"I{i:02d}" for i in range(12)]
    rng = np.random.default_rng(7)
    rows = [("P", item, t) for t, item in enumerate(items)]  # P has every item: train, validation and test
    for u in range(40):
        rows += [(f"U{u:02d}", item, t) for t, item in enumerate(rng.choice(items, size=4, replace=False))]
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"]).assign(rating=1.0)
    frame.to_csv(tmp_path / "r.csv", index=False)
    (tmp_path / "c.yaml").write_text(
        "format_version: 2\nname: everything\n"
        "data: {format: table, paths: {interactions: r.csv}, feedback: implicit}\n"
        "split: {kind: leave-last-out, validation_fraction: 0.1}\n"
        f"features: {{text_encoder: none, cache_dir: {text_cache_dir}}}\n"
        "model: {dim: 8, hidden: 8}\ntrain: {epochs: 2, threads: 1}\n"
    )
    with time_limit(240):
        result = CliRunner().invoke(app, ["fit", "--config", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "o"),
                                          "--json", "-q"])  # fmt: skip
    assert_ok(result)
    metrics = json.loads(result.stdout.strip().splitlines()[-1])["metrics"]
    assert 0.0 <= metrics["hr@10_sampled"] <= 1.0 and 0.0 <= metrics["recall@10"] <= 1.0
    assert (tmp_path / "o" / "latest").resolve().is_dir()


# ============================================================================================ memory is bounded
def test_chunk_sizes_keep_a_chunk_within_the_budget():
    for n_items in (1, 500, 63_000, 500_000, 10**9):
        per = chunk_rows(n_items)
        assert per >= 1
        assert per == 1 or per * n_items * SCORE_CELL_BYTES <= EVAL_BUDGET_BYTES
        assert (per + 1) * n_items * SCORE_CELL_BYTES > EVAL_BUDGET_BYTES  # as many as fit, not fewer
    assert chunk_rows(60_000) * 60_000 * 4 < 256 * 2**20  # the float32 scores of a chunk: well under 256 MB


def test_evaluation_peak_memory_follows_the_budget_not_the_test_size():
    """In one chunk (an unbounded budget) numpy's peak here is ~260 MB (1,500 users x 20,000 items of scores and
    top-k work arrays); with a 16 MB budget it stays under the budget (~6.5 MB measured)."""
    model = TowerModel(1_500, 20_000, dim=16, seen_per_user=20)
    test = synthetic_test(model, 30_000, seed=6)
    budget = 16 * 2**20
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        metrics = evaluate(model, test, k=10, seed=0, budget=budget)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert max(rows for rows, _ in model.calls) * 20_000 * SCORE_CELL_BYTES <= budget
    assert peak < budget, f"peak {peak / 2**20:.1f} MB"
    assert metrics["n_test"] == 30_000 and 0.0 <= metrics["hr@10_sampled"] <= 1.0


def test_a_model_with_the_mlp_residual_is_scored_in_chunks_sized_for_its_pairs():
    from hybridrec.evaluation.holdout import cell_bytes

    model = TowerModel(200, 1_000, dim=8)
    assert cell_bytes(model) == SCORE_CELL_BYTES
    model.towers_.residual = lambda u, v: (u * v).sum(-1) * 0.1  # a stand-in: each (user, item) pair scored
    cell = cell_bytes(model)
    assert cell > 10 * SCORE_CELL_BYTES
    budget = 2 * 2**20
    evaluate(model, synthetic_test(model, 1_000), k=10, budget=budget)
    assert max(rows for rows, _ in model.calls) == chunk_rows(1_000, cell, budget) < chunk_rows(1_000, budget=budget)


# ========================================================================================= per-epoch validation
def test_validation_is_capped_to_the_same_rows_every_epoch_and_chunking_does_not_change_it(monkeypatch):
    from hybridrec.model import validation
    from hybridrec.model.train import Interactions

    n = 1_000
    val = Interactions(np.arange(n), np.arange(n) % 7, np.ones(n), np.ones(n))
    first, second = validation.capped(val, 100, seed=3), validation.capped(val, 100, seed=3)
    assert len(first) == 100 and (first.users == second.users).all() and (np.diff(first.users) > 0).all()
    assert validation.capped(val, 0, seed=3) is val and validation.capped(val, n, seed=3) is val


@pytest.mark.parametrize("loss", ["mse", "bpr"])  # RMSE, and 1 - sampled AUC
def test_chunked_validation_scores_equal_one_pass_in_a_real_fit(loss, monkeypatch, demo_dataset, text_cache_dir):
    from conftest import DEMO_CONFIG, demo_split, quick_fit_overrides

    from hybridrec.config import load_config
    from hybridrec.model import validation
    from hybridrec.recommender import HybridRecommender

    split = demo_split(demo_dataset)
    overrides = quick_fit_overrides(
        text_cache_dir, "features.text_encoder=tfidf", "train.epochs=2", f"train.loss={loss}"
    )

    def val_scores(*extra: str) -> list[float]:
        rec = HybridRecommender(load_config(DEMO_CONFIG, [*overrides, *extra]), quiet=True)
        rec.fit(demo_dataset, split.train, split.validation)
        return [row["val"] for row in rec.train_result_.history]

    whole = val_scores()
    monkeypatch.setattr(validation, "VALIDATION_CHUNK", 5)
    assert val_scores() == pytest.approx(whole, rel=1e-12)  # implicit: exact win counts; RMSE: summed by chunk
    capped = val_scores(f"train.validation_max_rows={len(split.validation) // 3}")
    assert len(capped) == len(whole) and capped != whole


def test_ranking_metrics_over_a_seeded_share_of_the_test_users(demo_model):
    """`evaluate.max_users`: the ranking metrics of a capped evaluation are those of the test rows of that many
    users (users with a positive test row), drawn by the seed: one user fewer than there are, and exactly one
    user's rows were left out."""
    from hybridrec.evaluation.holdout import positives

    rec, test = demo_model.rec, demo_model.split.test
    users = sorted(positives(test, rec.feedback_)["user_id"].unique())
    full = evaluate(rec, test, k=10, seed=3)
    assert evaluate(rec, test, k=10, seed=3, max_users=len(users)) == full  # no cap reached: nothing drawn
    capped = evaluate(rec, test, k=10, seed=3, max_users=len(users) - 1)
    assert capped == evaluate(rec, test, k=10, seed=3, max_users=len(users) - 1)  # the seed decides
    assert (capped.pop("test_users"), capped.pop("ranked_users")) == (len(users), len(users) - 1)
    ranking = [key for key in capped if "@" in key]
    assert ranking, capped

    def same(user: str) -> bool:
        alone = evaluate(rec, test[test["user_id"] != user], k=10, seed=3)
        return all(np.isclose(alone[key], capped[key]) for key in ranking)

    assert sum(same(user) for user in users) == 1
