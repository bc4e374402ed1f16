"""HybridRecommender on the fitted demo model: id/title round trips, persistence, cold start, determinism, bad files.

The model is fitted once per session (`demo_model` in conftest.py); tests that change a recommender load their own.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hybridrec.config import load_config
from hybridrec.errors import ModelFileError, QueryError
from hybridrec.recommender import HybridRecommender

ROOT = Path(__file__).resolve().parents[1]
DEMO_CONFIG = ROOT / "configs" / "default.yaml"
VIDEO = "Video Cables & Adapters"
TIMING_KEYS = {
    "feature_seconds",
    "terms_seconds",
    "train_seconds",
    "fit_seconds",
    "text_cache_hits",
    "text_cache_misses",
}

NEW_ITEM = {
    "item_id": "NEW1",
    "title": "Gold-plated S-Video cable 10 ft",
    "description": "10 ft S-Video cable with 4-pin Mini-DIN connectors, gold-plated, for camcorders, VCRs and "
    "older TVs. Double shielded.",
    "brand": "Cablix",
    "category": VIDEO,
    "subcategory": "S-Video Cable",
    "price": 11.99,
}


@pytest.fixture(scope="module")
def catalogue() -> dict[str, dict[str, str]]:
    """items.csv read with the csv module, independently of hybridrec's readers and display table."""
    with open(ROOT / "data" / "demo" / "items.csv", newline="", encoding="utf-8") as fh:
        return {row["item_id"]: row for row in csv.DictReader(fh)}


@pytest.fixture(scope="module")
def loaded(demo_model) -> HybridRecommender:
    """The saved demo model loaded from disk, for read-only queries."""
    return demo_model.load()


@pytest.fixture
def model_copy(demo_model, tmp_path) -> Path:
    """A private plain-folder copy of the saved model, free to corrupt."""
    return Path(shutil.copytree(demo_model.path.resolve(), tmp_path / "model"))


def _new_items(*rows: dict) -> pd.DataFrame:
    return pd.DataFrame(list(rows) or [NEW_ITEM])


def _answers(rec: HybridRecommender, users: list[str]) -> dict:
    """Every id-valued answer a user sees, for comparing two recommenders."""
    out = {}
    for item in ("D0031", "D0001", "D0100", "D0218"):
        ids, scores = rec.similar_items(item, 8)
        out[f"similar {item}"] = (ids, scores.tolist())
    match = rec.similar_to_text("S-Video cable", 6)
    out["text"] = (match.resolved_id, match.how, match.ids, match.scores.tolist())
    for user in users:
        ids, scores = rec.recommend(user, 10)
        out[f"recommend {user}"] = (ids, scores.tolist())
    return out


# ------------------------------------------------------------------------------------------------ ids and titles
def test_svideo_cable_resolves_by_title_to_d0031_and_neighbours_are_video_cables(loaded, catalogue):
    match = loaded.similar_to_text("S-Video cable", 5)
    assert (match.resolved_id, match.how) == ("D0031", "title")
    assert match.resolved_title == catalogue["D0031"]["title"]
    assert len(match.ids) == 5 and "D0031" not in match.ids
    assert [catalogue[i]["category"] for i in match.ids] == [VIDEO] * 5


@pytest.mark.parametrize("item_id", ["D0031", "D0001", "D0002", "D0100", "D0150", "D0218"])
@pytest.mark.parametrize("k", [1, 5, 20])
def test_similar_items_returns_k_other_items_sorted_whose_titles_match_the_catalogue(loaded, catalogue, item_id, k):
    ids, scores = loaded.similar_items(item_id, k)
    assert len(ids) == len(scores) == k
    assert item_id not in ids
    assert len(set(ids)) == k
    assert np.all(np.diff(scores) <= 1e-6), scores
    for other in ids:
        info = loaded.item_info(other)
        assert info["item_id"] == other
        assert info["title"] == catalogue[other]["title"]
    assert loaded.item_info(item_id)["title"] == catalogue[item_id]["title"]


