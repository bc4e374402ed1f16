"""The EASE score term (`{type: ease, l2, similar_weight, recommend_weight}`): the closed-form weights, the
standardised similar-items blend, the term's scores, and what a fitted model serves, saves and refuses."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import DEMO_CONFIG, demo_split, evidence_by_hand, fit_demo, similar_items_follow

from hybridrec.artifacts import write_manifest
from hybridrec.config import load_config
from hybridrec.errors import ConfigError, ModelFileError
from hybridrec.model.history import UserHistory
from hybridrec.recommender import HybridRecommender
from hybridrec.scoring.base import FitContext, NewItems, blend_similar, standardised
from hybridrec.scoring.ease import MAX_ITEMS, EaseParams, EaseTerm, closed_form_weights


def test_each_column_is_the_ridge_regression_of_that_item_on_the_others():
    rng = np.random.default_rng(0)
    x = (rng.random((60, 7)) < 0.3).astype(np.float64)
    lam = 3.0
    weights = closed_form_weights(x.T @ x, lam)
    for j in range(7):
        others = [i for i in range(7) if i != j]
        a = x[:, others]
        expected = np.linalg.solve(a.T @ a + lam * np.eye(6), a.T @ x[:, j])
        assert np.allclose(weights[others, j], expected, atol=1e-5)
        assert weights[j, j] == 0.0


def fitted_term(users, items, n_users: int, n_items: int, lam: float, **weights: float) -> EaseTerm:
    """An EASE term fitted on (user row, item row) interactions, as fitting.py would."""
    users, items = np.asarray(users), np.asarray(items)

    def no_tokens():
        raise AssertionError("EASE never reads content")

    ctx = FitContext(n_users, n_items, users, items, UserHistory.from_rows(users, items, n_users), no_tokens, seed=0)
    term = EaseTerm(EaseParams(l2=lam, **weights))
    term.fit(ctx)
    return term


def test_repeated_purchases_count_once():
    users, items = np.array([0, 0, 1, 1, 2]), np.array([0, 1, 1, 2, 0])
    once = fitted_term(users, items, 3, 3, 1.0).weights
    again = fitted_term(np.r_[users, 0, 0], np.r_[items, 1, 1], 3, 3, 1.0).weights
    assert np.array_equal(once, again)


def test_the_term_scores_each_users_items_through_the_weights():
    """score(u, i) = sum of B[j, i] over u's distinct training items j; similar(i) = B[i]; new items get zero
    rows and columns."""
    rng = np.random.default_rng(1)
    users, items = np.nonzero(rng.random((8, 6)) < 0.4)
    users, items = np.r_[users, users[:3]], np.r_[items, items[:3]]  # a few repeats
    lam = 2.0
    term = fitted_term(users, items, 9, 6, lam, recommend_weight=0.5)  # user 8 has nothing
    x = np.zeros((9, 6))
    x[users, items] = 1.0
    p = np.linalg.inv(x.T @ x + lam * np.eye(6))
    b = np.eye(6) - p / np.diag(p)[None, :]
    np.fill_diagonal(b, 0.0)
    assert np.allclose(term.weights, b, atol=1e-5)
    assert np.allclose(term.score(np.arange(9)), x @ b, atol=1e-5)
    assert not term.score(np.array([8])).any()
    assert np.allclose(term.score(np.array([4, 1]), np.array([5, 0, 2])), (x @ b)[np.ix_([4, 1], [5, 0, 2])], atol=1e-5)
    assert np.allclose(term.similar(3), b[3], atol=1e-5)
    term.extend(NewItems(2, lambda: None))
    assert term.weights.shape == (8, 8) and not term.weights[6:].any() and not term.weights[:, 6:].any()
    assert np.allclose(term.score(np.arange(9))[:, :6], x @ b, atol=1e-5)


def test_a_catalogue_too_large_for_a_dense_ease_is_refused_before_fitting():
    term = EaseTerm(EaseParams())
    term.check_catalogue(MAX_ITEMS)
    with pytest.raises(ConfigError, match="dense EASE"):
        term.check_catalogue(MAX_ITEMS + 1)


def test_standardising_leaves_out_the_query_item_and_flattens_an_empty_row():
    z = standardised(np.array([100.0, 1.0, 2.0, 3.0]), skip=0)
    assert np.allclose(z[1:], [-np.sqrt(1.5), 0.0, np.sqrt(1.5)])  # mean 2, spread sqrt(2/3) of 1, 2, 3
    assert np.array_equal(standardised(np.array([5.0, 0.0, 0.0]), skip=0), np.zeros(3))


def test_the_similar_blend_weighs_standardised_scores():
    towers = np.array([9.0, 1.0, 2.0, 3.0])  # rest: mean 2, spread sqrt(2/3)
    term = np.array([7.0, 4.0, 4.0, 10.0])  # rest: mean 6, spread sqrt(8)
    flat = np.array([3.0, 0.0, 0.0, 0.0])
    blended = blend_similar(towers, [(0.25, term), (0.25, flat)], row=0)
    z_towers = np.array([-1.0, 0.0, 1.0]) * np.sqrt(1.5)
    z_term = np.array([-2.0, -2.0, 4.0]) / np.sqrt(8.0)
    assert np.allclose(blended[1:], 0.5 * z_towers + 0.25 * z_term + 0.25 * 0.0)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["model.terms=[{type: ease, similar_weight: 1.5}]"],
            r"model\.terms\[0\]\.similar_weight: 1\.5 is out of range",
        ),
        (["model.terms=[{type: ease, l2: 0}]"], r"model\.terms\[0\] \(ease\): l2: 0\.0 must be > 0"),
        (
            ["model.variant=content-only", "model.terms=[{type: ease, similar_weight: 0.5}]"],
            r"model\.terms\[0\] \(ease\): learned from who bought what, which a content-only model",
        ),
        (
            ["model.variant=content-only", "model.user_history.length=20", "model.user_history.similar_weight=0.5"],
            r"model\.user_history\.similar_weight: learned from who bought what, which a content-only model",
        ),
    ],
    ids=["weight", "penalty", "content-only", "content-only-bought-with"],
)
def test_bad_ease_settings_are_config_errors(overrides, message):
    """Out of range, or behavioural similar items asked of a model whose items are placed by content alone."""
    with pytest.raises(ConfigError, match=message):
        load_config(DEMO_CONFIG, overrides)
    load_config(DEMO_CONFIG, overrides[:-1])  # the rest of the settings are fine on their own


def ease_from_frames(rec: HybridRecommender, train: pd.DataFrame, lam: float) -> np.ndarray:
    """EASE straight from the split's training rows, by the textbook formula."""
    x = np.zeros((len(rec.users_), len(rec.items_)))
    x[rec.users_.indices(train["user_id"]), rec.items_.indices(train["item_id"])] = 1.0
    p = np.linalg.inv(x.T @ x + lam * np.eye(x.shape[1]))
    b = np.eye(x.shape[1]) - p / np.diag(p)[None, :]
    np.fill_diagonal(b, 0.0)
    return b


