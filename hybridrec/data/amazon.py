"""Amazon review + metadata reader (McAuley lab 2014 and 2018 JSON-lines formats)."""

from __future__ import annotations

import ast
import html
import math
import re
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hybridrec.data.dataset import Dataset, FeatureSchema
from hybridrec.data.idmap import normalize_id
from hybridrec.data.io import (
    MAX_EPOCH_SECONDS,
    SourceReport,
    check_coverage,
    dataset_name,
    decode_json_line,
    drop_duplicate_pairs,
    interactions_frame,
    iter_lines,
    json_id_text,
    list_value,
    text_value,
)

_TAG = re.compile(r"<[^>]*>?")  # also an unclosed '<span class="...' fragment (a 2018 scrape quirk)
_SPACE = re.compile(r"\s+")
_PRICE = re.compile(r"^\$\s*([\d,]+(?:\.\d+)?)$")
_PRICE_RANGE = re.compile(r"^\$\s*([\d,]+(?:\.\d+)?)\s*-\s*\$\s*([\d,]+(?:\.\d+)?)$")

ITEM_COLUMNS = [
    "item_id",
    "title",
    "description",
    "brand",
    "category",
    "category_path",
    "price",
    "also_buy",
    "also_view",
]
MAX_CATEGORY_CHARS = 60  # a longer "category" is product text the 2018 scrape leaked into the list


def clean_text(value: Any) -> str:
    """Plain text from scraped HTML: entities unescaped, tags removed, whitespace collapsed."""
    text = html.unescape(text_value(value))
    return _SPACE.sub(" ", _TAG.sub(" ", text)).strip()


def parse_price(value: Any) -> float:
    """A price in dollars, NaN when absent or unparseable.

    "$1,234.56" -> 1234.56; a range "$10.00 - $20.00" -> its midpoint 15.0 (one number per item keeps the
    feature numeric; the midpoint is the least biased single figure); numbers pass through; HTML/CSS
    junk -> NaN.
    """
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            number = float(value)
        except OverflowError:  # an integer beyond float range
            return math.nan
        return number if math.isfinite(number) and number >= 0 else math.nan
    text = text_value(value).strip()
    match = _PRICE.match(text)
    if match:
        return _finite(float(match.group(1).replace(",", "")))
    match = _PRICE_RANGE.match(text)
    if match:
        low, high = (float(g.replace(",", "")) for g in match.groups())
        return _finite((low + high) / 2)
    return math.nan


def _finite(number: float) -> float:
    return number if math.isfinite(number) else math.nan  # "$999...9" with hundreds of digits parses as inf


def _parse_record(line: str) -> Any:
    """JSON first; 2014 metadata lines are Python literals (single quotes), read with literal_eval (never eval)."""
    try:
        return decode_json_line(line)  # a numeric id such as 1e400 keeps its text (json_id_text), never "inf"
    except ValueError:
        return ast.literal_eval(line)


def _records(path: Path, report: SourceReport):
    for lineno, line in iter_lines(path):
        if not line.strip():
            continue
        report.rows_read += 1
        try:
            record = _parse_record(line)
        except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError):
            report.bad("malformed line", f"line {lineno}")
            continue
        if not isinstance(record, dict):
            report.bad("malformed line", f"line {lineno}")
            continue
        yield lineno, record


def _timestamp(record: dict) -> int:
    """Epoch seconds from unixReviewTime, else reviewTime ("09 7, 2013"); ValueError when not a usable time."""
    raw = record.get("unixReviewTime")
    if raw is not None:
        seconds = float(raw)
        if not abs(seconds) <= MAX_EPOCH_SECONDS:  # also NaN and inf
            raise ValueError(f"unixReviewTime {raw!r} is not epoch seconds")
        return int(seconds)
    when = record.get("reviewTime")
    if isinstance(when, str) and when.strip():
        return int(datetime.strptime(when.strip(), "%m %d, %Y").replace(tzinfo=timezone.utc).timestamp())
    return 0


