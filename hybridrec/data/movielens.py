"""MovieLens 100K and 1M readers (GroupLens formats, latin-1)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from hybridrec.data.dataset import Dataset, FeatureSchema
from hybridrec.data.io import (
    MAX_EPOCH_SECONDS,
    SourceReport,
    drop_duplicate_pairs,
    fill_missing,
    id_column,
    interactions_frame,
    keep_interacted,
    nul_ids,
    numeric_column,
    read_delimited,
)
from hybridrec.errors import DataError

ENCODING = "latin-1"
GENRES_100K = [
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
]  # fmt: skip
OCCUPATIONS_1M = [
    "other", "academic/educator", "artist", "clerical/admin", "college/grad student", "customer service",
    "doctor/health care", "executive/managerial", "farmer", "homemaker", "K-12 student", "lawyer",
    "programmer", "retired", "sales/marketing", "scientist", "self-employed", "technician/engineer",
    "tradesman/craftsman", "unemployed", "writer",
]  # fmt: skip
_TITLE_YEAR = re.compile(r"\((\d{4})\)\s*$")
_ANY_YEAR = re.compile(r"(\d{4})\s*$")
ITEM_DEFAULTS = {"title": "", "genres": [], "year": np.nan}
USER_DEFAULTS = {"age": np.nan, "gender": "", "occupation": ""}


def _item_schema() -> FeatureSchema:
    return FeatureSchema(title="title", numeric=["year"], multi=["genres"])


def _user_schema() -> FeatureSchema:
    return FeatureSchema(title=None, numeric=["age"], categorical=["gender", "occupation"])


def _year(title: str, release: str = "") -> float:
    """Release year from "Toy Story (1995)", else from a release date such as "01-Jan-1995"."""
    match = _TITLE_YEAR.search(title) or _ANY_YEAR.search(release.strip())
    return float(match.group(1)) if match else np.nan


def _ratings(path: Path, sep: str, report: SourceReport, fold: str | None = None) -> pd.DataFrame:
    frame = read_delimited(path, sep, ["user_id", "item_id", "rating", "timestamp"], report, ENCODING)
    frame = numeric_column(frame, "rating", report)
    frame = numeric_column(frame, "timestamp", report, limit=MAX_EPOCH_SECONDS)
    nul = nul_ids(frame["user_id"]) | nul_ids(frame["item_id"])
    if nul.any():
        report.bad("id with a NUL byte", f"line {int(frame.loc[nul, '_line'].iloc[0])}", int(nul.sum()))
        frame = frame.loc[~nul]
    bad = ~frame["rating"].between(1.0, 5.0)
    if bad.any():
        report.bad("rating out of range", f"line {int(frame.loc[bad, '_line'].iloc[0])}", int(bad.sum()))
        frame = frame.loc[~bad]
    out = interactions_frame(
        id_column(frame["user_id"]),
        id_column(frame["item_id"]),
        frame["rating"],
        frame["timestamp"].astype("int64"),
        fold=None if fold is None else [fold] * len(frame),
    )
    return drop_duplicate_pairs(out, report, "duplicate rating")


def _numeric_feature(frame: pd.DataFrame, column: str, report: SourceReport) -> np.ndarray:
    """A numeric feature column; values that are not finite numbers become missing and are counted."""
    values = pd.to_numeric(frame[column], errors="coerce").astype(float)
    values = values.where(np.isfinite(values))
    lost = int((values.isna() & frame[column].str.strip().ne("")).sum())
    if lost:
        report.counts[f"non_numeric_{column}"] = lost
        report.notes.append(f"{lost} non-numeric values in column {column!r} read as missing")
    return values.to_numpy()


def _dedupe(frame: pd.DataFrame, key: str, report: SourceReport) -> pd.DataFrame:
    nul = nul_ids(frame[key])
    if nul.any():
        report.bad(f"{key} with a NUL byte", f"{key} {frame.loc[nul, key].iloc[0]!r}", int(nul.sum()))
        frame = frame.loc[~nul].reset_index(drop=True)
    dup = frame[key].duplicated()
    if dup.any():
        report.bad(f"duplicate {key}", f"{key} {frame.loc[dup, key].iloc[0]}", int(dup.sum()))
    return frame.loc[~dup].reset_index(drop=True)


def _items_100k(path: Path, report: SourceReport) -> pd.DataFrame:
    names = ["item_id", "title", "release", "video_release", "url", *GENRES_100K]
    frame = read_delimited(path, "|", names, report, ENCODING, min_fields=5)
    flags = frame[GENRES_100K].to_numpy() == "1"
    items = pd.DataFrame(
        {
            "item_id": id_column(frame["item_id"]),
            "title": frame["title"].str.strip().to_numpy(),
            "genres": [[g for g, on in zip(GENRES_100K, row, strict=True) if on] for row in flags],
            "year": [_year(t, r) for t, r in zip(frame["title"], frame["release"], strict=True)],
        }
    )
    return _dedupe(items, "item_id", report)


def _users_100k(path: Path, report: SourceReport) -> pd.DataFrame:
    frame = read_delimited(path, "|", ["user_id", "age", "gender", "occupation", "zip"], report, ENCODING, 4)
    users = pd.DataFrame(
        {
            "user_id": id_column(frame["user_id"]),
            "age": _numeric_feature(frame, "age", report),
            "gender": frame["gender"].str.strip().to_numpy(),
            "occupation": frame["occupation"].str.strip().to_numpy(),
        }
    )
    return _dedupe(users, "user_id", report)


def _attach(
    interactions: pd.DataFrame,
    items: pd.DataFrame | None,
    users: pd.DataFrame | None,
    item_report: SourceReport | None,
    user_report: SourceReport | None,
    fallback: SourceReport,
    item_key: str,
) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """Restrict items/users to those rated, and give every rated item/user a row (a file that matches none of them
    is refused: `item_key` is its `data.paths` key, for the cure)."""
    if items is None:
        items = pd.DataFrame({"item_id": [], "title": [], "genres": [], "year": []})
    report = item_report or fallback
    items = keep_interacted(items, "item_id", interactions["item_id"], report, "item")
    from_file = item_key if item_report is not None else None
    items = fill_missing(items, "item_id", interactions["item_id"], ITEM_DEFAULTS, report, "item", from_file)
    items["year"] = items["year"].astype(float)
    if users is not None and user_report is not None:
        users = keep_interacted(users, "user_id", interactions["user_id"], user_report, "user")
        users = fill_missing(users, "user_id", interactions["user_id"], USER_DEFAULTS, user_report, "user", "users")
        users["age"] = users["age"].astype(float)
    return items, users


def read_movielens_100k(
    folder: Path | str | None = None,
    *,
    ratings: Path | str | None = None,
    train: Path | str | None = None,
    test: Path | str | None = None,
    items: Path | str | None = None,
    users: Path | str | None = None,
    max_bad_fraction: float = 0.05,
) -> Dataset:
    """ML-100K from its folder or explicit files; a train/test pair (u1.base/u1.test) adds a `fold` column."""
    if folder is not None:
        folder = Path(folder)
        ratings = ratings or folder / "u.data"
        items = items or folder / "u.item"
        users = users or (folder / "u.user" if (folder / "u.user").exists() else None)
    if (train is None) != (test is None):
        raise DataError("movielens-100k: give both a train and a test file, or neither")
    reports: list[SourceReport] = []
    if train is not None and test is not None:
        parts = []
        for path, fold in ((Path(train), "train"), (Path(test), "test")):
            report = SourceReport(source=str(path))
            parts.append(_ratings(path, "\t", report, fold))
            reports.append(report)
        interactions = pd.concat(parts, ignore_index=True)
        name = "ml-100k-" + Path(train).name.split(".")[0]
    elif ratings is not None:
        report = SourceReport(source=str(ratings))
        interactions = _ratings(Path(ratings), "\t", report)
        reports.append(report)
        name = "ml-100k"
    else:
        raise DataError("movielens-100k: no ratings file (give a folder, ratings, or train and test)")
    return _finish(name, interactions, reports, items, users, _items_100k, _users_100k, max_bad_fraction, "items")


def _finish(name, interactions, reports, items_path, users_path, read_items, read_users, max_bad_fraction, item_key):
    item_report = user_report = None
    item_table = user_table = None
    if items_path is not None:
        item_report = SourceReport(source=str(items_path))
        item_table = read_items(Path(items_path), item_report)
        reports.append(item_report)
    if users_path is not None:
        user_report = SourceReport(source=str(users_path))
        user_table = read_users(Path(users_path), user_report)
        reports.append(user_report)
    for report in reports:  # damage first: a file of bad rows is named as such, not as matching nothing
        report.check(max_bad_fraction)
    item_table, user_table = _attach(
        interactions, item_table, user_table, item_report, user_report, reports[0], item_key
    )
    return Dataset(
        name=name,
        interactions=interactions,
        items=item_table,
        users=user_table,
        item_schema=_item_schema(),
        user_schema=_user_schema() if user_table is not None else FeatureSchema(title=None),
        feedback="explicit",
        rating_range=(1.0, 5.0),
        reports=list(reports),
    )


def _items_1m(path: Path, report: SourceReport) -> pd.DataFrame:
    frame = read_delimited(path, "::", ["item_id", "title", "genres"], report, ENCODING)
    titles = frame["title"].str.strip()
    items = pd.DataFrame(
        {
            "item_id": id_column(frame["item_id"]),
            "title": titles.to_numpy(),
            "genres": [[g for g in s.strip().split("|") if g] for s in frame["genres"]],
            "year": [_year(t) for t in titles],
        }
    )
    return _dedupe(items, "item_id", report)


def _users_1m(path: Path, report: SourceReport) -> pd.DataFrame:
    frame = read_delimited(path, "::", ["user_id", "gender", "age", "occupation", "zip"], report, ENCODING, 4)
    codes = pd.to_numeric(frame["occupation"], errors="coerce")
    users = pd.DataFrame(
        {
            "user_id": id_column(frame["user_id"]),
            "age": _numeric_feature(frame, "age", report),
            "gender": frame["gender"].str.strip().to_numpy(),
            "occupation": [
                OCCUPATIONS_1M[int(c)] if c == c and 0 <= c < len(OCCUPATIONS_1M) else str(raw).strip()
                for c, raw in zip(codes, frame["occupation"], strict=True)
            ],
        }
    )
    return _dedupe(users, "user_id", report)


def read_movielens_1m(
    ratings: Path | str,
    movies: Path | str | None = None,
    users: Path | str | None = None,
    max_bad_fraction: float = 0.05,
) -> Dataset:
    """ML-1M (`::`-separated): age is the ML-1M age-group code, occupation codes become their names."""
    report = SourceReport(source=str(ratings))
    interactions = _ratings(Path(ratings), "::", report)
    return _finish("ml-1m", interactions, [report], movies, users, _items_1m, _users_1m, max_bad_fraction, "movies")
