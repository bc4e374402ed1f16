"""(Dataset, training rows, optional validation rows) -> a fitted model's state, in one pass:
features -> score terms -> towers -> vectors -> index. It never splits and never sees test rows."""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, cast

import numpy as np
import pandas as pd

from hybridrec import similar
from hybridrec.config import Config, TrainConfig, model_settings
from hybridrec.data.idmap import IdMap
from hybridrec.errors import ConfigError
from hybridrec.index import ItemIndex, build_threads
from hybridrec.model.history import CausalHistories, UserHistory, resolve_order
from hybridrec.progress import epoch_message, event, fit_output, get_logger, metric_label, stop_message
from hybridrec.scoring.base import SCALE_ITEMS, SCALE_USERS, FitContext, ScoreTerm, blend_scale, build_terms
from hybridrec.scoring.towers import TowerScores, similar_queries

if TYPE_CHECKING:
    from hybridrec.data.dataset import Dataset
    from hybridrec.explain import ContentEffects
    from hybridrec.features.pipeline import EntityFeatures, FeaturePipeline
    from hybridrec.model.network import HybridNet
    from hybridrec.model.spec import TowerSpec, TrainResult
    from hybridrec.model.train import Interactions

LOG = get_logger("fit")


@dataclass
class FittedModel:
    """Everything a fit learns; the facade serves from it and artifacts.py saves it."""

    feedback: str
    rating_range: tuple[float, float] | None
    users: IdMap
    items: IdMap
    towers: TowerScores
    item_has_id: np.ndarray  # items with training interactions (the others are scored from content)
    seen: UserHistory  # training and validation items per user: what recommend leaves out
    terms: list[ScoreTerm]
    index: ItemIndex
    trusted_index: ItemIndex | None  # similar.build_trusted_index's, above TRUSTED_INDEX_ITEMS items
    display: list[list]
    net: HybridNet
    features: FeaturePipeline
    item_spec: TowerSpec
    user_spec: TowerSpec
    review_slice: tuple[int, int] | None
    text_slots: TextSlots | None
    item_text: np.ndarray | None  # items in the text encoder's space (TextSlots.item_text)
    train_result: TrainResult
    stats: dict = field(default_factory=dict)  # seconds per stage, text cache hits and misses
    # what queries beyond known users need (queries.fit_state): popularity, the bag, user inputs, content effects
    item_counts: np.ndarray | None = None
    bag: UserHistory | None = None
    user_inputs: EntityFeatures | None = None
    content_effects: ContentEffects | None = None


def encode_rows(frame: pd.DataFrame, users: IdMap, items: IdMap, feedback: str) -> Interactions:
    """Interactions as row indices; implicit events are weighted by log(1 + quantity) + 1."""
    from hybridrec.model.train import Interactions

    ratings = frame["rating"].to_numpy(np.float32)
    weights = np.ones_like(ratings) if feedback == "explicit" else np.log1p(np.maximum(ratings, 0)) + 1.0
    return Interactions(users.indices(frame["user_id"]), items.indices(frame["item_id"]), ratings, weights)


def fit_model(
    config: Config,
    dataset: Dataset,
    train: pd.DataFrame,
    validation: pd.DataFrame | None = None,
    quiet: bool = True,
    checkpoint: str | Path | None = None,
    resume: bool = False,
    on_epoch: Callable[[dict], None] | None = None,
) -> FittedModel:
    """Fit a model; progress goes to the `hybridrec.*` loggers (printed to stderr when `quiet` is False and
    logging is not configured: hybridrec/progress.py). `on_epoch` gets each finished epoch's row ({epoch,
    train_loss, val, seconds, metric}); an exception it raises stops the fit (how `tune` prunes a trial)."""
    from hybridrec.model import distributed

    if _refits(config, validation) and distributed.launched():  # the other ranks leave after the first training
        raise ConfigError("train.refit runs on one process only: drop --nproc (or torchrun), or train.refit")
    with fit_output(quiet):
        fitted = _fit_model(config, dataset, train, validation, quiet, checkpoint, resume, on_epoch)
        if not _refits(config, validation):
            return fitted
        return _refit(config, dataset, train, validation, fitted, quiet, checkpoint, resume)


