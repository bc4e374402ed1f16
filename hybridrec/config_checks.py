"""A built config's checks: every number within its range and the keys that must agree with each other, each a
ConfigError naming the key, not a crash deep inside training; and the migration of renamed keys."""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Any

from hybridrec.errors import ConfigError
from hybridrec.limits import shown

if TYPE_CHECKING:
    from hybridrec.config import Config, FeatureConfig

# Numeric keys and the values they accept: (lowest, highest, whether the lowest itself is allowed); the highest
# is allowed too, except for the split fractions (EXCLUSIVE_HIGH).
EXCLUSIVE_HIGH = {"split.test_fraction", "split.validation_fraction"}
RANGES: dict[str, tuple[float, float, bool]] = {
    "seed": (0, 2**32 - 1, True),
    "data.max_bad_fraction": (0, 1, True),
    "split.test_fraction": (0, 1, False),
    "split.validation_fraction": (0, 1, True),
    # sizes have upper bounds far above any real use, so a typo such as 1e11 is a ConfigError, not an allocation
    "features.batch_size": (1, 65_536, True),
    "features.tfidf_dim": (1, 4096, True),
    "features.max_reviews_per_item": (0, 100_000, True),
    "features.max_document_chars": (1, 100_000_000, True),
    "features.review_max_tokens": (0, 100_000, True),
    "features.min_count": (0, math.inf, True),
    "model.dim": (1, 4096, True),
    "model.hidden": (1, 65_536, True),
    "model.id_dropout": (0, 1, True),
    "model.user_id_dropout": (0, 1, True),
    "model.feature_dropout": (0, 1, True),
    "model.dropout": (0, 0.999, True),
    "model.user_history.length": (0, 100_000, True),
    "model.user_history.similar_weight": (0, 1, True),
    "model.similar_evidence": (0, 1e6, True),
    "model.similar_evidence_share": (0, 1000, True),
    "features.numeric_bins": (0, 1000, True),
    "train.epochs": (1, 100_000, True),
    "train.batch_size": (1, 1_048_576, True),
    "train.lr": (0, math.inf, False),
    "train.weight_decay": (0, math.inf, True),
    "train.l2": (0, math.inf, True),
    "train.patience": (0, math.inf, True),
    "train.average_last": (0, math.inf, True),
    "train.negatives": (1, 1_000_000, True),
    "train.threads": (0, 4096, True),
    "train.validation_max_rows": (0, math.inf, True),
    "index.M": (2, 10_000, True),  # hnswlib's own cap: above it, it silently uses 10000
    "index.ef_construction": (1, 1_000_000, True),
    "index.ef_search": (1, 1_000_000, True),
    "index.threads": (0, 4096, True),
    "evaluate.k": (1, 100_000, True),
    "evaluate.similar_k": (1, 100_000, True),
    "evaluate.max_users": (0, math.inf, True),
}


def setting(node: Any, dotted: str) -> Any:
    """The value of a dotted key (`model.user_history.length`) in a config or any section of it."""
    for part in dotted.split("."):
        node = getattr(node, part)
    return node


def _num(x: float) -> str:
    return str(int(x)) if math.isfinite(x) and float(x).is_integer() else f"{x:g}"


def check_config(cfg: Config) -> None:
    """Out-of-range numbers are ConfigErrors naming the key, not a crash deep inside training."""
    for key, (low, high, low_ok) in RANGES.items():
        value = setting(cfg, key)
        if value is None:  # an optional setting left unset
            continue
        above = value >= low if low_ok else value > low
        below = value < high if key in EXCLUSIVE_HIGH else value <= high
        if not (math.isfinite(value) and above and below):
            bound = f"{'[' if low_ok else '('}{_num(low)}, {_num(high)}{')' if key in EXCLUSIVE_HIGH else ']'}"
            raise ConfigError(f"{key}: {shown(value)} is out of range {bound}")
    folder = re.sub(r"[^A-Za-z0-9_.-]+", "-", cfg.name).strip(".-")  # what the fit job names the model folder
    if not folder:
        raise ConfigError(f"name {shown(cfg.name)} gives an empty folder name: use letters, digits, '_', '-' or '.'")
    if folder == "latest":
        raise ConfigError(f"name {shown(cfg.name)} is reserved: `latest` is the link to the newest model")
    history = cfg.model.user_history
    if history.order == "causal" and (history.length <= 0 or cfg.train.loss in ("auto", "mse")):
        raise ConfigError(
            "model.user_history.order: causal needs model.user_history.length > 0 and a ranking train.loss"
            " (bpr, softmax or sampled-softmax)"
        )
    if history.similar_weight > 0 and history.length <= 0:
        raise ConfigError("model.user_history.similar_weight: needs model.user_history.length > 0")
    if cfg.model.variant == "content-only" and history.similar_weight > 0:
        raise ConfigError(
            "model.user_history.similar_weight: learned from who bought what, which a content-only model's items do"
            " not use; set it to 0"
        )
    from hybridrec.scoring.base import check_terms  # the registry: each term checks its own prerequisites

    check_terms(cfg)
    if cfg.train.average_last and cfg.train.early_stopping:
        raise ConfigError("train.average_last: needs train.early_stopping: false (the epochs to average are fixed)")
    if cfg.train.average_last > cfg.train.epochs:
        n, epochs = cfg.train.average_last, cfg.train.epochs
        raise ConfigError(f"train.average_last: {n} is more than train.epochs ({epochs})")
    rating_range = cfg.data.rating_range
    if rating_range is not None:
        finite = len(rating_range) == 2 and all(math.isfinite(v) for v in rating_range)
        if not finite or rating_range[0] > rating_range[1]:
            raise ConfigError(f"data.rating_range: expected [low, high] with low <= high, got {shown(rating_range)}")


def migrate_bf16(features: FeatureConfig) -> None:
    """0.2's `features.bf16` (still in saved models' configs) becomes `features.text_precision`."""
    if features.bf16 is None:
        return
    said = "bf16" if features.bf16 else "fp32"
    if features.text_precision not in ("auto", said):
        raise ConfigError(
            f"features.bf16: {str(features.bf16).lower()} contradicts features.text_precision: "
            f"{features.text_precision}; features.bf16 is replaced by features.text_precision, remove it"
        )
    features.text_precision, features.bf16 = said, None
