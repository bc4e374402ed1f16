"""The model variants, losses and encoders a config can select all train, answer and survive save/load."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import DEMO_CONFIG, fit_demo, similar_items_follow

from hybridrec.artifacts import write_manifest
from hybridrec.config import load_config
from hybridrec.errors import ConfigError, ModelFileError
from hybridrec.protocols import evaluate, score_matrix
from hybridrec.recommender import HybridRecommender


def implicit(dataset):
    """The demo's ratings >= 4 as purchases (weight = rating), to drive the implicit losses."""
    from dataclasses import replace

    positive = dataset.interactions[dataset.interactions["rating"] >= 4].reset_index(drop=True)
    return replace(dataset, interactions=positive, feedback="implicit", rating_range=None)


@pytest.mark.parametrize(
    "overrides",
    [
        ("model.mlp_residual=true",),
        ("model.variant=id-only",),
        ("model.variant=content-only",),
        ("features.text_encoder=tfidf", "features.tfidf_dim=16"),
        ("features.text_encoder=none",),
        ("model.user_history=20",),
        ("model.user_history=20", "model.history_recency=true", "model.user_id_dropout=1.0"),
        ("features.title_words=true",),
        ("features.numeric_bins=4",),
    ],
    ids=[
        "mlp-residual",
        "id-only",
        "content-only",
        "tfidf",
        "no-text",
        "user-history",
        "history-recency",
        "words",
        "numeric-bins",
    ],
)
def test_variant_scores_consistently_and_round_trips(demo_dataset, text_cache_dir, tmp_path, overrides):
    rec = fit_demo(demo_dataset, text_cache_dir, *overrides)
    users = rec.split_.test["user_id"].to_numpy()[:40]
    items = rec.split_.test["item_id"].to_numpy()[:40]
    pred = rec.predict(users, items)
    # the batched full-ranking scorer and the pairwise predictor are the same head
    full = score_matrix(rec, rec.users_.indices(users), rec.items_.indices(items))
    assert np.allclose(np.clip(np.diag(full), 1, 5), pred, atol=1e-4)
    assert np.isfinite(evaluate(rec, rec.split_.test)["rmse"])
    rec.save(tmp_path / "m")
    loaded = HybridRecommender.load(tmp_path / "m")
    assert np.allclose(loaded.predict(users, items), pred, atol=1e-6)
    new = pd.DataFrame([{"item_id": "N1", "title": "S-Video cable 3 ft", "category": "Video Cables & Adapters"}])
    assert np.allclose(
        loaded.score_new_items(new)["score"], rec.score_new_items(new)["score"], atol=1e-5
    )  # content path (features + weights) is restored too


def test_id_only_cannot_tell_cold_items_apart_but_hybrid_can(demo_dataset, text_cache_dir):
    new = pd.DataFrame(
        [
            {"item_id": "N1", "title": "S-Video cable 12 ft", "category": "Video Cables & Adapters", "price": 9.0},
            {"item_id": "N2", "title": "Wireless earbuds", "category": "Headphones", "price": 30.0},
        ]
    )
    id_only = fit_demo(demo_dataset, text_cache_dir, "model.variant=id-only").score_new_items(new)
    hybrid = fit_demo(demo_dataset, text_cache_dir).score_new_items(new)
    assert id_only["score"].nunique() == 1  # no content tower: every new item looks the same
    assert hybrid["score"].nunique() == 2


@pytest.mark.parametrize("loss", ["bpr", "softmax", "sampled-softmax"])
def test_implicit_losses_train_and_rank_better_than_chance(demo_dataset, text_cache_dir, loss):
    rec = fit_demo(implicit(demo_dataset), text_cache_dir, f"train.loss={loss}", "train.epochs=4")
    metrics = evaluate(rec, rec.split_.test, k=10)
    assert "rmse" not in metrics
    # 99 sampled negatives: a random scorer's HR@10 is about 0.10
    assert metrics["hr@10_sampled"] > 0.2
    ids, scores = rec.recommend(rec.split_.test["user_id"].iloc[0], k=5)
    assert len(ids) == 5 and list(scores) == sorted(scores, reverse=True)


def test_min_rating_trains_a_ranking_loss_on_liked_items_only(demo_dataset, text_cache_dir):
    rec = fit_demo(
        demo_dataset, text_cache_dir, "train.loss=sampled-softmax", "train.negatives=1000", "train.min_rating=4"
    )
    assert len(rec.split_.train) and rec.split_.train["rating"].min() >= 4
    assert rec.split_.validation["rating"].min() >= 4
    assert rec.split_.test["rating"].min() < 4  # the test rows are never filtered
    liked = demo_dataset.interactions["rating"] >= 4
    assert len(rec.split_.train) + len(rec.split_.validation) < liked.sum()


