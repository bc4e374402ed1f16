"""Similar items of a catalogue item: the towers' cosine blended with the score terms' similar views, each
neighbour's behavioural part weighed by its evidence (scoring/base.py holds the blend rule); or, with no similar
term, the index's answer re-ranked by the same evidence."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from hybridrec.scoring.base import blend_similar, evidence

if TYPE_CHECKING:
    from hybridrec.config import Config, ModelConfig
    from hybridrec.data.idmap import IdMap
    from hybridrec.index import ItemIndex
    from hybridrec.recommender import HybridRecommender


def evidence_half(rec: HybridRecommender) -> float:
    """h of the trust n / (n + h): model.similar_evidence when set, else model.similar_evidence_share x the median
    training interactions of the items anybody had (0 for a content-only model, which learned nothing from
    behaviour and trusts all alike). Cached per counts array: it changes only when items join."""
    counts = rec.item_counts_
    cached = rec._similar_cache.get("median")
    if cached is None or cached[0] is not counts:
        cached = rec._similar_cache["median"] = (counts, had_median(counts))
    return half_of(rec.config.model, cached[1])


def had_median(counts: np.ndarray) -> float:
    """The median training interactions of the items anybody had (0 when nobody had any)."""
    had = counts[counts > 0]
    return float(np.median(had)) if len(had) else 0.0


def half_of(model: ModelConfig, median: float) -> float:
    """evidence_half's rule, from the model's settings and `had_median` of its items."""
    if model.variant == "content-only":
        return 0.0
    if model.similar_evidence is not None:
        return float(model.similar_evidence)
    return model.similar_evidence_share * median


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


def similar_items(rec: HybridRecommender, row: int, k: int, exact: bool = False) -> tuple[list[str], np.ndarray]:
    """The k best of `similar_scores` (retired items never), or the index's answer when no term has a share. A big
    catalogue blends over candidates (`blend_candidates`), the whole row only when they cannot be shown to hold
    the k best. `exact`: no index, neither for candidates nor for the answer (the items anybody had are blended,
    the others tie at no trust)."""
    terms = rec._similar_terms()
    if not terms and not exact:
        return nearest(rec, rec.towers_.query_vector(row), k, skip=row)
    if terms and len(rec.items_) > CANDIDATE_PATH_ITEMS:
        sizes = [None] if exact else candidate_sizes(rec, k)
        for size in sizes:  # wider when the candidates do not hold the k best
            found = blend_candidates(rec, row, k, size)
            if found is not None:
                return rec.items_.raws(found[0]), found[1].astype(np.float32)
    scores = similar_scores(rec, row)
    scores[row] = -np.inf
    scores[rec.retired_] = -np.inf
    top = np.argsort(-scores, kind="stable")[:k]
    top = top[np.isfinite(scores[top])]
    return rec.items_.raws(top), scores[top].astype(np.float32)


CANDIDATE_PATH_ITEMS = 20_000  # above this many items, similar items blend over candidates, not the whole row
CANDIDATES = 256  # the index's nearest items that join each query's candidates
FULL_PRODUCT_ROWS = 65_536  # candidates beyond this many: their cosines from one product over the whole catalogue
# an index answer whose items anybody had are expected to number fewer than this many times k rarely holds the k best
TRUSTED_PER_K = 4


def candidate_sizes(rec: HybridRecommender, k: int) -> list[int | None]:
    """The candidate sets blend_candidates tries, narrowest first: the index's 256 and 2,048 nearest, then every
    item anybody had (None). The cosine index's answers are skipped where they would hold too few items anybody
    had to settle the k best (a long-tail catalogue: 3,704 had items among 500,000, where 299 of 300 index
    answers fell through to the last set, after ~3 ms spent on them): there the last set is itself small. The
    trusted index answers with had items only."""
    if trusted_index(rec) is not None:
        return [CANDIDATES, 8 * CANDIDATES, None]
    moments = TowerMoments.of(rec)
    share = len(moments.trusted) / max(len(rec.items_), 1)
    sizes: list[int | None] = [s for s in (CANDIDATES, 8 * CANDIDATES) if s * share >= TRUSTED_PER_K * k]
    return [*sizes, None]


@dataclass(eq=False)
class TowerMoments:
    """What the catalogue-wide mean and spread of a query's weighed cosine t_i (u_i . q) need, for any q:
    sum_i t_i u_i and sum_i t_i^2 u_i u_i^T over the unit item vectors u_i (a d x d matrix), so standardising
    costs d^2 per query instead of a pass over the catalogue. Only the items anybody had enter the sums (the
    others weigh 0), so on a long-tail catalogue this costs what its had items cost. Keyed by the arrays it was
    made from."""

    vectors: np.ndarray
    counts: np.ndarray
    half: float
    weights: np.ndarray  # every item's trust, n / (n + half)
    first: np.ndarray
    second: np.ndarray
    trusted: np.ndarray  # rows of the items anybody had (trust > 0)
    untrusted: np.ndarray  # the others, in row order
    norms: np.ndarray | None = None  # every item vector's length, made on the first blend over most of the catalogue

    @classmethod
    def seed(cls, rec: HybridRecommender, half: float, sums: np.ndarray) -> None:
        """Cache the moments a save stored (`sums`: first, then second's rows; `stored`) for the evidence `half`
        they were made with: a process that asks once (the CLI) then skips the pass over the had items (0.4 s
        at 5e5 items). Used by `of` only while the model's half is still that one."""
        cls._cache(rec, half, lambda weights, rows: (sums[0].astype(np.float64), sums[1:].astype(np.float64)))

    @classmethod
    def _cache(cls, rec: HybridRecommender, half: float, sums) -> TowerMoments:
        """The moments of `rec`'s arrays at evidence `half`, cached; `sums(weights, rows)` gives (first, second)."""
        vectors, counts = rec.towers_.item_vectors, rec.item_counts_
        weights = evidence(counts, half)
        trusted = weights > 0
        rows = np.flatnonzero(trusted)
        first, second = sums(weights, rows)
        moments = cls(vectors, counts, half, weights, first, second, rows, np.flatnonzero(~trusted))
        rec._similar_cache["moments"] = moments
        return moments

    def stored(self) -> np.ndarray:
        """What a save stores (`seed` reads it back): first, then second's rows, (d + 1) x d."""
        return np.vstack([self.first[None], self.second])

    def lengths(self) -> np.ndarray:
        if self.norms is None:
            # in the vectors' own type (a float64 pass over 5e5 x 64 float32 cost 45 ms of a CLI query); they
            # divide float32 products anyway (towers_of)
            self.norms = np.sqrt(np.einsum("ij,ij->i", self.vectors, self.vectors)).astype(np.float64)
        return self.norms

    @classmethod
    def of(cls, rec: HybridRecommender) -> TowerMoments:
        vectors, counts, half = rec.towers_.item_vectors, rec.item_counts_, evidence_half(rec)
        cached: TowerMoments | None = rec._similar_cache.get("moments")
        if cached is not None and cached.vectors is vectors and cached.counts is counts and cached.half == half:
            return cached

        def summed(weights: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            dim = vectors.shape[1]
            first, second = np.zeros(dim), np.zeros((dim, dim))
            for _, weighed in weighed_units(vectors, weights, rows):
                first += weighed.sum(axis=0)
                second += weighed.T @ weighed
            return first, second

        return cls._cache(rec, half, summed)


def weighed_units(vectors: np.ndarray, weights: np.ndarray, rows: np.ndarray, block: int = 65_536):
    """(start, trust x unit vector) of `rows` in blocks of `block` rows, float64: the towers' part of the blend is
    these dotted with the query (TowerMoments sums them, the trusted index stores them). Bounded memory on any
    catalogue."""
    for start in range(0, len(rows), block):
        part = rows[start : start + block]
        yield start, unit_rows(vectors, part) * weights[part, None]


def first_rows(rows: np.ndarray, k: int, allowed: np.ndarray, skip: int) -> np.ndarray:
    """The first k of `rows` that `allowed` admits, `skip` left out: a look at a growing head of `rows`, not a mask
    over all of them (a long-tail catalogue has hundreds of thousands of rows nobody had)."""
    take = k + 1
    while True:
        head = rows[:take]
        keep = head[(head != skip) & allowed[head]]
        if len(keep) >= k or take >= len(rows):
            return keep[:k]
        take *= 4


def unit_rows(vectors: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """The given rows of `vectors` in float64 at unit length (a zero row stays zero)."""
    picked = vectors[rows].astype(np.float64)
    norms = np.linalg.norm(picked, axis=1)
    return picked / np.where(norms > 0, norms, np.inf)[:, None]


def _standardiser(total: float, squares: float, own: float, n: int) -> tuple[float, float]:
    """(mean, spread) over the catalogue less the query item, from the sums of scores and squares over all n
    items and the query's own score `own`: standardised()'s figures without the row."""
    mean = (total - own) / (n - 1)
    spread = float(np.sqrt(max((squares - own * own) / (n - 1) - mean * mean, 0.0)))
    return mean, spread


def blend_candidates(
    rec: HybridRecommender, row: int, k: int, size: int | None = CANDIDATES
) -> tuple[np.ndarray, np.ndarray] | None:
    """`similar_scores`' top k computed over candidates only: the index's `size` nearest to the query and
    every item a term's sparse row names, with the towers' and each term's catalogue-wide mean and spread taken
    from TowerMoments and the sparse rows' sums. Exact for the candidates; any other item has no term entry and
    a cosine no higher than the index's last, which bounds its blend from above. (rows, scores) when the k-th
    best candidate reaches that bound, None when it does not or a term has no sparse row (then the caller
    scores the whole row). size None: every item anybody had, and the first k of the others, which all score
    alike (no trust, no entry) and tie by row: exact with no bound, at the cost of the items anybody had."""
    terms = rec._similar_terms()
    entries = [t.similar_entries(row) for t in terms]
    if any(e is None for e in entries):
        return None
    n = len(rec.items_)
    moments = TowerMoments.of(rec)
    weights = moments.weights  # computed once per catalogue, not per query
    query = rec.towers_.query_vector(row).astype(np.float64)
    if rec.towers_.item_queries is None:  # as TowerScores.similar_scores: own vectors are normalised
        query = query / max(float(np.linalg.norm(query)), np.finfo(np.float32).tiny)
    weighed = None if size is None else trusted_index(rec)  # answers with the towers' part itself: trust x cosine
    if size is None:
        others = first_rows(moments.untrusted, k, ~rec.retired_, row)
        index_rows, index_sims = np.concatenate([moments.trusted, others]), np.zeros(0)
    else:
        index = rec.index_ if weighed is None else weighed
        index_rows, index_sims = index.query_rows(query[None].astype(np.float32), size)
        index_rows, index_sims = index_rows[0], index_sims[0]
    pools = [index_rows] + [e[0] for e in entries if e is not None]
    if sum(len(p) for p in pools) > FULL_PRODUCT_ROWS:  # a mask over the catalogue: np.unique sorts (~30 ms at 4e5)
        marked = np.zeros(n, bool)
        for pool in pools:
            marked[pool] = True
        candidates = np.flatnonzero(marked)
    else:
        candidates = np.unique(np.concatenate(pools))
    candidates = candidates[(candidates != row) & ~rec.retired_[candidates]]

    def towers_of(rows: np.ndarray) -> np.ndarray:
        vectors = rec.towers_.item_vectors
        if len(rows) <= FULL_PRODUCT_ROWS:
            return weights[rows] * (unit_rows(vectors, rows) @ query)
        # most of the catalogue (size None on a big one): one float32 product over every item instead of a float64
        # copy of these rows (0.6-1.1 s at 442,944 rows); the cosines then carry float32 rounding (~1e-7)
        norms = moments.lengths()[rows]
        cosines = (vectors @ query.astype(vectors.dtype))[rows].astype(np.float64)
        return weights[rows] * cosines / np.where(norms > 0, norms, np.inf)

    own = float(towers_of(np.array([row]))[0])
    mean, spread = _standardiser(float(moments.first @ query), float(query @ moments.second @ query), own, n)
    parts, shares, floor = [], 0.0, 0.0  # floor: the terms' part of an item with no entry in any of them
    for term, entry in zip(terms, entries):
        assert entry is not None
        cols, values = entry
        if term.behavioural:
            values = values * weights[cols]
        share = term.params.similar_weight * (weights[row] if term.behavioural else 1.0)
        own_entry = float(values[cols == row].sum())
        t_mean, t_spread = _standardiser(float(values.sum()), float(values @ values), own_entry, n)
        dense = np.zeros(len(candidates))
        where = np.searchsorted(candidates, cols)
        hit = (where < len(candidates)) & (candidates[np.minimum(where, len(candidates) - 1)] == cols)
        dense[where[hit]] = values[hit]
        parts.append((share, dense, t_mean, t_spread))
        shares += share
    # any other item's towers part is at most the index's last answer: its cosine x |query| (weighed by a trust
    # of at most 1), or the trusted index's weighed product itself (size None: nobody had it, so 0)
    ceiling = max(float(index_sims.min()), 0.0) if len(index_sims) else 0.0
    if weighed is None:
        ceiling *= float(np.linalg.norm(query))
    if shares <= 0:  # no term has a share for this query: the towers' weighed cosine, as blend_similar gives
        blended, bound = towers_of(candidates), ceiling
    else:
        z_towers = (towers_of(candidates) - mean) / spread if spread > 0 else np.zeros(len(candidates))
        blended = (1.0 - shares) * z_towers
        for share, dense, t_mean, t_spread in parts:
            if t_spread > 0:
                blended = blended + share * (dense - t_mean) / t_spread
                floor += share * (0.0 - t_mean) / t_spread
        bound = (1.0 - shares) * ((ceiling - mean) / spread if spread > 0 else 0.0) + floor
    pick = np.arange(len(blended))
    if len(blended) > k:  # everything that ties with the k-th best or beats it, then the whole row's order
        pick = np.flatnonzero(blended >= -np.partition(-blended, k - 1)[k - 1])
    order = pick[np.lexsort((candidates[pick], -blended[pick]))][:k]
    if size is None:
        return candidates[order], blended[order]
    if len(order) < k and len(candidates) < n - 1:
        return None
    # some items are neither candidates nor blended: the k-th best must beat their bound (ties included, since
    # the whole row breaks ties by row). The cosine index answering fewer than `size` named every item; the
    # trusted index, every item anybody had, and the others' bound (a towers part of 0) still applies.
    if (len(index_rows) >= size or weighed is not None) and (not len(order) or blended[order[-1]] <= bound):
        return None
    return candidates[order], blended[order]


def trusted_index(rec: HybridRecommender) -> ItemIndex | None:
    """The model's trusted index (`build_trusted_index`) when its weights are today's (the evidence half it was
    built with is the model's), else None: the cosine index then serves, as for a model saved without one."""
    index = rec.trusted_index_
    return index if index is not None and index.half == evidence_half(rec) else None


TRUSTED_INDEX_ITEMS = CANDIDATE_PATH_ITEMS  # catalogues above this many items get a trusted index


def build_trusted_index(ids: IdMap, vectors: np.ndarray, counts: np.ndarray, cfg: Config, threads: int) -> ItemIndex:
    """An inner-product index over the items anybody had, each stored as its unit vector x its trust: its nearest
    items to a query are those of the largest towers' part of the similar-items blend (trust x cosine), so a
    rarely had query item, whose cosine neighbours are mostly rarely had items of low trust, is settled from a
    few hundred candidates instead of every had item (~20 ms at 442,944 had items)."""
    from hybridrec.index import ItemIndex

    half, settings = half_of(cfg.model, had_median(counts)), cfg.index
    weights = evidence(counts, half)
    rows = np.flatnonzero(weights > 0)
    index = ItemIndex(ids, vectors.shape[1], settings.M, settings.ef_construction, settings.ef_search, "ip", half)
    data = np.empty((len(rows), vectors.shape[1]), np.float32)
    for start, weighed in weighed_units(vectors, weights, rows):
        data[start : start + len(weighed)] = weighed
    return index.build(data, seed=cfg.seed, threads=threads, rows=rows)


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


TEXT_QUERY_WEIGHT = 0.5  # free text that matches no title: the text encoder's own similarity's share
TEXT_BLOCK = 65536  # items per block of the free-text product


def text_query_scores(
    rec: HybridRecommender, vector: np.ndarray, item_text: np.ndarray, embedding: np.ndarray
) -> np.ndarray:
    """A free-text query against every item: (1 - w) x z(the towers' cosine) + w x z(the cosine of the query's text
    embedding with each item's text), w = TEXT_QUERY_WEIGHT, z as in the similar-items blend. The towers place the
    query among items by content and behaviour; the text space keeps it on topic where the towers' content path is
    weak (a reviews-only catalogue, where items are told apart by their reviews)."""
    towers = rec.towers_.item_vectors @ vector.astype(np.float32)
    norms = np.linalg.norm(rec.towers_.item_vectors, axis=1) * max(float(np.linalg.norm(vector)), 1e-12)
    towers = towers / np.where(norms > 0, norms, np.inf)
    query = embedding.astype(np.float32) / max(float(np.linalg.norm(embedding)), 1e-12)
    text_scores = np.empty(len(item_text), np.float32)
    for start in range(0, len(item_text), TEXT_BLOCK):  # float16 rows cast a block at a time, not all at once
        text_scores[start : start + TEXT_BLOCK] = item_text[start : start + TEXT_BLOCK].astype(np.float32) @ query
    return blend_similar(towers, [(TEXT_QUERY_WEIGHT, text_scores)], None)


def similar_to_free_text(rec: HybridRecommender, text: str, k: int) -> tuple[list[str], np.ndarray]:
    """Text that names no item, scored as a new item with that title: its content vector through the towers, blended
    with its text embedding against every item's (text_query_scores); the towers alone (the index) when the model
    has no text encoder. Retired items are never answered."""
    import pandas as pd

    from hybridrec.new_items import content_vectors

    query = pd.DataFrame({"item_id": ["<query>"], "title": [text]})
    feats = rec.features.transform_items(query, train=None)
    embedding = feats.text[0, : (feats.text.shape[1] - 1) // 2].copy()  # the query's text, encoded once
    vec, _ = content_vectors(rec, query, free_text=True, feats=feats)
    item_text = rec.item_text_
    if item_text is None:
        return rec.index_.query(vec[0], k)
    scores = text_query_scores(rec, vec[0], item_text, embedding)
    scores[rec.retired_] = -np.inf
    top = np.argsort(-scores, kind="stable")[:k]
    top = top[np.isfinite(scores[top])]
    return rec.items_.raws(top), scores[top].astype(np.float32)
