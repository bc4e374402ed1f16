"""Unknown users, batch top-k with allow/deny lists, retired items and explanations (issue 19), on the demo.

Two models: the session's `demo_model` (the default config: no history bag, no score terms) and `bag_model`, a
short fit with a history bag of 20 items, a BPR loss and both score terms, so that an unknown user's items reach
every part of the score. Expected values are computed from the training rows and the network's own weights, not
from the code under test.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import assert_ok, assert_one_line_error, demo_split, fit_demo
from hybridrec_cli.main import app
from typer.testing import CliRunner

from hybridrec.errors import ModelFileError, QueryError
from hybridrec.explain import explain as explain_all
from hybridrec.recommender import HybridRecommender

BAG = [
    "model.user_history.length=20",
    "model.user_id_dropout=0.5",
    "train.loss=bpr",
    "train.epochs=4",
    "model.terms=[{type: ease, recommend_weight: 0.3}, {type: content_ridge, recommend_weight: 0.3}]",
]


@pytest.fixture(scope="module")
def bag_model(demo_dataset, text_cache_dir):
    rec = fit_demo(demo_dataset, text_cache_dir, *BAG)
    return rec, demo_split(demo_dataset, *BAG)


def latest_first(train: pd.DataFrame, user: str) -> list[str]:
    """The user's training items, most recent first (ties in row order): the order the fit's bag uses."""
    mine = train[train["user_id"] == user]
    order = np.lexsort((np.arange(len(mine)), -mine["timestamp"].to_numpy()))
    return list(mine["item_id"].to_numpy()[order])


def users_of(train: pd.DataFrame, n: int, at_least: int = 5) -> list[str]:
    counts = train["user_id"].value_counts()
    return sorted(counts[counts >= at_least].index)[:n]


# ------------------------------------------------------------------------------------------------ unknown users
def test_an_unknown_users_vector_is_the_known_users_less_its_id_and_the_terms_score_its_history(bag_model):
    """With the user's own training items (latest first) as the history, the tower gives the known user's vector
    minus its ID embedding (the ID part is all the tower hides), and each term scores the history exactly as it
    scores the known user."""
    from hybridrec.queries import parse_history, tower_user

    rec, split = bag_model
    ids = rec.net.users.id_embedding.weight.detach().numpy()
    id_bias = rec.net.users.id_bias.weight.detach().numpy()[:, 0]
    for user in users_of(split.train, 8):
        row = rec.users_.index(user)
        history = latest_first(split.train, user)
        assert rec.items_.raws(rec.bag_.of(row)) == history  # the saved bag is the training order
        vector, bias = tower_user(rec, parse_history(rec, history), None)
        assert np.allclose(vector, rec.towers_.user_vectors[row] - ids[row], atol=1e-5)
        assert bias == pytest.approx(float(rec.towers_.user_bias[row] - id_bias[row]), abs=1e-5)
        rows = rec.items_.indices(history)
        for term in rec.terms_:
            assert np.allclose(term.score_history([rows])[0], term.score(np.array([row]))[0], atol=1e-4)


def test_a_known_users_history_as_an_unknown_user_recommends_much_like_the_known_user(bag_model):
    from hybridrec.queries import reads_history

    rec, split = bag_model
    assert reads_history(rec)
    overlaps = []
    n_items = len(rec.items_)
    expected_random = []
    for user in users_of(split.train, 20):
        known, _ = rec.recommend(user, 10)
        validation = list(split.validation.loc[split.validation["user_id"] == user, "item_id"])
        unknown, scores = rec.recommend(history=latest_first(split.train, user), k=10, exclude=validation)
        assert len(unknown) == 10 and np.all(np.diff(scores) <= 0)
        overlaps.append(len(set(known) & set(unknown)) / 10)
        expected_random.append(10 / (n_items - len(rec.seen_rows(rec.users_.index(user)))))
    mean = float(np.mean(overlaps))
    print(f"mean overlap@10 of 20 users: {mean:.3f} (random lists: {np.mean(expected_random):.3f})")
    assert mean >= 0.5 and mean >= 8 * np.mean(expected_random)


def test_weights_rescale_the_terms_history_and_leave_the_bag_unweighted(bag_model):
    from hybridrec.queries import parse_history, tower_user

    rec, split = bag_model
    user = users_of(split.train, 1)[0]
    history = latest_first(split.train, user)[:4]
    weights = {item: w for item, w in zip(history, [5.0, 1.0, 3.0, 1.0])}
    parsed = parse_history(rec, weights)
    assert list(parsed.rows) == list(rec.items_.indices(history))
    assert np.allclose(parsed.weights, np.array([5, 1, 3, 1]) / 2.5)
    plain = tower_user(rec, parse_history(rec, history), None)
    assert np.allclose(tower_user(rec, parsed, None)[0], plain[0])
    ease = rec.term("ease")
    expected = (np.array([5, 1, 3, 1]) / 2.5) @ ease.weights[rec.items_.indices(history)]
    assert np.allclose(ease.score_history([parsed.rows], None, [parsed.weights])[0], expected, atol=1e-4)


def test_nobody_gets_the_most_trained_items_of_the_catalogue(demo_model):
    rec, train = demo_model.rec, demo_model.split.train
    counts = train["item_id"].value_counts()
    bias = dict(zip(rec.items_.raw_ids, rec.towers_.item_bias))
    ranked = sorted(rec.items_.raw_ids, key=lambda i: (-counts.get(i, 0), -bias[i], rec.items_.index(i)))
    ids, scores = rec.recommend(k=7)
    assert ids == ranked[:7]
    assert list(scores) == [counts[i] for i in ranked[:7]]
    assert rec.recommend(history=[], k=7)[0] == ids
    allow = ranked[3:12]
    assert rec.recommend(k=3, items=allow, exclude=[ranked[4]])[0] == [ranked[3], ranked[5], ranked[6]]


def test_unknown_ids_and_bad_inputs_are_query_errors_naming_them(demo_model):
    rec = demo_model.rec
    with pytest.raises(QueryError, match="NOBODY"):
        rec.recommend("NOBODY", 5)  # an unknown id with nothing else is a typo, not a stranger
    with pytest.raises(QueryError, match=r"history: unknown item ids 'X1', 'X2'"):
        rec.recommend(history=["D0031", "X1", "X2"])
    with pytest.raises(QueryError, match=r"items: unknown item id 'X3'"):
        rec.recommend("U0001", items=["D0031", "X3"])
    with pytest.raises(QueryError, match=r"exclude: unknown item id 'X4'"):
        rec.recommend_batch(["U0001"], exclude=["X4"])
    with pytest.raises(QueryError, match=r"user_ids: unknown user ids 'N1', 'N2'"):
        rec.recommend_batch(["U0001", "N1", "N2"])
    with pytest.raises(QueryError, match="weights must be > 0"):
        rec.recommend(history={"D0031": 0})
    with pytest.raises(QueryError, match="list of ids"):
        rec.recommend(history="D0031")
    with pytest.raises(QueryError, match="fitted without user features"):
        rec.recommend(history=["D0031"], user_features={"age": 30})


def test_a_known_user_id_ignores_the_history(demo_model):
    rec = demo_model.rec
    assert rec.recommend("U0001", 5, history=["D0031"])[0] == rec.recommend("U0001", 5)[0]


# ------------------------------------------------------------------------------------------------ batch and rules
@pytest.mark.parametrize("which", ["demo", "bag"])
def test_batch_equals_single_calls_with_and_without_rules(which, demo_model, bag_model):
    rec, train = (demo_model.rec, demo_model.split.train) if which == "demo" else (bag_model[0], bag_model[1].train)
    users = users_of(train, 12)
    allow = rec.items_.raw_ids[::3]
    deny = rec.items_.raw_ids[:40:2]
    for rules in ({}, {"items": allow}, {"exclude": deny}, {"items": allow, "exclude": deny}):
        batch = rec.recommend_batch(users, 6, **rules)
        assert list(batch.columns) == ["user_id", "rank", "item_id", "score"]
        for user in users:
            ids, scores = rec.recommend(user, 6, **rules)
            mine = batch[batch["user_id"] == user]
            assert list(mine["item_id"]) == ids and list(mine["rank"]) == list(range(1, len(ids) + 1))
            assert np.allclose(mine["score"], scores, atol=1e-4)


def test_allow_and_deny_lists_pick_from_the_exact_scores(demo_model):
    rec = demo_model.rec
    user = "U0001"
    row = rec.users_.index(user)
    allow = rec.items_.raw_ids[5:60]
    deny = allow[::4]
    exact = rec.score_matrix(np.array([row]))[0]
    seen = set(rec.items_.raws(rec.seen_rows(row)))
    open_ids = [i for i in allow if i not in deny and i not in seen]
    expected = sorted(open_ids, key=lambda i: (-exact[rec.items_.index(i)], rec.items_.index(i)))[:8]
    ids, scores = rec.recommend(user, 8, items=allow, exclude=deny)
    assert ids == expected
    assert np.allclose(scores, [exact[rec.items_.index(i)] for i in expected], atol=1e-5)
    assert rec.recommend(user, 8, items=allow, exclude=allow)[0] == []


# ------------------------------------------------------------------------------------------------ retired items
def test_remove_items_round_trip_through_save_load_and_the_index(demo_model, tmp_path):
    rec = demo_model.load()
    user = "U0001"
    top, _ = rec.recommend(user, 3)
    similar, _ = rec.similar_items("D0031", 3)
    gone = [top[0], similar[0], "D0031"]
    assert rec.remove_items(gone) is rec
    rec.remove_items(gone[:1])  # again: nothing changes
    folder = rec.save(tmp_path / "m")
    assert np.load(folder / "vectors" / "retired.npy").sum() == 3
    loaded = HybridRecommender.load(tmp_path / "m")
    n = len(loaded.items_)
    for model in (rec, loaded):
        assert model.retired_.sum() == 3 and set(model.items_.raws(np.flatnonzero(model.retired_))) == set(gone)
        assert not set(gone) & set(model.recommend(user, n)[0])
        assert not set(gone) & set(model.recommend_batch([user, "U0002"], n)["item_id"])
        assert not set(gone) & set(model.recommend(k=n)[0])  # the popular fallback too
        assert not set(gone) & set(model.similar_items("D0002", n - 1)[0])
        assert len(model.similar_items("D0031", 5)[0]) == 5  # a retired item may still be asked about
        rows, _ = model.index_.query_rows(model.towers_.item_vectors[model.items_.indices(gone)], n)
        assert not set(model.items_.indices(gone)) & set(rows.ravel())
        assert rows.shape[1] == n - 3
    match = loaded.similar_to_text("a gold plated cable for an old camcorder", n)
    assert match.how == "content" and len(match.ids) == n - 3 and not set(gone) & set(match.ids)
    with pytest.raises(QueryError, match="retired"):
        loaded.add_items(pd.DataFrame({"item_id": ["D0031"], "title": ["again"]}))
    with pytest.raises(QueryError, match="NOPE"):
        loaded.remove_items(["NOPE"])


def test_a_retired_mask_of_the_wrong_shape_is_refused_on_load(demo_model, tmp_path):
    from hybridrec.artifacts import write_manifest

    folder = Path(shutil.copytree(demo_model.path.resolve(), tmp_path / "m"))
    np.save(folder / "vectors" / "retired.npy", np.zeros(3, bool), allow_pickle=False)
    manifest = json.loads((folder / "manifest.json").read_text())
    write_manifest(folder, {k: v for k, v in manifest.items() if k not in ("format_version", "created", "files")})
    with pytest.raises(ModelFileError, match="retired.npy"):
        HybridRecommender.load(folder)


# ------------------------------------------------------------------------------------------------ explain
def test_explain_parts_add_up_to_the_score_on_both_models(demo_model, bag_model):
    for rec, train in ((demo_model.rec, demo_model.split.train), (bag_model[0], bag_model[1].train)):
        for user in users_of(train, 3):
            for item in rec.recommend(user, 2)[0] + ["D0031"]:
                out = rec.explain(user, item)
                score = float(rec.score_pairs(rec.users_.indices([user]), rec.items_.indices([item]))[0])
                assert out["score"] == pytest.approx(score, abs=1e-5)
                assert sum(out["parts"].values()) == pytest.approx(score, abs=1e-4)
                u = rec.towers_.user_vectors[rec.users_.index(user)].astype(np.float64)
                v = rec.towers_.item_vectors[rec.items_.index(item)].astype(np.float64)
                assert out["parts"]["dot_item_id"] + out["parts"]["dot_item_content"] == pytest.approx(u @ v, abs=1e-5)


def test_explain_splits_the_item_vector_by_its_id_embedding_and_terms_by_history_item(bag_model):
    rec, split = bag_model
    user = users_of(split.train, 1)[0]
    item = rec.recommend(user, 1)[0][0]
    u_row, i_row = rec.users_.index(user), rec.items_.index(item)
    out = explain_all(rec, user, item, top=10_000)
    id_vector = rec.net.items.id_embedding.weight[i_row].detach().numpy() * rec.item_has_id_[i_row]
    assert out["parts"]["dot_item_id"] == pytest.approx(float(rec.towers_.user_vectors[u_row] @ id_vector), abs=1e-5)
    history = latest_first(split.train, user)
    ease = rec.term("ease")
    shares = {r["item_id"]: r["effect"] for r in out["behaviour"]["ease"]}
    assert set(shares) == set(history)
    for j in history:
        assert shares[j] == pytest.approx(ease.scale * ease.weights[rec.items_.index(j), i_row], abs=1e-5)
    for kind in ("ease", "content_ridge"):
        total = sum(r["effect"] for r in out["behaviour"][kind])
        assert total == pytest.approx(out["parts"][f"term:{kind}"], abs=1e-4)


def test_explain_bag_and_content_effects_match_rerunning_the_towers(bag_model, demo_dataset):
    """A history item's effect is the drop in the score when the bag loses it (the tower rerun without it); a
    feature group's effect is the drop when the item's group input is zeroed (the item tower rerun)."""
    import torch

    from hybridrec.queries import parse_history, tower_user

    rec, split = bag_model
    user = users_of(split.train, 1)[0]
    item = rec.recommend(user, 1)[0][0]
    u_row, i_row = rec.users_.index(user), rec.items_.index(item)
    out = explain_all(rec, user, item, top=10_000)
    history = latest_first(split.train, user)[:20]  # the bag: the 20 most recent
    v = rec.towers_.item_vectors[i_row].astype(np.float64)
    full_u, full_b = tower_user(rec, parse_history(rec, history), None)
    effects = {r["item_id"]: r["effect"] for r in out["behaviour"]["history_bag"]}
    assert set(effects) == set(history)
    for j in history[:5]:
        u_j, b_j = tower_user(rec, parse_history(rec, [h for h in history if h != j]), None)
        expected = (full_u - u_j) @ v + (full_b - b_j)
        assert effects[j] == pytest.approx(float(expected), abs=1e-4)
    items = demo_dataset.items.reset_index(drop=True)
    feats = rec.features.transform_items(items.iloc[[i_row]], split.train)
    u = rec.towers_.user_vectors[u_row].astype(np.float64)
    brand = next(k for k, voc in enumerate(rec.features.items_.vocabularies) if voc.column == "brand")

    def item_vector(cats):
        keep = torch.tensor([float(rec.item_has_id_[i_row])])
        with torch.no_grad():
            vec, bias = rec.net.items(
                torch.tensor([i_row]),
                torch.as_tensor(feats.text),
                torch.as_tensor(feats.numeric),
                [torch.as_tensor(c) for c in cats],
                keep,
            )
        return vec.numpy()[0].astype(np.float64), float(bias[0])

    v_full, b_full = item_vector(feats.categorical)
    assert np.allclose(v_full, v, atol=1e-5)
    zeroed = [np.zeros_like(c) if k == brand else c for k, c in enumerate(feats.categorical)]
    v_brand, b_brand = item_vector(zeroed)
    effect = {r["group"]: r["effect"] for r in out["content"]}
    assert set(effect) >= {"text", "reviews", "price", "brand", "category", "subcategory"}
    assert effect["brand"] == pytest.approx(float(u @ (v_full - v_brand) + (b_full - b_brand)), abs=1e-4)


# ------------------------------------------------------------------------------------------------ CLI
def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_cli_recommend_for_an_unknown_user_nobody_and_with_rules(demo_model):
    model, rec = demo_model.path, demo_model.rec
    result = invoke("recommend", "--history", "D0031,D0042", "--model", model, "-k", "4", "--json")
    assert_ok(result)
    payload = json.loads(result.stdout)
    expected, _ = rec.recommend(history=["D0031", "D0042"], k=4)
    assert payload["user"] == "unknown" and [r["item_id"] for r in payload["results"]] == expected
    nobody = json.loads(invoke("recommend", "--model", model, "-k", "3", "--json").stdout)
    assert nobody["user"] == "popular" and [r["item_id"] for r in nobody["results"]] == rec.recommend(k=3)[0]
    allow = rec.items_.raw_ids[:30]
    ruled = invoke("recommend", "U0001", "--items", ",".join(allow), "--exclude", allow[0], "--model", model, "--json")
    ids = [r["item_id"] for r in json.loads(ruled.stdout)["results"]]
    assert ids == rec.recommend("U0001", items=allow, exclude=[allow[0]])[0]
    plain = invoke("recommend", "--history", "D0031", "--model", model)
    assert_ok(plain)
    assert "no history bag" in plain.stderr  # the default demo model has no bag and no term: said, not hidden


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["recommend", "--history", "D0031,NOPE-1"], "NOPE-1"),
        (["recommend", "U0001", "--exclude", "NOPE-2"], "NOPE-2"),
        (["recommend", "NOBODY"], "NOBODY"),
        (["recommend", "--history", "D0031", "--feature", "age"], "KEY=VALUE"),
        (["explain", "U0001", "NOPE-3"], "NOPE-3"),
        (["explain", "NOBODY", "D0031"], "NOBODY"),
        (["remove", "NOPE-4"], "NOPE-4"),
        (["recommend", "--users-file", "users.txt"], "go together"),
    ],
)
def test_cli_unknown_ids_are_one_line_errors_with_exit_code_2(args, fragment, demo_model):
    assert_one_line_error(invoke(*args, "--model", demo_model.path), fragment)


def test_cli_users_file_writes_the_batch_as_csv_and_parquet(demo_model, tmp_path):
    rec = demo_model.rec
    users = ["U0001", "U0002", "U0003", "U0001"]
    listing = tmp_path / "users.txt"
    listing.write_text("# users\n" + "\n".join(users) + "\n\n")
    expected = rec.recommend_batch(users, 4)
    for name in ("recs.csv", "recs.parquet"):
        out = tmp_path / name
        result = invoke(
            "recommend", "--users-file", listing, "--out", out, "-k", 4, "--quiet", "--model", demo_model.path
        )
        assert_ok(result)
        got = pd.read_csv(out, dtype={"user_id": str, "item_id": str}) if name.endswith("csv") else pd.read_parquet(out)
        assert list(got["user_id"]) == list(expected["user_id"]) and list(got["item_id"]) == list(expected["item_id"])
        assert np.allclose(got["score"], expected["score"], atol=1e-4)
    listing.write_text("U0001\nGHOST\n")
    assert_one_line_error(
        invoke("recommend", "--users-file", listing, "--out", tmp_path / "x.csv", "--model", demo_model.path), "GHOST"
    )
    assert not (tmp_path / "x.csv").exists()


def test_cli_remove_saves_the_retired_items_and_explain_prints_parts(demo_model, tmp_path):
    folder = Path(shutil.copytree(demo_model.path.resolve(), tmp_path / "m"))
    top = demo_model.rec.recommend("U0001", 2)[0]
    assert_ok(invoke("remove", *top, "--model", folder))
    after = json.loads(invoke("recommend", "U0001", "--model", folder, "-k", "5", "--json").stdout)
    assert not set(top) & {r["item_id"] for r in after["results"]}
    result = invoke("explain", "U0001", "D0031", "--model", folder, "--json")
    assert_ok(result)
    out = json.loads(result.stdout)
    assert sum(out["parts"].values()) == pytest.approx(out["score"], abs=1e-4)
    table = invoke("explain", "U0001", "D0031", "--model", folder)
    assert_ok(table)
    assert "dot_item_content" in table.stdout and "item features" in table.stdout