def z(scores: np.ndarray, skip: int) -> np.ndarray:
    rest = np.delete(scores, skip)
    return (scores - rest.mean()) / rest.std()


def ease_terms(*params: str) -> str:
    return "model.terms=[{type: ease, " + ", ".join(params) + "}]"


@pytest.mark.parametrize("weight", [0.5, 0.9])
def test_similar_items_blend_the_cosine_with_ease_after_standardising_both(
    demo_dataset, text_cache_dir, tmp_path, weight
):
    lam = 20.0
    overrides = (ease_terms(f"l2: {lam}", f"similar_weight: {weight}"),)
    rec = fit_demo(demo_dataset, text_cache_dir, *overrides)
    ease = ease_from_frames(rec, demo_split(demo_dataset, *overrides).train, lam)
    assert np.allclose(rec.term("ease").weights, ease, atol=1e-5)
    vectors = rec.towers_.item_vectors
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    neighbour, query = evidence_by_hand(rec)  # EASE is behavioural: each neighbour's entry weighed by its evidence
    changed = similar_items_follow(
        rec,
        lambda row: (
            (1 - weight * query[row]) * z(unit @ unit[row] * neighbour, row)
            + weight * query[row] * z(ease[row] * neighbour, row)
        ),
        lambda row: vectors[row],
        atol=1e-4,
    )
    assert changed  # the closed form moves neighbours the vectors alone would give
    assert rec.term("ease").scale == 1.0  # no recommend weight: recommend and predict are the towers' alone
    users = rec.users_.indices(demo_split(demo_dataset).test["user_id"].iloc[:5])
    assert np.array_equal(rec.score_matrix(users), rec.towers_.matrix(users))
    rec.save(tmp_path / "m")
    ids, scores = rec.similar_items("D0031", 5)
    loaded_ids, loaded_scores = HybridRecommender.load(tmp_path / "m").similar_items("D0031", 5)
    assert loaded_ids == ids and np.allclose(loaded_scores, scores)


