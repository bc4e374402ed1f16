"""The closed-form content model for cold start (model.content_ridge_weight): its ridge regressions, its tokens,
its share of a fitted model's scores, and what saving and new items do with it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import DEMO_CONFIG, REPO, quick_fit_overrides, requires_shared_data
from scipy import sparse
from sklearn.linear_model import Ridge

from hybridrec import content_ridge as cr
from hybridrec.artifacts import write_manifest
from hybridrec.config import load_config
from hybridrec.data.readers import read_dataset
from hybridrec.data.splits import split_interactions
from hybridrec.errors import ConfigError, ModelFileError
from hybridrec.evaluation.holdout import evaluate, score_matrix
from hybridrec.recommender import HybridRecommender


def test_each_users_scores_are_a_ridge_regression_of_their_items_on_the_tokens():
    rng = np.random.default_rng(0)
    tokens = sparse.csr_matrix((rng.random((30, 8)) < 0.3).astype(np.float32))
    users, items = np.nonzero(rng.random((5, 24)) < 0.25)  # items 24-29 are nobody's: cold
    lam = 2.0
    ridge = cr.ContentRidgeScores.fit(tokens, users, items, 5, lam)
    fitted = np.unique(items)
    for u in range(5):
        target = np.isin(fitted, items[users == u]).astype(float)
        coef = Ridge(alpha=lam, fit_intercept=False).fit(tokens[fitted].toarray(), target).coef_
        assert np.allclose(ridge.for_users(np.array([u]))[0], tokens.toarray() @ coef, atol=1e-4)


def test_repeats_count_once_and_pairs_match_the_matrix():
    tokens = sparse.csr_matrix(np.eye(4, dtype=np.float32)[[0, 1, 2, 3, 0]])
    users, items = np.array([0, 0, 1]), np.array([0, 4, 1])
    once = cr.ContentRidgeScores.fit(tokens, users, items, 2, 1.0)
    again = cr.ContentRidgeScores.fit(tokens, np.r_[users, 0], np.r_[items, 4], 2, 1.0)
    assert np.array_equal(once.for_users(np.arange(2)), again.for_users(np.arange(2)))
    pairs = once.for_pairs(np.array([1, 0, 1]), np.array([3, 4, 1]))
    assert np.allclose(pairs, once.for_users(np.arange(2))[[1, 0, 1], [3, 4, 1]])


def test_tokens_are_one_block_per_column_without_padding_or_unknown_values():
    # vocabulary indices: 0 pads, 1 is out-of-vocabulary, values start at 2
    brand = np.array([[2], [3], [1]])
    tags = np.array([[2, 3, 0], [4, 4, 0], [0, 0, 0]])
    tokens = cr.token_matrix([brand, tags], [4, 5]).toarray()
    assert tokens.tolist() == [[1, 0, 1, 1, 0], [0, 1, 0, 0, 1], [0, 0, 0, 0, 0]]


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["model.content_ridge_weight=1", "train.loss=bpr"], "out of range"),
        (["model.content_ridge_l2=0", "train.loss=bpr"], "out of range"),
        (["model.content_ridge_weight=0.5"], "ranking train.loss"),  # the demo's explicit ratings: mse
        (["model.content_ridge_weight=0.5", "train.loss=bpr", "model.variant=id-only"], "no item content"),
    ],
    ids=["weight", "penalty", "loss", "id-only"],
)
def test_content_ridge_settings_are_checked(overrides, message):
    with pytest.raises(ConfigError, match=f"model.content_ridge_.*{message}"):
        load_config(DEMO_CONFIG, overrides)


WEIGHT, LAM = 0.4, 5.0


@pytest.fixture(scope="module")
def ridge_model(demo_dataset, text_cache_dir):
    overrides = [
        f"model.content_ridge_weight={WEIGHT}",
        f"model.content_ridge_l2={LAM}",
        "train.loss=bpr",
        "train.min_rating=4",  # the network learns from liked items; the ridge from every rated one
        "train.epochs=2",
    ]
    cfg = load_config(DEMO_CONFIG, quick_fit_overrides(text_cache_dir, *overrides))
    return HybridRecommender(cfg).fit(demo_dataset)


def network_scores(rec: HybridRecommender, user_rows: np.ndarray) -> np.ndarray:
    return (
        rec.global_mean_
        + rec.user_bias_[user_rows, None]
        + rec.item_bias_
        + rec.user_vectors_[user_rows] @ (rec.item_vectors_.T)
    )


def item_tokens(rec: HybridRecommender, items: pd.DataFrame) -> np.ndarray:
    """brand, category and subcategory one-hot over the values two or more training items share, straight from
    the item table (the vocabulary rule of features.min_count 2)."""
    train_items = items[items["item_id"].isin(set(rec.split_.train["item_id"]))]
    columns = []
    for col in ["brand", "category", "subcategory"]:
        counts = train_items[col].value_counts()
        for value in sorted(counts.index[counts >= 2]):
            columns.append((items[col] == value).to_numpy(float))
    return np.stack(columns, axis=1)


def test_a_fitted_models_scores_add_the_ridge_at_its_share_of_the_spread(ridge_model, demo_dataset):
    rec = ridge_model
    assert rec.split_.train["rating"].min() >= 4  # split_ is what the network saw; the ridge saw every rating of
    rated = split_interactions(demo_dataset.interactions, rec.config.split, rec.config.seed).train  # the same rows
    assert rated["rating"].min() < 4 and set(rated.query("rating >= 4")["item_id"]) == set(rec.split_.train["item_id"])

    f = item_tokens(rec, demo_dataset.items.set_index("item_id").loc[rec.items_.raw_ids].reset_index())
    fitted = np.unique(rec.items_.indices(rated["item_id"]))
    users = sorted(set(rated["user_id"]))
    rows = rec.users_.indices(users)
    ridge = np.zeros((len(users), len(rec.items_)))
    for j, user in enumerate(users):
        target = np.isin(fitted, rec.items_.indices(rated.loc[rated["user_id"] == user, "item_id"])).astype(float)
        ridge[j] = f @ Ridge(alpha=LAM, fit_intercept=False).fit(f[fitted], target).coef_
    model = network_scores(rec, rows)
    # every demo user and item is in the scale sample (fewer than cr.SCALE_USERS, cr.SCALE_ITEMS): spreads over all
    scale = WEIGHT / (1 - WEIGHT) * model.std() / ridge.std()
    assert np.isclose(rec.content_ridge_.scale, scale, rtol=1e-3)
    assert np.allclose(score_matrix(rec, rows), model + scale * ridge, atol=1e-3)
    pick = np.array([3, 40, 7])
    assert np.allclose(
        rec.predict([users[j] for j in pick], rec.items_.raws(pick)), (model + scale * ridge)[pick, pick], atol=1e-3
    )


def test_saving_keeps_the_ridge_and_new_items_are_scored_through_their_tokens(ridge_model, demo_dataset, tmp_path):
    rec = ridge_model
    rec.save(tmp_path / "m")
    loaded = HybridRecommender.load(tmp_path / "m")
    rows = np.arange(5)
    assert np.allclose(score_matrix(loaded, rows), score_matrix(rec, rows), atol=1e-5)

    user = rec.users_.raw(2)
    twin = demo_dataset.items[demo_dataset.items["item_id"] == "D0031"].assign(item_id="NEW-1")
    fresh = loaded.score_new_items(twin, user_ids=[user])["score"].iloc[0]
    loaded.add_items(twin)
    new_row, old_row = loaded.items_.index("NEW-1"), loaded.items_.index("D0031")
    ridge = loaded.content_ridge_.for_users(np.array([2]))[0]
    assert ridge[new_row] == pytest.approx(ridge[old_row], abs=1e-5) and ridge[new_row] != 0  # same tokens
    assert loaded.predict([user], ["NEW-1"])[0] == pytest.approx(fresh, abs=1e-4)


def test_recommend_on_a_big_catalogue_keeps_items_the_ridge_alone_ranks_high(ridge_model, monkeypatch):
    """Past recommender.EXACT_RECOMMEND_ITEMS items, recommend() re-scores a candidate pool instead of the catalogue.
    Items strong only through the ridge (nothing to do with the user vector the ANN pool is drawn by) must still
    be in it: here the ridge dominates and the pool is shrunk, so the ANN and bias candidates alone miss them."""
    import hybridrec.recommender as recommender

    rec = ridge_model
    monkeypatch.setattr(recommender, "EXACT_RECOMMEND_ITEMS", 0)
    monkeypatch.setattr(recommender, "MIN_CANDIDATES", 1)
    monkeypatch.setattr(rec.content_ridge_, "scale", rec.content_ridge_.scale * 1000)
    for user in rec.users_.raws(np.arange(0, 60, 6)):
        exact_ids, exact_scores = rec.recommend(user, 2, exact=True)
        ids, scores = rec.recommend(user, 2)
        assert ids == exact_ids and np.allclose(scores, exact_scores)


def test_a_model_folder_with_a_mismatched_content_ridge_is_refused(ridge_model, tmp_path):
    folder = ridge_model.save(tmp_path / "m")
    projection = np.load(folder / "vectors" / "content_ridge.npy")
    np.save(folder / "vectors" / "content_ridge.npy", projection[:-1], allow_pickle=False)
    write_manifest(folder, {"name": ridge_model.config.name})
    with pytest.raises(ModelFileError, match="content ridge"):
        HybridRecommender.load(tmp_path / "m")


@requires_shared_data
def test_on_goodbooks_the_ridge_ranks_cold_books_better_than_the_network_alone():
    """The real data it was built for: books held out of training entirely, scored from authors, tags, language
    and year. A short fit (2 epochs) keeps the test quick; the ridge does not depend on the epochs."""
    cfg = load_config(
        REPO / "configs" / "goodbooks-cold.yaml", ["train.threads=1", "train.epochs=2", "train.average_last=0"]
    )
    rec = HybridRecommender(cfg).fit(read_dataset(cfg))
    split = rec.split_
    assert split.cold_items and not set(split.cold_items) & set(split.train["item_id"])
    blended = evaluate(rec, split.test, cold_items=split.cold_items)["cold_auc"]
    ridge, rec.content_ridge_ = rec.content_ridge_, None
    network = evaluate(rec, split.test, cold_items=split.cold_items)["cold_auc"]
    rec.content_ridge_ = ridge
    assert network > 0.55  # the network alone already ranks cold books above chance ...
    assert blended > network + 0.01  # ... and the ridge adds to it