@pytest.mark.parametrize("weight", [1.0, 0.5])
def test_similar_by_history_queries_the_index_with_the_bought_with_vector(
    demo_dataset, text_cache_dir, tmp_path, weight
):
    rec = fit_demo(
        implicit(demo_dataset),
        text_cache_dir,
        "train.loss=sampled-softmax",
        "train.negatives=1000",
        "model.user_history=20",
        f"model.similar_history_weight={weight}",
    )
    plain = fit_demo(implicit(demo_dataset), text_cache_dir, "train.loss=sampled-softmax", "train.negatives=1000")
    assert plain.item_queries_ is None
    vectors = rec.item_vectors_ / np.linalg.norm(rec.item_vectors_, axis=1, keepdims=True)
    changed = 0
    for item in ["D0031", "D0002", "D0150"]:
        row = rec.items_.index(item)
        query = rec.item_queries_[row] / np.linalg.norm(rec.item_queries_[row])
        cosine = vectors @ query
        cosine[row] = -np.inf
        brute = [rec.items_.raw(r) for r in np.argsort(-cosine, kind="stable")[:5]]
        ids, _ = rec.similar_items(item, 5)
        assert ids == brute  # 218 items, ef 100: hnswlib is exact here
        own = np.argsort(-(vectors @ vectors[row]), kind="stable")
        changed += [rec.items_.raw(r) for r in own if r != row][:5] != ids
    assert changed  # the history query is not the item's own vector
    rec.save(tmp_path / "m")
    loaded = HybridRecommender.load(tmp_path / "m")
    assert loaded.similar_items("D0031", 5)[0] == rec.similar_items("D0031", 5)[0]


ITEM_ITEM = ("train.loss=sampled-softmax", "train.negatives=1000", "model.user_history=20", "model.item_item=true")


def test_item_item_term_serves_the_trained_weights_and_scores_alike_everywhere(demo_dataset, text_cache_dir, tmp_path):
    data = implicit(demo_dataset)
    rec = fit_demo(data, text_cache_dir, *ITEM_ITEM, "train.epochs=3")
    weight = rec.net.item_item.weight.detach().numpy()
    assert np.abs(weight).max() > 1e-4  # W started at zero and was trained
    # the served term, rebuilt from the training rows: each user's 20 most recent items, W rows by history token
    _, token = HybridRecommender._history_tokens(rec.features, data.items.reset_index(drop=True))
    train = rec.split_.train
    for user in train["user_id"].unique()[:8]:
        mine = train[train["user_id"] == user].sort_values("timestamp", ascending=False, kind="stable")
        rows = rec.items_.indices(mine["item_id"].iloc[:20])
        expected = weight[token[rows]].sum(0) / np.sqrt(len(rows))
        assert np.allclose(rec.item_item_.for_users(np.array([rec.users_.index(user)]))[0], expected, atol=1e-5)
    # full ranking, exact recommend and predict are the same score, item-item term included
    user = rec.split_.test["user_id"].iloc[0]
    row = rec.users_.index(user)
    full = score_matrix(rec, np.array([row]))[0]
    full[rec._seen(row)] = -np.inf
    ids, scores = rec.recommend(user, k=5, exact=True)
    assert ids == rec.items_.raws(np.argsort(-full, kind="stable")[:5])
    assert np.allclose(scores, np.sort(full)[::-1][:5], atol=1e-4)
    assert np.allclose(rec.predict([user] * 5, ids), scores, atol=1e-4)
    assert not np.allclose(rec.item_item_.for_users(np.array([row]))[0], 0)  # the term is part of those scores
    assert evaluate(rec, rec.split_.test, k=10)["hr@10_sampled"] > 0.2
    rec.save(tmp_path / "m")
    loaded = HybridRecommender.load(tmp_path / "m")
    loaded_ids, loaded_scores = loaded.recommend(user, k=5)
    assert loaded_ids == ids and np.allclose(loaded_scores, scores, atol=1e-5)
    new = pd.DataFrame([{"item_id": "N1", "title": "S-Video cable 3 ft", "category": "Video Cables & Adapters"}])
    loaded.add_items(new)
    assert loaded.item_item_.matrix.shape == (len(loaded.items_),) * 2
    assert loaded.item_item_.for_pairs(np.array([row]), np.array([loaded.items_.index("N1")]))[0] == 0.0
    assert len(loaded.recommend(user, k=5)[0]) == 5


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (("model.item_item=true", "train.loss=sampled-softmax"), "model.item_item"),
        (("model.item_item=true", "model.user_history=20"), "model.item_item"),
        (("model.history_causal=true",), "model.history_causal"),
        (("model.history_causal=true", "model.user_history=20", "train.loss=mse"), "model.history_causal"),
        (("train.average_last=3",), "train.average_last"),
        (("train.average_last=8", "train.early_stopping=false", "train.epochs=5"), "train.average_last"),
    ],
    ids=[
        "item-item-no-history",
        "item-item-not-sampled-softmax",
        "causal-no-history",
        "causal-mse",
        "average-with-early-stopping",
        "average-more-than-epochs",
    ],
)
def test_an_option_without_its_prerequisites_is_a_config_error(overrides, key):
    with pytest.raises(ConfigError, match=key):
        load_config(DEMO_CONFIG, list(overrides))


