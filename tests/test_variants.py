"""The model variants, losses and encoders a config can select all train, answer and survive save/load."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import DEMO_CONFIG, demo_split, fit_demo

from hybridrec.config import load_config
from hybridrec.errors import ConfigError
from hybridrec.evaluation.holdout import evaluate
from hybridrec.model.history import CausalHistories, UserHistory
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
        ("model.user_history.length=20",),
        ("model.user_history.length=20", "model.user_history.position_weights=true", "model.user_id_dropout=1.0"),
        ("features.title_words=true",),
        ("features.numeric_bins=4",),
        ("model.terms=[{type: ease, l2: 50, similar_weight: 0.5}]",),
    ],
    ids=[
        "mlp-residual",
        "id-only",
        "content-only",
        "tfidf",
        "no-text",
        "user-history",
        "position-weights",
        "words",
        "numeric-bins",
        "ease-similar",
    ],
)
def test_variant_scores_consistently_and_round_trips(demo_dataset, text_cache_dir, tmp_path, overrides):
    rec = fit_demo(demo_dataset, text_cache_dir, *overrides)
    test = demo_split(demo_dataset, *overrides).test
    users = test["user_id"].to_numpy()[:40]
    items = test["item_id"].to_numpy()[:40]
    pred = rec.predict(users, items)
    # the batched full-ranking scorer and the pairwise predictor are the same head
    full = rec.score_matrix(rec.users_.indices(users), rec.items_.indices(items))
    assert np.allclose(np.clip(np.diag(full), 1, 5), pred, atol=1e-4)
    pairs = rec.score_pairs(rec.users_.indices(users), rec.items_.indices(items))
    assert np.allclose(np.diag(full), pairs, atol=1e-4)
    assert np.isfinite(evaluate(rec, test)["rmse"])
    rec.save(tmp_path / "m")
    loaded = HybridRecommender.load(tmp_path / "m")
    assert np.allclose(loaded.predict(users, items), pred, atol=1e-6)
    assert loaded.similar_items("D0031", 5)[0] == rec.similar_items("D0031", 5)[0]
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
    data = implicit(demo_dataset)
    rec = fit_demo(data, text_cache_dir, f"train.loss={loss}", "train.epochs=4")
    test = demo_split(data).test
    metrics = evaluate(rec, test, k=10)
    assert "rmse" not in metrics
    # 99 sampled negatives: a random scorer's HR@10 is about 0.10
    assert metrics["hr@10_sampled"] > 0.2
    ids, scores = rec.recommend(test["user_id"].iloc[0], k=5)
    assert len(ids) == 5 and list(scores) == sorted(scores, reverse=True)


# similar items from the index's cosine alone: no co-occurrence share, every item fully trusted
TOWERS_ONLY = ("model.terms=[]", "model.similar_evidence=0")


@pytest.mark.parametrize("weight", [1.0, 0.5])
def test_similar_by_history_queries_the_index_with_the_bought_with_vector(
    demo_dataset, text_cache_dir, tmp_path, weight
):
    rec = fit_demo(
        implicit(demo_dataset),
        text_cache_dir,
        "train.loss=sampled-softmax",
        "train.negatives=1000",
        "model.user_history.length=20",
        f"model.user_history.similar_weight={weight}",
        *TOWERS_ONLY,
    )
    plain = fit_demo(
        implicit(demo_dataset), text_cache_dir, "train.loss=sampled-softmax", "train.negatives=1000", *TOWERS_ONLY
    )
    assert plain.towers_.item_queries is None
    item_vectors, item_queries = rec.towers_.item_vectors, rec.towers_.item_queries
    vectors = item_vectors / np.linalg.norm(item_vectors, axis=1, keepdims=True)
    changed = 0
    for item in ["D0031", "D0002", "D0150"]:
        row = rec.items_.index(item)
        query = item_queries[row] / np.linalg.norm(item_queries[row])
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


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (("model.user_history.order=causal",), r"model\.user_history\.order: causal needs"),
        (
            ("model.user_history.order=causal", "model.user_history.length=20", "train.loss=mse"),
            r"model\.user_history\.order: causal needs .* ranking train\.loss",
        ),
        (("train.average_last=3",), "train.average_last"),
        (("train.average_last=8", "train.early_stopping=false", "train.epochs=5"), "train.average_last"),
    ],
    ids=["causal-no-history", "causal-mse", "average-with-early-stopping", "average-more-than-epochs"],
)
def test_an_option_without_its_prerequisites_is_a_config_error(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(DEMO_CONFIG, list(overrides))


def timelines(train: pd.DataFrame, users: np.ndarray, items: np.ndarray) -> tuple[dict[int, list[int]], np.ndarray]:
    """Each user's training item rows, most recent first (ties keep the table's order), and each training row's
    position in its user's list, by plain sorting of the table."""
    frame = pd.DataFrame(
        {"user": users, "item": items, "ts": train["timestamp"].to_numpy(), "pos": np.arange(len(users))}
    )
    ordered = frame.sort_values(["user", "ts", "pos"], ascending=[True, False, True])
    position = ordered.groupby("user").cumcount().sort_index().to_numpy()
    return {int(u): [int(i) for i in group["item"]] for u, group in ordered.groupby("user", sort=False)}, position


def test_causal_training_histories_continue_the_served_bag(demo_dataset, text_cache_dir, tmp_path):
    """Causal training histories are ordered like the bag served for a user's next item: each training row sees
    the user's items before it, most recent first, so the served bag is the latest row's item followed by that
    row's own history. A causal model round-trips like any other."""
    n = 6
    causal = (
        f"model.user_history.length={n}",
        "model.user_history.order=causal",
        "model.user_history.position_weights=true",
        "train.loss=bpr",
    )
    data = implicit(demo_dataset)
    rec = fit_demo(data, text_cache_dir, *causal, "train.epochs=1")
    split = demo_split(data, *causal)
    train = split.train.reset_index(drop=True)
    users = rec.users_.indices(train["user_id"])
    items = rec.items_.indices(train["item_id"])
    stamps = train["timestamp"].to_numpy()
    lists, position = timelines(train, users, items)

    served = UserHistory.from_rows(users, items, len(rec.users_), stamps).tokens(n)  # item row + 1, 0 pads
    hist = CausalHistories.build(users, items, stamps, n)
    # row r's history: tokens from starts[r], n long, padded past the end of its user's block (as training reads it)
    window = hist.starts[:, None] + np.arange(n)[None, :]
    inside = window < hist.ends[:, None]
    own = np.where(inside, hist.tokens[np.where(inside, window, 0)], 0) - 1
    for r in range(len(train)):
        timeline, p = lists[int(users[r])], int(position[r])
        assert [i for i in own[r] if i >= 0] == timeline[p + 1 : p + 1 + n]  # the items before it, latest first
    checked = 0
    for u, timeline in lists.items():
        bag = [t - 1 for t in served[u] if t > 0]
        assert bag == timeline[:n]
        latest = np.flatnonzero((users == u) & (position == 0))[0]
        assert [items[latest], *[i for i in own[latest] if i >= 0]][:n] == bag
        checked += 1
    assert checked > 50
    assert any(len(t) > n + 1 for t in lists.values())  # some histories are cut at the length
    rec.save(tmp_path / "m")
    loaded = HybridRecommender.load(tmp_path / "m")
    test = split.test.head(40)
    assert np.allclose(loaded.predict(test["user_id"], test["item_id"]), rec.predict(test["user_id"], test["item_id"]))
