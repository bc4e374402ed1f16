"""One entry point from a config to a validated Dataset, whatever the source format."""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable

from hybridrec.config import Config, DataConfig
from hybridrec.data.amazon import read_amazon
from hybridrec.data.dataset import Dataset
from hybridrec.data.goodbooks import read_goodbooks
from hybridrec.data.movielens import read_movielens_1m, read_movielens_100k
from hybridrec.data.online_retail import read_online_retail
from hybridrec.data.table import read_table_dataset
from hybridrec.errors import ConfigError
from hybridrec.limits import shown


def _amazon(cfg: Config, bad: float) -> Dataset:
    return read_amazon(cfg.data_path("reviews"), cfg.data_path("meta", required=False), max_bad_fraction=bad)


def _movielens_100k(cfg: Config, bad: float) -> Dataset:
    paths = [key for key in cfg.data.paths if cfg.data_path(key, required=False) is not None]  # `none`: not given
    if "train" in paths or "test" in paths:
        if not ("train" in paths and "test" in paths):
            raise ConfigError("data.paths.train and data.paths.test must be given together")
        ratings = None
    else:
        ratings = cfg.data_path("ratings", required="folder" not in paths)
    return read_movielens_100k(
        cfg.data_path("folder", required=False),
        ratings=ratings,
        train=cfg.data_path("train", required=False),
        test=cfg.data_path("test", required=False),
        items=cfg.data_path("items", required=False),
        users=cfg.data_path("users", required=False),
        max_bad_fraction=bad,
    )


def _movielens_1m(cfg: Config, bad: float) -> Dataset:
    return read_movielens_1m(
        cfg.data_path("ratings"),
        cfg.data_path("movies", required=False),
        cfg.data_path("users", required=False),
        max_bad_fraction=bad,
    )


def _goodbooks(cfg: Config, bad: float) -> Dataset:
    top = cfg.data.options.get("top_tags", 20)
    if isinstance(top, bool) or not isinstance(top, int) or top < 0:
        raise ConfigError(f"data.options.top_tags: expected a non-negative integer, got {top!r}")
    return read_goodbooks(
        cfg.data_path("ratings"),
        cfg.data_path("books"),
        cfg.data_path("book_tags", required=False),
        cfg.data_path("tags", required=False),
        top_tags=top,
        max_bad_fraction=bad,
    )


def _online_retail(cfg: Config, bad: float) -> Dataset:
    return read_online_retail(cfg.data_path("transactions"), max_bad_fraction=bad)


def _table(cfg: Config, bad: float) -> Dataset:
    dataset = read_table_dataset(cfg.data, cfg.base_dir, max_bad_fraction=bad)
    if cfg.name and cfg.name != "default":
        dataset.name = cfg.name
    return dataset


READERS: dict[str, Callable[[Config, float], Dataset]] = {
    "amazon": _amazon,
    "movielens-100k": _movielens_100k,
    "movielens-1m": _movielens_1m,
    "goodbooks": _goodbooks,
    "online-retail": _online_retail,
    "table": _table,
}


# The `data.paths` keys each reader uses (the one list; the README's config table shows it): any other key is an
# error, so a misspelt `--data ratngs=PATH` cannot leave the reader on its default file.
PATH_KEYS: dict[str, tuple[str, ...]] = {
    "amazon": ("reviews", "meta"),
    "movielens-100k": ("folder", "ratings", "train", "test", "items", "users"),
    "movielens-1m": ("ratings", "movies", "users"),
    "goodbooks": ("ratings", "books", "book_tags", "tags"),
    "online-retail": ("transactions",),
    "table": ("interactions", "items", "users"),
}


def check_path_keys(cfg: Config) -> None:
    """Every `data.paths` key is one the format's reader uses, or a ConfigError listing the ones it does."""
    used = PATH_KEYS.get(cfg.data.format, ())
    for key in cfg.data.paths:
        if key not in used:
            close = difflib.get_close_matches(str(key), used, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(
                f"data.paths.{shown(str(key), 60).strip(chr(39))}: not used by format {cfg.data.format!r} (it uses"
                f" {', '.join(used)}){hint}"
            )


# what only the table format reads: a built-in format fixes its own columns, features and rating scale
TABLE_ONLY_KEYS: tuple[str, ...] = (
    "columns",
    "item_text",
    "item_numeric",
    "item_categorical",
    "item_multi",
    "multi_separator",
    "rating_range",
)


def check_table_keys(cfg: Config) -> None:
    """A key the format would ignore is an error, not a silent no-op (data.feedback was one until it was read by
    every format)."""
    if cfg.data.format == "table":
        return
    defaults = DataConfig()
    for key in TABLE_ONLY_KEYS:
        if getattr(cfg.data, key) != getattr(defaults, key):
            raise ConfigError(
                f"data.{key}: the {cfg.data.format} format reads its own columns and features and ignores this key"
                " (it is read by `format: table` only); remove it"
            )


def read_dataset(cfg: Config) -> Dataset:
    """Read cfg.data with the reader its format names, check the bad-row share, and validate."""
    reader = READERS.get(cfg.data.format)
    if reader is None:
        raise ConfigError(f"data.format: {cfg.data.format!r} is not one of {sorted(READERS)}")
    check_path_keys(cfg)
    check_table_keys(cfg)
    bad = cfg.data.max_bad_fraction
    dataset = reader(cfg, bad)
    for report in dataset.reports:
        report.check(bad)
    if cfg.data.feedback == "implicit" and dataset.feedback == "explicit":
        # a ratings source read as "who had what" (top-N): every rating is a positive, none is predicted
        dataset = dataclasses.replace(dataset, feedback="implicit", rating_range=None)
    return dataset.validate()
