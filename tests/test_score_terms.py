"""Score terms as plug-ins (hybridrec.scoring): one contract every registered term type must meet, a toy term
defined here and used end to end from config, and the facade's refusal to answer before it is fitted."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import DEMO_CONFIG, demo_split, evidence_by_hand, fit_demo, similar_items_follow

from hybridrec.artifacts import ModelDir, write_manifest
from hybridrec.errors import ModelFileError, NotFittedError
from hybridrec.recommender import HybridRecommender
from hybridrec.scoring.base import (
    SCALE_ITEMS,
    SCALE_USERS,
    TERMS,
    FitContext,
    NewItems,
    ScoreTerm,
    TermFiles,
    TermParams,
    register_term,
    registry,
)
from hybridrec.scoring.content_ridge import token_matrix

# ---------------------------------------------------------------------------------------------------------------------
# A toy term, registered on import of this module (so a saved model that names it loads with no extra step) and
# taken out of the registry again when the module's tests are done (see `_toy_term_registered`).

_BEFORE = registry().get("popularity")  # the built-ins are imported now; a term of this name would be restored


@dataclass
class PopularityParams(TermParams):
    pass


@register_term
class PopularityTerm(ScoreTerm):
    """score(u, i) = log(1 + training interactions of i), the same for every user; similar(i) = that same row."""

    type = "popularity"
    Params = PopularityParams

    def __init__(self, params: PopularityParams):
        super().__init__(params)
        self.counts: np.ndarray | None = None

    def row(self) -> np.ndarray:
        assert self.counts is not None
        return np.log1p(self.counts).astype(np.float32)

    def fit(self, ctx: FitContext) -> None:
        self.counts = np.bincount(ctx.items, minlength=ctx.n_items).astype(np.float32)

    def score(self, user_rows: np.ndarray, item_rows: np.ndarray | None = None) -> np.ndarray:
        row = self.row() if item_rows is None else self.row()[np.asarray(item_rows)]
        return np.tile(row, (len(user_rows), 1))

    def similar(self, item_row: int) -> np.ndarray:
        return self.row()

    def extend(self, new: NewItems) -> None:
        assert self.counts is not None
        self.counts = np.concatenate([self.counts, np.zeros(new.count, np.float32)])

    def save(self, folder: Path) -> None:
        assert self.counts is not None
        np.save(folder / "counts.npy", self.counts, allow_pickle=False)

    @classmethod
    def load(cls, files: TermFiles, params: PopularityParams, n_users: int, n_items: int) -> PopularityTerm:
        counts = files.npy("counts")
        if counts.shape != (n_items,) or counts.dtype != np.float32 or not np.all(np.isfinite(counts)):
            raise ModelFileError(f"{files.folder}: popularity counts are {counts.dtype} {counts.shape}, ({n_items},)")
        term = cls(params)
        term.counts = counts
        return term


@pytest.fixture(scope="module", autouse=True)
def _toy_term_registered():
    """The toy term is in the registry while this module runs, and out of it (or back to what was there) after."""
    TERMS[PopularityTerm.type] = PopularityTerm
    yield
    if _BEFORE is None:
        TERMS.pop(PopularityTerm.type, None)
    else:
        TERMS[PopularityTerm.type] = _BEFORE


TERM_TYPES = sorted(registry())  # every registered type, the toy one included: a new term is covered automatically
RANKING = ("train.loss=sampled-softmax", "train.negatives=1000")
# what a term needs beyond its weights and a ranking loss (content_ridge's categorical features: the demo has them)
EXTRA: dict[str, tuple[str, ...]] = {}


def term_overrides(kind: str, recommend: float = 0.3, similar: float = 0.3) -> list[str]:
    """A term with both weights; a term with no similar-items view gets none (the config refuses one)."""
    if registry()[kind].similar is ScoreTerm.similar:
        similar = 0.0
    spec = f"{{type: {kind}, recommend_weight: {recommend}, similar_weight: {similar}}}"
    return [f"model.terms=[{spec}]", *RANKING, *EXTRA.get(kind, ())]


def new_items(dataset, count: int = 3) -> pd.DataFrame:
    """Items outside the catalogue: copies of demo items under new ids (their texts hit the embedding cache)."""
    items = dataset.items.head(count).copy()
    items["item_id"] = [f"NEW{k}" for k in range(count)]
    return items


def new_items_of(rec: HybridRecommender, items: pd.DataFrame) -> NewItems:
    """What add_items hands each term: the count and the items' content tokens through the fitted features."""
    feats = rec.features.transform_items(items, train=None)
    return NewItems(len(items), lambda: token_matrix(feats.categorical, list(rec.item_spec_.vocab_sizes)))