def test_similar_items_rejects_unknown_ids_and_nonpositive_k(loaded):
    with pytest.raises(QueryError, match="B00NOPE123"):
        loaded.similar_items("B00NOPE123", 5)
    for k in (0, -1):
        with pytest.raises(QueryError, match="k must be"):
            loaded.similar_items("D0031", k)
        with pytest.raises(QueryError, match="k must be"):
            loaded.similar_to_text("S-Video cable", k)


# ------------------------------------------------------------------------------------------------ save / load
def test_saved_model_answers_exactly_like_the_fitted_one(demo_model, loaded):
    rec = demo_model.rec
    pairs = demo_model.split.test.head(300)
    np.testing.assert_array_equal(
        loaded.predict(pairs["user_id"], pairs["item_id"]), rec.predict(pairs["user_id"], pairs["item_id"])
    )
    users = list(pairs["user_id"].drop_duplicates().head(5))
    assert _answers(loaded, users) == _answers(rec, users)

    # Free text that matches no title goes through the text encoder and the network, loaded lazily from disk.
    query = "gold plated cable for an old camcorder"
    fitted_match, loaded_match = rec.similar_to_text(query, 5), loaded.similar_to_text(query, 5)
    assert loaded_match.how == fitted_match.how == "content"
    assert loaded_match.ids == fitted_match.ids
    np.testing.assert_allclose(loaded_match.scores, fitted_match.scores, atol=1e-6)


