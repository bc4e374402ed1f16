"""Train / validation / test splits of the interaction table, one seeded function for every split kind.

Every kind first takes the test part from the whole table, then carves validation out of what is left
with the same kind's logic, so that early stopping is measured the way the final test is.
Parts keep the input's columns (fold included) and get a fresh 0..n-1 index.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from hybridrec.config import SplitConfig
from hybridrec.errors import ConfigError, DataError

KINDS = ("random", "leave-last-out", "time", "cold-items", "given")


@dataclass
class Split:
    """The three parts of one split; cold_items are the test items held out of train and validation."""

    train: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame
    cold_items: list[str] = field(default_factory=list)
    kind: str = "random"


def split_interactions(interactions: pd.DataFrame, cfg: SplitConfig, seed: int) -> Split:
    """Split by cfg.kind; the same input, config and seed always give the same split.

    random: a seeded test_fraction of distinct (user, item) pairs (repeats of a pair stay together,
        so a rating is never both trained on and tested).
    leave-last-out: each user's latest interaction (seeded tie-break); single-interaction users stay
        in train. Validation: each user's latest remaining interaction, for users with two or more
        left (any validation_fraction > 0 switches it on; the protocol fixes the size, not the knob).
    time: rows at or after cfg.cutoff (ISO date or epoch seconds; default: the 1 - test_fraction
        timestamp quantile) are test; validation is the latest validation_fraction of train.
    cold-items: a seeded test_fraction of items with all their interactions; validation holds out a
        validation_fraction of the remaining items entirely, so early stopping sees cold items too.
    given: the `fold` column ("train"/"test"); validation is random pairs of train.
    """
    _check_config(cfg)
    _check_columns(interactions, cfg.kind)
    rng = np.random.default_rng(seed)
    df = interactions.reset_index(drop=True)
    cold: list[str] = []

    if cfg.kind == "random":
        test_mask = _random_pairs(df, cfg.test_fraction, rng, "test")
    elif cfg.kind == "leave-last-out":
        test_mask = last_per_user(df, rng)
        if not test_mask.any():
            raise DataError("leave-last-out split: no user has two or more interactions, test would be empty")
    elif cfg.kind == "time":
        test_mask = _time_test(df, cfg)
    elif cfg.kind == "cold-items":
        test_mask, cold = _hold_out_items(df, cfg.test_fraction, rng, "test")
    else:
        test_mask = _given_test(df)

    train, test = _part(df, ~test_mask), _part(df, test_mask)
    if train.empty or test.empty:
        empty = "train" if train.empty else "test"
        raise DataError(f"{cfg.kind} split left the {empty} part empty ({len(df)} interactions)")

    val_mask = _validation_mask(train, cfg, rng)
    return Split(
        train=_part(train, ~val_mask),
        validation=_part(train, val_mask),
        test=test,
        cold_items=cold,
        kind=cfg.kind,
    )


def _check_config(cfg: SplitConfig) -> None:
    if cfg.kind not in KINDS:
        raise ConfigError(f"split.kind: {cfg.kind!r} is not one of {list(KINDS)}")
    if not 0.0 < cfg.test_fraction < 1.0:
        raise ConfigError(f"split.test_fraction must be in (0, 1), got {cfg.test_fraction}")
    if not 0.0 <= cfg.validation_fraction < 1.0:
        raise ConfigError(f"split.validation_fraction must be in [0, 1), got {cfg.validation_fraction}")


def _check_columns(df: pd.DataFrame, kind: str) -> None:
    if df.empty:
        raise DataError("cannot split an empty interaction table")
    needed = ["user_id", "item_id", "timestamp"] + (["fold"] if kind == "given" else [])
    missing = [c for c in needed if c not in df.columns]
    if missing:
        hint = " (the 'given' split needs a fold column from the reader)" if "fold" in missing else ""
        raise DataError(f"interactions lack columns {missing} needed by the {kind} split{hint}")


def _part(df: pd.DataFrame, mask: np.ndarray) -> pd.DataFrame:
    return df.loc[np.asarray(mask, dtype=bool)].reset_index(drop=True)


def _count(fraction: float, n: int, what: str) -> int:
    """round(fraction * n), but at least 1 and leaving at least 1 behind, so neither side is empty."""
    if n < 2:
        raise DataError(f"too few to split: {n} {what}, need at least 2")
    return int(min(max(round(fraction * n), 1), n - 1))


def _random_pairs(df: pd.DataFrame, fraction: float, rng: np.random.Generator, part: str) -> np.ndarray:
    """Mask of a random fraction of distinct (user, item) pairs; pairs numbered in sorted order so the
    choice does not depend on row order."""
    codes = df.groupby(["user_id", "item_id"], sort=True).ngroup().to_numpy()
    n_pairs = int(codes.max()) + 1
    chosen = np.zeros(n_pairs, dtype=bool)
    chosen[rng.permutation(n_pairs)[: _count(fraction, n_pairs, f"(user, item) pairs for {part}")]] = True
    return chosen[codes]


def last_per_user(df: pd.DataFrame, rng: np.random.Generator) -> np.ndarray:
    """Mask of the latest row of every user with two or more rows, so each keeps one behind.

    Rows are shuffled before a stable sort by timestamp, so equal timestamps are broken by the seed.
    """
    order = rng.permutation(len(df))
    by_time = order[np.argsort(df["timestamp"].to_numpy()[order], kind="stable")]
    rows = pd.Series(by_time, index=df["user_id"].to_numpy()[by_time])
    grouped = rows.groupby(level=0, sort=False)
    last = grouped.last()[grouped.size() >= 2]
    mask = np.zeros(len(df), dtype=bool)
    mask[last.to_numpy(dtype=np.int64)] = True
    return mask


def _tail_cutoff(ts: np.ndarray, fraction: float, what: str) -> int:
    """The timestamp from which the latest `fraction` of rows start (ties at the cutoff go after it)."""
    k = _count(fraction, len(ts), what)
    return int(np.sort(ts)[len(ts) - k])


def _parse_cutoff(raw: object) -> int:
    """Epoch seconds from an int, a digit string, or an ISO date/time (naive times are UTC)."""
    if isinstance(raw, (int, np.integer)) and not isinstance(raw, bool):
        return int(raw)
    if isinstance(raw, float):
        return int(raw)
    text = str(raw).strip()
    if text.lstrip("+-").isdigit():
        return int(text)
    try:
        stamp = pd.Timestamp(text)
    except (ValueError, TypeError):
        raise ConfigError(f"split.cutoff: {raw!r} is neither an ISO date nor epoch seconds") from None
    if pd.isna(stamp):
        raise ConfigError(f"split.cutoff: {raw!r} is neither an ISO date nor epoch seconds")
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return int(stamp.timestamp())


def _time_test(df: pd.DataFrame, cfg: SplitConfig) -> np.ndarray:
    ts = df["timestamp"].to_numpy(dtype=np.int64)
    if cfg.cutoff is None:
        cutoff = _tail_cutoff(ts, cfg.test_fraction, "interactions")
        where = f"the {1 - cfg.test_fraction:.2f} timestamp quantile ({cutoff})"
    else:
        cutoff = _parse_cutoff(cfg.cutoff)
        where = f"split.cutoff {cfg.cutoff!r} ({cutoff})"
    mask = ts >= cutoff
    if mask.all():
        raise DataError(f"time split: {where} leaves train empty (earliest timestamp is {ts.min()})")
    if not mask.any():
        raise DataError(f"time split: {where} leaves test empty (latest timestamp is {ts.max()})")
    return mask


def _hold_out_items(
    df: pd.DataFrame, fraction: float, rng: np.random.Generator, part: str
) -> tuple[np.ndarray, list[str]]:
    """Mask of every row of a seeded fraction of the (sorted) distinct items, and those items."""
    items = np.sort(df["item_id"].astype(str).unique())
    k = _count(fraction, len(items), f"items for {part}")
    held = np.sort(items[rng.permutation(len(items))[:k]])
    return df["item_id"].astype(str).isin(held).to_numpy(), held.tolist()


def _given_test(df: pd.DataFrame) -> np.ndarray:
    fold = df["fold"].astype(str).str.strip().str.lower()
    bad = sorted(set(fold.unique()) - {"train", "test"})
    if bad:
        raise DataError(f"given split: fold column holds {bad[:5]}; only 'train' and 'test' are allowed")
    return (fold == "test").to_numpy()


def _validation_mask(train: pd.DataFrame, cfg: SplitConfig, rng: np.random.Generator) -> np.ndarray:
    """Which training rows become validation, by the split kind's own logic."""
    frac = cfg.validation_fraction
    if frac == 0.0:
        return np.zeros(len(train), dtype=bool)
    if cfg.kind in ("random", "given"):
        return _random_pairs(train, frac, rng, "validation")
    if cfg.kind == "leave-last-out":
        mask = last_per_user(train, rng)
        if not mask.any():
            raise DataError("leave-last-out split: no user has two training interactions left for validation")
        return mask
    if cfg.kind == "time":
        ts = train["timestamp"].to_numpy(dtype=np.int64)
        mask = ts >= _tail_cutoff(ts, frac, "training interactions")
        if mask.all():
            raise DataError(
                "time split: all training timestamps are equal, so validation would take all of train; "
                "set split.validation_fraction to 0"
            )
        return mask
    return _hold_out_items(train, frac, rng, "validation")[0]