def save_term(term: ScoreTerm, root: Path) -> Path:
    """The term in its own folder of a minimal model directory (checksummed manifest), as a model save does."""
    folder = root / "terms" / term.type
    folder.mkdir(parents=True)
    term.save(folder)
    write_manifest(root, {})
    return folder


def load_term(root: Path, term: ScoreTerm, n_users: int, n_items: int) -> ScoreTerm:
    cls = registry()[term.type]
    return cls.load(TermFiles(ModelDir(root), f"terms/{term.type}"), term.params, n_users, n_items)


# ---------------------------------------------------------------------------------------------------------------------
# The contract, for every registered term type (in the spirit of scikit-learn's check_estimator).


@dataclass
class Fitted:
    rec: HybridRecommender
    term: ScoreTerm
    saved: Path  # a model directory holding only this term's folder
    users: np.ndarray  # some user rows
    items: np.ndarray  # some item rows, unsorted, with a repeat

    @property
    def sizes(self) -> tuple[int, int]:
        return len(self.rec.users_), len(self.rec.items_)


@pytest.fixture(scope="module", params=TERM_TYPES)
def fitted(request, demo_dataset, text_cache_dir, tmp_path_factory) -> Fitted:
    kind = request.param
    rec = fit_demo(demo_dataset, text_cache_dir, *term_overrides(kind))
    term = rec.term(kind)
    assert term is not None and [t.type for t in rec.terms_] == [kind]
    saved = tmp_path_factory.mktemp(f"term-{kind}")
    save_term(term, saved)
    n_users, n_items = len(rec.users_), len(rec.items_)
    users = np.array([0, 3, n_users - 1, 7, 3])
    items = np.array([n_items - 1, 0, 5, 5, 17, 2])
    return Fitted(rec, term, saved, users, items)


def test_a_term_type_is_its_registry_key_with_typed_params():
    for kind, cls in registry().items():
        assert cls.type == kind
        assert issubclass(cls, ScoreTerm) and issubclass(cls.Params, TermParams)
        defaults = cls.Params()
        assert defaults.recommend_weight == 0.0 and defaults.similar_weight == 0.0