def test_similar_items_after_load_does_not_import_torch(demo_model):
    code = (
        "import sys; from hybridrec.recommender import HybridRecommender as H; r = H.load(sys.argv[1]); "
        "r.similar_items('D0031', 5); r.similar_to_text('S-Video cable', 5); print('torch' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(demo_model.path)], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip() == "False", out.stdout + out.stderr


def test_save_twice_to_the_same_path_leaves_a_loadable_model(demo_model, loaded, tmp_path):
    target = tmp_path / "m"
    demo_model.rec.save(target)
    demo_model.rec.save(target)
    users = ["U0001", "U0002"]
    assert _answers(HybridRecommender.load(target), users) == _answers(loaded, users)
    # A model loaded from disk (the CLI's `score-new --add` path) saves too, to the same answers.
    reloaded = demo_model.load()
    reloaded.save(target)
    assert _answers(HybridRecommender.load(target), users) == _answers(loaded, users)


def test_a_save_that_fails_midway_leaves_the_previous_model(demo_model, loaded, tmp_path, monkeypatch):
    target = tmp_path / "m"
    demo_model.rec.save(target)
    before = target.resolve()

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr("hybridrec.artifacts.write_manifest", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        demo_model.rec.save(target)
    assert target.resolve() == before
    assert not list((tmp_path / ".m.versions").glob("tmp-*")), "the half-written version was left behind"
    assert _answers(HybridRecommender.load(target), ["U0001"]) == _answers(loaded, ["U0001"])


# ------------------------------------------------------------------------------------------------ damaged files
def test_truncated_vectors_file_is_a_model_file_error_naming_it(model_copy):
    path = model_copy / "vectors" / "item_vectors.npy"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ModelFileError, match="item_vectors.npy"):
        HybridRecommender.load(model_copy)


def test_newer_format_version_is_a_model_file_error_naming_the_version(model_copy):
    manifest = model_copy / "manifest.json"
    payload = json.loads(manifest.read_text())
    payload["format_version"] = 99
    manifest.write_text(json.dumps(payload))
    with pytest.raises(ModelFileError, match="version 99"):
        HybridRecommender.load(model_copy)


class _Tripwire:
    """Unpickling this creates a folder: proof that a pickle was executed."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def test_pickled_object_array_with_a_valid_checksum_is_refused_unopened(model_copy, tmp_path):
    marker = tmp_path / "unpickled"
    path = model_copy / "vectors" / "item_vectors.npy"
    np.save(path, np.array([_Tripwire(marker)], dtype=object), allow_pickle=True)
    manifest = model_copy / "manifest.json"
    payload = json.loads(manifest.read_text())
    payload["files"]["vectors/item_vectors.npy"] = hashlib.sha256(path.read_bytes()).hexdigest()
    manifest.write_text(json.dumps(payload))
    with pytest.raises(ModelFileError, match="item_vectors.npy"):
        HybridRecommender.load(model_copy)
    assert not marker.exists(), "the planted pickle was executed"


# ------------------------------------------------------------------------------------------------ new items
def test_score_new_items_uses_the_vector_that_add_items_stores(demo_model, catalogue):
    users = ["U0001", "U0002", "U0003"]
    rec = demo_model.load()
    scored = rec.score_new_items(_new_items(), user_ids=users, k_neighbours=5)
    rec.add_items(_new_items())

    # A second, independent computation: another recommender loaded from disk adds the same item.
    other = demo_model.load()
    other.add_items(_new_items())
    np.testing.assert_allclose(rec.vector_of("NEW1"), other.vector_of("NEW1"), atol=1e-6)

    # The score for each user is the one the stored vector gives, also from the in-memory fitted model.
    np.testing.assert_allclose(scored["score"], rec.predict(users, ["NEW1"] * 3), atol=1e-5)
    fitted = demo_model.rec.score_new_items(_new_items(), user_ids=users, k_neighbours=5)
    np.testing.assert_allclose(fitted["score"], scored["score"], atol=1e-5)

    # Its neighbours before adding are what the index answers for it after adding.
    ids, sims = rec.similar_items("NEW1", 5)
    assert scored["neighbours"].iloc[0] == ids
    np.testing.assert_allclose(scored["neighbour_similarities"].iloc[0], sims, atol=1e-4)
    titles = [catalogue[i]["title"] for i in ids]
    assert "S-Video" in titles[0] and sum(catalogue[i]["category"] == VIDEO for i in ids) >= 3, titles
    assert rec.item_info("NEW1")["title"] == NEW_ITEM["title"]
    assert "NEW1" in rec.similar_items("D0031", 20)[0] or len(ids) == 5


def test_score_new_items_gives_one_row_per_item_and_user(loaded):
    second = dict(NEW_ITEM, item_id="NEW2", title="USB-C charger 65 W", category="Chargers & Power")
    scored = loaded.score_new_items(_new_items(NEW_ITEM, second), user_ids=["U0001", "U0002"], k_neighbours=3)
    assert len(scored) == 4
    assert set(zip(scored["item_id"], scored["user_id"])) == {
        (i, u) for i in ("NEW1", "NEW2") for u in ("U0001", "U0002")
    }
    assert all(len(n) == 3 for n in scored["neighbours"])
    average = loaded.score_new_items(_new_items(NEW_ITEM, second))
    assert list(average["item_id"]) == ["NEW1", "NEW2"] and average["user_id"].isna().all()


def test_score_new_items_rejects_unknown_users_and_add_items_rejects_known_ids(demo_model, loaded):
    with pytest.raises(QueryError, match="NOBODY"):
        loaded.score_new_items(_new_items(), user_ids=["NOBODY"])
    rec = demo_model.load()
    with pytest.raises(QueryError, match="D0031"):
        rec.add_items(_new_items(dict(NEW_ITEM, item_id="D0031")))
    rec.add_items(_new_items())
    with pytest.raises(QueryError, match="NEW1"):
        rec.add_items(_new_items())
    assert len(rec.items_) == len(loaded.items_) + 1


# ------------------------------------------------------------------------------------------------ recommend
def test_recommend_excludes_training_items_and_sorts_by_score(demo_model):
    rec = demo_model.rec
    train, validation = demo_model.split.train, demo_model.split.validation
    n_items = len(rec.items_)
    for user in train["user_id"].drop_duplicates().head(10):
        trained = set(train.loc[train["user_id"] == user, "item_id"])
        fitted = trained | set(validation.loc[validation["user_id"] == user, "item_id"])
        ids, scores = rec.recommend(user, 10)
        assert len(ids) == len(set(ids)) == 10
        assert not trained & set(ids)
        assert np.all(np.diff(scores) <= 0), scores
        everything, _ = rec.recommend(user, n_items)
        assert n_items - len(fitted) <= len(everything) <= n_items - len(trained)
        assert not trained & set(everything)
        with_seen, _ = rec.recommend(user, n_items, exclude_seen=False)
        assert len(with_seen) == n_items


def test_recommend_rejects_unknown_users_and_nonpositive_k(loaded):
    with pytest.raises(QueryError, match="NOBODY"):
        loaded.recommend("NOBODY", 5)
    for k in (0, -3):
        with pytest.raises(QueryError, match="k must be"):
            loaded.recommend("U0001", k)


# ------------------------------------------------------------------------------------------------ determinism
@pytest.fixture(scope="module")
def three_epoch_fits(demo_model, tmp_path_factory):
    from hybridrec_cli.job import fit_from_config

    cfg = load_config(DEMO_CONFIG, demo_model.overrides("train.epochs=3"))
    out = tmp_path_factory.mktemp("three-epochs")
    return cfg, fit_from_config(cfg, out / "a", quiet=True), fit_from_config(cfg, out / "b", quiet=True)


def test_same_config_and_seed_give_identical_metrics_and_vectors(three_epoch_fits):
    _, a, b = three_epoch_fits
    drop = lambda m: {k: v for k, v in m.items() if k not in TIMING_KEYS}  # noqa: E731
    assert drop(a.metrics) == drop(b.metrics)
    assert "rmse" in a.metrics
    np.testing.assert_array_equal(
        HybridRecommender.load(a.model_path).towers_.item_vectors,
        HybridRecommender.load(b.model_path).towers_.item_vectors,
    )


def test_a_different_seed_gives_different_item_vectors(demo_model, three_epoch_fits):
    from hybridrec.data.readers import read_dataset
    from hybridrec.data.splits import split_interactions

    cfg, a, _ = three_epoch_fits
    dataset = read_dataset(cfg)
    # Same split (so the same text documents hit the cache); only the seed of initialisation and training differs.
    split = split_interactions(dataset.interactions, cfg.split, cfg.seed)
    other_cfg = load_config(DEMO_CONFIG, demo_model.overrides("train.epochs=3", "seed=7"))
    other = HybridRecommender(other_cfg).fit(dataset, split.train, split.validation)
    base = HybridRecommender.load(a.model_path).towers_.item_vectors
    assert base.shape == other.towers_.item_vectors.shape
    assert not np.allclose(base, other.towers_.item_vectors, atol=1e-3)


def test_new_items_without_an_id_and_boolean_k_are_query_errors(demo_model):
    import pandas as pd

    from hybridrec.errors import QueryError

    rec = demo_model.load()
    with pytest.raises(QueryError, match="row 1 has no item_id"):
        rec.score_new_items(pd.DataFrame({"item_id": [float("nan")], "title": ["x"]}))
    with pytest.raises(QueryError, match="k must be"):
        rec.similar_items("D0031", k=True)


def test_the_index_is_read_on_first_use_also_after_the_catalogue_changed(demo_model, tmp_path):
    """A loaded model reads its ANN index when a query first needs it (artifacts.LazyIndex), not on load: items
    added or retired before that are in it as in an index read on load, and retired items saved with a model are
    marked again when it is read."""
    from hybridrec.artifacts import LazyIndex

    eager = demo_model.load()
    assert isinstance(eager._index, LazyIndex)  # not read by the load
    eager.index_  # noqa: B018 - read now, before the catalogue changes
    lazy = demo_model.load()
    for rec in (eager, lazy):
        rec.add_items(_new_items())  # the lazy index is first read here, after the catalogue grew by one item
        rec.remove_items(["D0031"])
    assert not isinstance(lazy._index, LazyIndex)
    for query in ("NEW1", "D0001", "D0150"):
        lazy_ids, lazy_sims = lazy.index_.query(lazy.vector_of(query), 8)
        eager_ids, eager_sims = eager.index_.query(eager.vector_of(query), 8)
        assert lazy_ids == eager_ids and "D0031" not in lazy_ids
        np.testing.assert_allclose(lazy_sims, eager_sims, atol=1e-6)
    lazy.save(tmp_path / "m")
    again = HybridRecommender.load(tmp_path / "m")
    assert again.items_.index("D0031") in again.index_.deleted
    assert "D0031" not in again.index_.query(again.vector_of("D0031"), 8)[0]
