"""Items outside the training catalogue: content-only vectors, scores for brand-new items, and adding them to a
fitted model (the index, every score term, the query state) without retraining."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from hybridrec.errors import QueryError
from hybridrec.scoring.base import NewItems

if TYPE_CHECKING:
    from hybridrec.features.pipeline import EntityFeatures
    from hybridrec.recommender import HybridRecommender


def score_new_items(rec: HybridRecommender, items: pd.DataFrame, user_ids, k_neighbours: int) -> pd.DataFrame:
    """HybridRecommender.score_new_items."""
    items = check_new_items(items)
    feats = rec.features.transform_items(items, train=None)
    vecs, bias = content_vectors(rec, items, feats=feats)
    users = list(user_ids) if user_ids is not None else []
    user_rows = rec.users_.indices(users)
    new = new_items_for_terms(rec, len(items), feats)
    if users:
        scores = np.stack(
            [
                rec.towers_.for_vectors(
                    rec.towers_.user_vectors[u][None].repeat(len(items), 0),
                    np.repeat(rec.towers_.user_bias[u], len(items)),
                    vecs,
                    bias,
                )
                for u in user_rows
            ]
        )
        for term in rec._recommend_terms():
            extra = term.score_new(user_rows, new)
            if extra is not None:
                scores = scores + term.scale * extra
    else:  # an average user: zero vector and bias
        zero = np.zeros((len(items), vecs.shape[1]), np.float32)
        scores = rec.towers_.for_vectors(zero, np.zeros(len(items), np.float32), vecs, bias)[None]
    scores = rec._clip(scores)
    rows = []
    for j, item_id in enumerate(items["item_id"]):
        nb_ids, nb_sims = rec.nearest(vecs[j], k_neighbours)
        for n, user in enumerate(users or [None]):
            rows.append(
                {
                    "item_id": str(item_id),
                    "title": str(items["title"].iloc[j]),
                    "user_id": user,
                    "score": float(scores[n, j]),
                    "neighbours": nb_ids,
                    "neighbour_titles": [rec.display_[rec.items_.index(i)][0] for i in nb_ids],
                    "neighbour_similarities": [round(float(s), 4) for s in nb_sims],
                }
            )
    return pd.DataFrame(rows)


def add_items(rec: HybridRecommender, items: pd.DataFrame) -> None:
    """HybridRecommender.add_items."""
    from hybridrec.fitting import display_rows

    items = check_new_items(items)
    clash = [i for i in items["item_id"] if i in rec.items_]
    if clash:
        retired = rec.retired_[rec.items_.index(clash[0])]
        why = "was retired (remove_items); refit to bring it back" if retired else "is already in the catalogue"
        raise QueryError(f"item id {clash[0]!r} {why}")
    feats = rec.features.transform_items(items, train=None)
    vecs, bias = content_vectors(rec, items, feats=feats)
    new = new_items_for_terms(rec, len(items), feats)
    item_text = rec.item_text_  # read before the catalogue grows
    rows = np.asarray(rec.items_.extend(items["item_id"]), dtype=np.int64)
    rec.towers_.extend(vecs, bias)
    for term in rec.terms_:
        term.extend(new)
    rec.item_has_id_ = np.concatenate([rec.item_has_id_, np.zeros(len(rows), bool)])
    _extend_query_state(rec, feats, int(rows[0]))
    rec.display_ = rec.display_ + display_rows(items)
    rec._matcher = None
    rec.index_.add(vecs, rows)
    if item_text is not None and rec.text_slots_ is not None:
        rec._item_text = np.concatenate([item_text, rec.text_slots_.item_text(feats.text, new_items=True)])


def _extend_query_state(rec: HybridRecommender, feats: EntityFeatures, first_row: int) -> None:
    """New items are not retired, had no training interactions, and get their content effects (explain)."""
    from hybridrec.explain import ContentEffects, content_effects, feature_groups

    count = len(feats)
    rec.retired_ = np.concatenate([rec.retired_, np.zeros(count, bool)])
    rec.item_counts_ = np.concatenate([rec.item_counts_, np.zeros(count, np.int64)])
    if rec.content_effects_ is not None:
        groups = feature_groups(rec.features, rec.review_slice_)
        new = content_effects(rec.net, feats, np.zeros(count, bool), rec.review_slice_, groups, first_row)
        if new is not None and new.names == rec.content_effects_.names:
            deltas = np.concatenate([rec.content_effects_.deltas, new.deltas])
            rec.content_effects_ = ContentEffects(rec.content_effects_.names, deltas)
        else:
            rec.content_effects_ = None


def new_items_for_terms(rec: HybridRecommender, count: int, feats: EntityFeatures) -> NewItems:
    from hybridrec.scoring.content_ridge import token_matrix

    return NewItems(count, lambda: token_matrix(feats.categorical, list(rec.item_spec_.vocab_sizes)))


def content_vectors(
    rec: HybridRecommender, items: pd.DataFrame, free_text: bool = False, feats: EntityFeatures | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Vectors of brand-new items from content only (their ID part is hidden, as in ID dropout).

    `free_text`: the items are free-text queries. Numeric features are set to the training median with no
    missing flag (a query says nothing about price, and "missing price" would pull it towards items without
    one), and the text goes into every text slot the catalogue's items use (TextSlots).
    """
    import torch

    feats = feats if feats is not None else rec.features.transform_items(items, train=None)
    if free_text:
        feats.numeric[:] = 0.0
        if rec.text_slots_ is not None and feats.text.shape[1]:
            feats.text = rec.text_slots_.query_text(feats.text[:, : (feats.text.shape[1] - 1) // 2])
    with torch.no_grad():
        v, b = rec.net.items(
            torch.zeros(len(items), dtype=torch.long),
            torch.as_tensor(feats.text),
            torch.as_tensor(feats.numeric),
            [torch.as_tensor(c) for c in feats.categorical],
            torch.zeros(len(items)),
        )
    return v.numpy().astype(np.float32), b.numpy().astype(np.float32)


def check_new_items(items: pd.DataFrame) -> pd.DataFrame:
    from hybridrec.data.idmap import normalize_id

    for col in ("item_id", "title"):
        if col not in items.columns:
            raise QueryError(f"new items lack the column {col!r}")
    items = items.reset_index(drop=True).copy()
    missing = items["item_id"].isna() | (items["item_id"].astype(str).str.strip() == "")
    if missing.any():
        raise QueryError(f"new item in row {int(missing.to_numpy().argmax()) + 1} has no item_id")
    items["item_id"] = [normalize_id(i) for i in items["item_id"]]
    items["title"] = items["title"].fillna("").astype(str)
    if items["item_id"].duplicated().any():
        raise QueryError(f"new items repeat item_id {items.loc[items['item_id'].duplicated(), 'item_id'].iloc[0]!r}")
    return items