def test_scores_are_users_by_items_and_finite(fitted: Fitted):
    term, users, items = fitted.term, fitted.users, fitted.items
    n_items = fitted.sizes[1]
    some = term.score(users, items)
    every = term.score(users)
    assert some.shape == (len(users), len(items))
    assert every.shape == (len(users), n_items)
    assert np.all(np.isfinite(some)) and np.all(np.isfinite(every))
    # a score never depends on which other items (or users) are scored beside it
    np.testing.assert_allclose(some, every[:, items], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(term.score(users[:1])[0], every[0], rtol=1e-5, atol=1e-6)
    assert np.isfinite(term.scale) and term.scale >= 0


def test_similar_is_none_or_one_score_per_catalogue_item(fitted: Fitted):
    n_items = fitted.sizes[1]
    for row in (0, 5, n_items - 1):
        scores = fitted.term.similar(row)
        if scores is not None:
            assert np.shape(scores) == (n_items,)
            assert np.all(np.isfinite(scores))


def test_saved_and_loaded_through_term_files_scores_the_same(fitted: Fitted):
    term, users, items = fitted.term, fitted.users, fitted.items
    loaded = load_term(fitted.saved, term, *fitted.sizes)
    assert type(loaded) is type(term) and loaded.params == term.params
    np.testing.assert_allclose(loaded.score(users, items), term.score(users, items), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(loaded.score(users), term.score(users), rtol=1e-6, atol=1e-7)
    for row in (0, 5):
        before, after = term.similar(row), loaded.similar(row)
        assert (before is None) == (after is None)
        if before is not None:
            np.testing.assert_allclose(after, before, rtol=1e-6, atol=1e-7)


def test_a_full_model_save_and_load_keeps_the_term_and_its_scale(fitted: Fitted, tmp_path):
    rec, term, users = fitted.rec, fitted.term, fitted.users
    loaded = HybridRecommender.load(rec.save(tmp_path / "model"))
    again = loaded.term(term.type)
    assert again is not None and again.scale == pytest.approx(term.scale, rel=1e-12)
    np.testing.assert_allclose(again.score(users), term.score(users), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(loaded.score_matrix(users), rec.score_matrix(users), rtol=1e-5, atol=1e-5)
    item = rec.items_.raw(5)
    ids, scores = rec.similar_items(item, 5)
    ids_after, scores_after = loaded.similar_items(item, 5)
    assert ids_after == ids
    np.testing.assert_allclose(scores_after, scores, rtol=1e-5, atol=1e-6)


def test_extend_grows_the_item_dimension_and_keeps_old_scores(fitted: Fitted, demo_dataset):
    term, users = fitted.term, fitted.users
    n_users, n_items = fitted.sizes
    grown = load_term(fitted.saved, term, n_users, n_items)  # a copy: the fitted one stays as it was
    before = grown.score(users)
    similar_before = grown.similar(5)
    count = 3
    grown.extend(new_items_of(fitted.rec, new_items(demo_dataset, count)))
    after = grown.score(users)
    assert after.shape == (len(users), n_items + count)
    assert np.all(np.isfinite(after))
    np.testing.assert_allclose(after[:, :n_items], before, rtol=1e-6, atol=1e-7)
    new_rows = np.arange(n_items, n_items + count)
    assert grown.score(users, new_rows).shape == (len(users), count)
    similar_after = grown.similar(5)
    if similar_before is not None:
        assert np.shape(similar_after) == (n_items + count,)
        np.testing.assert_allclose(similar_after[:n_items], similar_before, rtol=1e-6, atol=1e-7)
    extra = grown.similar(n_items)  # a new item's own row
    assert extra is None or np.shape(extra) == (n_items + count,)


def test_a_wrong_shape_array_or_a_missing_one_is_a_model_file_error(fitted: Fitted, tmp_path):
    term = fitted.term
    arrays = sorted(p.name for p in (fitted.saved / "terms" / term.type).glob("*.npy"))
    assert arrays, f"the {term.type} term saved no arrays"
    for name in arrays:
        root = tmp_path / name
        shutil.copytree(fitted.saved, root)
        path = root / "terms" / term.type / name
        array = np.load(path, allow_pickle=False)
        array = array.reshape(1) if array.ndim == 0 else array
        longer = np.concatenate([array, np.zeros((1, *array.shape[1:]), array.dtype)])
        np.save(path, longer, allow_pickle=False)
        write_manifest(root, {})  # a consistent checksum: only the shape is wrong
        with pytest.raises(ModelFileError):
            load_term(root, term, *fitted.sizes)
    root = tmp_path / "missing"
    shutil.copytree(fitted.saved, root)
    (root / "terms" / term.type / arrays[0]).unlink()
    (root / "manifest.json").unlink()
    write_manifest(root, {})
    with pytest.raises(ModelFileError):
        load_term(root, term, *fitted.sizes)


# ---------------------------------------------------------------------------------------------------------------------
# The toy term from config, end to end.

WEIGHT = 0.3


@pytest.fixture(scope="module")
def pop(demo_dataset, text_cache_dir):
    """(recommender with the popularity term, the demo split it was fitted on)."""
    rec = fit_demo(demo_dataset, text_cache_dir, *term_overrides("popularity", WEIGHT, WEIGHT))
    return rec, demo_split(demo_dataset)


def z(scores: np.ndarray, skip: int) -> np.ndarray:
    rest = np.delete(scores, skip).astype(np.float64)
    return np.zeros(len(scores)) if rest.std() == 0 else (scores - rest.mean()) / rest.std()


def test_the_toy_term_counts_the_training_rows_only(pop):
    rec, split = pop
    term = rec.term("popularity")
    assert isinstance(term, PopularityTerm)
    expected = np.bincount(rec.items_.indices(split.train["item_id"]), minlength=len(rec.items_))
    np.testing.assert_array_equal(term.counts, expected)
    held_out = np.bincount(rec.items_.indices(split.test["item_id"]), minlength=len(rec.items_))
    assert held_out.sum() > 0 and not np.array_equal(term.counts, expected + held_out)


def test_the_scale_puts_the_toy_term_on_the_towers_spread(pop):
    rec, split = pop
    term = rec.term("popularity")
    rng = np.random.default_rng(rec.config.seed)
    users = rng.permutation(np.unique(rec.users_.indices(split.train["user_id"])))[:SCALE_USERS]
    items = np.sort(rng.permutation(len(rec.items_))[:SCALE_ITEMS])
    towers = rec.towers_.matrix(users, items).astype(np.float64)
    popularity = np.log1p(term.counts[items].astype(np.float64))
    expected = WEIGHT / (1 - WEIGHT) * towers.std() / popularity.std()
    assert term.scale > 0
    assert term.scale == pytest.approx(expected, rel=1e-4)


def test_recommend_scores_are_the_towers_plus_the_scaled_toy_term(pop):
    rec, _ = pop
    term = rec.term("popularity")
    popularity = np.log1p(term.counts.astype(np.float64))
    users = np.arange(6)
    expected = rec.towers_.matrix(users).astype(np.float64) + term.scale * popularity[None, :]
    np.testing.assert_allclose(rec.score_matrix(users), expected, rtol=1e-5, atol=1e-4)
    pairs_u, pairs_i = np.array([0, 4, 2]), np.array([9, 0, 101])
    np.testing.assert_allclose(rec.score_pairs(pairs_u, pairs_i), expected[pairs_u, pairs_i], rtol=1e-5, atol=1e-4)
    for row in users:
        user = rec.users_.raw(row)
        ids, scores = rec.recommend(user, k=10, exclude_seen=False)
        top = np.argsort(-expected[row], kind="stable")[:10]
        np.testing.assert_allclose(scores, expected[row, rec.items_.indices(ids)], rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(scores, expected[row, top], rtol=1e-5, atol=1e-4)
        unseen_ids, _ = rec.recommend(user, k=10)
        assert not set(rec.items_.indices(unseen_ids)) & set(rec.seen_rows(row))
    # the term moves the ranking: without it the towers alone would order the catalogue differently
    assert any(
        list(np.argsort(-expected[r], kind="stable")[:10]) != list(np.argsort(-rec.towers_.matrix(users)[r])[:10])
        for r in users
    )


def test_similar_items_blend_the_towers_with_the_toy_term(pop):
    rec, _ = pop
    popularity = np.log1p(rec.term("popularity").counts.astype(np.float64))

    neighbour, _ = evidence_by_hand(rec)  # the toy term is not behavioural: its weight ignores the query's evidence

    def expected_of(row: int) -> np.ndarray:
        return (1 - WEIGHT) * z(rec.towers_.similar_scores(row) * neighbour, row) + WEIGHT * z(popularity, row)

    similar_items_follow(rec, expected_of, rec.towers_.query_vector)


def test_the_toy_term_survives_save_load_and_add_items(pop, demo_dataset, tmp_path):
    rec, _ = pop
    path = rec.save(tmp_path / "model")
    assert (path / "terms" / "popularity" / "counts.npy").is_file()
    loaded = HybridRecommender.load(tmp_path / "model")
    term = loaded.term("popularity")
    assert isinstance(term, PopularityTerm)
    np.testing.assert_array_equal(term.counts, rec.term("popularity").counts)
    assert term.scale == rec.term("popularity").scale
    for item in ["D0031", "D0002", "D0150"]:
        ids, scores = rec.similar_items(item, 8)
        ids_after, scores_after = loaded.similar_items(item, 8)
        assert ids_after == ids
        np.testing.assert_allclose(scores_after, scores, rtol=1e-5, atol=1e-6)
    user = rec.users_.raw(3)
    assert loaded.recommend(user, 10)[0] == rec.recommend(user, 10)[0]

    n_items = len(loaded.items_)
    added = new_items(demo_dataset, 3)
    loaded.add_items(added)
    new_ids = list(added["item_id"])
    new_rows = loaded.items_.indices(new_ids)
    assert list(new_rows) == [n_items, n_items + 1, n_items + 2]
    assert len(loaded.index_) == n_items + 3
    for item in new_ids:
        assert loaded.index_.query(loaded.vector_of(item), 1)[0] == [item]
        ids, _ = loaded.similar_items(item, 5)
        assert len(ids) == 5 and item not in ids
    assert term.counts.shape == (n_items + 3,)
    np.testing.assert_array_equal(term.counts[n_items:], 0)  # nobody bought them: popularity 0
    users = np.arange(4)
    np.testing.assert_allclose(  # so the term adds nothing to their scores
        loaded.score_matrix(users, new_rows), loaded.towers_.matrix(users, new_rows), rtol=1e-6, atol=1e-6
    )
    np.testing.assert_allclose(  # and the old items keep theirs
        loaded.score_matrix(users)[:, :n_items], rec.score_matrix(users), rtol=1e-5, atol=1e-5
    )

    reloaded = HybridRecommender.load(loaded.save(tmp_path / "model"))
    assert all(item in reloaded.items_ for item in new_ids)
    np.testing.assert_array_equal(reloaded.term("popularity").counts, term.counts)


# ---------------------------------------------------------------------------------------------------------------------
# Before fit or load


def test_an_unfitted_recommender_refuses_queries_and_save(demo_dataset, tmp_path):
    rec = HybridRecommender()
    queries = [
        lambda: rec.similar_items("D0001"),
        lambda: rec.similar_scores("D0001"),
        lambda: rec.similar_to_text("optical cable"),
        lambda: rec.recommend("U0001"),
        lambda: rec.predict(["U0001"], ["D0001"]),
        lambda: rec.score_matrix(np.array([0])),
        lambda: rec.score_pairs(np.array([0]), np.array([0])),
        lambda: rec.score_new_items(new_items(demo_dataset, 1)),
        lambda: rec.add_items(new_items(demo_dataset, 1)),
        lambda: rec.term("ease"),
        lambda: rec.vector_of("D0001"),
        lambda: rec.net,
        lambda: rec.features,
    ]
    for query in queries:
        with pytest.raises(NotFittedError):
            query()
    with pytest.raises(NotFittedError):
        rec.save(tmp_path / "model")
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_similar_weights_adding_to_more_than_1_are_refused():
    from hybridrec.config import load_config
    from hybridrec.errors import ConfigError

    terms = "model.terms=[{type: ease, similar_weight: 0.6}, {type: popularity, similar_weight: %s}]"
    with pytest.raises(ConfigError, match="similar_weight adds up to 1.1, more than 1"):
        load_config(DEMO_CONFIG, [terms % 0.5])
    assert len(load_config(DEMO_CONFIG, [terms % 0.3]).model.terms) == 2
