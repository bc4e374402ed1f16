"""Similar items of a big catalogue blend over candidates (the index's nearest and the co-occurrence row's
entries) with the catalogue-wide mean and spread from TowerMoments: the same lists and scores as the whole row,
or a fall back to the whole row when the candidates cannot be shown to hold the k best."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from conftest import DEMO_CONFIG, demo_split, fit_demo, quick_fit_overrides

from hybridrec import similar


@pytest.fixture(scope="module")
def rec(demo_dataset, text_cache_dir):
    return fit_demo(demo_dataset, text_cache_dir)


def whole_row(rec, row: int, k: int):
    scores = similar.similar_scores(rec, row)
    scores[row] = -np.inf
    scores[rec.retired_] = -np.inf
    top = np.argsort(-scores, kind="stable")[:k]
    return top, scores[top]


@pytest.mark.parametrize("size", [8, 40, 10_000, None])
def test_the_candidate_blend_gives_the_whole_rows_lists_and_scores(rec, size):
    assert rec.term("cooccurrence") is not None  # the default recipe: a sparse behavioural term with a share
    queries = range(0, len(rec.items_), 3)
    answered = 0
    for row in queries:
        found = similar.blend_candidates(rec, row, 5, size)
        if found is None:  # the bound did not hold: the caller widens or scores the whole row
            continue
        answered += 1
        rows, scores = found
        expected_rows, expected_scores = whole_row(rec, row, 5)
        assert list(rows) == list(expected_rows), row
        np.testing.assert_allclose(scores, expected_scores, rtol=1e-6, atol=1e-6)
    if size is None:  # every item anybody had: always an answer
        assert answered == len(queries)
    else:
        assert answered > 0.3 * len(queries)  # the path answers, not only falls back


def test_items_nobody_had_tie_by_row_as_in_the_whole_row(rec, monkeypatch):
    """A query whose neighbours run out of items anybody had: the rest score alike and come in row order."""
    counts = rec.item_counts_.copy()
    counts[counts < np.quantile(counts, 0.9)] = 0  # nine items in ten never had
    monkeypatch.setattr(rec, "item_counts_", counts)
    for row in np.flatnonzero(counts == 0)[:5]:
        rows, scores = similar.blend_candidates(rec, int(row), 30, None)
        expected_rows, expected_scores = whole_row(rec, int(row), 30)
        assert list(rows) == list(expected_rows)
        np.testing.assert_allclose(scores, expected_scores, rtol=1e-6, atol=1e-6)


def test_similar_items_takes_the_candidate_path_above_the_size_and_keeps_its_answers(rec, monkeypatch):
    before = {item: rec.similar_items(item, 5) for item in rec.items_.raws(np.arange(0, 60, 7))}
    monkeypatch.setattr(similar, "CANDIDATE_PATH_ITEMS", 0)
    monkeypatch.setattr(similar, "CANDIDATES", 16)
    calls = []
    original = similar.blend_candidates
    monkeypatch.setattr(similar, "blend_candidates", lambda *a: calls.append(a) or original(*a))
    for item, (ids, scores) in before.items():
        got_ids, got_scores = rec.similar_items(item, 5)
        assert got_ids == ids
        np.testing.assert_allclose(got_scores, scores, rtol=1e-5, atol=1e-5)
    assert len(calls) == len(before)


def test_the_moments_are_the_catalogues_sums_cached_until_the_arrays_change(rec, monkeypatch):
    """TowerMoments is a cache keyed by the arrays' identity: new counts (items joining make new arrays) make
    new moments."""
    first = similar.TowerMoments.of(rec)
    assert similar.TowerMoments.of(rec) is first
    monkeypatch.setattr(rec, "item_counts_", rec.item_counts_.copy())
    assert similar.TowerMoments.of(rec) is not first
    unit = rec.towers_.item_vectors / np.linalg.norm(rec.towers_.item_vectors, axis=1, keepdims=True)
    weights = similar.trust(rec)
    np.testing.assert_allclose(first.first, (unit * weights[:, None]).sum(axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(first.second, (unit * weights[:, None]).T @ (unit * weights[:, None]), atol=1e-5)


def test_a_long_tail_catalogue_goes_straight_to_the_items_anybody_had(rec, monkeypatch):
    """Where few items were ever had, the index's nearest hold too few of them to settle a list (500,000 items with
    3,704 had: 299 of 300 index answers fell through): the index is not asked, and the lists are the whole row's."""
    monkeypatch.setattr(similar, "CANDIDATE_PATH_ITEMS", 0)
    monkeypatch.setattr(similar, "CANDIDATES", 16)
    k = 5
    assert similar.candidate_sizes(rec, k)[:-1], "the demo's items were mostly had: the index is asked first"
    counts = rec.item_counts_.copy()
    counts[np.argsort(-counts, kind="stable")[12:]] = 0  # twelve items had, the rest never
    monkeypatch.setattr(rec, "item_counts_", counts)
    assert similar.candidate_sizes(rec, k) == [None]
    asked = []
    monkeypatch.setattr(rec.index_, "query_rows", lambda *a: asked.append(a))
    for row in [*np.flatnonzero(counts > 0)[:3], *np.flatnonzero(counts == 0)[:3]]:
        ids, scores = rec.similar_items(rec.items_.raw(int(row)), k)
        expected_rows, expected_scores = whole_row(rec, int(row), k)
        assert ids == rec.items_.raws(expected_rows)
        np.testing.assert_allclose(scores, expected_scores, rtol=1e-5, atol=1e-5)
    assert not asked


