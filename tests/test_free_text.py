"""Free-text `similar` goes where the catalogue's text is: on a reviews-only catalogue (no titles, no metadata)
a query is read like the items' reviews, so different queries find different, on-topic items."""

from __future__ import annotations

from dataclasses import replace

import pytest
from conftest import DEMO_CONFIG, quick_fit_overrides

from hybridrec.config import load_config
from hybridrec.data.dataset import FeatureSchema
from hybridrec.recommender import HybridRecommender

# query -> the demo category its items belong to (the reviews name the product: "Good earbuds, rich bass...")
QUERIES = {
    "earbuds with rich bass and clear mids": "Headphones",
    "fast charging power bank for my phone": "Chargers & Power",
    "usb flash drive to store my files": "Storage",
}


@pytest.fixture(scope="module")
def reviews_only(demo_dataset, text_cache_dir):
    """The demo with every item's metadata dropped: ids and reviews only."""
    catalogue = demo_dataset.items.set_index("item_id")
    items = demo_dataset.items[["item_id"]].assign(title="")
    dataset = replace(demo_dataset, items=items, item_schema=FeatureSchema(title="title"))
    cfg = load_config(DEMO_CONFIG, quick_fit_overrides(text_cache_dir, "train.epochs=8"))
    rec = HybridRecommender(cfg).fit(dataset)
    return rec, catalogue


def test_the_demo_catalogue_has_the_queried_categories(demo_dataset):
    assert set(QUERIES.values()) <= set(demo_dataset.items["category"])


def test_text_queries_on_a_reviews_only_catalogue_are_different_and_on_topic(reviews_only):
    rec, catalogue = reviews_only
    assert rec.text_slots_ is not None and rec.text_slots_.review_used and not rec.text_slots_.meta_used
    lists = {}
    for query, category in QUERIES.items():
        match = rec.similar_to_text(query, 5)
        assert match.how == "content"
        lists[query] = match.ids
        on_topic = sum(catalogue.loc[i, "category"] == category for i in match.ids)
        assert on_topic >= 3, (query, [(i, catalogue.loc[i, "category"]) for i in match.ids])
    queries = list(lists)
    for a in range(len(queries)):
        for b in range(a + 1, len(queries)):
            assert len(set(lists[queries[a]]) & set(lists[queries[b]])) <= 1, lists


def test_the_slots_survive_save_and_load(reviews_only, tmp_path):
    rec, _ = reviews_only
    rec.save(tmp_path / "m")
    loaded = HybridRecommender.load(tmp_path / "m")
    assert loaded.text_slots_ == rec.text_slots_
    query = next(iter(QUERIES))
    assert loaded.similar_to_text(query, 5).ids == rec.similar_to_text(query, 5).ids