def test_new_items_join_an_ease_model_with_no_co_purchase_evidence(demo_dataset, text_cache_dir):
    rec = fit_demo(demo_dataset, text_cache_dir, ease_terms("similar_weight: 0.5"))
    new = demo_dataset.items[demo_dataset.items["item_id"] == "D0031"].assign(item_id="NEW-1")
    rec.add_items(new)
    row = rec.items_.index("NEW-1")
    weights = rec.term("ease").weights
    assert weights.shape == (len(rec.items_), len(rec.items_))
    assert not weights[row].any() and not weights[:, row].any()
    # nobody bought it, so its EASE share is flat and its neighbours are those of its content vector alone, each
    # trusted as far as its own evidence goes
    vectors = rec.towers_.item_vectors
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    neighbour, query = evidence_by_hand(rec)
    assert query[row] == 0
    cosine = unit @ unit[row] * neighbour
    cosine[row] = -np.inf
    assert rec.similar_items("NEW-1", 5)[0] == rec.items_.raws(np.argsort(-cosine, kind="stable")[:5])


def implicit(dataset):
    """The demo's ratings >= 4 as purchases."""
    from dataclasses import replace

    positive = dataset.interactions[dataset.interactions["rating"] >= 4].reset_index(drop=True)
    return replace(dataset, interactions=positive, feedback="implicit", rating_range=None)


def test_ease_as_a_recommend_term_adds_its_share_of_the_spread_everywhere(demo_dataset, text_cache_dir, tmp_path):
    weight, lam = 0.3, 50.0
    overrides = (ease_terms(f"l2: {lam}", f"recommend_weight: {weight}"), "train.loss=bpr")
    data = implicit(demo_dataset)
    rec = fit_demo(data, text_cache_dir, *overrides)
    split = demo_split(data, *overrides)
    ease = ease_from_frames(rec, split.train, lam)
    x = np.zeros((len(rec.users_), len(rec.items_)))
    x[rec.users_.indices(split.train["user_id"]), rec.items_.indices(split.train["item_id"])] = 1.0
    users = rec.users_.indices(sorted(set(split.train["user_id"])))
    t = rec.towers_
    towers = t.global_mean + t.user_bias[users, None] + t.item_bias[None, :] + t.user_vectors[users] @ t.item_vectors.T
    term = x[users] @ ease
    # every demo user and item is in the scale sample: the spreads are over all of them
    scale = weight / (1 - weight) * towers.std() / term.std()
    assert np.isclose(rec.term("ease").scale, scale, rtol=1e-3)
    assert np.allclose(rec.score_matrix(users), towers + scale * term, atol=1e-3)
    # full ranking, exact recommend and predict are the same score, the term included
    user = split.test["user_id"].iloc[0]
    row = rec.users_.index(user)
    full = rec.score_matrix(np.array([row]))[0]
    seen = split.train.loc[split.train["user_id"] == user, "item_id"].tolist()
    seen += split.validation.loc[split.validation["user_id"] == user, "item_id"].tolist()
    assert set(rec.seen_rows(row)) == set(rec.items_.indices(seen))
    full[rec.items_.indices(seen)] = -np.inf
    ids, scores = rec.recommend(user, k=5, exact=True)
    assert ids == rec.items_.raws(np.argsort(-full, kind="stable")[:5])
    assert np.allclose(scores, np.sort(full)[::-1][:5], atol=1e-4)
    assert np.allclose(rec.predict([user] * 5, ids), scores, atol=1e-4)
    assert not np.allclose(x[row] @ ease, 0)  # the term is part of those scores
    folder = rec.save(tmp_path / "m")
    assert {p.name for p in (folder / "terms" / "ease").iterdir()} == {
        "weights.npy",
        "history_indptr.npy",
        "history_items.npy",
    }
    loaded = HybridRecommender.load(tmp_path / "m")
    assert loaded.term("ease").scale == rec.term("ease").scale
    loaded_ids, loaded_scores = loaded.recommend(user, k=5)
    assert loaded_ids == ids and np.allclose(loaded_scores, scores, atol=1e-5)
    new = pd.DataFrame([{"item_id": "N1", "title": "S-Video cable 3 ft", "category": "Video Cables & Adapters"}])
    loaded.add_items(new)
    assert loaded.term("ease").weights.shape == (len(loaded.items_),) * 2
    assert loaded.term("ease").score(np.array([row]), np.array([loaded.items_.index("N1")]))[0, 0] == 0.0
    assert len(loaded.recommend(user, k=5)[0]) == 5