@pytest.mark.parametrize("size", [40, None])
def test_a_blend_over_most_of_the_catalogue_keeps_the_whole_rows_answers(rec, monkeypatch, size):
    """Past FULL_PRODUCT_ROWS candidates (every had item of a big catalogue) the candidates come from a mask and
    their cosines from one float32 product over the catalogue (0.6-1.1 s -> ~20 ms at 442,944 had items): the
    lists stay the whole row's, the scores within float32 rounding."""
    monkeypatch.setattr(similar, "FULL_PRODUCT_ROWS", 0)
    answered = 0
    for row in range(0, len(rec.items_), 5):
        found = similar.blend_candidates(rec, row, 5, size)
        if found is None:
            continue
        answered += 1
        expected_rows, expected_scores = whole_row(rec, row, 5)
        assert list(found[0]) == list(expected_rows), row
        np.testing.assert_allclose(found[1], expected_scores, rtol=1e-5, atol=1e-5)
    assert answered > 0.3 * len(range(0, len(rec.items_), 5))


# ------------------------------------------------------------------------------------------------ trusted index
@pytest.fixture(scope="module")
def trusted(demo_dataset, text_cache_dir):
    """The demo fitted as a big catalogue is (with the trusted index, built above TRUSTED_INDEX_ITEMS items), with
    one item in six never had in training."""
    from hybridrec.config import load_config
    from hybridrec.recommender import HybridRecommender

    cfg = load_config(DEMO_CONFIG, quick_fit_overrides(text_cache_dir, "train.epochs=2"))
    split = demo_split(demo_dataset)
    left_out = demo_dataset.items["item_id"].iloc[::6]
    train = split.train[~split.train["item_id"].isin(left_out)]
    saved = similar.TRUSTED_INDEX_ITEMS
    similar.TRUSTED_INDEX_ITEMS = 0
    try:
        return HybridRecommender(cfg).fit(demo_dataset, train, split.validation)
    finally:
        similar.TRUSTED_INDEX_ITEMS = saved


