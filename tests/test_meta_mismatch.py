"""Issue 17, item 6: no silent fall-through to another dataset's files.

A config's default metadata file left in place while only the interactions were overridden (Magazine reviews with
the Gift Cards metadata) matched nothing and fitted with empty titles. Now a metadata file that matches none of the
interacted ids is a one-line DataError naming the file, its rows, the interacted count and the cure; one that
matches under half is a loud warning with the counts; and `--data KEY=none` (or `null`) means "no file".
"""

from __future__ import annotations

import gzip
import json
import logging
from pathlib import Path

import pytest
import yaml
from conftest import SHARED_DATA, assert_one_line_error
from hybridrec_cli.main import app
from typer.testing import CliRunner

from hybridrec.config import load_config
from hybridrec.data.amazon import read_amazon
from hybridrec.data.goodbooks import read_goodbooks
from hybridrec.data.movielens import read_movielens_1m
from hybridrec.data.readers import read_dataset
from hybridrec.errors import ConfigError, DataError

N_USERS, N_ITEMS = 30, 10
QUICK_FIT = ["features.text_encoder=tfidf", "train.epochs=2", "train.threads=1", "model.dim=8"]


def put(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


# ---------------------------------------------------------------- fixtures: one "category" and another


def reviews_file(path: Path, prefix: str = "A") -> Path:
    """Every user reviews 4 of the N_ITEMS items `{prefix}0..`: 120 reviews, all items reviewed."""
    lines = []
    for u in range(N_USERS):
        for k in range(4):
            item = (u + 3 * k) % N_ITEMS
            lines.append(
                json.dumps(
                    {
                        "reviewerID": f"U{u}",
                        "asin": f"{prefix}{item}",
                        "overall": float(1 + (u + item) % 5),
                        "unixReviewTime": 1_500_000_000 + u * 100 + k,
                        "reviewText": f"review of {prefix}{item}",
                    }
                )
            )
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")
    return path


def meta_file(path: Path, asins: list[str]) -> Path:
    lines = [json.dumps({"asin": a, "title": f"Product {a}", "brand": "Acme", "price": "$5.00"}) for a in asins]
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")
    return path


@pytest.fixture
def amazon_files(tmp_path: Path) -> dict[str, Path]:
    """This category's reviews + metadata, and another category's metadata (ids G0.. that nobody here reviewed)."""
    return {
        "reviews": reviews_file(tmp_path / "Magazines_5.json.gz"),
        "meta": meta_file(tmp_path / "meta_Magazines.json.gz", [f"A{i}" for i in range(N_ITEMS)]),
        "other_reviews": reviews_file(tmp_path / "Other_5.json.gz", prefix="O"),
        "gift_meta": meta_file(tmp_path / "meta_Gift_Cards.json.gz", [f"G{i}" for i in range(25)]),
    }


def amazon_config(tmp_path: Path, reviews: Path, meta: Path | None) -> Path:
    """Like configs/amazon.yaml: a default metadata path beside the default reviews."""
    paths = {"reviews": str(reviews)} | ({"meta": str(meta)} if meta is not None else {})
    payload = {
        "format_version": 2,
        "name": "amazon",
        "data": {"format": "amazon", "paths": paths},
        "split": {"kind": "random", "test_fraction": 0.2},
        "features": {"cache_dir": str(tmp_path / "cache")},
    }
    return put(tmp_path / "amazon.yaml", yaml.safe_dump(payload))


# ---------------------------------------------------------------- Amazon: none match -> error


def test_amazon_metadata_matching_no_reviewed_item_is_an_error_naming_file_rows_and_items(amazon_files):
    with pytest.raises(DataError) as caught:
        read_amazon(amazon_files["reviews"], amazon_files["gift_meta"])
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{amazon_files['gift_meta']}: none of its 25 rows match the {N_ITEMS} items")
    assert "--data meta=PATH" in message and "--data meta=none" in message


def test_amazon_metadata_of_this_category_reads_as_before(amazon_files, caplog):
    with caplog.at_level(logging.WARNING, logger="hybridrec"):
        dataset = read_amazon(amazon_files["reviews"], amazon_files["meta"])
    assert sorted(dataset.items["title"]) == sorted(f"Product A{i}" for i in range(N_ITEMS))
    assert not caplog.records
    assert not any("only" in note for report in dataset.reports for note in report.notes)


def test_the_config_default_meta_with_other_reviews_fails_the_fit_in_one_line(tmp_path, amazon_files):
    """The issue's case: the config's default meta stays when only `--data reviews=` is given."""
    config = amazon_config(tmp_path, amazon_files["reviews"], amazon_files["meta"])
    sets = [arg for s in QUICK_FIT for arg in ("--set", s)]
    result = invoke(
        "fit",
        "--config",
        config,
        "--out",
        tmp_path / "out",
        "--data",
        f"reviews={amazon_files['other_reviews']}",
        "--quiet",
        *sets,
    )
    line = assert_one_line_error(
        result, str(amazon_files["meta"]), f"none of its {N_ITEMS} rows", f"the {N_ITEMS} items", "--data meta=none"
    )
    assert line.count("none of its") == 1
    assert not list((tmp_path / "out").glob("amazon*")), "nothing was trained or saved"


# ---------------------------------------------------------------- `--data meta=none`


def test_meta_none_reads_the_reviews_without_metadata(tmp_path, amazon_files):
    config = amazon_config(tmp_path, amazon_files["reviews"], amazon_files["gift_meta"])
    for value in ("none", "None", "null", "~"):
        dataset = read_dataset(load_config(config, [f"data.paths.meta={value}"]))
        assert len(dataset.reports) == 1, value  # no metadata file was opened
        assert len(dataset.items) == N_ITEMS and set(dataset.items["title"]) == {""}, value


def test_meta_null_in_the_yaml_means_no_file(tmp_path, amazon_files):
    payload = yaml.safe_load(amazon_config(tmp_path, amazon_files["reviews"], amazon_files["gift_meta"]).read_text())
    payload["data"]["paths"]["meta"] = None
    dataset = read_dataset(load_config(put(tmp_path / "null.yaml", yaml.safe_dump(payload))))
    assert [r.source for r in dataset.reports] == [str(amazon_files["reviews"])]


def test_the_error_advice_works_fit_with_meta_none(tmp_path, amazon_files):
    config = amazon_config(tmp_path, amazon_files["reviews"], amazon_files["gift_meta"])
    sets = [arg for s in QUICK_FIT for arg in ("--set", s)]
    out = tmp_path / "out"
    failed = invoke("fit", "--config", config, "--out", out, "--quiet", *sets)
    assert_one_line_error(failed, "meta_Gift_Cards.json.gz", "--data meta=none")
    result = invoke("fit", "--config", config, "--out", out, "--data", "meta=none", "--json", "--quiet", *sets)
    assert result.exit_code == 0, f"{result.output}\n{result.exception!r}"
    assert Path(json.loads(result.stdout)["model"]).is_dir()


@pytest.mark.parametrize("value", ["none", "null"])
def test_a_required_path_set_to_none_is_a_config_error(tmp_path, amazon_files, value):
    config = amazon_config(tmp_path, amazon_files["reviews"], amazon_files["meta"])
    with pytest.raises(ConfigError, match=r"^data.paths.reviews is required for format 'amazon' \(it says none"):
        read_dataset(load_config(config, [f"data.paths.reviews={value}"]))
    result = invoke("fit", "--config", config, "--out", tmp_path / "out", "--data", f"reviews={value}", "--quiet")
    assert_one_line_error(result, "data.paths.reviews is required")


def test_a_misspelt_key_set_to_none_is_still_refused(tmp_path, amazon_files):
    """`--data mtea=none` must not leave the default meta in place silently."""
    config = amazon_config(tmp_path, amazon_files["reviews"], amazon_files["meta"])
    with pytest.raises(ConfigError, match=r"data.paths.mtea: not used by format 'amazon'.*did you mean 'meta'"):
        read_dataset(load_config(config, ["data.paths.mtea=none"]))


def test_a_path_that_is_no_string_still_says_so():
    with pytest.raises(ConfigError, match=r"^data.paths.reviews: expected a string, got \[1\]$"):
        load_config(None, ["data.format=amazon", "data.paths.reviews=[1]"])


# ---------------------------------------------------------------- under half match -> loud warning with counts


def test_metadata_matching_under_half_warns_with_counts(tmp_path, amazon_files, caplog):
    meta = meta_file(tmp_path / "meta_mixed.json.gz", ["A0", "A1", "A2"] + [f"G{i}" for i in range(17)])
    with caplog.at_level(logging.WARNING, logger="hybridrec"):
        dataset = read_amazon(amazon_files["reviews"], meta)
    expected = f"only 3 of {N_ITEMS} interacted items have a row in this file (20 rows)"
    assert any(expected in note for note in dataset.reports[1].notes), dataset.reports[1].notes
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and str(meta) in warnings[0].getMessage() and expected in warnings[0].getMessage()
    assert (dataset.items["title"] != "").sum() == 3


def test_half_or_more_matching_is_not_warned(tmp_path, amazon_files, caplog):
    meta = meta_file(tmp_path / "meta_half.json.gz", [f"A{i}" for i in range(N_ITEMS // 2)])
    with caplog.at_level(logging.WARNING, logger="hybridrec"):
        dataset = read_amazon(amazon_files["reviews"], meta)
    assert not caplog.records
    assert dataset.reports[1].counts["items_without_metadata"] == N_ITEMS - N_ITEMS // 2


def test_the_fit_prints_the_warning_before_training(tmp_path, amazon_files):
    meta = meta_file(tmp_path / "meta_mixed.json.gz", ["A0", "A1"] + [f"G{i}" for i in range(8)])
    config = amazon_config(tmp_path, amazon_files["reviews"], meta)
    sets = [arg for s in QUICK_FIT for arg in ("--set", s)]
    result = invoke("fit", "--config", config, "--out", tmp_path / "out", *sets)
    assert result.exit_code == 0, f"{result.output}\n{result.exception!r}"
    lines = result.stderr.splitlines()
    warned = [n for n, line in enumerate(lines) if line.startswith("warning: ") and "only 2 of 10" in line]
    assert len(warned) == 1, result.stderr
    split = next(n for n, line in enumerate(lines) if line.startswith("split "))
    assert warned[0] < split, result.stderr  # before the split, so before any training


# ---------------------------------------------------------------- the generic table reader


def table_files(tmp_path: Path) -> Path:
    rows = ["user_id,item_id,rating"] + [f"u{u},i{(u + k) % N_ITEMS},{1 + k}" for u in range(N_USERS) for k in range(3)]
    return put(tmp_path / "ratings.csv", "\n".join(rows) + "\n")


def table_config(tmp_path: Path, **paths: Path | str) -> Path:
    payload = {
        "format_version": 2,
        "name": "case",
        "data": {
            "format": "table",
            "paths": {"interactions": str(table_files(tmp_path))} | {k: str(v) for k, v in paths.items()},
        },
    }
    return put(tmp_path / "case.yaml", yaml.safe_dump(payload))


def test_a_table_items_file_matching_no_interacted_item_is_an_error(tmp_path):
    items = put(tmp_path / "items.csv", "item_id,title,description\n" + "".join(f"x{n},T,D\n" for n in range(7)))
    with pytest.raises(DataError) as caught:
        read_dataset(load_config(table_config(tmp_path, items=items)))
    message = str(caught.value)
    assert message.startswith(f"{items}: none of its 7 rows match the {N_ITEMS} items in the interactions")
    assert "--data items=none" in message and "\n" not in message


def test_a_table_items_file_under_half_matching_warns_and_none_reads_without_it(tmp_path, caplog):
    items = put(tmp_path / "items.csv", "item_id,title,description\ni0,T0,D\ni1,T1,D\nx9,T,D\n")
    with caplog.at_level(logging.WARNING, logger="hybridrec"):
        dataset = read_dataset(load_config(table_config(tmp_path, items=items)))
    assert any(f"only 2 of {N_ITEMS} interacted items" in r.getMessage() for r in caplog.records)
    assert dataset.reports[1].counts["items_without_metadata"] == N_ITEMS - 2
    plain = read_dataset(load_config(table_config(tmp_path, items=items), ["data.paths.items=none"]))
    assert len(plain.reports) == 1 and len(plain.items) == N_ITEMS  # items from the interaction rows


def test_a_table_users_file_matching_no_user_is_an_error(tmp_path):
    users = put(tmp_path / "users.csv", "user_id\n" + "".join(f"someone{n}\n" for n in range(4)))
    with pytest.raises(DataError, match=rf"users.csv: none of its 4 rows match the {N_USERS} users.*--data users=none"):
        read_dataset(load_config(table_config(tmp_path, users=users)))


def test_a_damaged_items_file_is_named_as_damaged_not_as_a_mismatch(tmp_path):
    items = put(tmp_path / "items.csv", "item_id,title,description\n" + ",T,D\n" * 5 + "i1,T,D\n")
    with pytest.raises(DataError, match=r"items.csv: 5 of 6 rows skipped"):
        read_dataset(load_config(table_config(tmp_path, items=items)))


# ---------------------------------------------------------------- MovieLens and goodbooks item files


def test_movielens_movies_of_another_dataset_are_an_error(tmp_path):
    ratings = put(tmp_path / "ratings.dat", "".join(f"{u}::{u % 6 + 1}::4::978300760\n" for u in range(1, 40)))
    movies = put(tmp_path / "movies.dat", "".join(f"{m}::Film {m} (1999)::Drama\n" for m in range(500, 509)))
    with pytest.raises(DataError, match=r"movies.dat: none of its 9 rows match the 6 items.*--data movies=none"):
        read_movielens_1m(ratings, movies)
    assert len(read_movielens_1m(ratings).items) == 6  # without the file: the ratings' items, no titles


def test_goodbooks_books_of_other_books_are_an_error_without_a_none_cure(tmp_path):
    ratings = put(
        tmp_path / "ratings.csv", "user_id,book_id,rating\n" + "".join(f"{u},{u % 3 + 1},4\n" for u in range(30))
    )
    books = put(tmp_path / "books.csv", "book_id,goodreads_book_id,title,authors\n70,7,A,X\n80,8,B,Y\n")
    with pytest.raises(
        DataError, match=r"books.csv: none of its 2 rows match the 3 books.*--data books=PATH"
    ) as caught:
        read_goodbooks(ratings, books)
    assert "=none" not in str(caught.value)  # books is required: `none` is no way out


# ---------------------------------------------------------------- the real files of the issue


def test_real_magazine_reviews_with_gift_cards_meta_are_refused():
    folder = SHARED_DATA / "amazon2018"
    reviews, meta = folder / "Magazine_Subscriptions_5.json.gz", folder / "meta_Gift_Cards.json.gz"
    if not (reviews.is_file() and meta.is_file()):
        pytest.skip(f"real Amazon files not found in {folder}")
    with gzip.open(meta, "rt", encoding="utf-8") as fh:
        rows = sum(1 for line in fh if line.strip())
    with gzip.open(reviews, "rt", encoding="utf-8") as fh:
        reviewed = {json.loads(line)["asin"] for line in fh if line.strip()}
    with pytest.raises(DataError) as caught:
        read_amazon(reviews, meta)
    assert str(caught.value).startswith(f"{meta}: none of its {rows} rows match the {len(reviewed)} items")
