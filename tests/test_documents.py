"""Item documents are built from training reviews only: test-split text must never leak into item features."""

from __future__ import annotations

import pandas as pd
import pytest
from conftest import SHARED_DATA, requires_shared_data

from hybridrec.config import FeatureConfig, SplitConfig
from hybridrec.data.amazon import read_amazon
from hybridrec.data.dataset import FeatureSchema
from hybridrec.data.splits import split_interactions
from hybridrec.features.documents import metadata_documents, review_documents


def _probes(test: pd.DataFrame, train: pd.DataFrame) -> list[str]:
    """Distinctive test reviews: at least 40 characters and not part of any training review."""
    train_blob = "\n".join(" ".join(r.split()) for r in train["review"])
    texts = {" ".join(r.split()) for r in test["review"]}
    return sorted(t for t in texts if len(t) >= 40 and t[:200] not in train_blob)


def _leaks(docs: list[str], test: pd.DataFrame, train: pd.DataFrame) -> list[str]:
    """Probes found in any document."""
    blob = "\n".join(docs)
    return [p for p in _probes(test, train) if p[:200] in blob]


@requires_shared_data
@pytest.mark.parametrize("kind", ["random", "leave-last-out", "cold-items"])
def test_no_test_review_reaches_an_amazon_item_document(kind: str) -> None:
    ds = read_amazon(
        SHARED_DATA / "amazon2018/Gift_Cards_5.json.gz", SHARED_DATA / "amazon2018/meta_Gift_Cards.json.gz"
    )
    split = split_interactions(ds.interactions, SplitConfig(kind=kind, test_fraction=0.2), seed=3)
    cfg = FeatureConfig(max_reviews_per_item=10_000, max_document_chars=10_000_000)
    items = list(ds.items["item_id"])
    docs = review_documents(items, split.train, cfg.max_reviews_per_item, cfg.max_document_chars)
    docs += metadata_documents(ds.items, ds.item_schema, cfg.max_document_chars)
    probes = _probes(split.test, split.train)
    assert len(probes) > 100  # the check has something to find
    assert _leaks(docs, split.test, split.train) == []
    # and the same probe does find text when the whole data is (wrongly) used: the test can fail
    leaky = review_documents(items, ds.interactions, 10_000, 10_000_000)
    assert len(_leaks(leaky, split.test, split.train)) > 0.9 * len(probes)


def test_review_documents_keep_the_most_recent_training_reviews() -> None:
    train = pd.DataFrame(
        {
            "user_id": ["u1", "u2", "u3", "u4"],
            "item_id": ["a", "a", "a", "b"],
            "rating": [5.0, 4.0, 3.0, 1.0],
            "timestamp": [10, 30, 20, 5],
            "review": ["oldest", "newest", "middle", ""],
        }
    )
    docs = review_documents(["a", "b", "c"], train, max_reviews=2, max_chars=100)
    assert docs == ["newest middle", "", ""]


def test_metadata_documents_tolerate_missing_columns_of_new_items() -> None:
    schema = FeatureSchema(text=["description"], categorical=["brand"], multi=["tags"])
    items = pd.DataFrame({"item_id": ["n1"], "title": ["S-Video cable"], "tags": [["video", "cable"]]})
    assert metadata_documents(items, schema, 100) == ["S-Video cable. video cable"]


def test_title_words_become_a_trainable_bag_that_ties_new_items_to_warm_ones(tmp_path) -> None:
    from conftest import DEMO_CONFIG

    from hybridrec.config import load_config
    from hybridrec.data.readers import read_dataset
    from hybridrec.features.categorical import OOV, PAD
    from hybridrec.features.pipeline import FeaturePipeline
    from hybridrec.features.words import WORDS, with_words, words

    title = "The Hunger Games (The Hunger Games, #1) 3D-TV"
    assert words(title) == ["the", "hunger", "games", "the", "hunger", "games", "3d", "tv"]
    dataset = read_dataset(load_config(DEMO_CONFIG))
    schema = dataset.item_schema
    pipe = FeaturePipeline(FeatureConfig(text_encoder="none", title_words=True))
    pipe.fit(dataset.items, schema, dataset.interactions)
    vocab = next(v for v in pipe.items_.vocabularies if v.column == WORDS)
    title_counts = pd.Series([w for t in dataset.items["title"] for w in set(words(t))]).value_counts()
    frequent = [w for w, c in title_counts.items() if c >= 5][:3]
    assert frequent and all(w in vocab.values for w in frequent)
    new = pd.DataFrame({"item_id": ["n1", "n2"], "title": [" ".join(frequent) + " zzqxv", None]})
    tokens = pipe.transform_items(new).categorical[-1]
    known = vocab.transform(pd.Series([frequent], dtype=object))[0]
    assert set(known[known > OOV]) <= set(tokens[0]) and len(set(known[known > OOV])) == len(frequent)
    assert OOV in tokens[0]  # the made-up word has no embedding of its own
    assert (tokens[1] == PAD).all()  # no title, no words
    assert metadata_documents(new, schema, 200) == metadata_documents(with_words(new, schema), schema, 200)
    pipe.save(tmp_path / "features")
    loaded = FeaturePipeline.load(tmp_path / "features", pipe.cfg)
    assert (loaded.transform_items(new).categorical[-1] == tokens).all()


def test_numeric_bins_cut_at_training_quantiles_and_survive_a_save(tmp_path) -> None:
    from hybridrec.features.categorical import OOV, PAD
    from hybridrec.features.pipeline import FeaturePipeline

    schema = FeatureSchema(title=None, numeric=["year"], categorical=["brand"])
    items = pd.DataFrame(
        {"item_id": [f"i{k}" for k in range(8)], "year": [1950, 1960, 1970, 1980, 1990, 2000, 2010, None]}
    )
    items["brand"] = "b"
    pipe = FeaturePipeline(FeatureConfig(text_encoder="none", numeric_bins=4, min_count=1))
    pipe.fit(items, schema, items.iloc[:0])
    (bins,) = pipe.items_.bins
    assert bins.edges == [1965.0, 1980.0, 1995.0]  # quartiles of the 7 known years; the missing one is ignored
    new = pd.DataFrame({"item_id": ["a", "b", "c", "d"], "year": [1900, 1980, 2024, None]})
    vocab = pipe.items_.vocabularies[-1]
    expected = [vocab.values.index(t) + 2 for t in ["bin0", "bin2", "bin3"]]  # an edge value opens the next bin
    tokens = pipe.transform_items(new).categorical
    assert len(tokens) == 2 and tokens[-1][:3, 0].tolist() == expected and tokens[-1][3, 0] == PAD
    assert OOV not in tokens[-1]  # every bin is in the vocabulary, even one with a single training item
    assert pipe.transform_items(new.drop(columns="year")).categorical[-1].max() == PAD  # no column: no token
    pipe.save(tmp_path / "features")
    loaded = FeaturePipeline.load(tmp_path / "features", pipe.cfg)
    assert all((a == b).all() for a, b in zip(loaded.transform_items(new).categorical, tokens, strict=True))
    plain = FeaturePipeline(FeatureConfig(text_encoder="none", min_count=1)).fit(items, schema, items.iloc[:0])
    assert plain.items_.bins == [] and len(plain.transform_items(new).categorical) == 1
