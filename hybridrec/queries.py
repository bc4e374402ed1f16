"""Queries beyond one known user: users the model never saw, many users at once, business rules, retired items.

The facade (recommender.py) keeps the signatures and the docs; the logic lives here.

- **Unknown users** are scored from what is known about them, with no retraining: their items go into the user
  tower's history bag (with the ID part hidden, as for a user the tower never saw) and into every score term that
  can score from a history (`ScoreTerm.score_history`); their features go through the fitted feature pipeline. A
  user with nothing known gets the catalogue's most popular items (training interactions per item).
- **Rules**: an allow-list (`items`: only these) and a deny-list (`exclude`) in single and batch calls.
- **Retired items** (`remove_items`) are never answered, by any query; they stay in the catalogue (a user's history
  may still name them) and in the index's graph (hnswlib's `mark_deleted`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from hybridrec.errors import QueryError

if TYPE_CHECKING:
    import pandas as pd

    from hybridrec.config import Config
    from hybridrec.features.pipeline import EntityFeatures, FeaturePipeline
    from hybridrec.model.history import UserHistory
    from hybridrec.model.network import HybridNet
    from hybridrec.recommender import HybridRecommender

# users scored at once by recommend_batch: a block of users x the catalogue stays under this many scores
BATCH_CELLS = 4_000_000
MAX_NAMED = 5  # unknown ids an error message names before it counts the rest


@dataclass
class UserQuery:
    """What a top-k needs about one user, known or not."""

    vector: np.ndarray  # (dim,) the user tower's output
    bias: float
    term_scores: list[np.ndarray]  # each recommend term over the whole catalogue, already at its fitted scale
    seen: np.ndarray  # item rows left out when exclude_seen


@dataclass
class History:
    """An unknown user's items as catalogue rows, most recent first, each once, and their relative weights."""

    rows: np.ndarray
    weights: np.ndarray | None  # rescaled to mean 1; None: every item counts 1 (as a known user's items do)


# ------------------------------------------------------------------------------------------------ fit time
def fit_state(
    cfg: Config,
    pipeline: FeaturePipeline,
    net: HybridNet,
    item_feats: EntityFeatures,
    user_feats: EntityFeatures,
    item_has_id: np.ndarray,
    review_slice: tuple[int, int] | None,
    train_items: np.ndarray,
    history: UserHistory,
) -> dict[str, Any]:
    """What the fit leaves for these queries (FittedModel fields): training interactions per item (the fallback
    for a user with nothing known), the user tower's bag per user and the users' feature inputs (to rerun the
    tower in explanations), and each item's content effects per feature group (explanations)."""
    from hybridrec.explain import content_effects, feature_groups

    return {
        "item_counts": np.bincount(train_items, minlength=len(item_has_id)).astype(np.int64),
        "bag": history if cfg.model.user_history.length else None,
        "user_inputs": user_feats,
        "content_effects": content_effects(
            net, item_feats, item_has_id, review_slice, feature_groups(pipeline, review_slice)
        ),
    }


# ------------------------------------------------------------------------------------------------ input checks
def id_list(values: Any, what: str) -> list:
    """A list of ids from a list, tuple, array or set; a bare string is refused (it would iterate characters)."""
    if isinstance(values, (str, bytes)):
        raise QueryError(f"{what} must be a list of ids, got the string {values!r}")
    if isinstance(values, Mapping) or not isinstance(values, Iterable):
        raise QueryError(f"{what} must be a list of ids, got {type(values).__name__}")
    return list(values)


def unknown_error(ids: list, what: str, entity: str = "item") -> QueryError:
    """One line naming the first few unknown ids and how many there are in all."""
    named = ", ".join(repr(str(i)) for i in ids[:MAX_NAMED])
    more = f" and {len(ids) - MAX_NAMED} more" if len(ids) > MAX_NAMED else ""
    plural = "s" if len(ids) > 1 else ""
    return QueryError(f"{what}: unknown {entity} id{plural} {named}{more}")


def item_rows(rec: HybridRecommender, values: Any, what: str) -> np.ndarray:
    """Catalogue rows of raw item ids; every unknown id is named in one QueryError (none is skipped silently)."""
    ids = id_list(values, what)
    rows = np.fromiter((rec.items_.get(i) for i in ids), dtype=np.int64, count=len(ids))
    if (rows < 0).any():
        raise unknown_error([i for i, r in zip(ids, rows) if r < 0], what)
    return rows