def _refits(config: Config, validation: pd.DataFrame | None) -> bool:
    return config.train.refit and config.train.early_stopping and validation is not None and len(validation) > 0


def refit_checkpoint(checkpoint: str | Path) -> Path:
    """Where the refit's own per-epoch state goes, beside the first fit's (a finished job removes both)."""
    return Path(checkpoint).with_suffix(".refit.safetensors")


def _refit(
    config: Config,
    dataset: Dataset,
    train: pd.DataFrame,
    validation: pd.DataFrame,
    first: FittedModel,
    quiet: bool,
    checkpoint: str | Path | None,
    resume: bool,
) -> FittedModel:
    """`train.refit`: the epoch count early stopping chose, trained again from the start on the training and
    validation rows together, so the model has seen the latest rows too (a time split's validation is the newest
    share of the training rows, the part closest to what the test asks about). The first fit's history (its
    validation scores, the epoch kept) stays the model's record of how the count was chosen."""
    epochs = max(1, first.train_result.best_epoch)
    again = copy.deepcopy(config)
    again.train.epochs, again.train.early_stopping, again.train.average_last = epochs, False, 0
    rows = pd.concat([train, validation], ignore_index=True)
    event(LOG, f"refit: {epochs} epochs on the {len(rows):,} training and validation rows together", "train")
    second_checkpoint = None if checkpoint is None else refit_checkpoint(checkpoint)
    fitted = _fit_model(again, dataset, rows, None, quiet, second_checkpoint, resume)
    fitted.train_result = dataclasses.replace(first.train_result, refit_rows=len(rows))
    fitted.stats = {**first.stats, **{f"refit_{k}": v for k, v in fitted.stats.items()}}
    return fitted


