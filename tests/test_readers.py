"""Readers on the real public data (expected values from the data README or direct pandas/json) and on
small synthetic files for the formats and failure modes the real files do not exercise."""

from __future__ import annotations

import gzip
import json
import math
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import SHARED_DATA, requires_shared_data

from hybridrec.config import DataConfig, config_from_dict
from hybridrec.data.amazon import parse_price, read_amazon
from hybridrec.data.dataset import Dataset
from hybridrec.data.goodbooks import read_goodbooks
from hybridrec.data.idmap import IdMap
from hybridrec.data.io import iter_lines, read_table
from hybridrec.data.movielens import read_movielens_1m, read_movielens_100k
from hybridrec.data.online_retail import read_online_retail
from hybridrec.data.readers import read_dataset
from hybridrec.data.table import read_table_dataset
from hybridrec.errors import DataError

AMAZON = SHARED_DATA / "amazon2018"
ML100K = SHARED_DATA / "movielens" / "ml-100k"
ML1M = SHARED_DATA / "movielens" / "ml-1m"
GOODBOOKS = SHARED_DATA / "goodbooks-10k"
RETAIL = SHARED_DATA / "online_retail"


def assert_canonical(ds: Dataset) -> None:
    """The reader contract every stage after reading relies on."""
    ds.validate()
    inter = ds.interactions
    assert list(inter.columns[:5]) == ["user_id", "item_id", "rating", "timestamp", "review"]
    assert inter["rating"].dtype == np.float32 and inter["timestamp"].dtype == np.int64
    assert all(isinstance(v, str) for v in inter["user_id"]) and all(isinstance(v, str) for v in inter["item_id"])
    assert all(isinstance(v, str) for v in inter["review"])
    assert set(inter["item_id"]) <= set(ds.items["item_id"])
    schema = ds.item_schema
    for column in ([schema.title] if schema.title else []) + schema.text + schema.categorical:
        assert all(isinstance(v, str) for v in ds.items[column]), column
    for column in schema.multi:
        assert all(isinstance(v, list) and all(isinstance(x, str) for x in v) for v in ds.items[column]), column
    for column in schema.numeric:
        assert ds.items[column].dtype == np.float64, column
    if ds.users is not None:
        assert not ds.users["user_id"].duplicated().any()
        assert set(inter["user_id"]) <= set(ds.users["user_id"])
        for column in ds.user_schema.categorical:
            assert all(isinstance(v, str) for v in ds.users[column])


def assert_id_round_trip(ds: Dataset) -> None:
    ids = IdMap(ds.items["item_id"])
    assert len(ids) == len(ds.items)
    for raw in ds.items["item_id"]:
        assert ids.raw(ids.index(raw)) == raw