def user_rows(rec: HybridRecommender, values: Any) -> np.ndarray:
    ids = id_list(values, "user_ids")
    rows = np.fromiter((rec.users_.get(u) for u in ids), dtype=np.int64, count=len(ids))
    if (rows < 0).any():
        raise unknown_error([u for u, r in zip(ids, rows) if r < 0], "user_ids", "user")
    return rows


def parse_history(rec: HybridRecommender, history: Any) -> History:
    """A list of item ids (most recent first) or a mapping {item id: rating or weight}, in the order given.

    Weights must be finite and > 0. They scale each item in the score terms' history, relative to each other
    (rescaled to mean 1, so equal weights are exactly a known user's history); the user tower's bag is an
    unweighted mean, as in training."""
    if isinstance(history, Mapping):
        ids = list(history.keys())
        try:
            weights = np.array([float(history[i]) for i in ids], dtype=np.float64)
        except (TypeError, ValueError):
            raise QueryError("history: weights must be numbers") from None
        bad = ~np.isfinite(weights) | (weights <= 0)
        if bad.any():
            first = ids[int(np.argmax(bad))]
            raise QueryError(f"history: the weight of item {str(first)!r} is {history[first]!r}; weights must be > 0")
    else:
        ids = id_list(history, "history")
        weights = None
    rows = item_rows(rec, ids, "history")
    _, first = np.unique(rows, return_index=True)
    keep = np.sort(first)  # each item once, at its most recent place
    rows = rows[keep]
    if weights is not None and len(keep):
        weights = weights[keep] / weights[keep].mean()
    return History(rows, None if weights is None else weights.astype(np.float32))


def user_feature_frame(rec: HybridRecommender, user_features: Mapping | None) -> pd.DataFrame:
    """One row of user features by column name; columns not given are missing, as for a known user without them."""
    import pandas as pd

    schema = rec.features.user_schema_
    columns = schema.columns() if schema is not None else []
    given = dict(user_features or {})
    if given and not columns:
        raise QueryError("user_features: this model was fitted without user features")
    unknown = [k for k in given if k not in columns]
    if unknown:
        raise QueryError(f"user_features: unknown feature {unknown[0]!r} (this model's: {', '.join(columns)})")
    return pd.DataFrame([{"user_id": "<query>", **{c: given.get(c) for c in columns}}])


# ------------------------------------------------------------------------------------------------ users
def known_user(rec: HybridRecommender, row: int, exclude_seen: bool) -> UserQuery:
    terms = [term.scale * term.score(np.array([row]))[0] for term in rec._recommend_terms()]
    seen = rec.seen_rows(row) if exclude_seen else np.zeros(0, np.int64)
    return UserQuery(rec.towers_.user_vectors[row], float(rec.towers_.user_bias[row]), terms, seen)


def bag_tokens(rec: HybridRecommender, rows: np.ndarray) -> np.ndarray | None:
    """(1, L) history-bag tokens (item row + 1, most recent first) of the user tower, or None without a bag.
    Items added after the fit (add_items) have no bag embedding and are left out; an empty bag is one PAD."""
    spec = rec.user_spec_
    length = rec.config.model.user_history.length
    if not spec.history_items or not length:
        return None
    rows = rows[rows < spec.history_items][:length]
    return (rows + 1).reshape(1, -1) if len(rows) else np.zeros((1, 1), np.int64)


def tower_user(rec: HybridRecommender, history: History, user_features: Mapping | None) -> tuple[np.ndarray, float]:
    """The user tower's vector and bias for a user it never saw: no ID part (keep_id 0), the history bag from
    `history`, the features through the fitted pipeline."""
    import torch

    feats = rec.features.transform_users(user_feature_frame(rec, user_features))
    tokens = bag_tokens(rec, history.rows)
    with torch.no_grad():
        u, b = rec.net.users(
            torch.zeros(1, dtype=torch.long),
            torch.as_tensor(feats.text),
            torch.as_tensor(feats.numeric),
            [torch.as_tensor(c) for c in feats.categorical],
            torch.zeros(1),
            history=None if tokens is None else (torch.as_tensor(tokens), None),
        )
    return u.numpy()[0].astype(np.float32), float(b.numpy()[0])