def _fit_model(
    config: Config,
    dataset: Dataset,
    train: pd.DataFrame,
    validation: pd.DataFrame | None,
    quiet: bool,
    checkpoint: str | Path | None,
    resume: bool,
    on_epoch: Callable[[dict], None] | None = None,
) -> FittedModel:
    """Fit features on the training rows, the score terms, the towers (early stopping on `validation`), then
    export vectors and build the index. `checkpoint`: a file for per-epoch training state (`resume` continues a
    matching one)."""
    import torch

    from hybridrec.features.pipeline import FeaturePipeline
    from hybridrec.model import distributed
    from hybridrec.model.checkpoint import Checkpointer, run_fingerprint, run_parts
    from hybridrec.model.network import HybridNet, NetShape
    from hybridrec.model.train import Dropouts, HistoryInputs, Trainer, resolve_device, resolve_loss, seed_everything
    from hybridrec.scoring.content_ridge import token_matrix

    cfg = config
    device = resolve_device(cfg.train.device)  # a device this process cannot train on fails now, not after encoding
    seed_everything(cfg.seed)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    dataset.validate()
    validation = train.iloc[:0] if validation is None else validation
    items = dataset.items.reset_index(drop=True)
    item_ids = IdMap(items["item_id"], "item")
    user_ids = list(dataset.users["user_id"]) if dataset.users is not None else []
    users = IdMap(user_ids + list(dataset.interactions["user_id"]) + list(train["user_id"]), "user")
    terms = build_terms(cfg)
    for term in terms:  # a catalogue too large for a term fails now, before any encoding
        term.check_catalogue(len(item_ids))

    t0 = time.perf_counter()
    users_table = _aligned_users(dataset, users)
    event(LOG, f"features: {len(items):,} items, text encoder {cfg.features.text_encoder}", "encode")
    pipeline = FeaturePipeline(cfg.features, seed=cfg.seed, quiet=quiet)
    distributed.share_text_encoding(pipeline)  # under torchrun: each rank encodes its share into the cache
    pipeline.fit(
        items[items["item_id"].isin(set(train["item_id"]))],
        dataset.item_schema,
        train,
        users_table,
        dataset.user_schema,
    )
    item_feats = pipeline.transform_items(items, train)
    user_feats = _user_features(pipeline, users_table, len(users))
    feature_seconds = time.perf_counter() - t0

    tr = encode_rows(train, users, item_ids, dataset.feedback)
    val = encode_rows(validation, users, item_ids, dataset.feedback) if len(validation) else None
    stamps = train["timestamp"].to_numpy() if "timestamp" in train else np.zeros(len(train))
    history = UserHistory.from_rows(tr.users, tr.items, len(users), stamps)
    vocab_sizes = pipeline.item_spec().vocab_sizes
    context = FitContext(
        len(users),
        len(item_ids),
        tr.users,
        tr.items,
        history,
        lambda: token_matrix(item_feats.categorical, list(vocab_sizes)),
        cfg.seed,
    )
    t1 = time.perf_counter()
    if terms:
        LOG.info(f"score terms: fitting {', '.join(term.type for term in terms)}")
    for term in terms:
        term.fit(context)
    terms_seconds = time.perf_counter() - t1

    item_has_id = np.bincount(tr.items, minlength=len(item_ids)) > 0
    user_has_id = np.bincount(tr.users, minlength=len(users)) > 0
    if cfg.model.user_id_dropout >= 1.0:
        user_has_id[:] = False
    global_mean = float(train["rating"].mean()) if dataset.feedback == "explicit" else 0.0
    bag = cfg.model.user_history
    item_spec = pipeline.item_spec()
    user_spec = pipeline.user_spec(
        history_items=len(item_ids) if bag.length else 0, history_positions=bag.length if bag.position_weights else 0
    )
    net = HybridNet(len(users), len(item_ids), item_spec, user_spec, NetShape.of(cfg.model), global_mean)
    loss = resolve_loss(cfg.train.loss, dataset.feedback)
    inputs = None
    if bag.length:
        order = resolve_order(bag.order, loss, stamps)
        if bag.order == "auto":
            why = "timed rows and a ranking loss" if order == "causal" else "no times, or a rating loss"
            LOG.info(f"user history order auto: {order} ({why})")
        causal = CausalHistories.build(tr.users, tr.items, stamps, bag.length) if order == "causal" else None
        inputs = HistoryInputs(history.tokens(bag.length), causal)
    text_dim = pipeline.encoder_.dim if pipeline.encoder_ is not None else 0
    review_slice = (text_dim, 2 * text_dim + 1) if text_dim else None
    item_dropout = cfg.model.id_dropout if cfg.model.variant == "hybrid" else 0.0
    trainer = Trainer(
        net,
        item_feats,
        user_feats,
        item_has_id,
        user_has_id,
        cfg.train,
        loss,
        Dropouts(item_dropout, cfg.model.user_id_dropout, cfg.model.feature_dropout),
        cfg.seed,
        device,
        slice(*review_slice) if review_slice else None,
        inputs,
    )
    ckpt = None
    if checkpoint is not None:
        settings, rows = model_settings(cfg), (tr.users, tr.items, tr.ratings)
        ckpt = Checkpointer(checkpoint, run_fingerprint(settings, rows), run_parts(settings, rows), resume=resume)
        if not resume:
            ckpt.remove()
    t2 = time.perf_counter()
    metric = ("rmse" if loss == "mse" else "1-AUC") if val is not None else "train loss"
    stopping = f"early stopping on {metric_label(metric)}" if cfg.train.early_stopping else "no early stopping"
    event(LOG, f"training: up to {cfg.train.epochs} epochs, loss {loss}, {stopping}", "train", total=cfg.train.epochs)
    result = trainer.fit(tr, val, progress=EpochReport(cfg.train, metric, on_epoch), checkpoint=ckpt)
    distributed.finish_training(trainer.net)  # under torchrun: ranks other than 0 end here (WorkerDone)
    result.metric = metric
    if result.resumed_from:
        LOG.info(f"resumed from the checkpoint after epoch {result.resumed_from}")
    averaged = 0 if cfg.train.early_stopping else min(cfg.train.average_last, cfg.train.epochs)
    LOG.info(stop_message(result, cfg.train.patience, averaged))
    train_seconds = time.perf_counter() - t2

    item_vectors, item_bias = trainer.all_item_vectors()
    slots = TextSlots.of(item_feats.text, text_dim) if text_dim else None
    weight = bag.similar_weight
    bought_with = trainer.bought_with_vectors() if weight > 0 else None
    user_vectors, user_bias = trainer.all_user_vectors()
    net = trainer.net.cpu()
    towers = TowerScores(
        global_mean,
        user_vectors,
        user_bias,
        item_vectors,
        item_bias,
        similar_queries(item_vectors, bought_with, weight),
    )
    if cfg.model.mlp_residual:
        towers.residual = residual_scorer(net)
    _scale_terms(terms, towers, tr.users, cfg.seed)
    seen_rows = encode_rows(pd.concat([train, validation], ignore_index=True), users, item_ids, dataset.feedback)
    index = ItemIndex(item_ids, item_vectors.shape[1], cfg.index.M, cfg.index.ef_construction, cfg.index.ef_search)
    threads = build_threads(cfg.index.threads, len(item_ids), cfg.train.threads)
    big = len(item_ids) > similar.TRUSTED_INDEX_ITEMS  # similar items get a trusted index too
    if big:  # tens of seconds at 5e5 items: say what the wait is
        event(LOG, f"indexing {len(item_ids):,} items (the cosine and the trusted index, {threads} threads)", "train")
    index.build(item_vectors, seed=cfg.seed, threads=threads)
    from hybridrec.queries import fit_state

    extras = fit_state(cfg, pipeline, net, item_feats, user_feats, item_has_id, review_slice, tr.items, history)
    trusted = similar.build_trusted_index(item_ids, item_vectors, extras["item_counts"], cfg, threads) if big else None
    return FittedModel(
        feedback=dataset.feedback,
        rating_range=cast("tuple[float, float]", tuple(dataset.rating_range)) if dataset.rating_range else None,
        users=users,
        items=item_ids,
        towers=towers,
        item_has_id=item_has_id,
        seen=UserHistory.distinct(seen_rows.users, seen_rows.items, len(users)),
        terms=terms,
        index=index,
        trusted_index=trusted,
        display=display_rows(items),
        net=net,
        features=pipeline,
        item_spec=item_spec,
        user_spec=user_spec,
        review_slice=review_slice,
        text_slots=slots,
        item_text=slots.item_text(item_feats.text) if slots is not None else None,
        train_result=result,
        **extras,
        stats={
            "feature_seconds": round(feature_seconds, 2),
            "terms_seconds": round(terms_seconds, 2),
            "train_seconds": round(train_seconds, 2),
            "text_cache_hits": pipeline.cache_hits,
            "text_cache_misses": pipeline.cache_misses,
        },
    )