def test_the_trusted_index_holds_the_had_items_at_their_trust_times_their_direction(trusted):
    index = trusted.trusted_index_
    assert index is not None and index.space == "ip" and index.half == similar.evidence_half(trusted)
    had = np.flatnonzero(trusted.item_counts_ > 0)
    assert 0 < len(had) < len(trusted.items_)  # the demo has items nobody had: they are left out
    assert sorted(index._index.get_ids_list()) == list(had)
    stored = np.asarray(index._index.get_items(had[:20]))
    vectors = trusted.towers_.item_vectors[had[:20]].astype(np.float64)
    expected = vectors / np.linalg.norm(vectors, axis=1, keepdims=True) * similar.trust(trusted, had[:20])[:, None]
    np.testing.assert_allclose(stored, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("size", [8, 40])
def test_the_blend_over_the_trusted_index_gives_the_whole_rows_lists(trusted, size):
    """Its nearest items are those of the largest trust x cosine, and the last one bounds every other item's
    towers part: the lists and scores stay the whole row's, and fewer queries need a wider set than with the
    cosine index, whose nearest include items of low trust."""
    queries = range(0, len(trusted.items_), 2)
    answered = {}
    for use_trusted in (True, False):
        if not use_trusted:
            trusted._similar_cache["saved"], trusted.trusted_index_ = trusted.trusted_index_, None
        try:
            answered[use_trusted] = 0
            for row in queries:
                found = similar.blend_candidates(trusted, row, 5, size)
                if found is None:
                    continue
                answered[use_trusted] += 1
                expected_rows, expected_scores = whole_row(trusted, row, 5)
                assert list(found[0]) == list(expected_rows), row
                np.testing.assert_allclose(found[1], expected_scores, rtol=1e-5, atol=1e-5)
        finally:
            if not use_trusted:
                trusted.trusted_index_ = trusted._similar_cache.pop("saved")
    assert answered[True] > answered[False]


def test_a_trusted_index_weighed_with_another_half_is_not_used(trusted, monkeypatch):
    assert similar.trusted_index(trusted) is trusted.trusted_index_
    monkeypatch.setattr(trusted.config.model, "similar_evidence", similar.evidence_half(trusted) + 1.0)
    assert similar.trusted_index(trusted) is None


def test_the_trusted_index_is_saved_loaded_checked_and_retires_items(trusted, tmp_path):
    from hybridrec.errors import ModelFileError
    from hybridrec.recommender import HybridRecommender

    trusted.save(tmp_path / "m")
    loaded = HybridRecommender.load(tmp_path / "m")
    had = np.flatnonzero(loaded.item_counts_ > 0)
    query, gone = loaded.items_.raw(int(had[0])), loaded.items_.raw(int(had[1]))
    assert loaded.trusted_index_ is not None and loaded.trusted_index_.half == trusted.trusted_index_.half
    assert loaded.similar_items(query, 5)[0] == trusted.similar_items(query, 5)[0]
    nobody = loaded.items_.raw(int(np.flatnonzero(loaded.item_counts_ == 0)[0]))
    loaded.remove_items([gone, nobody])  # one it holds, one it does not
    rows, _ = loaded.trusted_index_.query_rows(loaded.towers_.item_vectors[[int(had[1])]], len(had))
    assert int(had[1]) not in rows[0]
    assert gone not in loaded.similar_items(query, 20)[0]
    loaded.save(tmp_path / "m")
    again = HybridRecommender.load(tmp_path / "m")
    rows, _ = again.trusted_index_.query_rows(again.towers_.item_vectors[[int(had[1])]], len(had) - 1)
    assert int(had[1]) not in rows[0]
    # a crafted description is refused on load, naming the file
    folder = (tmp_path / "m").resolve()
    described = folder / "index" / "trusted.json"
    payload = json.loads(described.read_text())
    for bad, why in (({"half": -1.0}, "half"), ({"space": "cosine"}, "space"), ({"count": 10**9}, "count")):
        described.write_text(json.dumps(payload | bad))
        manifest = json.loads((folder / "manifest.json").read_text())
        manifest["files"]["index/trusted.json"] = hashlib.sha256(described.read_bytes()).hexdigest()
        (folder / "manifest.json").write_text(json.dumps(manifest))
        with pytest.raises(ModelFileError, match=f"trusted.json.*{why}"):
            HybridRecommender.load(tmp_path / "m")


def test_a_trusted_index_naming_rows_past_the_catalogue_is_refused_before_hnswlib_reads_it(trusted, tmp_path):
    """Labels are item rows: a file (with a matching checksum) that names a row the model does not have is refused
    when the index is first read, naming the file."""
    from hybridrec.errors import ModelFileError
    from hybridrec.index import ItemIndex
    from hybridrec.recommender import HybridRecommender

    trusted.save(tmp_path / "m")
    folder = (tmp_path / "m").resolve()
    n = len(trusted.items_)
    index = trusted.trusted_index_
    vectors = np.asarray(index._index.get_items(index._index.get_ids_list()[:3]), np.float32)
    crafted = ItemIndex(trusted.items_, index.dim, index.M, index.ef_construction, index.ef_search, "ip", index.half)
    crafted.build(vectors, rows=np.array([0, 1, n + 5]))
    crafted.save(tmp_path / "crafted", "trusted")
    for name in ("trusted.hnsw", "trusted.json"):
        (folder / "index" / name).write_bytes((tmp_path / "crafted" / name).read_bytes())
    manifest = json.loads((folder / "manifest.json").read_text())
    for name in ("trusted.hnsw", "trusted.json"):
        manifest["files"][f"index/{name}"] = hashlib.sha256((folder / "index" / name).read_bytes()).hexdigest()
    (folder / "manifest.json").write_text(json.dumps(manifest))
    loaded = HybridRecommender.load(tmp_path / "m")
    with pytest.raises(ModelFileError, match="trusted.hnsw.*label out of range"):
        loaded.trusted_index_  # noqa: B018


def test_a_saved_big_catalogue_answers_one_query_exactly_from_its_stored_moments(trusted, tmp_path, monkeypatch):
    """A model of a big catalogue stores TowerMoments (vectors/similar_moments.npy): a process that asks once
    (the CLI, `exact=True`) reads neither index nor makes the moments, and gets the whole row's list."""
    from hybridrec.index import ItemIndex
    from hybridrec.recommender import HybridRecommender

    monkeypatch.setattr(similar, "CANDIDATE_PATH_ITEMS", 0)  # the demo stands for a catalogue above the size
    trusted.save(tmp_path / "m")
    loaded = HybridRecommender.load(tmp_path / "m")
    stored = loaded._similar_cache["moments"]  # seeded on load, before any query
    fresh = similar.TowerMoments.of(trusted)
    np.testing.assert_allclose(stored.first, fresh.first, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(stored.second, fresh.second, rtol=1e-6, atol=1e-8)
    assert stored.half == fresh.half
    monkeypatch.setattr(ItemIndex, "load", lambda *a, **k: pytest.fail("an exact query read an index"))
    for row in range(0, len(loaded.items_), 9):
        ids, scores = loaded.similar_items(loaded.items_.raw(row), 5, exact=True)
        expected_rows, expected_scores = whole_row(trusted, row, 5)
        assert ids == trusted.items_.raws(expected_rows), row
        np.testing.assert_allclose(scores, expected_scores, rtol=1e-5, atol=1e-5)
    assert loaded._similar_cache["moments"] is stored  # never made again


def test_the_cli_answers_similar_without_reading_an_index(trusted, tmp_path, monkeypatch):
    from hybridrec_cli.main import app
    from typer.testing import CliRunner

    from hybridrec.index import ItemIndex

    monkeypatch.setattr(similar, "CANDIDATE_PATH_ITEMS", 0)
    trusted.save(tmp_path / "m")
    monkeypatch.setattr(ItemIndex, "load", lambda *a, **k: pytest.fail("the CLI read an index"))
    row = 4
    result = CliRunner().invoke(app, ["similar", trusted.items_.raw(row), "--model", str(tmp_path / "m"), "--json"])
    assert result.exit_code == 0, result.output
    got = [r["item_id"] for r in json.loads(result.stdout)["results"]]
    assert got == trusted.items_.raws(whole_row(trusted, row, 10)[0])


def test_exact_similar_items_without_a_similar_term_are_the_whole_weighed_row(rec, monkeypatch):
    """No term with a similar share: the index's answer by default, every item's weighed cosine when exact."""
    for term in rec.terms_:
        monkeypatch.setattr(term.params, "similar_weight", 0.0)
    assert not rec._similar_terms()
    for row in range(0, len(rec.items_), 11):
        ids, scores = rec.similar_items(rec.items_.raw(row), 5, exact=True)
        expected_rows, expected_scores = whole_row(rec, row, 5)
        assert ids == rec.items_.raws(expected_rows)
        np.testing.assert_allclose(scores, expected_scores, rtol=1e-5, atol=1e-6)