def reads_history(rec: HybridRecommender) -> bool:
    """Whether anything in the model reads an unknown user's items: the user tower's history bag or a recommend
    term with `score_history`. Without either, such a user is ranked by the item biases (and their features)."""
    from hybridrec.scoring.base import ScoreTerm

    if rec.user_spec_.history_items and rec.config.model.user_history.length:
        return True
    return any(type(t).score_history is not ScoreTerm.score_history for t in rec._recommend_terms())


def unknown_user(
    rec: HybridRecommender, history: History, user_features: Mapping | None, exclude_seen: bool
) -> UserQuery:
    vector, bias = tower_user(rec, history, user_features)
    terms = []
    weights = None if history.weights is None else [history.weights]
    for term in rec._recommend_terms():
        scores = term.score_history([history.rows], None, weights) if len(history.rows) else None
        if scores is not None:
            terms.append(term.scale * scores[0])
    seen = history.rows if exclude_seen else np.zeros(0, np.int64)
    return UserQuery(vector, bias, terms, seen)


# ------------------------------------------------------------------------------------------------ top-k
def blocked_rows(rec: HybridRecommender, deny: np.ndarray) -> np.ndarray:
    """Catalogue mask of what no answer may hold: retired items and the deny-list."""
    blocked = rec.retired_.copy()
    blocked[deny] = True
    return blocked


def top_k(
    rec: HybridRecommender,
    q: UserQuery,
    k: int,
    exact: bool,
    allow: np.ndarray | None,
    deny: np.ndarray,
    exact_items: int,
    min_candidates: int,
) -> tuple[list[str], np.ndarray]:
    """The best k items for one user: the whole catalogue (or the allow-list) scored exactly, or past
    `exact_items` a candidate pool (ANN by the user vector, the best by item bias and by each recommend term)."""
    n_items = len(rec.items_)
    blocked = blocked_rows(rec, deny)
    blocked[q.seen] = True
    if allow is not None:
        candidates = np.unique(allow)
    elif exact or n_items <= exact_items:
        candidates = np.arange(n_items)
    else:
        pool = min(n_items, max(min_candidates, 20 * k) + len(q.seen) + len(deny))
        ann_rows, _ = rec.index_.query_rows(q.vector[None], pool)  # retired items are not in the graph's answers
        tops = []
        for scores in [rec.towers_.item_bias, *q.term_scores]:
            open_scores = np.where(blocked, -np.inf, scores)
            tops.append(np.argpartition(-open_scores, min(pool, n_items - 1))[:pool])
        candidates = np.union1d(ann_rows[0], np.concatenate(tops))
    candidates = candidates[~blocked[candidates]]
    if not len(candidates):
        return [], np.zeros(0, np.float32)
    scores = rec.towers_.for_users(q.vector[None], np.array([q.bias], np.float32), candidates)[0]
    for term in q.term_scores:
        scores = scores + term[candidates]
    top = np.argsort(-scores, kind="stable")[:k]
    return rec.items_.raws(candidates[top]), scores[top].astype(np.float32)


def popular(rec: HybridRecommender, k: int, allow: np.ndarray | None, deny: np.ndarray) -> tuple[list[str], np.ndarray]:
    """The fallback for a user with nothing known: the items with the most training interactions (ties: the
    higher item bias, then catalogue order); the scores are those counts."""
    counts = rec.item_counts_.astype(np.float64)
    order = np.lexsort((np.arange(len(counts)), -rec.towers_.item_bias.astype(np.float64), -counts))
    blocked = blocked_rows(rec, deny)
    if allow is not None:
        allowed = np.zeros(len(counts), bool)
        allowed[allow] = True
        blocked |= ~allowed
    top = order[~blocked[order]][:k]
    return rec.items_.raws(top), counts[top].astype(np.float32)