def test_a_users_latest_row_trains_on_the_served_bag_minus_its_own_item(demo_dataset, text_cache_dir, tmp_path):
    """Causal training histories are ordered like the bag served for a user's next item: the served bag is the
    latest training row's item followed by that row's own history. The model round-trips like any other."""
    import torch

    from hybridrec.causal_history import causal_histories
    from hybridrec.recommender import HISTORY

    n = 6
    causal = (f"model.user_history={n}", "model.history_causal=true", "model.history_recency=true", "train.loss=bpr")
    rec = fit_demo(implicit(demo_dataset), text_cache_dir, *causal, "train.epochs=1")
    train = rec.split_.train.reset_index(drop=True)
    served, _ = rec._with_history(None, demo_dataset.user_schema, train, n)
    users = rec.users_.indices(train["user_id"])
    items = rec.items_.indices(train["item_id"])
    hist = causal_histories(users, train["timestamp"].to_numpy(), items + 1, n)  # item row + 1: 0 pads
    own = hist.rows(torch.arange(len(train))).numpy() - 1
    checked = 0
    for u, bag in zip(rec.users_.indices(served["user_id"]), served[HISTORY]):
        rows = np.flatnonzero(users == u)
        if not len(rows):
            continue
        first = rows[hist.starts.numpy()[rows] == hist.starts.numpy()[rows].min()][0]  # the user's latest row
        expected = list(rec.items_.indices(bag))
        got = [items[first], *[i for i in own[first] if i >= 0]][:n]
        assert got == expected
        checked += 1
    assert checked > 50
    rec.save(tmp_path / "m")
    loaded = HybridRecommender.load(tmp_path / "m")
    test = rec.split_.test.head(40)
    assert np.allclose(loaded.predict(test["user_id"], test["item_id"]), rec.predict(test["user_id"], test["item_id"]))


def test_a_model_folder_with_mismatched_item_item_weights_is_refused(demo_dataset, text_cache_dir, tmp_path):
    rec = fit_demo(implicit(demo_dataset), text_cache_dir, *ITEM_ITEM, "train.epochs=1")
    folder = rec.save(tmp_path / "m")
    np.save(folder / "vectors" / "item_item.npy", np.zeros((3, 3), np.float32), allow_pickle=False)
    with pytest.raises(ModelFileError, match="checksum"):  # an altered file is caught by the manifest first
        HybridRecommender.load(tmp_path / "m")
    write_manifest(folder, {"name": rec.config.name})  # a consistent manifest over the wrong shape
    with pytest.raises(ModelFileError, match="item-item weights"):
        HybridRecommender.load(tmp_path / "m")


@pytest.mark.parametrize("pairwise", [1.0, 8.0])
def test_similar_with_item_item_ranks_by_the_one_item_users_logit_with_mutual_weights_and_no_item_bias(
    demo_dataset, text_cache_dir, tmp_path, pairwise
):
    rec = fit_demo(
        implicit(demo_dataset),
        text_cache_dir,
        *ITEM_ITEM,
        "model.similar_history_weight=1.0",
        f"model.similar_item_item_weight={pairwise}",
    )
    terms = rec.item_item_
    norms = np.linalg.norm(rec.item_vectors_, axis=1)

    def by_logit(row: int) -> np.ndarray:
        bought_with = rec.item_queries_[row] * terms.query_norms[row]  # weight 1: the unit bought-with vector
        mutual = [(terms.matrix[row, i] + terms.matrix[i, row]) / 2 for i in range(len(rec.items_))]
        logit = rec.item_vectors_ @ bought_with + pairwise * np.array(mutual)  # <q, v> + W, both ways: no item bias
        return logit / norms / terms.query_norms[row]

    changed = similar_items_follow(rec, by_logit, lambda row: rec.item_queries_[row])
    assert changed  # the W share moves neighbours the vectors alone would give
    rec.save(tmp_path / "m")
    assert HybridRecommender.load(tmp_path / "m").similar_items("D0031", 5)[0] == rec.similar_items("D0031", 5)[0]
