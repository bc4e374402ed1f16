"""The closed-form item-item model (model.similar_closed_form_weight): EASE's weights, the standardised blend,
and the similar items a fitted model serves from them."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import DEMO_CONFIG, fit_demo, similar_items_follow

from hybridrec import closed_form as cf
from hybridrec.artifacts import write_manifest
from hybridrec.config import load_config
from hybridrec.errors import ConfigError, ModelFileError
from hybridrec.recommender import HybridRecommender


def test_each_column_is_the_ridge_regression_of_that_item_on_the_others():
    rng = np.random.default_rng(0)
    x = (rng.random((60, 7)) < 0.3).astype(np.float64)
    lam = 3.0
    weights = cf.closed_form_weights(x.T @ x, lam)
    for j in range(7):
        others = [i for i in range(7) if i != j]
        a = x[:, others]
        expected = np.linalg.solve(a.T @ a + lam * np.eye(6), a.T @ x[:, j])
        assert np.allclose(weights[others, j], expected, atol=1e-5)
        assert weights[j, j] == 0.0


def test_repeated_purchases_count_once():
    users, items = np.array([0, 0, 1, 1, 2]), np.array([0, 1, 1, 2, 0])
    once = cf.fit_closed_form(users, items, 3, 3, 1.0)
    again = cf.fit_closed_form(np.r_[users, 0, 0], np.r_[items, 1, 1], 3, 3, 1.0)
    assert np.array_equal(once, again)


def test_standardising_leaves_out_the_query_item_and_flattens_an_empty_row():
    z = cf.standardised(np.array([100.0, 1.0, 2.0, 3.0]), skip=0)
    assert np.allclose(z[1:], [-np.sqrt(1.5), 0.0, np.sqrt(1.5)])  # mean 2, spread sqrt(2/3) of 1, 2, 3
    assert np.array_equal(cf.standardised(np.array([5.0, 0.0, 0.0]), skip=0), np.zeros(3))


@pytest.mark.parametrize(
    "overrides",
    [
        ["model.similar_closed_form_weight=1.5"],
        ["model.closed_form_l2=0"],
        ["model.variant=content-only", "model.similar_closed_form_weight=0.5"],
        ["model.variant=content-only", "model.similar_history_weight=0.5"],
    ],
    ids=["weight", "penalty", "content-only", "content-only-bought-with"],
)
def test_bad_closed_form_settings_are_config_errors(overrides):
    """Out of range, or behavioural similar items asked of a model whose items are placed by content alone."""
    with pytest.raises(ConfigError, match=overrides[-1].split("=")[0]):
        load_config(DEMO_CONFIG, overrides)
    load_config(DEMO_CONFIG, overrides[:-1])  # the rest of the settings are fine on their own


def ease_from_frames(rec: HybridRecommender, lam: float) -> np.ndarray:
    """EASE straight from the split's training rows, by the textbook formula."""
    seen = rec.split_.train
    x = np.zeros((len(rec.users_), len(rec.items_)))
    x[rec.users_.indices(seen["user_id"]), rec.items_.indices(seen["item_id"])] = 1.0
    p = np.linalg.inv(x.T @ x + lam * np.eye(x.shape[1]))
    b = np.eye(x.shape[1]) - p / np.diag(p)[None, :]
    np.fill_diagonal(b, 0.0)
    return b


def z(scores: np.ndarray, skip: int) -> np.ndarray:
    rest = np.delete(scores, skip)
    return (scores - rest.mean()) / rest.std()


@pytest.mark.parametrize("weight", [0.5, 1.0])
def test_similar_items_blend_the_cosine_with_ease_after_standardising_both(
    demo_dataset, text_cache_dir, tmp_path, weight
):
    lam = 20.0
    rec = fit_demo(
        demo_dataset, text_cache_dir, f"model.similar_closed_form_weight={weight}", f"model.closed_form_l2={lam}"
    )
    ease = ease_from_frames(rec, lam)
    unit = rec.item_vectors_ / np.linalg.norm(rec.item_vectors_, axis=1, keepdims=True)
    changed = similar_items_follow(
        rec,
        lambda row: (1 - weight) * z(unit @ unit[row], row) + weight * z(ease[row], row),
        lambda row: rec.item_vectors_[row],
        atol=1e-4,
    )
    assert changed  # the closed form moves neighbours the vectors alone would give
    rec.save(tmp_path / "m")
    ids, scores = rec.similar_items("D0031", 5)
    loaded_ids, loaded_scores = HybridRecommender.load(tmp_path / "m").similar_items("D0031", 5)
    assert loaded_ids == ids and np.allclose(loaded_scores, scores)


def test_new_items_join_a_closed_form_model_with_no_co_purchase_evidence(demo_dataset, text_cache_dir):
    rec = fit_demo(demo_dataset, text_cache_dir, "model.similar_closed_form_weight=0.5")
    new = demo_dataset.items[demo_dataset.items["item_id"] == "D0031"].assign(item_id="NEW-1")
    rec.add_items(new)
    row = rec.items_.index("NEW-1")
    assert rec.closed_form_.shape == (len(rec.items_), len(rec.items_))
    assert not rec.closed_form_[row].any() and not rec.closed_form_[:, row].any()
    # nobody bought it, so its closed-form share is flat and its neighbours are those of its content vector alone
    unit = rec.item_vectors_ / np.linalg.norm(rec.item_vectors_, axis=1, keepdims=True)
    cosine = unit @ unit[row]
    cosine[row] = -np.inf
    assert rec.similar_items("NEW-1", 5)[0] == rec.items_.raws(np.argsort(-cosine, kind="stable")[:5])


def test_a_model_folder_with_mismatched_closed_form_weights_is_refused(demo_dataset, text_cache_dir, tmp_path):
    rec = fit_demo(demo_dataset, text_cache_dir, "model.similar_closed_form_weight=0.5", "train.epochs=1")
    folder = rec.save(tmp_path / "m")
    np.save(folder / "vectors" / "closed_form.npy", np.zeros((3, 3), np.float32), allow_pickle=False)
    write_manifest(folder, {"name": rec.config.name})
    with pytest.raises(ModelFileError, match="closed-form weights"):
        HybridRecommender.load(tmp_path / "m")