@dataclass
class TextSlots:
    """Which text slots (the metadata document, the review document) tell the catalogue's items apart, and the
    items' mean metadata embedding: a free-text query goes into every slot the items use, so on a reviews-only
    catalogue (every metadata document empty) a query is read like reviews, not like a title nobody has."""

    meta_used: bool
    review_used: bool
    meta_mean: list[float]

    @classmethod
    def of(cls, text: np.ndarray, dim: int) -> TextSlots:
        meta, review, has_review = text[:, :dim], text[:, dim : 2 * dim], text[:, 2 * dim]
        meta_used = bool(len(meta) > 1 and float(meta.std(axis=0).mean()) > 1e-4)
        review_used = bool(has_review.any() and float(review[has_review > 0].std(axis=0).mean()) > 1e-4)
        return cls(meta_used, review_used, [float(v) for v in meta.mean(axis=0)] if len(meta) else [0.0] * dim)

    def item_text(self, text: np.ndarray, new_items: bool = False) -> np.ndarray:
        """Each item's place in the text encoder's own space (float16, unit length): its metadata embedding where
        the catalogue's metadata tells items apart (always, for new items: they come with a title), plus its
        reviews' embedding where it has reviews. Free-text queries are matched here as well as by the towers."""
        dim = (text.shape[1] - 1) // 2
        meta, review, has_review = text[:, :dim], text[:, dim : 2 * dim], text[:, 2 * dim : 2 * dim + 1]
        out = np.zeros_like(meta, dtype=np.float32)
        if self.meta_used or new_items:
            out += _unit(meta)
        out += _unit(review) * (has_review > 0)
        return _unit(out).astype(np.float16)

    def query_text(self, meta: np.ndarray) -> np.ndarray:
        """Text features of free-text queries whose metadata embeddings are `meta` (rows)."""
        review = meta if self.review_used else np.zeros_like(meta)
        if not self.meta_used:
            meta = np.broadcast_to(np.asarray(self.meta_mean, np.float32), meta.shape)
        flag = np.full((len(meta), 1), 1.0 if self.review_used else 0.0, np.float32)
        return np.concatenate([meta, review, flag], axis=1).astype(np.float32)


