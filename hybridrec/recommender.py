"""HybridRecommender: the facade users import. Raw ids in, raw ids out; torch is loaded only when needed.

It maps ids to rows, picks candidates and blends the towers with the declared score terms (scoring/base.py holds
the rule); fitting lives in fitting.py and persistence in artifacts.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hybridrec.config import Config
from hybridrec.display import DISPLAY_COLUMNS
from hybridrec.errors import NotFittedError, QueryError
from hybridrec.scoring.base import ScoreTerm
from hybridrec.titles import TitleMatcher

if TYPE_CHECKING:
    from collections.abc import Callable

    import pandas as pd

    from hybridrec.artifacts import LazyIndex
    from hybridrec.data.dataset import Dataset
    from hybridrec.features.pipeline import FeaturePipeline
    from hybridrec.fitting import FittedModel
    from hybridrec.index import ItemIndex
    from hybridrec.model.network import HybridNet

# recommend() scores the whole catalogue up to this many items; past it, a candidate pool of at least
# MIN_CANDIDATES (20 x k when larger) from the ANN index, the item biases and each recommend term
EXACT_RECOMMEND_ITEMS = 5000
MIN_CANDIDATES = 200


@dataclass
class TextMatch:
    """The answer to a free-text `similar` query, saying which catalogue item (if any) the text resolved to."""

    query: str
    resolved_id: str | None
    resolved_title: str | None
    how: str  # "id", "title" or "content" (no title matched: the text was scored as a new item)
    ids: list[str]
    scores: np.ndarray


class HybridRecommender:
    """Hybrid content + collaborative recommender.

    Parameters
    ----------
    config : Config, optional
        Settings (defaults when None). Only the model's sections (seed, features, model, train, index) matter
        here; data, split and evaluation belong to the job that calls `fit`.
    quiet : bool
        No progress output while fitting.

    Learned attributes (ending in `_`) exist only after `fit` or `load`: `users_` and `items_` (IdMaps),
    `towers_` (TowerScores), `terms_` (fitted ScoreTerms), `index_`, `seen_`, `train_result_`, `fit_stats_`.
    """

    def __init__(self, config: Config | None = None, quiet: bool = True):
        self.config = config or Config()
        self.quiet = quiet
        self._net: HybridNet | None = None
        self._features: FeaturePipeline | None = None
        self._model_dir = None  # the ModelDir a loaded model reads its network and features from
        self._matcher: TitleMatcher | None = None
        self._item_text: np.ndarray | None = None  # items in the text encoder's space, loaded on first use
        self._similar_cache: dict[str, Any] = {}  # similar.py's per-model state (the evidence half, TowerMoments)
        self._index: ItemIndex | LazyIndex | None = None  # a loaded model's index is read on first use
        self._trusted: ItemIndex | LazyIndex | None = None  # similar.build_trusted_index's, on big catalogues

    # ------------------------------------------------------------------ fitting
    def fit(
        self,
        dataset: Dataset,
        train: pd.DataFrame | None = None,
        validation: pd.DataFrame | None = None,
        checkpoint: str | Path | None = None,
        resume: bool = False,
        on_epoch: Callable[[dict], None] | None = None,
    ) -> HybridRecommender:
        """Fit on training rows, with optional validation rows for early stopping.

        Parameters
        ----------
        dataset : Dataset
            The catalogue (items, users, their schemas); its interactions are used only when `train` is None.
        train : DataFrame, optional
            Training interactions (default: all of `dataset.interactions`). Items without any are cold: they are
            scored from content alone.
        validation : DataFrame, optional
            Rows that judge early stopping; never trained on.
        checkpoint : path, optional
            A file for per-epoch training state; `resume=True` continues a matching one.
        on_epoch : callable, optional
            Called after each epoch with its row ({epoch, train_loss, val, seconds, metric}: `val` is the
            validation score, lower is better); an exception it raises stops the fit (`tune` prunes this way).

        Returns
        -------
        HybridRecommender
            self, fitted.
        """
        from hybridrec.fitting import fit_model

        train = dataset.interactions if train is None else train
        fitted = fit_model(self.config, dataset, train, validation, self.quiet, checkpoint, resume, on_epoch)
        self._adopt(fitted)
        return self

    def _adopt(self, fitted: FittedModel) -> None:
        self.feedback_ = fitted.feedback
        self.rating_range_ = fitted.rating_range
        self.users_, self.items_ = fitted.users, fitted.items
        self.towers_ = fitted.towers
        self.item_has_id_ = fitted.item_has_id
        self.seen_ = fitted.seen
        self.terms_ = fitted.terms
        self.index_ = fitted.index
        self.trusted_index_ = fitted.trusted_index
        self.display_ = fitted.display
        self.item_spec_, self.user_spec_ = fitted.item_spec, fitted.user_spec
        self.review_slice_ = fitted.review_slice
        self.text_slots_ = fitted.text_slots
        self.train_result_ = fitted.train_result
        self.fit_stats_ = fitted.stats
        self._net, self._features = fitted.net, fitted.features
        self._item_text = fitted.item_text
        self._matcher = None
        self.retired_ = np.zeros(len(fitted.items), bool)
        counts = fitted.item_counts
        self.item_counts_ = counts if counts is not None else fitted.item_has_id.astype(np.int64)
        self.bag_, self.user_inputs_ = fitted.bag, fitted.user_inputs
        self.content_effects_ = fitted.content_effects

    def _check_fitted(self) -> None:
        if not hasattr(self, "towers_"):
            raise NotFittedError("this recommender is not fitted: call fit() or HybridRecommender.load()")

    # ------------------------------------------------------------------ persistence
    def save(
        self,
        path: str | Path,
        metrics: dict | None = None,
        job: dict | None = None,
        extra_files: dict[str, bytes | str] | None = None,
    ) -> Path:
        """Write the model atomically (artifacts.py): a dying save leaves the previous model loadable.

        `metrics` (the fit job's {"metrics", "baseline", "run"} record) and `job` (the job's settings) are stored
        beside it, and `extra_files` (the fit's report.html) inside it. Returns the version folder.
        """
        from hybridrec.artifacts import save_model

        self._check_fitted()
        if metrics is not None:
            self.metrics_ = metrics
        return save_model(self, path, getattr(self, "metrics_", {}), job, extra_files)

    @classmethod
    def load(cls, path: str | Path, mapped: bool = False) -> HybridRecommender:
        """Load what queries need (no torch, no text model); the network and features load on first use.
        `mapped`: map the arrays instead of reading them, for a process that asks a few queries and exits (the
        CLI: 0.6 s for `similar` on a 5e5-item model); a long-lived process keeps the default (a mapping would
        show a later in-place write to the model's files)."""
        from hybridrec.artifacts import load_model

        return load_model(cls, path, mapped)

    # ------------------------------------------------------------------ queries
    def term(self, kind: str) -> ScoreTerm | None:
        """The fitted score term of this type, or None."""
        self._check_fitted()
        return next((t for t in self.terms_ if t.type == kind), None)

    def similar_items(self, item_id: str, k: int = 10, exact: bool = False) -> tuple[list[str], np.ndarray]:
        """The k items nearest to `item_id`: by the index (the towers' query vectors) or, when a term has a
        similar weight, by the exact blend over the catalogue.

        Parameters
        ----------
        item_id : str
            A catalogue item's raw id (QueryError when unknown).
        k : int
            How many neighbours (the item itself is never one).
        exact : bool
            Score every item the answer could come from instead of asking the ANN index first: exact, and for a
            process that asks once (the CLI) cheaper than reading a big catalogue's index (~25 ms against ~0.8 s
            at 5e5 items); a process that asks many times leaves it off.

        Returns
        -------
        (list of str, ndarray)
            Raw ids, best first, and their scores (cosine, or the standardised blend).
        """
        self._check_fitted()
        _check_k(k)
        from hybridrec import similar

        return similar.similar_items(self, self.items_.index(item_id), k, exact)

    def similar_scores(self, item_id: str) -> np.ndarray:
        """Exact similar-item scores of `item_id` against every catalogue item (the blend of the towers' cosine,
        weighed by evidence, with each similar term; the weighed cosine alone when no term has a similar weight)."""
        self._check_fitted()
        from hybridrec import similar

        return similar.similar_scores(self, self.items_.index(item_id))

    def _similar_from_index(self, row: int, k: int) -> tuple[list[str], np.ndarray]:
        """The towers' part of similar items: the index's answer for item `row`, re-ranked by evidence."""
        return self.nearest(self.towers_.query_vector(row), k, skip=row)

    def nearest(self, vector: np.ndarray, k: int, skip: int | None = None) -> tuple[list[str], np.ndarray]:
        """The index's nearest items to a vector (item row `skip` left out), weighed by evidence (similar.py)."""
        _check_k(k)
        from hybridrec import similar

        return similar.nearest(self, vector, k, skip)

    def _similar_terms(self) -> list[ScoreTerm]:
        return [t for t in self.terms_ if t.params.similar_weight > 0]

    def _recommend_terms(self) -> list[ScoreTerm]:
        return [t for t in self.terms_ if t.params.recommend_weight > 0 and t.scale != 0]

    def similar_to_text(self, text: str, k: int = 10, exact: bool = False) -> TextMatch:
        """Resolve the text to a catalogue item by title (or exact id); unmatched text is scored as a new item.
        `exact`: as in similar_items, for the item the text names."""
        self._check_fitted()
        _check_k(k)
        if not str(text).strip():
            raise QueryError("the query is empty: give an item id or some text")
        if str(text) in self.items_:
            row = self.items_.index(text)
            ids, scores = self.similar_items(text, k, exact)
            return TextMatch(text, self.items_.raw(row), self.display_[row][0], "id", ids, scores)
        if self._matcher is None:
            self._matcher = TitleMatcher([r[0] for r in self.display_])
        hit = self._matcher.match(text)
        if hit is not None:
            row = hit[0]
            ids, scores = self.similar_items(self.items_.raw(row), k, exact)
            return TextMatch(text, self.items_.raw(row), self.display_[row][0], "title", ids, scores)
        if _looks_like_id(text):
            raise QueryError(f"unknown item id {str(text).strip()!r} (no item has this id and no title matches it)")
        from hybridrec.similar import similar_to_free_text

        ids, scores = similar_to_free_text(self, str(text), k)
        return TextMatch(text, None, None, "content", ids, scores)

    def score_matrix(self, user_rows: np.ndarray, item_rows: np.ndarray | None = None) -> np.ndarray:
        """Blended scores of users x items by row (all items when item_rows is None), unclipped: the towers plus
        each recommend term at its fitted scale."""
        self._check_fitted()
        scores = self.towers_.matrix(user_rows, item_rows)
        for term in self._recommend_terms():
            scores = scores + term.scale * term.score(user_rows, item_rows)
        return scores

    def score_pairs(self, user_rows: np.ndarray, item_rows: np.ndarray) -> np.ndarray:
        """Blended scores of aligned (user row, item row) pairs, unclipped; each distinct user's terms once."""
        self._check_fitted()
        user_rows, item_rows = np.asarray(user_rows, np.int64), np.asarray(item_rows, np.int64)
        scores = self.towers_.pairs(user_rows, item_rows)
        terms = self._recommend_terms()
        if not terms:
            return scores
        users, inverse = np.unique(user_rows, return_inverse=True)
        for start in range(0, len(users), 1024):
            block = users[start : start + 1024]
            mine = (inverse >= start) & (inverse < start + len(block))
            for term in terms:
                rows = term.score(block)
                scores[mine] += term.scale * rows[inverse[mine] - start, item_rows[mine]]
        return scores

    def predict(self, user_ids, item_ids) -> np.ndarray:
        """Scores for aligned lists of raw user and item ids.

        Parameters
        ----------
        user_ids, item_ids : sequences of str
            Equal-length lists of known ids.

        Returns
        -------
        ndarray of float32
            Ratings clipped to the rating range when the model predicts ratings (explicit data, MSE, no
            recommend terms); otherwise ranking scores.
        """
        self._check_fitted()
        u, i = self.users_.indices(user_ids), self.items_.indices(item_ids)
        if len(u) != len(i):
            raise QueryError(f"predict needs as many user ids as item ids (got {len(u)} and {len(i)})")
        return self._clip(self.score_pairs(u, i))

    def _clip(self, scores: np.ndarray) -> np.ndarray:
        """Ratings are clipped to the rating range; ranking scores (a ranking loss, a blend) are not."""
        ranking = self.config.train.loss not in ("auto", "mse") or self._recommend_terms()
        if self.feedback_ == "explicit" and self.rating_range_ and not ranking:
            scores = np.clip(scores, *self.rating_range_)
        return scores.astype(np.float32)

    def clip_ratings(self, scores) -> np.ndarray:
        """Scores as people read them: predicted ratings clipped to the rating range when the model predicts
        ratings (explicit data, MSE, no recommend terms); ranking scores unchanged. Order is kept (ties at a bound
        stay in the model's order)."""
        return self._clip(np.asarray(scores, dtype=np.float64))

    def seen_rows(self, user_row: int) -> np.ndarray:
        """Item rows the user had in training or validation (what recommend leaves out)."""
        self._check_fitted()
        return self.seen_.of(user_row)

    def recommend(
        self,
        user_id: str | None = None,
        k: int = 10,
        exclude_seen: bool = True,
        exact: bool = False,
        *,
        history: list | dict | None = None,
        user_features: dict | None = None,
        items: list[str] | None = None,
        exclude: list[str] | None = None,
    ) -> tuple[list[str], np.ndarray]:
        """Top-k items for a known user, for a user the model never saw (from their items and features), or for
        nobody in particular. Past EXACT_RECOMMEND_ITEMS items: candidates from the ANN index by the user vector
        plus the best items by bias and by each recommend term, then an exact re-score of the blend.

        Who is scored:

        - a `user_id` the model knows: its own vector and history (`history` and `user_features` are ignored);
        - otherwise, with `history` and/or `user_features`: a user the model never saw, scored with no retraining.
          The user tower runs with the ID part hidden, the history bag made of `history` (most recent first, the
          order given; with `model.user_history.length` > 0) and the features through the fitted pipeline; each
          score term that can score a history (EASE, content ridge) scores it. A model with neither a history bag,
          user features nor such a term ranks such a user by the item biases (the history is still excluded);
        - nobody (no `user_id`, no history, no features): the fallback, the catalogue's most popular items (most
          training interactions; ties by item bias), with those counts as the scores;
        - an unknown `user_id` with nothing else: QueryError (a mistyped id is not silently a stranger).

        Parameters
        ----------
        user_id : str, optional
            A raw user id.
        k : int
            How many items.
        exclude_seen : bool
            Leave out the user's training and validation items (for an unknown user: the `history` items).
        exact : bool
            Score the whole catalogue at any size.
        history : list of str or dict, optional
            Item ids, most recent first, or {item id: rating or weight}. Weights (finite, > 0) scale each item in
            the score terms, relative to each other; the tower's bag is an unweighted mean, as in training. An
            unknown id is a QueryError naming it.
        user_features : dict, optional
            {user feature column: value}, for models fitted with user features (age, occupation...); columns not
            given count as missing.
        items : list of str, optional
            Allow-list: answer only from these items (scored exactly).
        exclude : list of str, optional
            Deny-list: never answer these items.

        Returns
        -------
        (list of str, ndarray)
            Raw item ids, best first, and their blended scores (unclipped); retired items (`remove_items`) are
            never answered.
        """
        from hybridrec.queries import recommend

        self._check_fitted()
        _check_k(k)
        return recommend(
            self,
            user_id,
            k,
            exclude_seen,
            exact,
            history,
            user_features,
            items,
            exclude,
            EXACT_RECOMMEND_ITEMS,
            MIN_CANDIDATES,
        )

    def recommend_batch(
        self,
        user_ids: list[str],
        k: int = 10,
        items: list[str] | None = None,
        exclude: list[str] | None = None,
        exclude_seen: bool = True,
    ) -> pd.DataFrame:
        """Top-k for many known users at once, scored in blocks of users (one matrix product per block).

        The whole catalogue (or the allow-list) is scored exactly, so on catalogues up to EXACT_RECOMMEND_ITEMS
        the answers equal `recommend` for each user; past it `recommend` re-scores a candidate pool instead.

        Parameters
        ----------
        user_ids : list of str
            Known user ids (every unknown one is named in one QueryError); repeats are answered again.
        k : int
            How many items per user.
        items, exclude : list of str, optional
            Allow-list and deny-list, as in `recommend`.
        exclude_seen : bool
            Leave out each user's training and validation items.

        Returns
        -------
        DataFrame
            Columns user_id, rank (1 = best), item_id, score (unclipped), users in the order given; a user with
            fewer than k items left gets fewer rows.
        """
        from hybridrec.queries import recommend_batch

        self._check_fitted()
        _check_k(k)
        return recommend_batch(self, user_ids, k, items, exclude, exclude_seen)

    def remove_items(self, item_ids: list[str]) -> HybridRecommender:
        """Retire items without refitting: no query answers them from now on (recommend, recommend_batch,
        similar items, free text); the index marks them deleted. They stay known ids, so a history may still
        name them. Retiring an item twice does nothing; `add_items` refuses a retired id (refit to bring it back).

        Parameters
        ----------
        item_ids : list of str
            Catalogue item ids (an unknown one is a QueryError and nothing is retired).

        Returns
        -------
        HybridRecommender
            self (call `save` to keep the change: the retired mask and the index are saved with the model).
        """
        from hybridrec.queries import remove_items

        self._check_fitted()
        remove_items(self, item_ids)
        return self

    def explain(self, user_id: str, item_id: str) -> dict:
        """Why `user_id` gets `item_id`: the score split into parts that add up to it, and what moved them.

        Parameters
        ----------
        user_id, item_id : str
            A known user and a catalogue item.

        Returns
        -------
        dict
            `score` (the unclipped blend), `parts` (global_mean, user_bias, item_bias, dot_item_id and
            dot_item_content: <u, v> split by the item vector's ID and content halves, mlp_residual when present,
            term:<type> per recommend term at its scale; they sum to `score`), `item_bias_split`, `behaviour`
            (per source, the user's history items that moved the score most: history_bag = how much the score
            drops without the item; ease / content_ridge = the item's share of that term's part) and `content`
            (per item feature group, how much the score drops when the group's input is zeroed).
        """
        from hybridrec.explain import explain

        self._check_fitted()
        return explain(self, user_id, item_id)

    def score_new_items(self, items: pd.DataFrame, user_ids=None, k_neighbours: int = 5) -> pd.DataFrame:
        """Scores for items with no interactions, from content alone, and their nearest catalogue items.

        Parameters
        ----------
        items : DataFrame
            `item_id`, `title` and any metadata columns the model was fitted with (missing ones count as missing).
        user_ids : list of str, optional
            Score for these users; None scores for an average user (zero vector and bias).
        k_neighbours : int
            Nearest catalogue items to list per new item.

        Returns
        -------
        DataFrame
            One row per (item, user): item_id, title, user_id, score, neighbours (ids), neighbour_titles,
            neighbour_similarities.
        """
        from hybridrec.new_items import score_new_items

        self._check_fitted()
        return score_new_items(self, items, user_ids, k_neighbours)

    def add_items(self, items: pd.DataFrame) -> HybridRecommender:
        """Put new items into the catalogue, the index and every term from their content, without retraining.

        Parameters
        ----------
        items : DataFrame
            As for `score_new_items`; ids must be new to the catalogue.

        Returns
        -------
        HybridRecommender
            self (call `save` to keep the change).
        """
        from hybridrec.new_items import add_items

        self._check_fitted()
        add_items(self, items)
        return self

    @property
    def item_text_(self) -> np.ndarray | None:
        """Every item's place in the text encoder's space (None without a text encoder); read on first use."""
        if self._item_text is None and self._model_dir is not None and self._model_dir.has("vectors/item_text.npy"):
            from hybridrec.artifacts import load_item_text

            self._item_text = load_item_text(self)
        return self._item_text

    def vector_of(self, item_id: str) -> np.ndarray:
        """The fused vector the index holds for an item."""
        self._check_fitted()
        return self.towers_.item_vectors[self.items_.index(item_id)].copy()

    def item_info(self, item_id: str) -> dict:
        self._check_fitted()
        row = self.display_[self.items_.index(item_id)]
        return {"item_id": self.items_.raw(self.items_.index(item_id)), **dict(zip(DISPLAY_COLUMNS, row))}

    # ------------------------------------------------------------------ internals
    @property
    def index_(self) -> ItemIndex:
        """The ANN index over the item vectors (a loaded model reads it on first use: artifacts.LazyIndex)."""
        index = self._read_index("_index")
        if index is None:
            raise NotFittedError("this recommender is not fitted: call fit() or HybridRecommender.load()")
        return index

    @index_.setter
    def index_(self, value: ItemIndex | LazyIndex) -> None:
        self._index = value

    @property
    def trusted_index_(self) -> ItemIndex | None:
        """The index similar items of a big catalogue search (similar.build_trusted_index; None on smaller ones
        and in models saved before it), read on first use like `index_`."""
        return self._read_index("_trusted")

    @trusted_index_.setter
    def trusted_index_(self, value: ItemIndex | LazyIndex | None) -> None:
        self._trusted = value

    def _read_index(self, attribute: str) -> ItemIndex | None:
        """The index held in `attribute`, read from the model folder the first time (artifacts.LazyIndex)."""
        from hybridrec.artifacts import LazyIndex

        index = getattr(self, attribute)
        if isinstance(index, LazyIndex):
            index = index.read()
            setattr(self, attribute, index)
        return index

    @property
    def net(self):
        """The torch network, loaded from the model directory on first use."""
        if self._net is None:
            from hybridrec.artifacts import load_network

            if self._model_dir is None:
                raise NotFittedError("this recommender is not fitted: call fit() or HybridRecommender.load()")
            self._net = load_network(self)
        return self._net

    @property
    def features(self):
        """The fitted feature pipeline, loaded from the model directory on first use."""
        if self._features is None:
            from hybridrec.features.pipeline import FeaturePipeline

            if self._model_dir is None:
                raise NotFittedError("this recommender is not fitted: call fit() or HybridRecommender.load()")
            self._model_dir.path("features/features.json")
            self._features = FeaturePipeline.load(
                self._model_dir.root / "features", self.config.features, self.config.seed
            )
        return self._features


def _looks_like_id(text: str) -> bool:
    """One token with a digit in it (B00004Z5M1, D0031, 85123A) is an id, not a description."""
    token = str(text).strip()
    return bool(token) and " " not in token and any(c.isdigit() for c in token)


def _check_k(k: int) -> None:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k <= 0:
        raise QueryError(f"k must be a positive integer, got {k!r}")
