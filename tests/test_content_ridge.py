"""The content ridge score term for cold start (`{type: content_ridge, l2, recommend_weight}`): its ridge
regressions, its tokens, its share of a fitted model's scores, and what saving and new items do with it."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import DEMO_CONFIG, REPO, demo_split, fit_demo, requires_shared_data
from scipy import sparse
from sklearn.linear_model import Ridge

from hybridrec.artifacts import write_manifest
from hybridrec.config import load_config
from hybridrec.data.readers import read_dataset
from hybridrec.data.splits import split_interactions
from hybridrec.errors import ConfigError, ModelFileError
from hybridrec.evaluation.holdout import evaluate
from hybridrec.model.history import UserHistory
from hybridrec.recommender import HybridRecommender
from hybridrec.scoring.base import FitContext, NewItems, blend_scale
from hybridrec.scoring.content_ridge import (
    MAX_CELLS,
    MAX_TOKENS,
    ContentRidgeParams,
    ContentRidgeTerm,
    check_size,
    fit_projection,
    token_matrix,
)


def fitted_term(tokens: sparse.csr_matrix, users, items, n_users: int, lam: float) -> ContentRidgeTerm:
    """A content ridge term fitted on (user row, item row) interactions, as fitting.py would."""
    users, items = np.asarray(users), np.asarray(items)
    history = UserHistory.from_rows(users, items, n_users)
    ctx = FitContext(n_users, tokens.shape[0], users, items, history, lambda: tokens, seed=0)
    term = ContentRidgeTerm(ContentRidgeParams(l2=lam, recommend_weight=0.5))
    term.fit(ctx)
    return term


def test_each_users_scores_are_a_ridge_regression_of_their_items_on_the_tokens():
    rng = np.random.default_rng(0)
    tokens = sparse.csr_matrix((rng.random((30, 8)) < 0.3).astype(np.float32))
    users, items = np.nonzero(rng.random((5, 24)) < 0.25)  # items 24-29 are nobody's: cold
    lam = 2.0
    term = fitted_term(tokens, users, items, 5, lam)
    fitted = np.unique(items)
    for u in range(5):
        target = np.isin(fitted, items[users == u]).astype(float)
        coef = Ridge(alpha=lam, fit_intercept=False).fit(tokens[fitted].toarray(), target).coef_
        assert np.allclose(term.profiles(np.array([u]))[0], coef, atol=1e-4)  # the user's ridge coefficients
        assert np.allclose(term.score(np.array([u]))[0], tokens.toarray() @ coef, atol=1e-4)
    # the projection: every item's tokens through the ridge solve over the items with interactions
    dense = tokens.toarray().astype(np.float64)
    solve = np.linalg.inv(dense[fitted].T @ dense[fitted] + lam * np.eye(8))
    assert np.allclose(fit_projection(tokens, items, lam), dense @ solve, atol=1e-5)
    assert np.allclose(term.projection, dense @ solve, atol=1e-5)


def test_repeats_count_once_and_item_rows_pick_columns_of_the_matrix():
    tokens = sparse.csr_matrix(np.eye(4, dtype=np.float32)[[0, 1, 2, 3, 0]])
    users, items = np.array([0, 0, 1]), np.array([0, 4, 1])
    once = fitted_term(tokens, users, items, 2, 1.0)
    again = fitted_term(tokens, np.r_[users, 0], np.r_[items, 4], 2, 1.0)
    assert np.array_equal(once.score(np.arange(2)), again.score(np.arange(2)))
    full = once.score(np.arange(2))
    assert np.allclose(once.score(np.array([1, 0]), np.array([3, 4, 1])), full[np.ix_([1, 0], [3, 4, 1])])
    # items outside the catalogue are scored through their tokens: a twin of item 0 scores like it
    twin = sparse.csr_matrix(np.eye(4, dtype=np.float32)[[0, 3]])
    assert np.allclose(once.for_tokens(np.arange(2), twin), full[:, [0, 3]])
    assert np.allclose(once.score_new(np.arange(2), NewItems(2, lambda: twin)), full[:, [0, 3]])
    once.extend(NewItems(2, lambda: twin))  # added to the catalogue: nobody has them, yet they score
    assert once.projection.shape == (7, 4) and not once.projection[5:].any()
    assert np.allclose(once.score(np.arange(2)), np.c_[full, full[:, [0, 3]]])


def test_tokens_are_one_block_per_column_without_padding_or_unknown_values():
    # vocabulary indices: 0 pads, 1 is out-of-vocabulary, values start at 2
    brand = np.array([[2], [3], [1]])
    tags = np.array([[2, 3, 0], [4, 4, 0], [0, 0, 0]])
    tokens = token_matrix([brand, tags], [4, 5]).toarray()
    assert tokens.tolist() == [[1, 0, 1, 1, 0], [0, 1, 0, 0, 1], [0, 0, 0, 0, 0]]


def test_a_ridge_too_large_or_without_tokens_is_refused_before_training():
    check_size(10, MAX_TOKENS)
    with pytest.raises(ConfigError, match="no categorical, word or binned features"):
        check_size(10, 0)
    with pytest.raises(ConfigError, match="features.min_count"):
        check_size(10, MAX_TOKENS + 1)
    with pytest.raises(ConfigError, match="features.min_count"):
        check_size(MAX_CELLS // 100 + 1, 100)


def test_the_blend_scale_gives_the_term_its_share_of_the_spread():
    towers = np.array([[0.0, 2.0], [4.0, 6.0]])  # spread sqrt(5)
    term = np.array([[1.0, 1.0], [1.0, 3.0]])  # spread sqrt(3) / 2
    assert blend_scale(towers, term, 0.2) == pytest.approx(0.25 * np.sqrt(5) / (np.sqrt(3) / 2))
    assert blend_scale(towers, np.ones((2, 2)), 0.5) == 0.0  # a flat term adds nothing


def ridge_terms(*params: str) -> str:
    return "model.terms=[{type: content_ridge, " + ", ".join(params) + "}]"


@pytest.mark.parametrize(
    "overrides, message",
    [
        ([ridge_terms("recommend_weight: 1"), "train.loss=bpr"], r"model\.terms\[0\]\.recommend_weight: 1\.0 is out"),
        ([ridge_terms("l2: 0"), "train.loss=bpr"], r"model\.terms\[0\] \(content_ridge\): l2: 0\.0 must be > 0"),
        ([ridge_terms("recommend_weight: 0.5")], r"model\.terms\[0\] \(content_ridge\): needs a ranking train\.loss"),
        (
            [ridge_terms("recommend_weight: 0.5"), "train.loss=mse"],
            r"model\.terms\[0\] \(content_ridge\): needs a ranking train\.loss",
        ),
        (
            [ridge_terms("recommend_weight: 0.5"), "train.loss=bpr", "model.variant=id-only"],
            r"model\.terms\[0\] \(content_ridge\): an id-only model uses no item content",
        ),
        (  # no similar-items view to blend
            [ridge_terms("similar_weight: 0.5")],
            r"model\.terms\[0\]\.similar_weight: a 'content_ridge' term has no similar-items view",
        ),
    ],
    ids=["weight", "penalty", "auto-loss", "mse-loss", "id-only", "similar"],
)
def test_content_ridge_settings_are_checked(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(DEMO_CONFIG, overrides)


WEIGHT, LAM = 0.4, 5.0
RIDGE = (ridge_terms(f"l2: {LAM}", f"recommend_weight: {WEIGHT}"), "train.loss=bpr")


@pytest.fixture(scope="module")
def ridge_model(demo_dataset, text_cache_dir):
    return fit_demo(demo_dataset, text_cache_dir, *RIDGE)


def network_scores(rec: HybridRecommender, user_rows: np.ndarray) -> np.ndarray:
    t = rec.towers_
    return (
        t.global_mean
        + t.user_bias[user_rows, None]
        + t.item_bias[None, :]
        + t.user_vectors[user_rows] @ t.item_vectors.T
    )


def item_tokens(train: pd.DataFrame, items: pd.DataFrame) -> np.ndarray:
    """brand, category and subcategory one-hot over the values two or more training items share, straight from
    the item table (the vocabulary rule of features.min_count 2)."""
    train_items = items[items["item_id"].isin(set(train["item_id"]))]
    columns = []
    for col in ["brand", "category", "subcategory"]:
        counts = train_items[col].value_counts()
        for value in sorted(counts.index[counts >= 2]):
            columns.append((items[col] == value).to_numpy(float))
    return np.stack(columns, axis=1)


def test_a_fitted_models_scores_add_the_ridge_at_its_share_of_the_spread(ridge_model, demo_dataset):
    rec = ridge_model
    train = demo_split(demo_dataset, *RIDGE).train  # explicit ratings: the ridge regresses on every rated item
    assert train["rating"].min() < 4
    f = item_tokens(train, demo_dataset.items.set_index("item_id").loc[rec.items_.raw_ids].reset_index())
    fitted = np.unique(rec.items_.indices(train["item_id"]))
    users = sorted(set(train["user_id"]))
    rows = rec.users_.indices(users)
    ridge = np.zeros((len(users), len(rec.items_)))
    for j, user in enumerate(users):
        target = np.isin(fitted, rec.items_.indices(train.loc[train["user_id"] == user, "item_id"])).astype(float)
        ridge[j] = f @ Ridge(alpha=LAM, fit_intercept=False).fit(f[fitted], target).coef_
    model = network_scores(rec, rows)
    # every demo user and item is in the scale sample (fewer than SCALE_USERS, SCALE_ITEMS): spreads over all
    scale = WEIGHT / (1 - WEIGHT) * model.std() / ridge.std()
    term = rec.term("content_ridge")
    assert np.isclose(term.scale, scale, rtol=1e-3)
    assert np.allclose(term.score(rows), ridge, atol=1e-4)
    assert np.allclose(rec.score_matrix(rows), model + scale * ridge, atol=1e-3)
    pick = np.array([3, 40, 7])
    pairs = rec.score_pairs(rows[pick], pick)
    assert np.allclose(pairs, (model + scale * ridge)[pick, pick], atol=1e-3)
    assert np.allclose(
        rec.predict([users[j] for j in pick], rec.items_.raws(pick)), (model + scale * ridge)[pick, pick], atol=1e-3
    )


def test_saving_keeps_the_ridge_and_new_items_are_scored_through_their_tokens(ridge_model, demo_dataset, tmp_path):
    rec = ridge_model
    folder = rec.save(tmp_path / "m")
    assert {p.name for p in (folder / "terms" / "content_ridge").iterdir()} == {
        "projection.npy",
        "tokens_indptr.npy",
        "tokens_indices.npy",
        "history_indptr.npy",
        "history_items.npy",
    }
    components = json.loads((folder / "manifest.json").read_text())["components"]
    scale = rec.term("content_ridge").scale
    assert components == [{"kind": "term", "type": "content_ridge", "path": "terms/content_ridge", "scale": scale}]
    loaded = HybridRecommender.load(tmp_path / "m")
    assert loaded.term("content_ridge").scale == scale  # fixed at fit, never recomputed
    rows = np.arange(5)
    assert np.allclose(loaded.score_matrix(rows), rec.score_matrix(rows), atol=1e-5)

    user = rec.users_.raw(2)
    twin = demo_dataset.items[demo_dataset.items["item_id"] == "D0031"].assign(item_id="NEW-1")
    fresh = loaded.score_new_items(twin, user_ids=[user])["score"].iloc[0]
    loaded.add_items(twin)
    new_row, old_row = loaded.items_.index("NEW-1"), loaded.items_.index("D0031")
    ridge = loaded.term("content_ridge").score(np.array([2]))[0]
    assert ridge[new_row] == pytest.approx(ridge[old_row], abs=1e-5) and ridge[new_row] != 0  # same tokens
    assert loaded.predict([user], ["NEW-1"])[0] == pytest.approx(fresh, abs=1e-4)


def test_recommend_on_a_big_catalogue_keeps_items_the_ridge_alone_ranks_high(ridge_model, monkeypatch):
    """Past recommender.EXACT_RECOMMEND_ITEMS items, recommend() re-scores a candidate pool instead of the catalogue.
    Items strong only through the ridge (nothing to do with the user vector the ANN pool is drawn by) must still
    be in it: here the ridge dominates and the pool is shrunk, so the ANN and bias candidates alone miss them."""
    import hybridrec.recommender as recommender

    rec = ridge_model
    term = rec.term("content_ridge")
    monkeypatch.setattr(recommender, "EXACT_RECOMMEND_ITEMS", 0)
    monkeypatch.setattr(recommender, "MIN_CANDIDATES", 1)
    monkeypatch.setattr(term, "scale", term.scale * 1000)
    for user in rec.users_.raws(np.arange(0, 60, 6)):
        exact_ids, exact_scores = rec.recommend(user, 2, exact=True)
        ids, scores = rec.recommend(user, 2)
        assert ids == exact_ids and np.allclose(scores, exact_scores)


def test_a_model_folder_with_a_mismatched_content_ridge_is_refused(ridge_model, tmp_path):
    folder = ridge_model.save(tmp_path / "m")
    manifest = json.loads((folder / "manifest.json").read_text())
    projection = np.load(folder / "terms" / "content_ridge" / "projection.npy")
    np.save(folder / "terms" / "content_ridge" / "projection.npy", projection[:-1], allow_pickle=False)
    write_manifest(folder, {k: v for k, v in manifest.items() if k not in ("format_version", "created", "files")})
    with pytest.raises(ModelFileError, match="terms/content_ridge: the content ridge projection does not fit"):
        HybridRecommender.load(tmp_path / "m")


@requires_shared_data
def test_on_goodbooks_the_ridge_ranks_cold_books_better_than_the_network_alone():
    """The real data it was built for: books held out of training entirely, scored from authors, tags, language
    and year. A short fit (2 epochs) keeps the test quick; the ridge does not depend on the epochs."""
    cfg = load_config(
        REPO / "benchmarks" / "configs" / "goodbooks-cold.yaml",
        ["train.threads=1", "train.epochs=2", "train.average_last=0"],
    )
    dataset = read_dataset(cfg)
    split = split_interactions(dataset.interactions, cfg.split, cfg.seed)
    assert split.cold_items and not set(split.cold_items) & set(split.train["item_id"])
    rec = HybridRecommender(cfg).fit(dataset, split.train, split.validation)
    assert [t.type for t in rec.terms_] == ["content_ridge"] and rec.term("content_ridge").scale > 0
    blended = evaluate(rec, split.test, cold_items=split.cold_items)["cold_auc"]
    terms, rec.terms_ = rec.terms_, []
    network = evaluate(rec, split.test, cold_items=split.cold_items)["cold_auc"]
    rec.terms_ = terms
    assert network > 0.55  # the network alone already ranks cold books above chance ...
    assert blended > network + 0.01  # ... and the ridge adds to it
