"""The bundled synthetic demo data: deterministic regeneration and basic sanity."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "data" / "demo"
VIDEO = "Video Cables & Adapters"


def _load_script():
    spec = importlib.util.spec_from_file_location("make_demo", ROOT / "data" / "make_demo.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    try:
        spec.loader.exec_module(module)
    finally:
        sys.modules.pop(spec.name, None)
    return module


@pytest.fixture(scope="module")
def items() -> pd.DataFrame:
    return pd.read_csv(DEMO / "items.csv", dtype=str, keep_default_na=False)


@pytest.fixture(scope="module")
def ratings() -> pd.DataFrame:
    return pd.read_csv(DEMO / "ratings.csv", dtype={"user_id": str, "item_id": str, "review": str})


def test_regeneration_is_byte_identical(tmp_path):
    paths = _load_script().generate(tmp_path)
    for name in ("items.csv", "ratings.csv"):
        assert (tmp_path / name).read_bytes() == (DEMO / name).read_bytes(), f"{name} differs"
    assert set(paths) == {"items", "ratings"}


def test_files_are_small():
    assert sum(p.stat().st_size for p in DEMO.iterdir()) < 2_000_000


def test_items_table(items):
    assert list(items.columns) == ["item_id", "title", "description", "brand", "category", "subcategory", "price"]
    assert items["item_id"].is_unique and items["title"].is_unique
    assert items["item_id"].str.fullmatch(r"D\d{4}").all()
    assert 180 <= len(items) <= 260
    assert (items[["title", "description", "brand", "category", "subcategory"]] != "").all().all()
    price = pd.to_numeric(items["price"], errors="coerce")
    assert 1 <= price.isna().sum() <= 15 and (items.loc[price.isna(), "price"] == "").all()
    assert (price.dropna() > 0).all()
    assert items["brand"].nunique() >= 8 and items["category"].nunique() >= 5


def test_s_video_products(items):
    s_video = items[items["title"].str.contains("S-Video")]
    assert len(s_video) >= 4
    assert (s_video["category"] == VIDEO).all()
    assert items["title"].str.startswith("S-Video Cable").sum() == 1


def test_ratings_table(items, ratings):
    assert list(ratings.columns) == ["user_id", "item_id", "rating", "timestamp", "review"]
    assert ratings["item_id"].isin(set(items["item_id"])).all()
    assert ratings["rating"].between(1, 5).all() and (ratings["rating"] == ratings["rating"].round()).all()
    assert set(ratings["rating"]) == {1, 2, 3, 4, 5}
    assert not ratings.duplicated(["user_id", "item_id"]).any()
    assert 300 <= ratings["user_id"].nunique() <= 500 and 7_000 <= len(ratings) <= 14_000
    words = ratings["review"].str.split().str.len()
    assert words.between(5, 20).all()
    increasing = ratings.groupby("user_id", sort=False)["timestamp"].apply(lambda s: s.is_monotonic_increasing)
    assert increasing.all()


def test_users_have_a_dominant_category(items, ratings):
    merged = ratings.merge(items[["item_id", "category"]], on="item_id")
    top_share = merged.groupby("user_id")["category"].agg(lambda s: s.value_counts(normalize=True).iloc[0])
    assert (top_share >= 0.5).all()
