"""Similar items of a catalogue item: the towers' cosine blended with the score terms' similar views, each
neighbour's behavioural part weighed by its evidence (scoring/base.py holds the blend rule); or, with no similar
term, the index's answer re-ranked by the same evidence."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from hybridrec.scoring.base import blend_similar, evidence

if TYPE_CHECKING:
    from hybridrec.recommender import HybridRecommender


def evidence_half(rec: HybridRecommender) -> float:
    """h of the trust n / (n + h): model.similar_evidence when set, else model.similar_evidence_share x the median
    training interactions of the items anybody had (0 for a content-only model, which learned nothing from
    behaviour and trusts all alike). Cached per counts array: it changes only when items join."""
    model = rec.config.model
    if model.variant == "content-only":
        return 0.0
    if model.similar_evidence is not None:
        return float(model.similar_evidence)
    counts = rec.item_counts_
    cached = getattr(rec, "_evidence_half", None)
    if cached is None or cached[0] is not counts:
        had = counts[counts > 0]
        cached = (counts, float(np.median(had)) if len(had) else 0.0)
        rec._evidence_half = cached
    return model.similar_evidence_share * cached[1]


def trust(rec: HybridRecommender, rows: np.ndarray | None = None) -> np.ndarray:
    """How far an item's behaviour is trusted, as a neighbour (its learned vector, its behavioural terms' entries)
    and as a query (its behavioural terms' share): n / (n + evidence_half) after n training interactions, for
    `rows` (None: every item). Items nobody had count 0: a list of "similar" items is a claim
    about co-consumption, which they cannot back (new items are found through recommend and score_new)."""
    counts = rec.item_counts_ if rows is None else rec.item_counts_[rows]
    return evidence(counts, evidence_half(rec))


def similar_scores(rec: HybridRecommender, row: int) -> np.ndarray:
    """Exact scores of item `row` against every catalogue item: the towers' cosine blended with each similar
    term, every neighbour's behavioural part (its learned vector, its behavioural terms' entries) weighed by its
    trust, and the behavioural terms' share by the query's own trust (a rarely seen query leans on its content)."""
    weights = trust(rec)
    towers = rec.towers_.similar_scores(row) * weights
    rows = []
    for term in rec._similar_terms():
        scores = term.similar(row)
        if scores is None:
            continue
        share = term.params.similar_weight * (weights[row] if term.behavioural else 1.0)
        rows.append((share, scores * weights if term.behavioural else scores))
    return blend_similar(towers, rows, row) if rows else towers.astype(np.float64)


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
