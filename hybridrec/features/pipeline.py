"""Fits every feature on the training split and turns any entity table (old or brand-new rows) into arrays."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from hybridrec.config import FeatureConfig
from hybridrec.data.dataset import FeatureSchema
from hybridrec.errors import ModelFileError
from hybridrec.features.cache import EmbeddingCache
from hybridrec.features.categorical import MAX_VALUES, Vocabulary
from hybridrec.features.documents import metadata_documents, review_documents
from hybridrec.features.entity import EntityFeatures
from hybridrec.features.numeric import NumericBins, NumericScaler
from hybridrec.features.text import SentenceTransformerEncoder, TfidfSvdEncoder, make_text_encoder
from hybridrec.features.words import MAX_WORDS, WORDS, with_words
from hybridrec.model.spec import TowerSpec


@dataclass
class TabularFeatures:
    """Numeric scalers and categorical vocabularies of one entity (items or users)."""

    scalers: list[NumericScaler]
    vocabularies: list[Vocabulary]  # categorical + multi columns, then one per binned numeric column
    bins: list[NumericBins] = field(default_factory=list)  # features.numeric_bins > 0

    @classmethod
    def fit(
        cls, table: pd.DataFrame, schema: FeatureSchema, cfg: FeatureConfig, limits: dict[str, int] | None = None
    ) -> TabularFeatures:
        """`limits` caps the values kept per cell for some multi-valued columns (default: MAX_VALUES)."""
        scalers = [
            NumericScaler.fit(table[c], log1p=None if cfg.log1p is None else c in cfg.log1p) for c in schema.numeric
        ]
        limits = limits or {}
        vocabs = [
            Vocabulary.fit(table[c], cfg.min_count, limits.get(c, MAX_VALUES))
            for c in schema.categorical + schema.multi
        ]
        bins = [NumericBins.fit(table[c], cfg.numeric_bins) for c in schema.numeric] if cfg.numeric_bins else []
        vocabs += [Vocabulary.fit(b.tokens(table[b.column]), min_count=1, max_values=1) for b in bins]
        return cls(scalers, vocabs, bins)

    def numeric(self, table: pd.DataFrame) -> np.ndarray:
        blocks = [s.transform(_column(table, s.column, np.nan)) for s in self.scalers]
        return np.concatenate(blocks, axis=1) if blocks else np.zeros((len(table), 0), np.float32)

    def categorical(self, table: pd.DataFrame) -> list[np.ndarray]:
        binned = {b.name: b for b in self.bins}

        def cells(column: str) -> pd.Series:
            b = binned.get(column)
            return b.tokens(_column(table, b.column, np.nan)) if b else _column(table, column, None)

        return [v.transform(cells(v.column)) for v in self.vocabularies]

    @property
    def numeric_dim(self) -> int:
        return 2 * len(self.scalers)

    @property
    def vocab_sizes(self) -> list[int]:
        return [v.size for v in self.vocabularies]

    def to_json(self) -> dict:
        return {
            "numeric": [s.to_json() for s in self.scalers],
            "categorical": [v.to_json() for v in self.vocabularies],
            "bins": [b.to_json() for b in self.bins],
        }

    @classmethod
    def from_json(cls, payload: dict) -> TabularFeatures:
        return cls(
            [NumericScaler.from_json(p) for p in payload["numeric"]],
            [Vocabulary.from_json(p) for p in payload["categorical"]],
            [NumericBins.from_json(p) for p in payload.get("bins", [])],  # absent in models saved before bins
        )


def _column(table: pd.DataFrame, name: str, default: object) -> pd.Series:
    """A missing column in new rows is all-missing, not an error: new items often lack some metadata."""
    if name in table.columns:
        return table[name]
    return pd.Series([default] * len(table), index=table.index, name=name, dtype=object)


class FeaturePipeline:
    """Item text (metadata + training reviews), numeric and categorical features; user tabular features."""

    def __init__(self, cfg: FeatureConfig, seed: int = 0, quiet: bool = True):
        self.cfg = cfg
        self.seed = seed
        self.quiet = quiet
        self.item_schema_: FeatureSchema | None = None
        self.user_schema_: FeatureSchema | None = None
        self.items_: TabularFeatures | None = None
        self.users_: TabularFeatures | None = None
        self.encoder_: TfidfSvdEncoder | SentenceTransformerEncoder | None = None
        self.text_dim_ = 0
        self.cache_hits = self.cache_misses = 0  # texts served from / added to the embedding cache

    def fit(
        self,
        items: pd.DataFrame,
        item_schema: FeatureSchema,
        train: pd.DataFrame,
        users: pd.DataFrame | None = None,
        user_schema: FeatureSchema | None = None,
        user_limits: dict[str, int] | None = None,
    ) -> FeaturePipeline:
        """Fit on training rows only: vocabularies, scalers and the TF-IDF model never see test interactions."""
        self.item_schema_ = item_schema
        self.user_schema_ = user_schema if users is not None else None
        if self.cfg.title_words:
            tabular = replace(item_schema, multi=[*item_schema.multi, WORDS])
            self.items_ = TabularFeatures.fit(with_words(items, item_schema), tabular, self.cfg, {WORDS: MAX_WORDS})
        else:
            self.items_ = TabularFeatures.fit(items, item_schema, self.cfg)
        self.users_ = (
            TabularFeatures.fit(users, self.user_schema_, self.cfg, user_limits) if self.user_schema_ else None
        )
        self.encoder_ = make_text_encoder(
            self.cfg.text_encoder,
            self.cfg.text_model,
            self.cfg.text_precision,
            self.cfg.batch_size,
            self.cfg.tfidf_dim,
            self.seed,
            self.quiet,
        )
        if isinstance(self.encoder_, TfidfSvdEncoder):
            meta = metadata_documents(items, item_schema, self.cfg.max_document_chars)
            reviews = self._reviews(items, train)
            self.encoder_.fit(meta + [r for r in reviews if r])
        self.text_dim_ = 0 if self.encoder_ is None else 2 * self.encoder_.dim + 1
        return self

    def _reviews(self, items: pd.DataFrame, train: pd.DataFrame | None) -> list[str]:
        if train is None:
            return [""] * len(items)
        cfg = self.cfg
        return review_documents(list(items["item_id"]), train, cfg.max_reviews_per_item, cfg.max_document_chars)

    def encode_texts(self, texts: list[str], label: str = "", reviews: bool = False) -> np.ndarray:
        """Encode through the on-disk cache: repeated fits and repeated queries re-encode nothing. `reviews`: the
        texts are review documents, cut at features.review_max_tokens (the fast path for big catalogues)."""
        assert self.encoder_ is not None  # only called with a text encoder
        encoder = self.encoder_
        if reviews and isinstance(encoder, SentenceTransformerEncoder):
            encoder = encoder.with_max_seq_length(self.cfg.review_max_tokens)
        width = (self.text_dim_ - 1) // 2 if self.text_dim_ else None  # every cached vector must be this wide
        cache = EmbeddingCache(self.cfg.cache_dir, encoder.key, width)
        out = cache.encode(encoder, texts, label)
        self.cache_hits += cache.hits
        self.cache_misses += cache.misses
        return out

    def transform_items(self, items: pd.DataFrame, train: pd.DataFrame | None = None) -> EntityFeatures:
        """Arrays for item rows; `train` supplies review text (None for brand-new items: they have none)."""
        assert self.items_ is not None and self.item_schema_ is not None  # fitted or loaded
        text = np.zeros((len(items), 0), np.float32)
        if self.encoder_ is not None:
            documents = metadata_documents(items, self.item_schema_, self.cfg.max_document_chars)
            meta = self.encode_texts(documents, "item metadata" if train is not None else "")
            reviews = self._reviews(items, train)
            has = np.array([bool(r) for r in reviews])
            review_vecs = np.zeros_like(meta)
            if has.any():  # only in a fit
                review_vecs[has] = self.encode_texts([r for r in reviews if r], "item reviews", reviews=True)
            text = np.concatenate([meta, review_vecs, has[:, None].astype(np.float32)], axis=1)
        if any(v.column == WORDS for v in self.items_.vocabularies):  # fitted with features.title_words
            items = with_words(items, self.item_schema_)
        return EntityFeatures(text, self.items_.numeric(items), self.items_.categorical(items))

    def transform_users(self, users: pd.DataFrame) -> EntityFeatures:
        empty = np.zeros((len(users), 0), np.float32)
        if self.users_ is None:
            return EntityFeatures(empty, empty, [])
        return EntityFeatures(empty, self.users_.numeric(users), self.users_.categorical(users))

    def item_spec(self) -> TowerSpec:
        assert self.items_ is not None
        return TowerSpec(self.text_dim_, self.items_.numeric_dim, tuple(self.items_.vocab_sizes))

    def user_spec(self, history_items: int = 0, history_positions: int = 0) -> TowerSpec:
        """The user tower's inputs; `history_items` > 0 adds the history bag over that many item rows."""
        numeric, vocab = (self.users_.numeric_dim, tuple(self.users_.vocab_sizes)) if self.users_ else (0, ())
        return TowerSpec(0, numeric, vocab, history_items, history_positions)

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        assert self.items_ is not None and self.item_schema_ is not None  # fitted or loaded
        payload = {
            "item_schema": self.item_schema_.__dict__,
            "user_schema": self.user_schema_.__dict__ if self.user_schema_ else None,
            "items": self.items_.to_json(),
            "users": self.users_.to_json() if self.users_ else None,
            "encoder": None if self.encoder_ is None else {"kind": self.cfg.text_encoder, "key": self.encoder_.key},
            "text_dim": self.text_dim_,
        }
        (folder / "features.json").write_text(json.dumps(payload, indent=1))
        if isinstance(self.encoder_, TfidfSvdEncoder):
            self.encoder_.save(folder)

    @classmethod
    def load(cls, folder: Path, cfg: FeatureConfig, seed: int = 0) -> FeaturePipeline:
        """Restore a saved pipeline; any damage is a ModelFileError naming the file."""
        try:
            return cls._load(folder, cfg, seed)
        except (OSError, ValueError, KeyError, TypeError, RecursionError) as exc:
            raise ModelFileError(f"{folder / 'features.json'}: unreadable feature state ({exc})") from None

    @classmethod
    def _load(cls, folder: Path, cfg: FeatureConfig, seed: int) -> FeaturePipeline:
        payload = json.loads((folder / "features.json").read_text())
        pipe = cls(cfg, seed)
        pipe.item_schema_ = FeatureSchema(**payload["item_schema"])
        pipe.user_schema_ = FeatureSchema(**payload["user_schema"]) if payload["user_schema"] else None
        pipe.items_ = TabularFeatures.from_json(payload["items"])
        pipe.users_ = TabularFeatures.from_json(payload["users"]) if payload["users"] else None
        pipe.text_dim_ = int(payload["text_dim"])
        if payload["encoder"] is None:
            pipe.encoder_ = None
        elif payload["encoder"]["kind"] == "tfidf":
            pipe.encoder_ = TfidfSvdEncoder.load(folder)
        else:
            pipe.encoder_ = make_text_encoder(
                "sentence-transformer", cfg.text_model, cfg.text_precision, cfg.batch_size, cfg.tfidf_dim, seed
            )
        return pipe