def read_reviews(path: Path, report: SourceReport) -> pd.DataFrame:
    """Review lines -> canonical interactions; duplicate (user, item) pairs keep the latest review."""
    users, items, ratings, stamps, texts = [], [], [], [], []
    for lineno, record in _records(path, report):
        user, item, overall = (
            json_id_text(record.get("reviewerID")),
            json_id_text(record.get("asin")),
            record.get("overall"),
        )
        if user is None or item is None or overall is None or not normalize_id(user) or not normalize_id(item):
            report.bad("missing field", f"line {lineno}")
            continue
        if "\x00" in normalize_id(user) or "\x00" in normalize_id(item):
            report.bad("id with a NUL byte", f"line {lineno}")
            continue
        try:
            rating = float(overall)
            stamp = _timestamp(record)
        except (TypeError, ValueError, OverflowError):
            report.bad("malformed line", f"line {lineno}")
            continue
        if not (1.0 <= rating <= 5.0):
            report.bad("rating out of range", f"line {lineno}")
            continue
        summary, body = text_value(record.get("summary")).strip(), text_value(record.get("reviewText")).strip()
        users.append(normalize_id(user))
        items.append(normalize_id(item))
        ratings.append(rating)
        stamps.append(stamp)
        texts.append(". ".join(part for part in (summary, body) if part))
    frame = interactions_frame(users, items, ratings, stamps, texts)
    return drop_duplicate_pairs(frame, report, "duplicate review")


def _categories(record: dict) -> list[str]:
    raw = record.get("category")
    if raw is None and isinstance(record.get("categories"), list):  # 2014: a list of category paths
        raw = [c for path in record["categories"] for c in (path if isinstance(path, list) else [path])]
    return list_value(raw if isinstance(raw, list) else [raw] if raw else [], clean=clean_text)


def category_path(record: dict) -> str:
    """The metadata's category path as one display string, "Gift Cards > Gift Card Accessories": the 2018
    `category` list (2014: the first path of `categories`), HTML-cleaned, repeated levels merged, and cut at the
    first entry that is no category name (2018 scrapes leak HTML fragments and product sentences into the list).
    Display only: the `category` feature column is `_categories`."""
    raw = record.get("category")
    if raw is None and isinstance(record.get("categories"), list) and record["categories"]:
        first = record["categories"][0]
        raw = first if isinstance(first, list) else [first]
    path: list[str] = []
    for value in raw if isinstance(raw, list) else [raw] if raw else []:
        name = clean_text(value)
        if not name or len(name) > MAX_CATEGORY_CHARS or name[-1] in ".!?":
            break
        if not path or path[-1] != name:
            path.append(name)
    return " > ".join(path)


def _related(record: dict, key_2018: str, key_2014: str) -> list[str]:
    raw = record.get(key_2018)
    if raw is None and isinstance(record.get("related"), dict):
        raw = record["related"].get(key_2014)
    return [normalize_id(a) for a in list_value(raw if isinstance(raw, list) else [])]


def _description(record: dict) -> str:
    parts: list[Any] = []
    for key in ("description", "feature"):
        raw = record.get(key)
        parts += raw if isinstance(raw, list) else [raw]
    return " ".join(t for t in (clean_text(p) for p in parts) if t)