def recommend(
    rec: HybridRecommender,
    user_id: str | None,
    k: int,
    exclude_seen: bool,
    exact: bool,
    history: Any,
    user_features: Mapping | None,
    items: Any,
    exclude: Any,
    exact_items: int,
    min_candidates: int,
) -> tuple[list[str], np.ndarray]:
    """recommend() for known users, unknown users and nobody (see HybridRecommender.recommend)."""
    allow = None if items is None else item_rows(rec, items, "items")
    deny = np.zeros(0, np.int64) if exclude is None else item_rows(rec, exclude, "exclude")
    if user_features is not None and not isinstance(user_features, Mapping):
        raise QueryError(f"user_features must be a mapping of name to value, got {type(user_features).__name__}")
    if user_id is not None and (user_id in rec.users_ or (history is None and user_features is None)):
        q = known_user(rec, rec.users_.index(user_id), exclude_seen)  # an unknown id with nothing else: QueryError
    else:
        parsed = parse_history(rec, history) if history is not None else History(np.zeros(0, np.int64), None)
        if not len(parsed.rows) and not user_features:
            return popular(rec, k, allow, deny)
        q = unknown_user(rec, parsed, user_features, exclude_seen)
    return top_k(rec, q, k, exact, allow, deny, exact_items, min_candidates)


def recommend_batch(
    rec: HybridRecommender, user_ids: Any, k: int, items: Any, exclude: Any, exclude_seen: bool
) -> pd.DataFrame:
    """Top-k for many known users, scored a block of users at a time over the whole catalogue (or the
    allow-list): one matrix product per block instead of one query per user."""
    import pandas as pd

    rows = user_rows(rec, user_ids)
    allow = None if items is None else np.unique(item_rows(rec, items, "items"))
    deny = np.zeros(0, np.int64) if exclude is None else item_rows(rec, exclude, "exclude")
    n_items = len(rec.items_)
    columns = np.arange(n_items) if allow is None else allow
    blocked = blocked_rows(rec, deny)[columns]
    position = np.full(n_items, -1, np.int64)
    position[columns] = np.arange(len(columns))
    kk = min(k, len(columns))
    block = max(1, min(4096, BATCH_CELLS // max(len(columns), 1)))
    out_users, out_ranks, out_items, out_scores = [], [], [], []
    for start in range(0, len(rows), block):
        users = rows[start : start + block]
        scores = rec.score_matrix(users, None if allow is None else columns)
        scores[:, blocked] = -np.inf
        if exclude_seen:
            seen = rec.seen_.sparse(users, n_items).tocoo()
            cols = position[seen.col]
            mine = cols >= 0
            scores[seen.row[mine], cols[mine]] = -np.inf
        if kk == 0:
            continue
        if kk < len(columns):
            part = np.sort(np.argpartition(-scores, kk - 1, axis=1)[:, :kk], axis=1)  # ties: catalogue order
        else:
            part = np.tile(np.arange(len(columns)), (len(users), 1))
        part_scores = np.take_along_axis(scores, part, axis=1)
        order = np.argsort(-part_scores, axis=1, kind="stable")
        top = np.take_along_axis(part, order, axis=1)
        top_scores = np.take_along_axis(part_scores, order, axis=1)
        valid = np.isfinite(top_scores)
        user_of = np.repeat(np.arange(len(users)), kk).reshape(len(users), kk)
        rank = np.tile(np.arange(1, kk + 1), (len(users), 1))
        out_users.append(users[user_of[valid]])
        out_ranks.append(rank[valid])
        out_items.append(columns[top[valid]])
        out_scores.append(top_scores[valid])
    if not out_users:
        return pd.DataFrame({"user_id": [], "rank": [], "item_id": [], "score": []}).astype(
            {"user_id": str, "rank": np.int64, "item_id": str, "score": np.float32}
        )
    users_all = np.concatenate(out_users)
    return pd.DataFrame(
        {
            "user_id": rec.users_.raws(users_all),
            "rank": np.concatenate(out_ranks).astype(np.int64),
            "item_id": rec.items_.raws(np.concatenate(out_items)),
            "score": np.concatenate(out_scores).astype(np.float32),
        }
    )


# ------------------------------------------------------------------------------------------------ retiring
def remove_items(rec: HybridRecommender, item_ids: Any) -> None:
    """Retire items: every query leaves them out from now on; the index marks them deleted. Retiring a retired
    item again does nothing; an unknown id is a QueryError (nothing is retired then)."""
    rows = item_rows(rec, item_ids, "remove_items")
    rec.retired_[rows] = True
    for index in (rec.index_, rec.trusted_index_):
        if index is not None:
            index.mark_deleted(rows)