def read_json_lines(path: Path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


# ---------------------------------------------------------------- Amazon (real)


@pytest.fixture(scope="module")
def gift_cards() -> Dataset:
    if not AMAZON.is_dir():
        pytest.skip("shared data absent")
    return read_amazon(AMAZON / "Gift_Cards_5.json.gz", AMAZON / "meta_Gift_Cards.json.gz")


@requires_shared_data
def test_gift_cards_counts_match_readme(gift_cards: Dataset) -> None:
    assert_canonical(gift_cards)
    assert gift_cards.name == "Gift_Cards_5"
    assert gift_cards.reports[0].rows_read == 2972
    assert gift_cards.interactions["user_id"].nunique() == 458
    assert len(gift_cards.items) == gift_cards.interactions["item_id"].nunique() == 148
    raw = read_json_lines(AMAZON / "Gift_Cards_5.json.gz")
    pairs = {(r["reviewerID"], r["asin"]) for r in raw}
    assert len(gift_cards.interactions) == len(pairs)
    assert gift_cards.reports[0].skipped["duplicate review"] == 2972 - len(pairs)
    assert_id_round_trip(gift_cards)


@requires_shared_data
def test_gift_cards_reviews_keep_latest_and_join_summary(gift_cards: Dataset) -> None:
    raw = read_json_lines(AMAZON / "Gift_Cards_5.json.gz")
    latest: dict[tuple[str, str], dict] = {}
    for r in raw:
        key = (r["reviewerID"], r["asin"])
        if key not in latest or r["unixReviewTime"] >= latest[key]["unixReviewTime"]:
            latest[key] = r
    inter = gift_cards.interactions.set_index(["user_id", "item_id"])
    for key, r in list(latest.items())[:300]:
        row = inter.loc[key]
        assert row["rating"] == r["overall"] and row["timestamp"] == r["unixReviewTime"]
        parts = [p.strip() for p in (r.get("summary", ""), r.get("reviewText", "")) if p and p.strip()]
        assert row["review"] == ". ".join(parts)


@requires_shared_data
def test_gift_cards_prices_match_readme(gift_cards: Dataset) -> None:
    price = gift_cards.items.set_index("item_id")["price"]
    assert int(price.notna().sum()) == 107  # README: 107/148 reviewed items have a clean price
    meta = {r["asin"]: r for r in reversed(read_json_lines(AMAZON / "meta_Gift_Cards.json.gz"))}
    clean = re.compile(r"^\$[\d,]+\.\d\d$")
    for asin, value in price.items():
        text = meta[asin].get("price", "")
        if clean.match(text):
            assert value == pytest.approx(float(text[1:].replace(",", "")))
    assert price.min() >= 3.99 and price.max() <= 1250.0
    titles = gift_cards.items["title"]
    assert not titles.str.contains("&amp;|<[a-z]", regex=True).any()
    assert titles.ne("").all()  # README: every reviewed Gift Cards item has a meta row


@requires_shared_data
def test_magazine_meta_duplicates_and_missing_meta() -> None:
    ds = read_amazon(AMAZON / "Magazine_Subscriptions_5.json.gz", AMAZON / "meta_Magazine_Subscriptions.json.gz")
    assert_canonical(ds)
    assert len(ds.items) == 157 and ds.interactions["user_id"].nunique() == 348
    meta = ds.reports[1]
    assert meta.rows_read == 3385
    assert meta.filtered["duplicate asin"] == 1065  # README: 1,065 duplicate lines
    assert meta.counts["items_without_metadata"] == 157 - 151  # README: 151/157 have meta
    assert ds.items["price"].isna().all()  # README: no prices at all
    assert not ds.items["title"].str.contains("<span", regex=False).any()


def test_parse_price() -> None:
    assert parse_price("$25.00") == 25.0
    assert parse_price("$1,234.56") == 1234.56
    assert parse_price("$10.00 - $20.00") == 15.0
    assert math.isnan(parse_price(".a-box-inner{background-color:#fff}"))
    assert math.isnan(parse_price(""))
    assert math.isnan(parse_price(None))
    assert parse_price(12.5) == 12.5  # 2014 metadata stores numbers


# ---------------------------------------------------------------- Amazon (synthetic 2014 format)

REVIEWS_2014 = [
    {"reviewerID": "U1", "asin": "A1", "overall": 5.0, "unixReviewTime": 100, "summary": "Great", "reviewText": "ok"},
    {"reviewerID": "U1", "asin": "A2", "overall": 3.0, "unixReviewTime": 110, "summary": "", "reviewText": "meh"},
    {"reviewerID": "U2", "asin": "A1", "overall": 4.0, "unixReviewTime": 120, "summary": "Fine", "reviewText": ""},
    {"reviewerID": "U2", "asin": "A1", "overall": 2.0, "unixReviewTime": 90, "summary": "Old", "reviewText": "x"},
]
META_2014 = [
    "{'asin': 'A1', 'title': 'Cable &amp; <b>Co</b>', 'price': 12.99, 'brand': \"O'Brien\", "
    "'categories': [['Electronics', 'Cables', 'Cables']], 'description': 'Gold plated.', "
    "'related': {'also_bought': ['A2', 'A9'], 'also_viewed': ['A3']}}",
    "{'asin': 'A2', 'title': 'Adapter', 'categories': [['Electronics', 'Adapters']]}",
    "{'asin': 'A1', 'title': 'duplicate line, ignored'}",
    "{'asin': 'A7', 'title': 'nobody reviewed this'}",
]


def write_lines(path: Path, lines: list[str], compress: bool = False) -> Path:
    data = ("\n".join(lines) + "\n").encode("utf-8")
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def test_amazon_2014_python_literal_meta_uncompressed(tmp_path: Path) -> None:
    reviews = write_lines(tmp_path / "reviews_Cables_5.json", [json.dumps(r) for r in REVIEWS_2014])
    meta = write_lines(tmp_path / "meta_Cables.json", META_2014)
    ds = read_amazon(reviews, meta, max_bad_fraction=0.5)
    assert_canonical(ds)
    assert ds.name == "reviews_Cables_5"
    assert len(ds.interactions) == 3 and ds.reports[0].skipped["duplicate review"] == 1
    kept = ds.interactions.set_index(["user_id", "item_id"])
    assert kept.loc[("U2", "A1"), "rating"] == 4.0  # the later review wins
    assert kept.loc[("U1", "A1"), "review"] == "Great. ok"
    assert kept.loc[("U1", "A2"), "review"] == "meh"
    items = ds.items.set_index("item_id")
    assert items.loc["A1", "title"] == "Cable & Co"
    assert items.loc["A1", "brand"] == "O'Brien" and items.loc["A2", "brand"] == ""
    assert items.loc["A1", "price"] == 12.99 and math.isnan(items.loc["A2", "price"])
    assert items.loc["A1", "category"] == ["Cables"]  # duplicate and dataset-wide top level dropped
    assert items.loc["A2", "category"] == ["Adapters"]
    assert items.loc["A1", "also_buy"] == ["A2", "A9"] and items.loc["A1", "also_view"] == ["A3"]
    assert items.loc["A1", "description"] == "Gold plated."
    assert ds.reports[1].filtered["duplicate asin"] == 1
    assert ds.reports[1].filtered["meta item nobody reviewed"] == 1


def test_amazon_malformed_lines_counted_then_fatal(tmp_path: Path) -> None:
    good = [json.dumps({**REVIEWS_2014[0], "reviewerID": f"U{i}"}) for i in range(40)]
    path = write_lines(tmp_path / "few_bad.json.gz", good[:20] + ["{not json"] + good[20:], compress=True)
    ds = read_amazon(path)
    assert len(ds.interactions) == 40 and ds.reports[0].skipped["malformed line"] == 1
    assert ds.items["title"].eq("").all()  # no meta: empty titles
    bad = write_lines(tmp_path / "many_bad.json", good[:3] + ["{oops", "[1, 2]"] + good[3:6])
    with pytest.raises(DataError, match=r"many_bad\.json.*line 4"):
        read_amazon(bad)


def test_amazon_truncated_gzip(tmp_path: Path) -> None:
    data = gzip.compress(("\n".join(json.dumps(REVIEWS_2014[0]) for _ in range(2000)) + "\n").encode())
    path = tmp_path / "cut.json.gz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"cut\.json\.gz.*(truncated|corrupt)"):
        read_amazon(path)


def test_non_utf8_byte_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "latin.json"
    lines = [json.dumps(r).encode() for r in REVIEWS_2014[:2]] + [b'{"reviewerID": "U\xff", "asin": "A1"}']
    path.write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(DataError, match=r"latin\.json, line 3: not valid UTF-8"):
        read_amazon(path)


def test_empty_and_missing_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty.json"
    empty.write_bytes(b"")
    with pytest.raises(DataError, match=r"empty\.json: file is empty"):
        read_amazon(empty)
    empty_gz = tmp_path / "empty.json.gz"
    empty_gz.write_bytes(gzip.compress(b""))
    with pytest.raises(DataError, match=r"empty\.json\.gz: file is empty"):
        read_amazon(empty_gz)
    with pytest.raises(DataError, match=r"nowhere\.json: file not found"):
        read_amazon(tmp_path / "nowhere.json")
    with pytest.raises(DataError, match=r"empty\.csv"):
        (tmp_path / "empty.csv").write_text("")
        read_table(tmp_path / "empty.csv")


def test_gzip_detected_by_magic_bytes(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "plain_name.json", [json.dumps(r) for r in REVIEWS_2014[:3]], compress=True)
    assert [n for n, _ in iter_lines(path)] == [1, 2, 3]
    assert len(read_amazon(path).interactions) == 3


# ---------------------------------------------------------------- MovieLens


@pytest.fixture(scope="module")
def ml100k() -> Dataset:
    if not ML100K.is_dir():
        pytest.skip("shared data absent")
    return read_movielens_100k(ML100K)


@requires_shared_data
def test_ml100k_counts_and_features(ml100k: Dataset) -> None:
    assert_canonical(ml100k)
    inter = ml100k.interactions
    assert len(inter) == 100_000 and inter["user_id"].nunique() == 943 and len(ml100k.items) == 1682
    assert inter["rating"].value_counts().sort_index().tolist() == [6110, 11370, 27145, 34174, 21201]
    assert "fold" not in inter.columns and inter["review"].eq("").all()
    raw = pd.read_csv(ML100K / "u.data", sep="\t", header=None, names=["u", "i", "r", "t"])
    assert inter["timestamp"].sum() == raw["t"].sum()
    items = ml100k.items.set_index("item_id")
    assert items.loc["1", "title"] == "Toy Story (1995)" and items.loc["1", "year"] == 1995.0
    genres = pd.read_csv(ML100K / "u.genre", sep="|", header=None, names=["name", "i"])["name"].tolist()
    flags = pd.read_csv(ML100K / "u.item", sep="|", header=None, encoding="latin-1")
    for _, row in flags.sample(50, random_state=0).iterrows():
        expected = [g for g, f in zip(genres, row.iloc[5:24], strict=True) if f == 1]
        assert items.loc[str(row.iloc[0]), "genres"] == expected
    users = ml100k.users.set_index("user_id")
    assert len(users) == 943 and users.loc["1", "age"] == 24.0
    assert (users.loc["1", "gender"], users.loc["1", "occupation"]) == ("M", "technician")
    assert ml100k.user_schema.categorical == ["gender", "occupation"]
    assert_id_round_trip(ml100k)


@requires_shared_data
def test_ml100k_u1_fold() -> None:
    ds = read_movielens_100k(ML100K, train=ML100K / "u1.base.gz", test=ML100K / "u1.test.gz")
    assert_canonical(ds)
    assert ds.interactions["fold"].value_counts().to_dict() == {"train": 80_000, "test": 20_000}
    assert len(ds.items) == 1682


@requires_shared_data
def test_ml1m_partial() -> None:
    ds = read_movielens_1m(ML1M / "ratings_users_1-2999_PARTIAL.dat.gz", ML1M / "movies.dat", ML1M / "users.dat")
    assert_canonical(ds)
    inter = ds.interactions
    assert len(inter) == 487_650 and inter["user_id"].nunique() == 2999
    assert inter["item_id"].nunique() == len(ds.items) == 3615  # README: 3,615 distinct movies
    assert ds.reports[1].filtered["item without interactions"] == 3883 - 3615
    items = ds.items.set_index("item_id")
    assert items.loc["1", "genres"] == ["Animation", "Children's", "Comedy"]
    assert items.loc["2", "year"] == 1995.0
    users = ds.users.set_index("user_id")
    assert (users.loc["1", "gender"], users.loc["1", "age"], users.loc["1", "occupation"]) == ("F", 1.0, "K-12 student")
    assert_id_round_trip(ds)


def test_movielens_latin1_and_bad_lines(tmp_path: Path) -> None:
    (tmp_path / "u.data").write_text("1\t10\t5\t881250949\n2\t10\t9\t881250950\n2\t11\tx\t1\n1\t11\t3\t881250951\n")
    genre_flags = "|".join(["0"] * 18 + ["1"])
    item = b"10|Am\xe9lie (2001)|01-Jan-2001||http://x|" + genre_flags.encode() + b"\n"
    (tmp_path / "u.item").write_bytes(item + b"11|unknown||||" + genre_flags.encode() + b"\n")
    ds = read_movielens_100k(tmp_path, max_bad_fraction=0.6)
    assert_canonical(ds)
    assert len(ds.interactions) == 2
    assert ds.reports[0].skipped == Counter({"rating out of range": 1, "malformed line": 1})
    items = ds.items.set_index("item_id")
    assert items.loc["10", "title"] == "Amélie (2001)" and items.loc["10", "genres"] == ["Western"]
    assert math.isnan(items.loc["11", "year"]) and ds.users is None
    with pytest.raises(DataError, match=r"u\.data: 2 of 4 rows skipped.*first bad row at line"):
        read_movielens_100k(tmp_path)


# ---------------------------------------------------------------- goodbooks


@requires_shared_data
def test_goodbooks_subset() -> None:
    ds = read_goodbooks(
        GOODBOOKS / "subset_399books" / "ratings.csv.gz",
        GOODBOOKS / "books.csv.gz",
        GOODBOOKS / "book_tags.csv.gz",
        GOODBOOKS / "tags.csv.gz",
        top_tags=20,
    )
    assert_canonical(ds)
    inter = ds.interactions
    assert len(inter) == 233_383 and inter["user_id"].nunique() == 40_836 and len(ds.items) == 399
    assert inter["rating"].value_counts().sort_index().tolist() == [5007, 13935, 53645, 87558, 73238]
    books = pd.read_csv(GOODBOOKS / "books.csv.gz").set_index("book_id")
    items = ds.items.set_index("item_id")
    sample = items.index[:40]
    for book_id in sample:
        row = books.loc[int(book_id)]
        assert items.loc[book_id, "title"] == row["title"]
        assert items.loc[book_id, "authors"] == row["authors"].split(", ")
        assert items.loc[book_id, "year"] == row["original_publication_year"] or (
            math.isnan(items.loc[book_id, "year"]) and pd.isna(row["original_publication_year"])
        )
    # Tags: at most 20, no shelf noise, and in descending raw count order.
    links = pd.read_csv(GOODBOOKS / "book_tags.csv.gz")
    names = pd.read_csv(GOODBOOKS / "tags.csv.gz").set_index("tag_id")["tag_name"]
    noise = {"to-read", "currently-reading", "favorites", "owned", "books-i-own", "kindle", "default"}
    for book_id in sample[:10]:
        tags = items.loc[book_id, "tags"]
        assert 0 < len(tags) <= 20 and not noise & set(tags)
        raw = links[links["goodreads_book_id"] == books.loc[int(book_id), "goodreads_book_id"]]
        counts = dict(zip(raw["tag_id"].map(names), raw["count"].clip(lower=0), strict=True))
        assert [counts[t] for t in tags] == sorted((counts[t] for t in tags), reverse=True)
        assert items.loc[book_id, "tag_text"] == " ".join(t.replace("-", " ").replace("_", " ") for t in tags)
    assert_id_round_trip(ds)


def test_goodbooks_synthetic_tags_and_missing_column(tmp_path: Path) -> None:
    pd.DataFrame({"user_id": [1, 2, 2], "book_id": [1, 1, 2], "rating": [5, 4, 3]}).to_csv(
        tmp_path / "r.csv", index=False
    )
    pd.DataFrame(
        {
            "book_id": [1, 2, 3],
            "goodreads_book_id": [11, 12, 13],
            "authors": ["A One, B Two", "C", "D"],
            "original_publication_year": [1999.0, None, 2001.0],
            "title": ["T1", "T2", "T3"],
            "language_code": ["eng", None, "fre"],
        }
    ).to_csv(tmp_path / "books.csv", index=False)
    links = pd.DataFrame(
        {"goodreads_book_id": [11, 11, 11, 11, 12], "tag_id": [0, 1, 2, 3, 2], "count": [9, 5, -1, 7, 3]}
    )
    links.to_csv(tmp_path / "book_tags.csv", index=False)
    pd.DataFrame({"tag_id": [0, 1, 2, 3], "tag_name": ["to-read", "fantasy", "young-adult", "2015"]}).to_csv(
        tmp_path / "tags.csv", index=False
    )
    ds = read_goodbooks(
        tmp_path / "r.csv", tmp_path / "books.csv", tmp_path / "book_tags.csv", tmp_path / "tags.csv", 5
    )
    assert_canonical(ds)
    items = ds.items.set_index("item_id")
    assert list(items.index) == ["1", "2"]  # book 3 has no ratings
    assert items.loc["1", "tags"] == ["fantasy", "young-adult"] and items.loc["1", "tag_text"] == "fantasy young adult"
    assert items.loc["1", "authors"] == ["A One", "B Two"] and items.loc["2", "language"] == ""
    assert math.isnan(items.loc["2", "year"])
    pd.DataFrame({"user_id": [1], "book_id": [1]}).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(DataError, match=r"bad\.csv: missing column 'rating'"):
        read_goodbooks(tmp_path / "bad.csv", tmp_path / "books.csv")


# ---------------------------------------------------------------- Online Retail

NON_PRODUCT = {"POST", "DOT", "M", "C2", "D", "S", "BANK CHARGES", "AMAZONFEE", "CRUK", "PADS", "B", "m"}


@requires_shared_data
def test_online_retail_parquet_matches_independent_pandas() -> None:
    ds = read_online_retail(RETAIL / "online_retail.parquet")
    assert_canonical(ds)
    report = ds.reports[0]
    assert report.rows_read == 541_909
    # README: the clean-purchase stage leaves 397,884 lines, 4,338 customers and 3,665 stock codes.
    assert (report.counts["clean_lines"], report.counts["clean_customers"], report.counts["clean_items"]) == (
        397_884,
        4_338,
        3_665,
    )
    assert sum(report.filtered.values()) - report.filtered["non-product stock code"] == 541_909 - 397_884
    raw = pd.read_parquet(RETAIL / "online_retail.parquet")
    clean = raw[
        (raw.Quantity > 0)
        & (raw.UnitPrice > 0)
        & raw.CustomerID.notna()
        & ~raw.InvoiceNo.astype(str).str.startswith("C")
    ]
    code = clean.StockCode.astype(str).str.strip()
    products = clean[~(code.isin(NON_PRODUCT) | code.str.match(r"^gift_\d+_\d+$"))]
    expected = products.groupby([products.CustomerID.astype("int64").astype(str), products.StockCode.str.strip()])
    expected = expected["Quantity"].sum()
    assert len(ds.interactions) == len(expected)
    assert ds.interactions["user_id"].nunique() == products.CustomerID.nunique()
    assert len(ds.items) == products.StockCode.nunique()
    got = ds.interactions.set_index(["user_id", "item_id"])["rating"]
    assert got.sum() == expected.sum()
    assert got.loc[("17850", "85123A")] == expected.loc[("17850", "85123A")]
    assert ds.feedback == "implicit" and ds.rating_range is None
    heart = ds.items.set_index("item_id").loc["85123A"]
    assert heart["title"] == "WHITE HANGING HEART T-LIGHT HOLDER"
    assert heart["price"] == products.loc[products.StockCode == "85123A", "UnitPrice"].median()
    assert_id_round_trip(ds)


@requires_shared_data
def test_online_retail_csv_equals_parquet() -> None:
    from_csv = read_online_retail(RETAIL / "online_retail.csv.gz")
    from_parquet = read_online_retail(RETAIL / "online_retail.parquet")
    pd.testing.assert_frame_equal(from_csv.interactions, from_parquet.interactions)
    pd.testing.assert_frame_equal(from_csv.items, from_parquet.items)


def test_online_retail_synthetic_csv(tmp_path: Path) -> None:
    rows = [
        ("1", "A1", "MUG ", 2, "2011-01-01 10:00:00", 1.5, 7.0),
        ("2", "A1", "MUG", 3, "2011-01-02 10:00:00", 2.5, 7.0),
        ("3", "A1", "BIG MUG", 1, "2011-01-03 10:00:00", 1.5, 7.0),
        ("C4", "A1", "MUG", -2, "2011-01-04 10:00:00", 1.5, 7.0),
        ("5", "POST", "POSTAGE", 1, "2011-01-05 10:00:00", 18.0, 7.0),
        ("6", "gift_0001_20", "VOUCHER", 1, "2011-01-05 10:00:00", 17.0, 7.0),
        ("7", "m", "Manual", 1, "2011-01-05 10:00:00", 1.0, 8.0),
        ("8", "B2", "BOWL", 4, "2011-01-06 10:00:00", 3.0, None),
        ("9", "B2", "BOWL", 4, "2011-01-06 10:00:00", 0.0, 8.0),
        ("10", "B2", "BOWL", 6, "2011-01-07 10:00:00", 3.0, 8.0),
    ]
    frame = pd.DataFrame(
        rows, columns=["InvoiceNo", "StockCode", "Description", "Quantity", "InvoiceDate", "UnitPrice", "CustomerID"]
    )
    frame.astype({"CustomerID": "Int64"}).to_csv(tmp_path / "retail.csv.gz", index=False)
    ds = read_online_retail(tmp_path / "retail.csv.gz")
    assert_canonical(ds)
    report = ds.reports[0]
    assert report.filtered == Counter(
        {
            "cancelled invoice": 1,
            "missing CustomerID": 1,
            "non-positive price": 1,
            "non-product stock code": 3,
        }
    )
    assert report.counts["clean_lines"] == 7
    inter = ds.interactions.set_index(["user_id", "item_id"])
    assert inter.loc[("7", "A1"), "rating"] == 6.0
    assert inter.loc[("7", "A1"), "timestamp"] == pd.Timestamp("2011-01-03 10:00:00").timestamp()
    assert inter.loc[("8", "B2"), "rating"] == 6.0
    items = ds.items.set_index("item_id")
    assert items.loc["A1", "title"] == "MUG" and items.loc["A1", "price"] == 1.5 and items.loc["A1", "quantity"] == 2.0
    assert ds.users.set_index("user_id").shape[0] == 2
    frame.drop(columns=["UnitPrice"]).to_csv(tmp_path / "no_price.csv", index=False)
    with pytest.raises(DataError, match=r"no_price\.csv: missing column 'UnitPrice'"):
        read_online_retail(tmp_path / "no_price.csv")


# ---------------------------------------------------------------- generic table reader


def test_table_reader_skips_counts_and_parses(tmp_path: Path) -> None:
    pd.DataFrame(
        {
            "uid": ["u1", "u1", "u2", "u2", "u3", "u3"],
            "iid": ["i1", "i2", "i1", "i3", "i2", "i3"],
            "stars": [5, 7, None, 4, 2, 3],
            "when": ["2022-01-01", "2022-01-02", "2022-01-03", "1640995200", "2022-01-05T00:00:00Z", None],
            "text": ["good", "bad", None, "fine", "ok", "meh"],
        }
    ).to_csv(tmp_path / "ratings.tsv", sep="\t", index=False)
    pd.DataFrame(
        {
            "iid": ["i1", "i2", "i3", "i4"],  # the mapping names the id column of both files
            "name": ["One", "Two", None, "Four"],
            "price": [1.0, "n/a", 3.0, 4.0],
            "tags": ["a|b", "b", None, "c|a|a"],
            "brand": ["X", None, "Y", 3],
        }
    ).to_json(tmp_path / "items.jsonl", orient="records", lines=True)
    data = DataConfig(
        format="table",
        paths={"interactions": "ratings.tsv", "items": "items.jsonl"},
        columns={
            "user_id": "uid",
            "item_id": "iid",
            "rating": "stars",
            "timestamp": "when",
            "review": "text",
            "title": "name",
        },
        item_numeric=["price"],
        item_categorical=["brand"],
        item_multi=["tags"],
        rating_range=[1, 5],
        max_bad_fraction=0.5,
    )
    ds = read_table_dataset(data, tmp_path)
    assert_canonical(ds)
    report = ds.reports[0]
    assert report.skipped == Counter({"rating out of range": 1, "rating missing or not a number": 1})
    inter = ds.interactions.set_index(["user_id", "item_id"])
    assert len(inter) == 4
    assert inter.loc[("u1", "i1"), "timestamp"] == 1640995200
    assert inter.loc[("u2", "i3"), "timestamp"] == 1640995200
    assert inter.loc[("u3", "i2"), "timestamp"] == 1641340800
    assert inter.loc[("u3", "i3"), "timestamp"] == 0
    items = ds.items.set_index("item_id")
    assert items.loc["i1", "title"] == "One" and items.loc["i3", "title"] == ""
    assert math.isnan(items.loc["i2", "price"]) and items.loc["i3", "price"] == 3.0
    assert items.loc["i4", "tags"] == ["c", "a"] and items.loc["i3", "tags"] == []
    assert items.loc["i4", "brand"] == "3" and items.loc["i2", "brand"] == ""
    assert ds.reports[1].counts["items_without_interactions"] == 1


def test_table_reader_implicit_without_items_file(tmp_path: Path) -> None:
    pd.DataFrame(
        {
            "user_id": [1, 1, 2],
            "item_id": [10, 10, 11],
            "title": ["Ten", "Ten", "Eleven"],
            "color": ["red", None, "blue"],
        }
    ).to_parquet(tmp_path / "events.parquet")
    data = DataConfig(
        paths={"interactions": str(tmp_path / "events.parquet")}, feedback="implicit", item_categorical=["color"]
    )
    ds = read_table_dataset(data)
    assert_canonical(ds)
    inter = ds.interactions.set_index(["user_id", "item_id"])
    assert inter.loc[("1", "10"), "rating"] == 2.0 and ds.rating_range is None  # repeats add up
    assert ds.items.set_index("item_id").loc["10", "color"] == "red"


def test_table_reader_missing_column_names_file_and_column(tmp_path: Path) -> None:
    pd.DataFrame({"user_id": [1], "item_id": [2], "rating": [3]}).to_csv(tmp_path / "r.csv", index=False)
    data = DataConfig(paths={"interactions": "r.csv"}, columns={"timestamp": "ts"})
    with pytest.raises(DataError, match=r"r\.csv: missing column 'ts'"):
        read_table_dataset(data, tmp_path)
    data = DataConfig(paths={"interactions": "r.csv"}, item_text=["description"])
    with pytest.raises(DataError, match=r"r\.csv: missing column 'description'"):
        read_table_dataset(data, tmp_path)


def test_read_table_formats_and_corrupt_parquet(tmp_path: Path) -> None:
    frame = pd.DataFrame({"a": [1, 2], "b": ["x", "y"]})
    frame.to_csv(tmp_path / "t.csv.gz", index=False)
    frame.to_csv(tmp_path / "t.tsv", sep="\t", index=False)
    frame.to_json(tmp_path / "t.jsonl", orient="records", lines=True)
    frame.to_parquet(tmp_path / "t.parquet")
    for name in ("t.csv.gz", "t.tsv", "t.jsonl", "t.parquet"):
        assert read_table(tmp_path / name)["a"].tolist() == [1, 2], name
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 not really parquet")
    with pytest.raises(DataError, match=r"broken\.parquet"):
        read_table(tmp_path / "broken.parquet")
    (tmp_path / "bad.csv").write_bytes(b"a,b\n1,x\n2,\xff\n")
    with pytest.raises(DataError, match=r"bad\.csv, line 3"):
        read_table(tmp_path / "bad.csv")


# ---------------------------------------------------------------- read_dataset dispatch


@requires_shared_data
def test_read_dataset_dispatches_from_config() -> None:
    cfg = config_from_dict(
        {"data": {"format": "amazon", "paths": {"reviews": "Gift_Cards_5.json.gz", "meta": "meta_Gift_Cards.json.gz"}}},
        base_dir=AMAZON,
    )
    ds = read_dataset(cfg)
    assert len(ds.items) == 148 and len(ds.reports) == 2
    cfg = config_from_dict(
        {
            "data": {
                "format": "movielens-100k",
                "paths": {"train": "u1.base.gz", "test": "u1.test.gz", "items": "u.item"},
            }
        },
        base_dir=ML100K,
    )
    assert read_dataset(cfg).interactions["fold"].eq("test").sum() == 20_000


@requires_shared_data
def test_implicit_feedback_reads_a_ratings_source_as_who_had_what() -> None:
    """data.feedback=implicit on a format whose source holds ratings (MovieLens): every rating, a 1 as much as a
    5, is a positive, and nothing is predicted on a rating scale; the default keeps the format's own reading."""
    from hybridrec.evaluation.holdout import positives

    payload = {"data": {"format": "movielens-100k", "paths": {"ratings": "u.data", "items": "u.item"}}}
    explicit = read_dataset(config_from_dict(payload, base_dir=ML100K))
    payload["data"]["feedback"] = "implicit"
    implicit = read_dataset(config_from_dict(payload, base_dir=ML100K))
    assert (explicit.feedback, implicit.feedback) == ("explicit", "implicit")
    assert explicit.rating_range == (1.0, 5.0) and implicit.rating_range is None
    pd.testing.assert_frame_equal(explicit.interactions, implicit.interactions)
    low = int((explicit.interactions["rating"] < 4).sum())
    assert low > 40_000  # ML-100K: ~45% of its ratings are 1-3
    assert len(positives(implicit.interactions, implicit.feedback)) == 100_000
    assert len(positives(explicit.interactions, explicit.feedback)) == 100_000 - low


@requires_shared_data
@pytest.mark.parametrize(
    ("setting", "key"),
    [("data.item_numeric=[price]", "item_numeric"), ("data.rating_range=[1,10]", "rating_range")],
)
def test_a_table_only_key_on_a_built_in_format_is_a_one_line_error(tmp_path: Path, setting: str, key: str) -> None:
    """MovieLens fixes its own columns, features and scale: a key only `format: table` reads is refused, never
    silently ignored (exit code 2, one line naming the key and the format)."""
    from conftest import REPO, assert_one_line_error
    from hybridrec_cli.main import app
    from typer.testing import CliRunner

    config = REPO / "configs" / "movielens-100k.yaml"
    args = ["fit", "--config", str(config), "--set", setting, "--out", str(tmp_path / "models"), "--quiet"]
    result = CliRunner().invoke(app, args)
    assert_one_line_error(result, f"data.{key}", "movielens-100k format", "format: table")
    assert not (tmp_path / "models" / "latest").exists()


def test_read_dataset_applies_max_bad_fraction(tmp_path: Path) -> None:
    pd.DataFrame({"user_id": [1, 2, 3, 4], "item_id": [1, 1, 2, 2], "rating": [1, 9, 3, 4]}).to_csv(
        tmp_path / "r.csv", index=False
    )
    payload = {"data": {"format": "table", "paths": {"interactions": "r.csv"}, "rating_range": [1, 5]}}
    ds = read_dataset(config_from_dict({**payload, "data": {**payload["data"], "max_bad_fraction": 0.3}}, tmp_path))
    assert len(ds.interactions) == 3 and ds.reports[0].skipped["rating out of range"] == 1
    with pytest.raises(DataError, match=r"r\.csv: 1 of 4 rows skipped.*first bad row at row 2"):
        read_dataset(config_from_dict({**payload, "data": {**payload["data"], "max_bad_fraction": 0.1}}, tmp_path))


def test_id_lookup_in_bulk_agrees_with_one_at_a_time_and_names_an_unknown_id():
    from hybridrec.data.idmap import IdMap
    from hybridrec.errors import QueryError

    ids = IdMap(["7", "042", "a b", "13"], entity="item")
    for raws in (["13", "7", "042", "13"], [13, 7.0, "042", " 7"], ("13", "7.0"), np.array(["7", "13"])):
        assert list(ids.indices(raws)) == [ids.index(r) for r in raws]  # bulk path or per-id path: same rows
    assert ids.indices([]).shape == (0,)
    with pytest.raises(QueryError, match="unknown item id '99'"):
        ids.indices(["7", "99", "13"])