def read_meta(path: Path, wanted: set[str], report: SourceReport) -> pd.DataFrame:
    """Metadata lines -> one row per wanted asin (the first line wins; later duplicates are filtered)."""
    rows: dict[str, dict] = {}
    seen: set[str] = set()
    unparsed_prices = 0
    for lineno, record in _records(path, report):
        if record.get("asin") is None or not normalize_id(record["asin"]):
            report.bad("missing field", f"line {lineno}")
            continue
        asin = normalize_id(json_id_text(record["asin"]))
        if "\x00" in asin:
            report.bad("id with a NUL byte", f"line {lineno}")
            continue
        if asin in seen:
            report.filter("duplicate asin")
            continue
        seen.add(asin)
        if asin not in wanted:
            report.filter("meta item nobody reviewed")
            continue
        price = parse_price(record.get("price"))
        if math.isnan(price) and text_value(record.get("price")).strip():
            unparsed_prices += 1
        rows[asin] = {
            "item_id": asin,
            "title": clean_text(record.get("title")),
            "description": _description(record),
            "brand": clean_text(record.get("brand")),
            "category": _categories(record),
            "category_path": category_path(record),
            "price": price,
            "also_buy": _related(record, "also_buy", "also_bought"),
            "also_view": _related(record, "also_view", "also_viewed"),
        }
    report.counts["price_unparsed"] = unparsed_prices
    if unparsed_prices:
        report.notes.append(f"{unparsed_prices} non-empty price strings were not prices (set to NaN)")
    if report.filtered["meta item nobody reviewed"]:
        report.notes.append(f"{report.filtered['meta item nobody reviewed']} unreviewed meta items dropped")
    return pd.DataFrame(list(rows.values()), columns=ITEM_COLUMNS)


def _drop_top_category(items: pd.DataFrame) -> pd.DataFrame:
    """Drop the top-level category most items start with (e.g. "Gift Cards"): it carries no signal."""
    firsts = Counter(cats[0] for cats in items["category"] if cats)
    if not firsts:
        return items
    top, n = firsts.most_common(1)[0]
    if n * 2 >= len(items):
        items["category"] = [[c for c in cats if c != top] for cats in items["category"]]
    return items


def _items_table(interactions: pd.DataFrame, meta: pd.DataFrame | None) -> tuple[pd.DataFrame, int]:
    order = pd.unique(interactions["item_id"])
    known = meta if meta is not None else pd.DataFrame(columns=ITEM_COLUMNS)
    by_id = {row["item_id"]: row for row in known.to_dict("records")}
    rows = []
    for item in order:
        row = by_id.get(item)
        rows.append(row if row is not None else _empty_item(item))
    items = pd.DataFrame(rows, columns=ITEM_COLUMNS)
    items["price"] = items["price"].astype(float)
    return _drop_top_category(items), sum(1 for i in order if i not in by_id)


def _empty_item(item: str) -> dict:
    return dict(
        item_id=item,
        title="",
        description="",
        brand="",
        category=[],
        category_path="",
        price=np.nan,
        also_buy=[],
        also_view=[],
    )


def read_amazon(reviews: Path | str, meta: Path | str | None = None, max_bad_fraction: float = 0.05) -> Dataset:
    """Amazon reviews (+ optional metadata) as a Dataset; items are exactly the reviewed products."""
    reviews = Path(reviews)
    review_report = SourceReport(source=str(reviews))
    interactions = read_reviews(reviews, review_report)
    review_report.check(max_bad_fraction)
    reports = [review_report]
    meta_frame = None
    if meta is not None:
        meta = Path(meta)
        meta_report = SourceReport(source=str(meta))
        meta_frame = read_meta(meta, set(interactions["item_id"]), meta_report)
        meta_report.check(max_bad_fraction)
        reports.append(meta_report)
    items, without_meta = _items_table(interactions, meta_frame)
    if meta is not None:  # another category's metadata matches nothing: refused, not fitted with empty titles
        check_coverage(reports[-1], "item", len(items), len(items) - without_meta, "meta")
    if without_meta:
        reports[-1].counts["items_without_metadata"] = without_meta
        reports[-1].notes.append(f"{without_meta} reviewed items have no metadata (title '')")
    return Dataset(
        name=dataset_name(reviews),
        interactions=interactions,
        items=items,
        item_schema=FeatureSchema(
            title="title", text=["description"], numeric=["price"], categorical=["brand"], multi=["category"]
        ),
        feedback="explicit",
        rating_range=(1.0, 5.0),
        reports=reports,
    )
