"""HybridRecommender: the facade users import. Raw ids in, raw ids out; torch is loaded only when needed."""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from hybridrec import __version__
from hybridrec import closed_form as cf
from hybridrec import content_ridge as cr
from hybridrec.artifacts import ModelDir, model_link, publish, staging_dir, write_manifest
from hybridrec.config import Config, config_from_dict, dump_config
from hybridrec.content_ridge import ContentRidgeScores
from hybridrec.data.idmap import IdMap
from hybridrec.errors import ConfigError, ModelFileError, QueryError
from hybridrec.history_scores import FILES as ITEM_ITEM_FILES
from hybridrec.history_scores import QUERY_NORMS, HistoryItemScores
from hybridrec.index import ItemIndex
from hybridrec.titles import TitleMatcher

if TYPE_CHECKING:
    import pandas as pd

    from hybridrec.data.dataset import Dataset
    from hybridrec.data.splits import Split

DISPLAY_COLUMNS = ("title", "price", "category")
# recommend() scores the whole catalogue up to this many items; past it, a candidate pool of at least
# MIN_CANDIDATES (20 x k when larger) from the ANN index, the item biases and each extra score term
EXACT_RECOMMEND_ITEMS = 5000
MIN_CANDIDATES = 200
HISTORY = "__history__"  # the user feature holding recent training items (model.user_history)


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
    """Hybrid content + collaborative recommender. Hyperparameters live in `config`; learned state ends in `_`."""

    def __init__(self, config: Config | None = None, quiet: bool = True):
        self.config = config or Config()
        self.quiet = quiet
        self._net = None
        self._features = None
        self._model_dir: ModelDir | None = None
        self._matcher: TitleMatcher | None = None
        self.metrics_: dict = {}
        self.item_queries_: np.ndarray | None = None  # what similar_items queries with, when not the item vectors
        self.item_item_: HistoryItemScores | None = None  # the model.item_item term, in numpy
        self.closed_form_: np.ndarray | None = None  # EASE weights for similar items (model.similar_closed_form_weight)
        self.content_ridge_: ContentRidgeScores | None = None  # the model.content_ridge_weight term

    # ------------------------------------------------------------------ fitting
    def fit(
        self, dataset: Dataset, split: Split | None = None, checkpoint: str | Path | None = None, resume: bool = False
    ) -> HybridRecommender:
        """Split (unless given), fit features on the training part, train, compute vectors and build the index.

        `checkpoint` is a file where training state is saved after every epoch; with `resume=True` a checkpoint
        of the same config and data is continued instead of starting over.
        """
        from hybridrec.data.splits import split_interactions
        from hybridrec.features.pipeline import FeaturePipeline
        from hybridrec.model.network import HybridNet
        from hybridrec.train import Trainer, resolve_device, seed_everything

        cfg = self.config
        seed_everything(cfg.seed)
        if cfg.train.threads:
            import torch

            torch.set_num_threads(cfg.train.threads)
        dataset.validate()
        split = split if split is not None else split_interactions(dataset.interactions, cfg.split, cfg.seed)
        every_rating = split  # the content ridge learns from all of a user's items, liked or not
        if cfg.train.min_rating is not None and dataset.feedback == "explicit":
            split = _liked_only(split, cfg.train.min_rating)
        self.split_ = split
        self.feedback_ = dataset.feedback
        self.rating_range_ = tuple(dataset.rating_range) if dataset.rating_range else None
        items = dataset.items.reset_index(drop=True)
        self.items_ = IdMap(items["item_id"], "item")
        if cfg.model.similar_closed_form_weight > 0:
            cf.check_catalogue(len(self.items_))
        user_ids = list(dataset.users["user_id"]) if dataset.users is not None else []
        self.users_ = IdMap(user_ids + list(dataset.interactions["user_id"]), "user")
        users_table, user_schema = self._aligned_users(dataset), dataset.user_schema

        train = split.train
        train_items = set(train["item_id"])
        if cfg.model.user_history > 0:
            users_table, user_schema = self._with_history(users_table, user_schema, train, cfg.model.user_history)
        t0 = time.perf_counter()
        pipeline = FeaturePipeline(cfg.features, seed=cfg.seed, quiet=self.quiet)
        pipeline.fit(
            items[items["item_id"].isin(train_items)],
            dataset.item_schema,
            train,
            users_table,
            user_schema,
            {HISTORY: cfg.model.user_history},
        )
        item_feats = pipeline.transform_items(items, train)
        content_tokens = None
        if cfg.model.content_ridge_weight > 0:
            content_tokens = cr.token_matrix(item_feats.categorical, pipeline.item_spec()["vocab_sizes"])
            cr.check_size(*content_tokens.shape)
        user_feats = pipeline.transform_users(users_table) if users_table is not None else None
        if user_feats is None:
            empty = np.zeros((len(self.users_), 0), np.float32)
            from hybridrec.features.pipeline import EntityFeatures

            user_feats = EntityFeatures(empty, empty, [])
        self._features = pipeline
        self.feature_seconds_ = time.perf_counter() - t0
        self.text_cache_ = {"hits": pipeline.cache_hits, "misses": pipeline.cache_misses}

        tr = self._encode(train)
        val = self._encode(split.validation) if len(split.validation) else None
        item_has_id = np.bincount(tr.items, minlength=len(self.items_)) > 0
        user_has_id = np.bincount(tr.users, minlength=len(self.users_)) > 0
        if cfg.model.user_id_dropout >= 1.0:
            user_has_id[:] = False
        self.global_mean_ = float(train["rating"].mean()) if dataset.feedback == "explicit" else 0.0
        self.item_spec_, self.user_spec_ = pipeline.item_spec(), pipeline.user_spec()
        history = self._history_tokens(pipeline, items) if cfg.model.user_history > 0 else None
        if cfg.model.item_item:
            self.user_spec_ = {**self.user_spec_, "history_slot": _item_item_slot(history, len(self.items_))}
        if history is not None and cfg.model.history_recency:
            positions = [0] * len(self.user_spec_["vocab_sizes"])
            positions[history[0]] = cfg.model.user_history
            self.user_spec_ = {**self.user_spec_, "positions": positions}
        net = HybridNet(
            len(self.users_), len(self.items_), self.item_spec_, self.user_spec_, cfg.model, self.global_mean_
        )
        causal = self._causal_histories(tr, train, history) if cfg.model.history_causal else None
        text_dim = pipeline.encoder_.dim if pipeline.encoder_ is not None else 0
        self.review_slice_ = (text_dim, 2 * text_dim + 1) if text_dim else None
        trainer = Trainer(
            net,
            item_feats,
            user_feats,
            item_has_id,
            cfg.train,
            dataset.feedback,
            cfg.model.id_dropout if cfg.model.variant == "hybrid" else 0.0,
            slice(*self.review_slice_) if self.review_slice_ else None,
            cfg.seed,
            resolve_device(cfg.train.device),
            user_has_id=user_has_id,
            history=history,
            user_id_dropout=cfg.model.user_id_dropout,
            item_item_l2=cfg.model.item_item_l2,
            causal=causal,
        )
        ckpt = None
        if checkpoint is not None:
            from hybridrec.checkpoint import Checkpointer

            ckpt = Checkpointer(checkpoint, _fingerprint(cfg, tr))
            if not resume:
                ckpt.remove()
        t1 = time.perf_counter()
        self.train_result_ = trainer.fit(tr, val, progress=None if self.quiet else _print_epoch, checkpoint=ckpt)
        self.train_seconds_ = time.perf_counter() - t1
        self._net = trainer.net.cpu()
        self.item_vectors_, self.item_bias_ = trainer.all_item_vectors()
        weight = cfg.model.similar_history_weight
        bought_with = trainer.history_query_vectors() if weight > 0 else None  # only computed when used
        self.item_queries_ = _similar_queries(self.item_vectors_, bought_with, weight)
        self.user_vectors_, self.user_bias_ = trainer.all_user_vectors(len(self.users_))
        exported = trainer.item_item_export()
        norms = np.linalg.norm(bought_with, axis=1) if bought_with is not None else None
        self.item_item_ = HistoryItemScores(*exported, norms) if exported is not None else None
        self.item_has_id_ = item_has_id
        self.display_ = _display_rows(items)
        seen = split.train if not len(split.validation) else _concat(split.train, split.validation)
        self._set_seen(self._encode(seen))
        weight, l2 = cfg.model.similar_closed_form_weight, cfg.model.closed_form_l2
        self.closed_form_ = self._fit_closed_form(l2) if weight > 0 else None
        self.content_ridge_ = None  # not part of the scores the ridge is scaled against
        if content_tokens is not None:
            self.content_ridge_ = self._fit_content_ridge(content_tokens, every_rating, cfg.seed)
        self._build_index()
        return self

    def _fit_content_ridge(self, tokens, split, seed: int) -> ContentRidgeScores:
        """The ridge on the training rows of `split` (as the network: validation rows judge, they do not train),
        scaled to its share of the network's scores over a seeded sample of users x items (all of either when there
        are few)."""
        from hybridrec.protocols import score_matrix

        train = self._encode(split.train)
        model = self.config.model
        ridge = ContentRidgeScores.fit(tokens, train.users, train.items, len(self.users_), model.content_ridge_l2)
        rng = np.random.default_rng(seed)
        users = rng.permutation(np.unique(train.users))[: cr.SCALE_USERS]
        items = np.sort(rng.permutation(len(self.items_))[: cr.SCALE_ITEMS])
        model_scores, ridge_scores = score_matrix(self, users, items), ridge.for_users(users, items)
        ridge.scale = cr.blend_scale(model_scores, ridge_scores, model.content_ridge_weight)
        return ridge

    def _fit_closed_form(self, l2: float) -> np.ndarray:
        """EASE on the training rows, as the network: validation rows judge, they do not train."""
        train = self._encode(self.split_.train)
        return cf.fit_closed_form(train.users, train.items, len(self.users_), len(self.items_), l2)

    def _aligned_users(self, dataset: Dataset):
        """The user table in IdMap order; users missing from it get empty features."""
        if dataset.users is None or not dataset.user_schema.columns():
            return None
        table = dataset.users.drop_duplicates("user_id").set_index("user_id")
        return table.reindex(self.users_.raw_ids).reset_index(names="user_id")

    def _with_history(self, users_table, schema, train: pd.DataFrame, n: int):
        """Add each user's n most recent training items as a multi-valued user feature (implicit feedback)."""
        from dataclasses import replace

        import pandas as pd

        from hybridrec.causal_history import latest_first

        recent = train.iloc[latest_first(train["user_id"].to_numpy(), train["timestamp"].to_numpy())]
        history = recent.groupby("user_id", sort=False)["item_id"].agg(lambda s: list(s[:n]))
        table = users_table.copy() if users_table is not None else pd.DataFrame({"user_id": self.users_.raw_ids})
        table[HISTORY] = [history.get(u, []) for u in table["user_id"]]
        return table, replace(schema, multi=[*schema.multi, HISTORY])

    def _causal_histories(self, tr, train: pd.DataFrame, history: tuple[int, np.ndarray] | None):
        """model.history_causal: every training row's own history, ordered like the served bag."""
        from hybridrec.causal_history import causal_histories
        from hybridrec.features.categorical import OOV

        if history is None:
            return None
        if self.feedback_ == "explicit" and self.config.train.loss == "auto":
            raise ConfigError("model.history_causal: explicit data trains with mse; set a ranking train.loss")
        tokens = history[1][tr.items]
        tokens = np.where(tokens >= 0, tokens, OOV)  # served bags hold out-of-vocabulary items as OOV too
        timestamps = train["timestamp"].to_numpy() if "timestamp" in train else np.zeros(len(train))
        return causal_histories(tr.users, timestamps, tokens, self.config.model.user_history)

    @staticmethod
    def _history_tokens(pipeline, items: pd.DataFrame) -> tuple[int, np.ndarray] | None:
        """The history bag's slot among the user columns and each item row's token in it (-1: not in the bag)."""
        import pandas as pd

        from hybridrec.features.categorical import OOV

        vocabs = pipeline.users_.vocabularies if pipeline.users_ is not None else []
        slot = next((k for k, v in enumerate(vocabs) if v.column == HISTORY), None)
        if slot is None:
            return None
        tokens = vocabs[slot].transform(pd.Series([[i] for i in items["item_id"]], dtype=object))[:, 0]
        return slot, np.where(tokens > OOV, tokens, -1)

    def _encode(self, frame: pd.DataFrame):
        from hybridrec.train import Interactions

        ratings = frame["rating"].to_numpy(np.float32)
        weights = np.ones_like(ratings) if self.feedback_ == "explicit" else np.log1p(np.maximum(ratings, 0)) + 1.0
        return Interactions(
            self.users_.indices(frame["user_id"]),
            self.items_.indices(frame["item_id"]),
            ratings,
            weights.astype(np.float32),
        )

    def _set_seen(self, inter) -> None:
        order = np.lexsort((inter.items, inter.users))
        users, items = inter.users[order], inter.items[order]
        self.seen_indptr_ = np.searchsorted(users, np.arange(len(self.users_) + 1)).astype(np.int64)
        self.seen_items_ = items.astype(np.int64)

    def _build_index(self) -> None:
        idx = self.config.index
        self.index_ = ItemIndex(self.items_, self.item_vectors_.shape[1], idx.M, idx.ef_construction, idx.ef_search)
        self.index_.build(self.item_vectors_, seed=self.config.seed)

    # ------------------------------------------------------------------ queries
    def similar_items(self, item_id: str, k: int = 10) -> tuple[list[str], np.ndarray]:
        """The k items nearest to `item_id` by cosine of the fused item vectors, as (raw ids, similarities)."""
        _check_k(k)
        row = self.items_.index(item_id)
        queries = self.item_queries_ if self.item_queries_ is not None else self.item_vectors_
        pairwise = self.item_item_ is not None and self.item_item_.query_norms is not None
        if self.closed_form_ is None and not pairwise:
            return self.index_.query(queries[row], k, exclude={self.items_.raw(row)})
        scores = self.exact_similar_scores(row)
        if self.closed_form_ is not None:
            weight = self.config.model.similar_closed_form_weight
            scores = cf.blend_similar(scores, self.closed_form_[row], row, weight)
        scores[row] = -np.inf
        top = np.argsort(-scores, kind="stable")[:k]
        return self.items_.raws(top), scores[top].astype(np.float32)

    def exact_similar_scores(self, row: int) -> np.ndarray:
        """The index's score for item `row` against every catalogue item, computed exactly (the item-item and
        closed-form terms need the whole row; both allow at most 20,000 items): the cosine of the item's query
        vector, plus with model.item_item the pairwise share of "bought with it" (HistoryItemScores.similar_scores)."""
        queries = self.item_queries_ if self.item_queries_ is not None else self.item_vectors_
        norms = np.linalg.norm(self.item_vectors_, axis=1)
        query = queries[row]
        if self.item_queries_ is None:
            query = query / max(float(np.linalg.norm(query)), np.finfo(np.float32).tiny)
        cosine = (self.item_vectors_ @ query) / np.where(norms > 0, norms, np.inf)  # query: a blend of unit vectors
        if self.item_item_ is None or self.item_item_.query_norms is None:
            return cosine.astype(np.float64)  # no pairwise share: the cosine alone
        model = self.config.model
        return self.item_item_.similar_scores(
            row, cosine, norms, model.similar_history_weight, model.similar_item_item_weight
        ).astype(np.float64)

    def similar_to_text(self, text: str, k: int = 10) -> TextMatch:
        """Resolve the text to a catalogue item by title (or exact id); unmatched text is scored as a new item."""
        _check_k(k)
        if not str(text).strip():
            raise QueryError("the query is empty: give an item id or some text")
        if str(text) in self.items_:
            row = self.items_.index(text)
            ids, scores = self.similar_items(text, k)
            return TextMatch(text, self.items_.raw(row), self.display_[row][0], "id", ids, scores)
        if self._matcher is None:
            self._matcher = TitleMatcher([r[0] for r in self.display_])
        hit = self._matcher.match(text)
        if hit is not None:
            row = hit[0]
            ids, scores = self.similar_items(self.items_.raw(row), k)
            return TextMatch(text, self.items_.raw(row), self.display_[row][0], "title", ids, scores)
        if _looks_like_id(text):
            raise QueryError(f"unknown item id {str(text).strip()!r} (no item has this id and no title matches it)")
        import pandas as pd

        query = pd.DataFrame({"item_id": ["<query>"], "title": [str(text)]})
        vec, _ = self._content_vectors(query, typical_numeric=True)
        ids, scores = self.index_.query(vec[0], k)
        return TextMatch(text, None, None, "content", ids, scores)

    def predict(self, user_ids, item_ids) -> np.ndarray:
        """Predicted ratings (explicit) or scores (implicit) for aligned lists of raw user and item ids."""
        u = self.users_.indices(user_ids)
        i = self.items_.indices(item_ids)
        if len(u) != len(i):
            raise QueryError(f"predict needs as many user ids as item ids (got {len(u)} and {len(i)})")
        return self._score_pairs(
            self.user_vectors_[u], self.user_bias_[u], self.item_vectors_[i], self.item_bias_[i], rows=(u, i)
        )

    def recommend(
        self, user_id: str, k: int = 10, exclude_seen: bool = True, exact: bool = False
    ) -> tuple[list[str], np.ndarray]:
        """Top-k items for a user. Past EXACT_RECOMMEND_ITEMS items: candidates from the ANN index by the user vector
        plus the best items by bias and by each extra score term, then an exact re-score with the full head.
        `exact=True` scores the whole catalogue at any size."""
        _check_k(k)
        row = self.users_.index(user_id)
        seen = self._seen(row) if exclude_seen else np.zeros(0, np.int64)
        n_items = len(self.items_)
        # each extra term (item-item, content ridge) over the catalogue, once: it picks candidates and scores them
        term_scores = [term.for_users(np.array([row]))[0] for term in self.score_terms]
        if exact or n_items <= EXACT_RECOMMEND_ITEMS:
            candidates = np.arange(n_items)
        else:
            pool = min(n_items, max(MIN_CANDIDATES, 20 * k) + len(seen))
            ann_rows, _ = self.index_.query_rows(self.user_vectors_[row : row + 1], pool)
            # the ANN pool is drawn by the user vector alone: biases and each extra term bring their own best items
            strongest = [self.item_bias_, *term_scores]
            tops = [np.argpartition(-scores, min(pool, n_items - 1))[:pool] for scores in strongest]
            candidates = np.union1d(ann_rows[0], np.concatenate(tops))
        candidates = np.setdiff1d(candidates, seen, assume_unique=False)
        if not len(candidates):
            return [], np.zeros(0, np.float32)
        u = np.repeat(self.user_vectors_[row : row + 1], len(candidates), 0)
        bu = np.repeat(self.user_bias_[row : row + 1], len(candidates), 0)
        v, bi = self.item_vectors_[candidates], self.item_bias_[candidates]
        scores = self._score_pairs(u, bu, v, bi, clip=False)  # the towers; the terms are already computed
        for term in term_scores:
            scores = scores + term[candidates]
        top = np.argsort(-scores, kind="stable")[:k]
        return self.items_.raws(candidates[top]), scores[top]

    def score_new_items(self, items: pd.DataFrame, user_ids=None, k_neighbours: int = 5) -> pd.DataFrame:
        """Scores for items with no interactions, from content alone, and their nearest catalogue items.

        One row per (item, user) when user_ids are given, else one row per item scored for an average user.
        """
        import pandas as pd

        items = _check_new_items(items)
        feats = self.features.transform_items(items, train=None)
        vecs, bias = self._content_vectors(items, feats=feats)
        users = list(user_ids) if user_ids is not None else [None]
        ridge = None  # users x new items, from the new items' tokens
        if self.content_ridge_ is not None and user_ids is not None:
            ridge = self.content_ridge_.for_tokens(self.users_.indices(users), self._content_tokens(feats))
        rows = []
        for j, item_id in enumerate(items["item_id"]):
            nb_ids, nb_sims = self.index_.query(vecs[j], k_neighbours)
            for n, user in enumerate(users):
                if user is None:
                    zero = np.zeros((1, vecs.shape[1]), np.float32)
                    score = self._score_pairs(zero, np.zeros(1, np.float32), vecs[j : j + 1], bias[j : j + 1])[0]
                else:
                    u = self.users_.index(user)
                    score = self._score_pairs(
                        self.user_vectors_[u : u + 1], self.user_bias_[u : u + 1], vecs[j : j + 1], bias[j : j + 1]
                    )[0]
                    if ridge is not None:  # a ranking loss (config check): no rating range to clip to
                        score += ridge[n, j]
                rows.append(
                    {
                        "item_id": str(item_id),
                        "title": str(items["title"].iloc[j]),
                        "user_id": user,
                        "score": float(score),
                        "neighbours": nb_ids,
                        "neighbour_similarities": [round(float(s), 4) for s in nb_sims],
                    }
                )
        return pd.DataFrame(rows)

    def add_items(self, items: pd.DataFrame) -> HybridRecommender:
        """Put new items into the catalogue and the index from their content, without retraining."""
        items = _check_new_items(items)
        clash = [i for i in items["item_id"] if i in self.items_]
        if clash:
            raise QueryError(f"item id {clash[0]!r} is already in the catalogue")
        feats = self.features.transform_items(items, train=None)
        vecs, bias = self._content_vectors(items, feats=feats)
        rows = np.asarray(self.items_.extend(items["item_id"]), dtype=np.int64)
        self.item_vectors_ = np.concatenate([self.item_vectors_, vecs])
        if self.item_queries_ is not None:  # new items have no history: they query with their own vector
            self.item_queries_ = np.concatenate([self.item_queries_, _unit(vecs)])
        self.item_bias_ = np.concatenate([self.item_bias_, bias])
        if self.item_item_ is not None:
            self.item_item_ = self.item_item_.with_new_items(len(rows))
        if self.closed_form_ is not None:  # new items were bought with nothing: zero rows and columns
            self.closed_form_ = np.pad(self.closed_form_, ((0, len(rows)), (0, len(rows))))
        if self.content_ridge_ is not None:  # new items are scored through their tokens
            self.content_ridge_ = self.content_ridge_.with_new_items(self._content_tokens(feats))
        self.item_has_id_ = np.concatenate([self.item_has_id_, np.zeros(len(rows), bool)])
        self.display_ = self.display_ + _display_rows(items)
        self._matcher = None
        self.index_.add(vecs, rows)
        return self

    def vector_of(self, item_id: str) -> np.ndarray:
        """The fused vector the index holds for an item."""
        return self.item_vectors_[self.items_.index(item_id)].copy()

    def item_info(self, item_id: str) -> dict:
        row = self.display_[self.items_.index(item_id)]
        return {"item_id": self.items_.raw(self.items_.index(item_id)), **dict(zip(DISPLAY_COLUMNS, row))}

    # ------------------------------------------------------------------ internals
    @property
    def score_terms(self) -> list:
        """Terms added to the towers' user x item score beside the dot product (model.item_item, the content
        ridge); each scores users x items (`for_users`) and aligned pairs (`for_pairs`)."""
        return [term for term in (self.item_item_, self.content_ridge_) if term is not None]

    def _content_tokens(self, feats):
        """Content ridge token rows of items outside the training catalogue, from their features."""
        return cr.token_matrix(feats.categorical, self.item_spec_["vocab_sizes"])

    def _seen(self, row: int) -> np.ndarray:
        return self.seen_items_[self.seen_indptr_[row] : self.seen_indptr_[row + 1]]

    def residual(self, u: np.ndarray, v: np.ndarray) -> np.ndarray | float:
        """The optional MLP residual for aligned rows of user and item vectors (0 when not configured)."""
        if not self.config.model.mlp_residual:
            return 0.0
        import torch

        with torch.no_grad():
            ut, vt = torch.as_tensor(u), torch.as_tensor(v)
            return self.net.residual(torch.cat([ut, vt, ut * vt], -1)).squeeze(-1).detach().numpy()

    def _score_pairs(self, u, bu, v, bi, clip: bool = True, rows: tuple | None = None) -> np.ndarray:
        """mu + b_u + b_i + <u, v> (+ residual) for aligned rows, in numpy; `rows` = (user rows, item rows) adds
        the item-item term."""
        scores = self.global_mean_ + bu + bi + np.einsum("ij,ij->i", u, v) + self.residual(u, v)
        for term in self.score_terms if rows is not None else ():
            scores = scores + term.for_pairs(*rows)
        if clip and self.feedback_ == "explicit" and self.rating_range_:
            scores = np.clip(scores, *self.rating_range_)
        return scores.astype(np.float32)

    def _content_vectors(
        self, items: pd.DataFrame, typical_numeric: bool = False, feats=None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Vectors of brand-new items from content only (their ID part is hidden, as in ID dropout).

        `typical_numeric` sets numeric features to the training median with no missing flag: a free-text query
        says nothing about price, and "missing price" would otherwise pull it towards items without one.
        `feats`: the items' features when the caller already has them.
        """
        import torch

        feats = feats if feats is not None else self.features.transform_items(items, train=None)
        if typical_numeric:
            feats.numeric[:] = 0.0
        net = self.net
        with torch.no_grad():
            ids = torch.zeros(len(items), dtype=torch.long)
            v, b = net.items(
                ids,
                torch.as_tensor(feats.text),
                torch.as_tensor(feats.numeric),
                [torch.as_tensor(c) for c in feats.categorical],
                torch.zeros(len(items)),
            )
        return v.numpy().astype(np.float32), b.numpy().astype(np.float32)

    @property
    def net(self):
        """The torch network, loaded from the model directory on first use."""
        if self._net is None:
            self._net = self._load_net()
        return self._net

    @property
    def features(self):
        if self._features is None:
            from hybridrec.features.pipeline import FeaturePipeline

            if self._model_dir is None:
                raise ModelFileError("this recommender is not fitted")
            self._model_dir.path("features/features.json")
            self._features = FeaturePipeline.load(
                self._model_dir.root / "features", self.config.features, self.config.seed
            )
        return self._features

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> Path:
        """Write the model into a fresh folder, then swap `path` to it in one rename: a dying save leaves the
        previous model loadable. Returns the version folder."""
        from safetensors.torch import save_file

        target = model_link(path)
        staged = staging_dir(target)
        try:
            (staged / "config.json").write_text(json.dumps(dump_config(self.config), indent=1))
            model = {
                "hybridrec_version": __version__,
                "feedback": self.feedback_,
                "rating_range": list(self.rating_range_) if self.rating_range_ else None,
                "global_mean": self.global_mean_,
                "n_users": len(self.users_),
                "n_items_trained": int(self.net.items.id_embedding.num_embeddings)
                if self.net.items.use_id
                else len(self.item_has_id_),
                "item_spec": self.item_spec_,
                "user_spec": self.user_spec_,
                "review_slice": self.review_slice_,
                "content_ridge_scale": self.content_ridge_.scale if self.content_ridge_ is not None else None,
            }
            (staged / "model.json").write_text(json.dumps(model, indent=1))
            (staged / "id_maps").mkdir()
            (staged / "id_maps/users.json").write_text(json.dumps(self.users_.to_json()))
            (staged / "id_maps/items.json").write_text(json.dumps(self.items_.to_json()))
            state = {k: v.detach().cpu().contiguous() for k, v in self.net.state_dict().items()}
            save_file(state, str(staged / "weights.safetensors"))
            self.features.save(staged / "features")
            (staged / "vectors").mkdir()
            for name in (
                "item_vectors_",
                "item_bias_",
                "user_vectors_",
                "user_bias_",
                "item_has_id_",
                "seen_indptr_",
                "seen_items_",
            ):
                np.save(staged / "vectors" / f"{name.rstrip('_')}.npy", getattr(self, name), allow_pickle=False)
            if self.item_queries_ is not None:
                np.save(staged / "vectors" / "item_queries.npy", self.item_queries_, allow_pickle=False)
            if self.item_item_ is not None:
                self.item_item_.save(staged / "vectors")
            if self.closed_form_ is not None:
                np.save(staged / "vectors" / f"{cf.FILE}.npy", self.closed_form_, allow_pickle=False)
            if self.content_ridge_ is not None:
                self.content_ridge_.save(staged / "vectors")
            self.index_.save(staged / "index")
            (staged / "items.json").write_text(json.dumps({"columns": list(DISPLAY_COLUMNS), "rows": self.display_}))
            (staged / "metrics.json").write_text(json.dumps(self.metrics_, indent=1))
            write_manifest(staged, {"name": self.config.name, "hybridrec_version": __version__})
            return publish(staged, target)
        except BaseException:
            shutil.rmtree(staged, ignore_errors=True)
            raise

    @classmethod
    def load(cls, path: str | Path) -> HybridRecommender:
        """Load what queries need (no torch, no text model); the network and features load on first use."""
        md = ModelDir(path)
        try:
            cfg = config_from_dict(md.json("config.json"))
        except ModelFileError:
            raise
        except Exception as exc:  # noqa: BLE001 - any config problem means a bad model file
            raise ModelFileError(f"{md.root / 'config.json'}: {exc}") from None
        rec = cls(cfg)
        rec._model_dir = md
        try:
            model = md.json("model.json")
            rec.feedback_ = model["feedback"]
            rec.rating_range_ = tuple(model["rating_range"]) if model["rating_range"] else None
            rec.global_mean_ = float(model["global_mean"])
            rec.item_spec_, rec.user_spec_ = model["item_spec"], model["user_spec"]
            rec.review_slice_ = model["review_slice"]
            rec._n_items_trained = int(model["n_items_trained"])
            rec.users_ = IdMap.from_json(md.json("id_maps/users.json"))
            rec.items_ = IdMap.from_json(md.json("id_maps/items.json"))
            for name in (
                "item_vectors",
                "item_bias",
                "user_vectors",
                "user_bias",
                "item_has_id",
                "seen_indptr",
                "seen_items",
            ):
                setattr(rec, f"{name}_", md.npy(f"vectors/{name}.npy"))
            rec.display_ = [list(r) for r in md.json("items.json")["rows"]]
            has_queries = (md.root / "vectors" / "item_queries.npy").exists()
            rec.item_queries_ = md.npy("vectors/item_queries.npy") if has_queries else None
            if (md.root / "vectors" / "item_item.npy").exists():
                arrays = [md.npy(f"vectors/{name}.npy") for name in ITEM_ITEM_FILES]
                has_norms = (md.root / "vectors" / f"{QUERY_NORMS}.npy").exists()
                norms = md.npy(f"vectors/{QUERY_NORMS}.npy") if has_norms else None
                rec.item_item_ = HistoryItemScores(*arrays, norms)
            if (md.root / "vectors" / f"{cf.FILE}.npy").exists():
                rec.closed_form_ = md.npy(f"vectors/{cf.FILE}.npy")
            if model.get("content_ridge_scale") is not None:
                arrays = [md.npy(f"vectors/{name}.npy") for name in cr.FILES]
                rec.content_ridge_ = ContentRidgeScores.from_arrays(arrays, float(model["content_ridge_scale"]))
            rec.metrics_ = md.json("metrics.json")
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelFileError(f"{md.root}: inconsistent model files ({exc})") from None
        problem = rec.item_item_.check(len(rec.users_), len(rec.items_)) if rec.item_item_ is not None else None
        if problem is None and rec.content_ridge_ is not None:
            problem = rec.content_ridge_.check(len(rec.users_), len(rec.items_))
        if problem:
            raise ModelFileError(f"{md.root}: {problem}")
        n_items = len(rec.items_)
        if rec.closed_form_ is not None and rec.closed_form_.shape != (n_items, n_items):
            shape = rec.closed_form_.shape
            raise ModelFileError(f"{md.root}: closed-form weights are {shape}, expected ({n_items}, {n_items})")
        if rec.item_queries_ is not None and rec.item_queries_.shape != rec.item_vectors_.shape:
            raise ModelFileError(f"{md.root}: item query vectors and item vectors disagree in shape")
        if not (len(rec.item_vectors_) == len(rec.items_) == len(rec.display_) == len(rec.item_bias_)):
            raise ModelFileError(f"{md.root}: item vectors, ids and display table disagree in length")
        if not (len(rec.user_vectors_) == len(rec.users_) == len(rec.seen_indptr_) - 1):
            raise ModelFileError(f"{md.root}: user vectors and ids disagree in length")
        md.path("index/index.json")
        md.path("index/items.hnsw")
        rec.index_ = ItemIndex.load(md.root / "index", rec.items_)
        return rec

    def _load_net(self):
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        from hybridrec.model.network import HybridNet

        if self._model_dir is None:
            raise ModelFileError("this recommender is not fitted")
        path = self._model_dir.path("weights.safetensors")
        n_users = len(self.user_vectors_)
        net = HybridNet(
            n_users, self._n_items_trained, self.item_spec_, self.user_spec_, self.config.model, self.global_mean_
        )
        try:
            net.load_state_dict(load_file(str(path)))
        except (SafetensorError, RuntimeError, OSError) as exc:
            raise ModelFileError(f"{path}: cannot load weights ({str(exc).splitlines()[0]})") from None
        net.eval()
        return net


def _fingerprint(cfg: Config, train) -> str:
    """Identifies one training run (config + exact training pairs): a checkpoint only resumes the same run."""
    import hashlib

    digest = hashlib.sha256(json.dumps(dump_config(cfg), sort_keys=True).encode())
    for array in (train.users, train.items, train.ratings):
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def _looks_like_id(text: str) -> bool:
    """One token with a digit in it (B00004Z5M1, D0031, 85123A) is an id, not a description."""
    token = str(text).strip()
    return bool(token) and " " not in token and any(c.isdigit() for c in token)


def _check_k(k: int) -> None:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k <= 0:
        raise QueryError(f"k must be a positive integer, got {k!r}")


def _check_new_items(items: pd.DataFrame) -> pd.DataFrame:
    from hybridrec.data.idmap import normalize_id

    for col in ("item_id", "title"):
        if col not in items.columns:
            raise QueryError(f"new items lack the column {col!r}")
    items = items.reset_index(drop=True).copy()
    missing = items["item_id"].isna() | (items["item_id"].astype(str).str.strip() == "")
    if missing.any():
        raise QueryError(f"new item in row {int(missing.to_numpy().argmax()) + 1} has no item_id")
    items["item_id"] = [normalize_id(i) for i in items["item_id"]]
    items["title"] = items["title"].fillna("").astype(str)
    if items["item_id"].duplicated().any():
        raise QueryError(f"new items repeat item_id {items.loc[items['item_id'].duplicated(), 'item_id'].iloc[0]!r}")
    return items


def _display_rows(items: pd.DataFrame) -> list[list]:
    """Title, price and category per item, for printing answers without the training data."""
    from hybridrec.features.categorical import cell_values

    def category(row) -> str:
        for col in ("category", "subcategory", "genres", "main_cat"):
            if col in row and cell_values(row[col]):
                return ", ".join(cell_values(row[col])[:3])
        return ""

    out = []
    for _, row in items.iterrows():
        price = row.get("price")
        try:
            price = None if price is None or not np.isfinite(float(price)) else round(float(price), 2)
        except (TypeError, ValueError):
            price = None
        title = str(row.get("title") or "") or str(row["item_id"])
        out.append([title, price, category(row)])
    return out


def _concat(a, b):
    import pandas as pd

    return pd.concat([a, b], ignore_index=True)


def _unit(m: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(m, axis=1, keepdims=True)
    return (m / np.where(norm > 0, norm, 1.0)).astype(np.float32)


def _similar_queries(vectors: np.ndarray, history: np.ndarray | None, weight: float) -> np.ndarray | None:
    """What `similar_items` queries the index with: None (the item vectors themselves) unless a history weight
    is set; items outside the history vocabulary keep their own vector."""
    if history is None or weight <= 0:
        return None
    own, bought = _unit(vectors), _unit(history)
    missing = ~np.any(history != 0, axis=1)
    bought[missing] = own[missing]
    return ((1.0 - weight) * own + weight * bought).astype(np.float32)


def _item_item_slot(history: tuple[int, np.ndarray] | None, n_items: int) -> int:
    """The user column W's rows index; a dense items x items W needs a history bag and a bounded catalogue."""
    from hybridrec.model.item_item import MAX_ITEMS

    if history is None:
        raise ConfigError("model.item_item: the data gives no user history bag (set model.user_history > 0)")
    if n_items > MAX_ITEMS:
        raise ConfigError(f"model.item_item: {n_items} items, more than the {MAX_ITEMS} a dense item-item term allows")
    return history[0]


def _liked_only(split, min_rating: float):
    """The split with training and validation rows below `min_rating` dropped (test rows untouched)."""
    from dataclasses import replace

    def keep(frame: pd.DataFrame) -> pd.DataFrame:
        return frame[frame["rating"] >= min_rating].reset_index(drop=True)

    return replace(split, train=keep(split.train), validation=keep(split.validation))


def _print_epoch(row: dict) -> None:
    from rich.console import Console

    Console(stderr=True).print(f"epoch {row['epoch']:>3}  train loss {row['train_loss']:.4f}  val {row['val']:.4f}")