def _unit(m: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(m, axis=1, keepdims=True)
    return (m / np.where(norm > 0, norm, 1.0)).astype(np.float32)


def residual_scorer(net: HybridNet):
    """The network's MLP residual as a numpy function of (user vectors, item vectors)."""
    import torch

    def score(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return net.residual_score(torch.as_tensor(u), torch.as_tensor(v)).numpy()

    return score


def _scale_terms(terms: list[ScoreTerm], towers: TowerScores, train_users: np.ndarray, seed: int) -> None:
    """Fix each recommend term's factor against the towers' spread over one seeded sample of users x items."""
    blended = [t for t in terms if t.params.recommend_weight > 0]
    if not blended:
        return
    rng = np.random.default_rng(seed)
    users = rng.permutation(np.unique(train_users))[:SCALE_USERS]
    items = np.sort(rng.permutation(towers.n_items)[:SCALE_ITEMS])
    tower_scores = towers.matrix(users, items)
    for term in blended:
        term.scale = blend_scale(tower_scores, term.score(users, items), term.params.recommend_weight)


def _aligned_users(dataset: Dataset, users: IdMap) -> pd.DataFrame | None:
    """The user table in IdMap order; users missing from it get empty features."""
    if dataset.users is None or not dataset.user_schema.columns():
        return None
    table = dataset.users.drop_duplicates("user_id").set_index("user_id")
    return table.reindex(users.raw_ids).reset_index(names="user_id")


def _user_features(pipeline: FeaturePipeline, table: pd.DataFrame | None, n_users: int) -> EntityFeatures:
    from hybridrec.features.pipeline import EntityFeatures

    if table is not None:
        return pipeline.transform_users(table)
    empty = np.zeros((n_users, 0), np.float32)
    return EntityFeatures(empty, empty, [])


def display_rows(items: pd.DataFrame) -> list[list]:
    """Title, price and category per item, for printing answers without the training data."""
    from hybridrec.features.categorical import cell_values

    def category(row) -> str:
        for col in ("category_path", "category", "subcategory", "genres", "main_cat"):  # a reader's path first
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


class EpochReport:
    """The trainer's per-epoch callback: adds the epoch count, the metric's name and the ETA (from the mean time
    per epoch so far) to the row and hands it to `_print_epoch`, looked up at call time so tests can patch it;
    then to the caller's `on_epoch`, if any, with the metric's name."""

    def __init__(self, settings: TrainConfig, metric: str, on_epoch: Callable[[dict], None] | None = None):
        self.epochs, self.metric, self.sooner = settings.epochs, metric, settings.early_stopping
        self.on_epoch = on_epoch
        self.seconds: list[float] = []

    def __call__(self, row: dict) -> None:
        self.seconds.append(float(row.get("seconds", 0.0)))
        eta = (self.epochs - row["epoch"]) * float(np.mean(self.seconds))
        _print_epoch({**row, "epochs": self.epochs, "metric": self.metric, "eta": eta, "sooner": self.sooner})
        if self.on_epoch is not None:
            self.on_epoch({**row, "metric": self.metric})


def _print_epoch(row: dict) -> None:
    """Log one finished epoch (an INFO line, which also moves a display's bar)."""
    message = epoch_message(row, row["epochs"], row["metric"], row["eta"], row["sooner"])
    info = message.split("  ", 2)[-1]  # the bar already shows 'epoch i/N'
    event(LOG, message, "train", done=row["epoch"], total=row["epochs"], unit="epochs", info=info)
