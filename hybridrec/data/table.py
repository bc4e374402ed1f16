"""Generic CSV / TSV / JSON-lines / Parquet reader driven by the config's column mapping."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hybridrec.config import DataConfig, resolve_data_path
from hybridrec.data.dataset import Dataset, FeatureSchema
from hybridrec.data.idmap import normalize_id
from hybridrec.data.io import (
    MAX_EPOCH_SECONDS,
    SourceReport,
    category_value,
    dataset_name,
    drop_duplicate_pairs,
    fill_missing,
    id_column,
    interactions_frame,
    list_value,
    not_single_ids,
    nul_ids,
    read_table,
    require_columns,
    text_value,
)

CANONICAL = ("user_id", "item_id", "rating", "timestamp", "review", "title")


def _first_row(mask: pd.Series) -> str:
    return f"row {int(np.flatnonzero(mask.to_numpy())[0]) + 1}"


def _timestamps(values: pd.Series) -> pd.Series:
    """Epoch seconds: numbers are taken as epoch seconds, strings are parsed as dates; NaN = unreadable."""
    if pd.api.types.is_datetime64_any_dtype(values):
        parsed = values
    else:
        numbers = pd.to_numeric(values, errors="coerce")
        if pd.api.types.is_numeric_dtype(values) or numbers.notna().all():
            return numbers.astype(float)
        rest = values.where(numbers.isna())
        parsed = pd.to_datetime(rest, errors="coerce", utc=True, format="mixed")
        seconds = (parsed - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)
        return numbers.fillna(seconds.astype(float))
    if getattr(parsed.dt, "tz", None) is None:
        parsed = parsed.dt.tz_localize("UTC")
    return ((parsed - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)).astype(float)


def _interactions(data: DataConfig, frame: pd.DataFrame, path: Path, report: SourceReport) -> pd.DataFrame:
    cols = {c: data.columns.get(c, c) for c in CANONICAL}
    explicit = data.feedback == "explicit"
    needed = [cols["user_id"], cols["item_id"]]
    needed += [cols[c] for c in ("rating", "timestamp", "review") if c in data.columns]
    needed += [cols["rating"]] if explicit else []
    require_columns(frame, dict.fromkeys(needed), path)
    report.rows_read += len(frame)
    bad = frame[cols["user_id"]].isna() | frame[cols["item_id"]].isna()
    if bad.any():
        report.bad("missing user or item id", _first_row(bad), int(bad.sum()))
    many = ~bad & (not_single_ids(frame[cols["user_id"]]) | not_single_ids(frame[cols["item_id"]]))
    if many.any():
        report.bad("id that is not a single value", _first_row(many), int(many.sum()))
    bad |= many
    nul = ~bad & (nul_ids(frame[cols["user_id"]]) | nul_ids(frame[cols["item_id"]]))
    if nul.any():
        report.bad("id with a NUL byte", _first_row(nul), int(nul.sum()))
    bad |= nul
    if cols["rating"] in frame.columns:
        rating = pd.to_numeric(frame[cols["rating"]], errors="coerce").astype(float)
        missing = ~bad & ~np.isfinite(rating)  # NaN, a word, or inf
        if missing.any():
            report.bad("rating missing or not a number", _first_row(missing), int(missing.sum()))
        bad |= missing
        if data.rating_range:
            low, high = data.rating_range
            outside = ~bad & ~rating.between(low, high)
            if outside.any():
                report.bad("rating out of range", _first_row(outside), int(outside.sum()))
            bad |= outside
    else:
        rating = pd.Series(1.0, index=frame.index)
    stamp = pd.Series(0.0, index=frame.index)
    if cols["timestamp"] in frame.columns:
        raw = frame[cols["timestamp"]]
        stamp = _timestamps(raw)
        stamp = stamp.where(stamp.abs() <= MAX_EPOCH_SECONDS)  # inf or 1e30 is no time: unreadable, not garbage
        unreadable = ~bad & stamp.isna() & raw.notna() & raw.astype(str).str.strip().ne("")
        if unreadable.any():
            report.bad("unreadable timestamp", _first_row(unreadable), int(unreadable.sum()))
        bad |= unreadable
        stamp = stamp.fillna(0.0)
    review = frame[cols["review"]] if cols["review"] in frame.columns else pd.Series("", index=frame.index)
    keep = ~bad
    out = interactions_frame(
        id_column(frame.loc[keep, cols["user_id"]]),
        id_column(frame.loc[keep, cols["item_id"]]),
        rating[keep],
        stamp[keep].astype("int64"),
        [text_value(v) for v in review[keep]],
    )
    return _merge_repeats(out, explicit, report)


def _merge_repeats(frame: pd.DataFrame, explicit: bool, report: SourceReport) -> pd.DataFrame:
    """Explicit: a re-rating replaces the older one. Implicit: repeat events add up their weights."""
    if explicit:
        before = len(frame)
        frame = drop_duplicate_pairs(frame, SourceReport(), "re-rating")
        report.filter("older rating of a re-rated pair", before - len(frame))
        return frame
    if not frame.duplicated(["user_id", "item_id"]).any():
        return frame
    merged = frame.groupby(["user_id", "item_id"], sort=False, as_index=False).agg(
        rating=("rating", "sum"), timestamp=("timestamp", "max"), review=("review", "last")
    )
    report.notes.append(f"{len(frame)} implicit events merged into {len(merged)} user x item pairs")
    return interactions_frame(
        merged["user_id"], merged["item_id"], merged["rating"], merged["timestamp"], merged["review"]
    )


def _convert(frame: pd.DataFrame, schema: FeatureSchema, separator: str, report: SourceReport) -> None:
    """Coerce feature columns in place to their canonical cell types (str, float, str, list of str)."""
    for column in ([schema.title] if schema.title else []) + schema.text:
        frame[column] = [text_value(v).strip() for v in frame[column]]
    for column in schema.numeric:
        values = pd.to_numeric(frame[column], errors="coerce").astype(float)
        values = values.where(np.isfinite(values))  # inf is no usable feature value: missing, counted below
        lost = int((values.isna() & frame[column].notna() & frame[column].astype(str).str.strip().ne("")).sum())
        if lost:
            report.counts[f"non_numeric_{column}"] = lost
            report.notes.append(f"{lost} non-numeric or non-finite values in column {column!r} read as missing")
        frame[column] = values
    for column in schema.categorical:
        frame[column] = [category_value(v) for v in frame[column]]
    for column in schema.multi:
        frame[column] = [list_value(v, separator) for v in frame[column]]


def _entity_table(
    frame: pd.DataFrame,
    key_column: str,
    key: str,
    schema: FeatureSchema,
    separator: str,
    path: Path,
    report: SourceReport,
) -> pd.DataFrame:
    """An item or user table keyed by normalized id; the first row of a repeated id wins."""
    missing_id = frame[key_column].isna()
    if missing_id.any():
        report.bad(f"missing {key}", _first_row(missing_id), int(missing_id.sum()))
    many = ~missing_id & not_single_ids(frame[key_column])
    if many.any():
        report.bad(f"{key} that is not a single value", _first_row(many), int(many.sum()))
    nul = ~missing_id & ~many & nul_ids(frame[key_column])
    if nul.any():
        report.bad(f"{key} with a NUL byte", _first_row(nul), int(nul.sum()))
    frame = frame.loc[~missing_id & ~many & ~nul]
    table = pd.DataFrame({key: id_column(frame[key_column]).to_numpy()})
    for column in schema.columns():
        source = frame[column] if column in frame.columns else pd.Series([""] * len(frame), index=frame.index)
        table[column] = source.to_numpy(dtype=object)
    dup = table[key].duplicated()
    report.filter(f"repeated {key}", int(dup.sum()))
    table = table.loc[~dup].reset_index(drop=True)
    _convert(table, schema, separator, report)
    return table


def _item_schema(data: DataConfig) -> FeatureSchema:
    return FeatureSchema(
        title="title",
        text=list(data.item_text),
        numeric=list(data.item_numeric),
        categorical=list(data.item_categorical),
        multi=list(data.item_multi),
    )


def _items(
    data: DataConfig, path: Path | None, inter: pd.DataFrame, inter_path: Path, reports: list[SourceReport]
) -> pd.DataFrame:
    schema = _item_schema(data)
    features = schema.text + schema.numeric + schema.categorical + schema.multi
    id_col = data.columns.get("item_id", "item_id")
    title_col = data.columns.get("title", "title")
    if path is None:
        source, source_path, report = inter, inter_path, reports[0]
    else:
        report = SourceReport(source=str(path))
        reports.append(report)
        source, source_path = read_table(path, text_columns=[id_col]), path
        report.rows_read += len(source)
    needed = [id_col] + features + ([title_col] if "title" in data.columns else [])
    require_columns(source, dict.fromkeys(needed), source_path)
    if path is None:  # item features from the interaction rows: the first non-missing value per item
        ok = source[id_col].notna() & ~not_single_ids(source[id_col]) & ~nul_ids(source[id_col])
        source = source.loc[ok]  # bad rows: counted already
        first = source.groupby(source[id_col].map(normalize_id), sort=False)
        source = first[[c for c in dict.fromkeys([id_col, title_col, *features]) if c in source.columns]].first()
    source = source.rename(columns={title_col: "title"}) if title_col in source.columns else source
    return _entity_table(source, id_col, "item_id", schema, data.multi_separator, source_path, report)


def _users(data: DataConfig, path: Path, reports: list[SourceReport]) -> tuple[pd.DataFrame, FeatureSchema]:
    report = SourceReport(source=str(path))
    reports.append(report)
    frame = read_table(path, text_columns=[data.columns.get("user_id", "user_id")])
    report.rows_read += len(frame)
    options = data.options
    schema = FeatureSchema(
        title=None,
        text=list(options.get("user_text", [])),
        numeric=list(options.get("user_numeric", [])),
        categorical=list(options.get("user_categorical", [])),
        multi=list(options.get("user_multi", [])),
    )
    id_col = data.columns.get("user_id", "user_id")
    require_columns(frame, [id_col, *schema.columns()], path)
    return _entity_table(frame, id_col, "user_id", schema, data.multi_separator, path, report), schema


def _defaults(schema: FeatureSchema) -> dict[str, Any]:
    out: dict[str, Any] = {c: "" for c in ([schema.title] if schema.title else []) + schema.text}
    out.update({c: np.nan for c in schema.numeric})
    out.update({c: "" for c in schema.categorical})
    out.update({c: [] for c in schema.multi})
    return out


def read_table_dataset(data: DataConfig, base_dir: Path | str = ".", max_bad_fraction: float | None = None) -> Dataset:
    """A Dataset from generic tables; `data.columns` maps canonical names to file columns."""
    base_dir = Path(base_dir)
    max_bad = data.max_bad_fraction if max_bad_fraction is None else max_bad_fraction
    inter_path = resolve_data_path(data, base_dir, "interactions", required=True)
    assert inter_path is not None
    report = SourceReport(source=str(inter_path))
    reports = [report]
    raw = read_table(inter_path, text_columns=[data.columns.get(c, c) for c in ("user_id", "item_id")])
    interactions = _interactions(data, raw, inter_path, report)
    items_path = resolve_data_path(data, base_dir, "items", required=False)
    items = _items(data, items_path, raw, inter_path, reports)
    item_report = reports[-1]
    users, user_schema = None, FeatureSchema(title=None)
    users_path = resolve_data_path(data, base_dir, "users", required=False)
    if users_path is not None:
        users, user_schema = _users(data, users_path, reports)
    for each in reports:  # damage first: a file of bad rows is named as such, not as matching nothing
        each.check(max_bad)
    item_schema = _item_schema(data)
    items_key = "items" if items_path is not None else None
    items = fill_missing(
        items, "item_id", interactions["item_id"], _defaults(item_schema), item_report, "item", items_key
    )
    cold = int((~items["item_id"].isin(set(interactions["item_id"]))).sum())
    if cold:
        item_report.counts["items_without_interactions"] = cold
        item_report.notes.append(f"{cold} catalogue items have no interactions (kept: cold items)")
    if users is not None:
        defaults = _defaults(user_schema)
        users = fill_missing(users, "user_id", interactions["user_id"], defaults, reports[-1], "user", "users")
    if data.feedback == "explicit":
        if data.rating_range:
            rating_range: tuple[float, float] | None = (float(data.rating_range[0]), float(data.rating_range[1]))
        elif len(interactions):
            rating_range = (float(interactions["rating"].min()), float(interactions["rating"].max()))
        else:
            rating_range = None
    else:
        rating_range = None
    return Dataset(
        name=dataset_name(inter_path),
        interactions=interactions,
        items=items,
        users=users,
        item_schema=item_schema,
        user_schema=user_schema,
        feedback="implicit" if data.feedback == "implicit" else "explicit",
        rating_range=rating_range,
        reports=list(reports),
    )
