"""Similar items of a catalogue item: the towers' cosine, each neighbour weighed by its evidence, blended with the
score terms' similar views (scoring/base.py holds the blend rule); or, with no similar term, the index's answer
re-ranked by the same evidence."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from hybridrec.scoring.base import blend_similar, evidence

if TYPE_CHECKING:
    from hybridrec.recommender import HybridRecommender


def trust(rec: HybridRecommender, rows: np.ndarray | None = None) -> np.ndarray:
    """How far an item's behaviour is trusted, as a neighbour (its learned vector) and as a query (its behavioural
    terms' share): n / (n + model.similar_evidence) after n training interactions, for `rows` (None: every item).
    Items nobody had count 0 as neighbours: a list of "similar" items is a claim about co-consumption, which they
    cannot back (new items are found through recommend and score_new). A content-only model learned nothing from
    behaviour: it trusts all alike."""
    model = rec.config.model
    half = 0.0 if model.variant == "content-only" else model.similar_evidence
    counts = rec.item_counts_ if rows is None else rec.item_counts_[rows]
    return evidence(counts, half)


def similar_scores(rec: HybridRecommender, row: int) -> np.ndarray:
    """Exact scores of item `row` against every catalogue item: the evidence-weighed towers' cosine blended with
    each similar term (a behavioural term's share shrunk by the query's own evidence)."""
    weights = trust(rec)
    towers = rec.towers_.similar_scores(row) * weights
    rows = [
        (t.params.similar_weight * (weights[row] if t.behavioural else 1.0), t.similar(row))
        for t in rec._similar_terms()
    ]
    present = [(w, s) for w, s in rows if s is not None]
    return blend_similar(towers, present, row) if present else towers.astype(np.float64)


def similar_items(rec: HybridRecommender, row: int, k: int) -> tuple[list[str], np.ndarray]:
    """The k best of `similar_scores` (retired items never), or the index's answer when no term has a share."""
    if not rec._similar_terms():
        return nearest(rec, rec.towers_.query_vector(row), k, skip=row)
    scores = similar_scores(rec, row)
    scores[row] = -np.inf
    scores[rec.retired_] = -np.inf
    top = np.argsort(-scores, kind="stable")[:k]
    top = top[np.isfinite(scores[top])]
    return rec.items_.raws(top), scores[top].astype(np.float32)


def nearest(
    rec: HybridRecommender, vector: np.ndarray, k: int, skip: int | None = None
) -> tuple[list[str], np.ndarray]:
    """The index's nearest items to a vector (item row `skip` left out), their cosine weighed by evidence. It
    fetches a few times k, so that rarely seen items the weighing pushes down leave room for the next ones, and
    weighs only the rows it fetched (this is the path that serves big catalogues)."""
    rows, sims = rec.index_.query_rows(np.asarray(vector).reshape(1, -1), 4 * k + 1)
    rows, sims = rows[0], sims[0] * trust(rec, rows[0])
    keep = rows != (-1 if skip is None else skip)
    rows, sims = rows[keep], sims[keep]
    top = np.argsort(-sims, kind="stable")[:k]
    return rec.items_.raws(rows[top]), sims[top].astype(np.float32)