def saved_with_ease(rec: HybridRecommender, tmp_path):
    folder = rec.save(tmp_path / "m")
    manifest = json.loads((folder / "manifest.json").read_text())
    return folder, {k: v for k, v in manifest.items() if k not in ("format_version", "created", "files")}


def test_a_model_folder_with_mismatched_ease_weights_is_refused(demo_dataset, text_cache_dir, tmp_path):
    rec = fit_demo(demo_dataset, text_cache_dir, ease_terms("similar_weight: 0.5"), "train.epochs=1")
    folder, extra = saved_with_ease(rec, tmp_path)
    assert extra["components"] == [{"kind": "term", "type": "ease", "path": "terms/ease", "scale": 1.0}]
    np.save(folder / "terms" / "ease" / "weights.npy", np.zeros((3, 3), np.float32), allow_pickle=False)
    with pytest.raises(ModelFileError, match="checksum"):  # an altered file is caught by the manifest first
        HybridRecommender.load(tmp_path / "m")
    write_manifest(folder, extra)  # a consistent manifest over the wrong shape
    with pytest.raises(ModelFileError, match=r"terms/ease: EASE weights are \(3, 3\)"):
        HybridRecommender.load(tmp_path / "m")


def test_a_model_folder_with_ease_histories_outside_the_catalogue_is_refused(demo_dataset, text_cache_dir, tmp_path):
    rec = fit_demo(demo_dataset, text_cache_dir, ease_terms("similar_weight: 0.5"), "train.epochs=1")
    folder, extra = saved_with_ease(rec, tmp_path)
    items = np.load(folder / "terms" / "ease" / "history_items.npy")
    items[0] = len(rec.items_)
    np.save(folder / "terms" / "ease" / "history_items.npy", items, allow_pickle=False)
    write_manifest(folder, extra)
    with pytest.raises(ModelFileError, match="terms/ease: user histories name items outside the catalogue"):
        HybridRecommender.load(tmp_path / "m")


def test_a_model_folder_without_its_declared_term_is_refused(demo_dataset, text_cache_dir, tmp_path):
    rec = fit_demo(demo_dataset, text_cache_dir, ease_terms("similar_weight: 0.5"), "train.epochs=1")
    folder, extra = saved_with_ease(rec, tmp_path)
    write_manifest(folder, extra | {"components": []})
    with pytest.raises(ModelFileError, match="the 'ease' term of the config is not in the model"):
        HybridRecommender.load(tmp_path / "m")
