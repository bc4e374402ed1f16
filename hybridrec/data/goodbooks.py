"""goodbooks-10k reader: ratings + books, with Goodreads shelf tags cleaned into item features."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from hybridrec.data.dataset import Dataset, FeatureSchema
from hybridrec.data.io import (
    SourceReport,
    category_value,
    drop_duplicate_pairs,
    fill_missing,
    id_column,
    interactions_frame,
    keep_interacted,
    list_value,
    not_single_ids,
    nul_ids,
    read_table,
    require_columns,
    text_value,
)
from hybridrec.errors import DataError

# Shelf names that say how a reader stores or feels about a book, not what the book is.
STOP_TAGS = frozenset(
    """to-read currently-reading favorites favourites favorite favourite all-time-favorites favorite-books
    favourite-books books-i-own owned owned-books own own-it i-own my-books my-library library default kindle
    ebook ebooks e-book e-books audiobook audiobooks audio audio-book audio-books audible to-buy wish-list
    wishlist book-club bookclub re-read reread abandoned dnf did-not-finish books book maybe have borrowed
    on-hold tbr nook calibre shelfari-favorites read i-have my-bookshelf bookshelf to-read-fiction
    to-read-non-fiction library-books kindle-books unfinished not-finished""".split()
)
_NOISE = re.compile(
    r"^[\W\d_]+$"  # pure punctuation or digits ("-", "--1-", "2015")
    r"|^(re-?)?read[-_]?(in[-_])?\d{4}$|^\d{4}[-_](reads?|reading|books?)(-challenge)?$"  # read-in-2015
    r"|^\d+[-_]?stars?$|^(to|2)[-_]read|^currently|^favou?rites?[-_]|^wish[-_]?list|^kindle|^owned[-_]"
    r"|[-_]challenge$|^book[-_]?(club|group)|^didn-?t[-_]finish|^listened|^dnf[-_]"
)
ITEM_COLUMNS = ["item_id", "title", "authors", "year", "language", "tags", "tag_text"]
ITEM_DEFAULTS = {"title": "", "authors": [], "year": np.nan, "language": "", "tags": [], "tag_text": ""}


def is_noise_tag(name: str) -> bool:
    """Shelf-management and date tags say nothing about the book and would swamp the item text."""
    name = name.strip().lower()
    return not name or name in STOP_TAGS or bool(_NOISE.search(name))


def _ratings(path: Path, report: SourceReport) -> pd.DataFrame:
    frame = read_table(path, text_columns=["user_id", "book_id"])
    require_columns(frame, ["user_id", "book_id", "rating"], path)
    report.rows_read += len(frame)
    missing = frame["user_id"].isna() | frame["book_id"].isna()
    if missing.any():
        report.bad("missing id", f"row {int(np.flatnonzero(missing)[0]) + 1}", int(missing.sum()))
    many = ~missing & (not_single_ids(frame["user_id"]) | not_single_ids(frame["book_id"]))
    if many.any():
        report.bad("id that is not a single value", f"row {int(np.flatnonzero(many)[0]) + 1}", int(many.sum()))
    missing |= many
    nul = ~missing & (nul_ids(frame["user_id"]) | nul_ids(frame["book_id"]))
    if nul.any():
        report.bad("id with a NUL byte", f"row {int(np.flatnonzero(nul)[0]) + 1}", int(nul.sum()))
    missing |= nul
    rating = pd.to_numeric(frame["rating"], errors="coerce")
    bad = ~missing & ~rating.between(1.0, 5.0)
    if bad.any():
        report.bad("rating missing or out of range", f"row {int(np.flatnonzero(bad)[0]) + 1}", int(bad.sum()))
    keep = ~(missing | bad)
    frame, rating = frame.loc[keep], rating[keep]
    out = interactions_frame(
        id_column(frame["user_id"]), id_column(frame["book_id"]), rating, np.zeros(len(frame), dtype=np.int64)
    )
    return drop_duplicate_pairs(out, report, "duplicate rating")


def _books(path: Path, rated: pd.Series, report: SourceReport) -> pd.DataFrame:
    books = read_table(path, text_columns=["book_id", "goodreads_book_id"])
    require_columns(books, ["book_id", "goodreads_book_id", "title", "authors"], path)
    report.rows_read += len(books)
    nul = nul_ids(books["book_id"])
    if nul.any():
        report.bad("book_id with a NUL byte", f"row {int(np.flatnonzero(nul)[0]) + 1}", int(nul.sum()))
        books = books.loc[~nul].reset_index(drop=True)
    title = books["title"]
    if "original_title" in books.columns:
        title = title.fillna(books["original_title"])
    optional = books.reindex(columns=["original_publication_year", "language_code"])  # absent -> NaN
    out = pd.DataFrame(
        {
            "item_id": id_column(books["book_id"]),
            "goodreads_book_id": id_column(books["goodreads_book_id"]),
            "title": [text_value(t).strip() for t in title],
            "authors": [list_value(a, ", ") for a in books["authors"]],
            "year": pd.to_numeric(optional["original_publication_year"], errors="coerce").astype(float),
            "language": [category_value(v) for v in optional["language_code"]],
        }
    )
    dup = out["item_id"].duplicated()
    report.filter("duplicate book_id", int(dup.sum()))
    return keep_interacted(out.loc[~dup], "item_id", rated, report, "book")


def _tags(book_tags: Path, tags: Path, goodreads_ids: pd.Series, top_tags: int, report: SourceReport) -> pd.DataFrame:
    """Top tags per goodreads_book_id (count desc), noise removed; -1 counts (a known defect) clipped to 0."""
    links = read_table(book_tags, dtype={"goodreads_book_id": "int64", "tag_id": "int64", "count": "float64"})
    require_columns(links, ["goodreads_book_id", "tag_id", "count"], book_tags)
    report.rows_read += len(links)
    wanted = pd.to_numeric(goodreads_ids, errors="coerce").dropna().astype("int64")
    rated = links["goodreads_book_id"].isin(set(wanted))
    report.filter("tag link of a book nobody rated", int((~rated).sum()))
    links = links.loc[rated]  # filter early: 1M rows -> ~40k
    report.counts["negative_counts_clipped"] = int((links["count"] < 0).sum())
    names = read_table(tags)
    require_columns(names, ["tag_id", "tag_name"], tags)
    by_id = pd.Series(names["tag_name"].astype(str).to_numpy(), index=names["tag_id"].to_numpy())
    links = links.assign(tag_name=links["tag_id"].map(by_id), count=links["count"].clip(lower=0))
    unknown = links["tag_name"].isna()
    if unknown.any():
        report.bad("unknown tag_id", f"tag_id {int(links.loc[unknown, 'tag_id'].iloc[0])}", int(unknown.sum()))
    links = links.loc[~unknown]
    noise_names = {n for n in pd.unique(links["tag_name"]) if is_noise_tag(n)}
    noise = links["tag_name"].isin(noise_names)
    report.filter("noise tag link", int(noise.sum()))
    links = links.loc[~noise].sort_values(["goodreads_book_id", "count"], ascending=[True, False], kind="stable")
    top = links.groupby("goodreads_book_id", sort=False).head(top_tags)
    grouped = top.groupby("goodreads_book_id", sort=False)["tag_name"].agg(list)
    return pd.DataFrame({"goodreads_book_id": grouped.index.astype(str), "tags": grouped.to_numpy()})


def _tag_text(tags: list[str]) -> str:
    """Tags as words for the item document: "young-adult" -> "young adult"."""
    return " ".join(t.replace("-", " ").replace("_", " ") for t in tags)


def read_goodbooks(
    ratings: Path | str,
    books: Path | str,
    book_tags: Path | str | None = None,
    tags: Path | str | None = None,
    top_tags: int = 20,
    max_bad_fraction: float = 0.05,
) -> Dataset:
    """goodbooks-10k as a Dataset; items are the rated books, with authors, year, language and top tags."""
    if (book_tags is None) != (tags is None):
        raise DataError("goodbooks: book_tags and tags must be given together")
    ratings, books = Path(ratings), Path(books)
    rating_report, book_report = SourceReport(source=str(ratings)), SourceReport(source=str(books))
    interactions = _ratings(ratings, rating_report)
    items = _books(books, interactions["item_id"], book_report)
    reports = [rating_report, book_report]
    items["tags"] = [[] for _ in range(len(items))]
    if book_tags is not None and tags is not None:
        tag_report = SourceReport(source=str(book_tags))
        per_book = _tags(Path(book_tags), Path(tags), items["goodreads_book_id"], top_tags, tag_report)
        found = dict(zip(per_book["goodreads_book_id"], per_book["tags"], strict=True))
        items["tags"] = [list(found.get(g, [])) for g in items["goodreads_book_id"]]
        reports.append(tag_report)
    items["tag_text"] = [_tag_text(t) for t in items["tags"]]
    for report in reports:  # damage first: a file of bad rows is named as such, not as matching nothing
        report.check(max_bad_fraction)
    rated = interactions["item_id"]  # books is required: a books file of other books has no `none` cure
    items = fill_missing(items[ITEM_COLUMNS], "item_id", rated, ITEM_DEFAULTS, book_report, "book", "books", False)
    return Dataset(
        name="goodbooks",
        interactions=interactions,
        items=items,
        item_schema=FeatureSchema(
            title="title", text=["tag_text"], numeric=["year"], categorical=["language"], multi=["authors", "tags"]
        ),
        feedback="explicit",
        rating_range=(1.0, 5.0),
        reports=reports,
    )
