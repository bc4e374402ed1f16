"""`similar` of a ratings model on real data (MovieLens 100K) returns a film's obvious neighbours: its sequels and
same-franchise titles, through the shipped rating recipe and its co-occurrence term (the complaint the project
started from: a ratings model's cosine neighbours were nonsense)."""

from __future__ import annotations

import pytest
from conftest import REPO, SHARED_DATA

from hybridrec.config import load_config
from hybridrec.data.readers import read_dataset
from hybridrec.data.splits import split_interactions
from hybridrec.recommender import HybridRecommender

# film -> titles that must be among its 10 nearest (sequels / same franchise, all in ML-100K)
EXPECTED = {
    "Star Wars (1977)": ["Empire Strikes Back, The (1980)", "Return of the Jedi (1983)"],
    "Alien (1979)": ["Aliens (1986)"],
    "Godfather, The (1972)": ["Godfather: Part II, The (1974)"],
    "Terminator, The (1984)": ["Terminator 2: Judgment Day (1991)"],
    "Empire Strikes Back, The (1980)": ["Star Wars (1977)"],
    "Star Trek: The Wrath of Khan (1982)": ["Star Trek IV: The Voyage Home (1986)"],
}


@pytest.fixture(scope="module")
def ratings_model(tmp_path_factory):
    if not (SHARED_DATA / "movielens" / "ml-100k").is_dir():
        pytest.skip("MovieLens 100K not found")
    # the shipped rating recipe, trained briefly and with TF-IDF text so the test stays quick
    overrides = ["train.epochs=2", "train.threads=1", "features.text_encoder=tfidf", "features.tfidf_dim=32"]
    cfg = load_config(REPO / "configs" / "movielens-100k.yaml", overrides)
    dataset = read_dataset(cfg)
    split = split_interactions(dataset.interactions, cfg.split, cfg.seed)
    return HybridRecommender(cfg).fit(dataset, split.train, split.validation)


def titles_near(rec, title: str, k: int = 10) -> list[str]:
    match = rec.similar_to_text(title, k)
    assert match.how == "title" and match.resolved_title == title
    return [rec.item_info(i)["title"] for i in match.ids]


@pytest.mark.parametrize("film", sorted(EXPECTED))
def test_similar_films_include_their_sequels(ratings_model, film):
    near = titles_near(ratings_model, film)
    missing = [t for t in EXPECTED[film] if t not in near]
    assert not missing, (film, near)


def test_the_recipe_predicts_ratings_and_its_term_only_touches_similar(ratings_model):
    assert ratings_model.config.train.loss == "auto" and ratings_model.feedback_ == "explicit"
    (term,) = ratings_model.terms_
    assert term.type == "cooccurrence" and term.params.recommend_weight == 0 and term.params.similar_weight > 0
    pred = ratings_model.predict(["1", "2"], ["1", "50"])
    assert ((pred >= 1) & (pred <= 5)).all()
