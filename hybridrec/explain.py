"""Why a user gets an item: the score split into parts that add up to it, plus what moved each part.

Parts (exact, they sum to the model's score): the global mean, the user bias, the item bias, the dot product
<u, v> split by the item vector's two halves (v = ID embedding + content encoder output, item tower), the MLP
residual when the model has one, and each recommend term at its fitted scale.

What moved them (effects, not parts; a nonlinear tower does not split into sums):

- behaviour: for the user tower's history bag, how much the score drops when one history item leaves the bag
  (everything else kept); for EASE, B[j, i] per history item j and for the content ridge, item j's projection
  row times item i's tokens, both at the term's scale (these two do add up to their term's part);
- content: for each feature group of the item (metadata text, review text, each numeric column, each
  categorical column), how much the score drops when that group's input is zeroed in the content encoder. The
  item-side changes are computed once at fit (`ContentEffects`), so explaining needs no item data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from hybridrec.features.pipeline import EntityFeatures, FeaturePipeline
    from hybridrec.model.network import HybridNet
    from hybridrec.recommender import HybridRecommender

TOP = 5  # history items listed per source
BLOCK = 4096  # items per forward pass when computing content effects
# content effects are items x groups x (dim + 1) floats kept in the model: past this many (64 MB), none are kept
# and explanations list no content groups
MAX_EFFECT_VALUES = 16_000_000


@dataclass
class FeatureGroup:
    """One ablatable input group of the item tower: a slice of the text or numeric block, or one categorical
    column (its index among the categorical inputs)."""

    name: str
    kind: str  # "text", "numeric" or "categorical"
    start: int
    stop: int


@dataclass
class ContentEffects:
    """Per item and feature group, (v - v_without_group, b - b_without_group): (n_items, groups, dim + 1)."""

    names: list[str]
    deltas: np.ndarray


def feature_groups(pipeline: FeaturePipeline, review_slice: tuple[int, int] | None) -> list[FeatureGroup]:
    """The item tower's input groups, named for people: the metadata text, the review text, each numeric column,
    each categorical, multi-valued, title-word or numeric-bin column."""
    from hybridrec.features.words import WORDS

    groups = []
    if pipeline.text_dim_:
        dim = (pipeline.text_dim_ - 1) // 2
        groups.append(FeatureGroup("text", "text", 0, dim))
        if review_slice is not None:
            groups.append(FeatureGroup("reviews", "text", review_slice[0], review_slice[1]))
    assert pipeline.items_ is not None  # fitted
    for k, scaler in enumerate(pipeline.items_.scalers):
        groups.append(FeatureGroup(scaler.column, "numeric", 2 * k, 2 * k + 2))
    for k, vocab in enumerate(pipeline.items_.vocabularies):
        name = "title words" if vocab.column == WORDS else vocab.column
        groups.append(FeatureGroup(name, "categorical", k, k + 1))
    return groups


def content_effects(
    net: HybridNet,
    feats: EntityFeatures,
    has_id: np.ndarray,
    review_slice: tuple[int, int] | None,
    groups: list[FeatureGroup],
    first_row: int = 0,
) -> ContentEffects | None:
    """The item tower run with each group zeroed, against the full input (reviews hidden for items without an
    ID, as in training). `first_row`: catalogue row of the first item (items added later have no ID row)."""
    import torch

    n = len(feats)
    dim = net.items.dim
    if net.items.content is None or not groups or n * len(groups) * (dim + 1) > MAX_EFFECT_VALUES:
        return None
    out = np.zeros((n, len(groups), dim + 1), np.float32)
    n_ids = net.items.id_embedding.num_embeddings if net.items.id_embedding is not None else 0
    was_training = net.training
    net.eval()
    with torch.no_grad():
        for start in range(0, n, BLOCK):
            sl = slice(start, min(start + BLOCK, n))
            rows = np.arange(sl.start, sl.stop) + first_row
            keep = torch.as_tensor(has_id[sl].astype(np.float32))
            ids = torch.as_tensor(np.where(has_id[sl] & (rows < n_ids), rows, 0))
            text = torch.as_tensor(feats.text[sl]).clone()
            if review_slice is not None and text.shape[1]:
                text[:, review_slice[0] : review_slice[1]] *= keep.unsqueeze(-1)
            numeric = torch.as_tensor(feats.numeric[sl])
            cats = [torch.as_tensor(c[sl]) for c in feats.categorical]
            v, b = net.items(ids, text, numeric, cats, keep)
            for g, group in enumerate(groups):
                t, x, c = text, numeric, list(cats)
                if group.kind == "text":
                    t = text.clone()
                    t[:, group.start : group.stop] = 0.0
                elif group.kind == "numeric":
                    x = numeric.clone()
                    x[:, group.start : group.stop] = 0.0
                else:
                    c[group.start] = torch.zeros_like(cats[group.start])
                v_g, b_g = net.items(ids, t, x, c, keep)
                out[sl, g, :dim] = (v - v_g).numpy()
                out[sl, g, dim] = (b - b_g).numpy()
    net.train(was_training)
    return ContentEffects([g.name for g in groups], out)


# ------------------------------------------------------------------------------------------------ explain
def item_id_part(rec: HybridRecommender, row: int) -> tuple[np.ndarray, float]:
    """The ID embedding's share of item `row`'s vector and bias (zero for items scored from content alone)."""
    dim = rec.towers_.item_vectors.shape[1]
    tower = rec.net.items
    if tower.id_embedding is None or tower.id_bias is None or not rec.item_has_id_[row]:
        return np.zeros(dim), 0.0
    if row >= tower.id_embedding.num_embeddings:
        return np.zeros(dim), 0.0
    vec = tower.id_embedding.weight[row].detach().numpy().astype(np.float64)
    return vec, float(tower.id_bias.weight[row, 0].detach())


def _residual(rec: HybridRecommender, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """The MLP residual of aligned rows of user and item vectors (zeros without one)."""
    residual = rec.towers_.residual
    if residual is None:
        return np.zeros(len(u))
    return np.asarray(residual(u.astype(np.float32), v.astype(np.float32)), np.float64)


def _listed(rec: HybridRecommender, rows: np.ndarray, effects: np.ndarray, top: int) -> list[dict]:
    order = np.argsort(-effects, kind="stable")[:top]
    return [
        {"item_id": rec.items_.raw(rows[j]), "title": rec.display_[rows[j]][0], "effect": round(float(effects[j]), 6)}
        for j in order
    ]


def bag_effects(rec: HybridRecommender, u_row: int, v: np.ndarray, top: int) -> list[dict]:
    """How much the score drops when each of the user's history-bag items leaves the bag."""
    import torch

    bag = getattr(rec, "bag_", None)
    length = rec.config.model.user_history.length
    if bag is None or not length or not rec.user_spec_.history_items:
        return []
    tokens = bag.tokens(length, np.array([u_row]))[0]
    present = np.flatnonzero(tokens > 0)
    if not len(present):
        return []
    batch = np.tile(tokens, (len(present) + 1, 1))
    batch[np.arange(1, len(present) + 1), present] = 0  # row 0: the full bag; row p + 1: without position p
    n = len(batch)
    inputs = getattr(rec, "user_inputs_", None)
    if inputs is None:  # a model saved without its users' feature inputs: the bag cannot be rerun exactly
        return []
    with torch.no_grad():
        c, b = rec.net.users(
            torch.zeros(n, dtype=torch.long),
            torch.zeros((n, 0)),
            torch.as_tensor(np.repeat(inputs.numeric[u_row : u_row + 1], n, 0)),
            [torch.as_tensor(np.repeat(cat[u_row : u_row + 1], n, 0)) for cat in inputs.categorical],
            torch.zeros(n),
            history=(torch.as_tensor(batch), None),
        )
    c64, b64 = c.numpy().astype(np.float64), b.numpy().astype(np.float64)
    u = rec.towers_.user_vectors[u_row].astype(np.float64)
    without = u[None] - (c64[0][None] - c64[1:])  # the user's vector with one item fewer in the bag
    effects = (u - without) @ v + (b64[0] - b64[1:])
    effects += _residual(rec, u[None], v[None])[0] - _residual(rec, without, np.repeat(v[None], len(without), 0))
    return _listed(rec, tokens[present] - 1, effects, top)


def term_effects(rec: HybridRecommender, u_row: int, i_row: int, top: int) -> dict[str, list[dict]]:
    """Per recommend term that reads the user's history, each history item's share of the term's part."""
    out: dict[str, list[dict]] = {}
    for term in rec._recommend_terms():
        history = getattr(term, "history", None)
        if history is None:
            continue
        rows = history.of(u_row)
        if term.type == "ease":
            shares = np.asarray(term.weights[rows, i_row], np.float64)  # type: ignore[attr-defined]
        elif term.type == "content_ridge":
            tokens = term.tokens[i_row]  # type: ignore[attr-defined]
            shares = np.asarray(tokens @ term.projection[rows].T, np.float64).ravel()  # type: ignore[attr-defined]
        else:
            continue
        out[term.type] = _listed(rec, rows, term.scale * shares, top)
    return out


def explain(rec: HybridRecommender, user_id: str, item_id: str, top: int = TOP) -> dict:
    """See HybridRecommender.explain."""
    u_row, i_row = rec.users_.index(user_id), rec.items_.index(item_id)
    towers = rec.towers_
    u = towers.user_vectors[u_row].astype(np.float64)
    v = towers.item_vectors[i_row].astype(np.float64)
    v_id, b_id = item_id_part(rec, i_row)
    parts: dict[str, float] = {
        "global_mean": float(towers.global_mean),
        "user_bias": float(towers.user_bias[u_row]),
        "item_bias": float(towers.item_bias[i_row]),
        "dot_item_id": float(u @ v_id),
        "dot_item_content": float(u @ (v - v_id)),
    }
    if towers.residual is not None:
        parts["mlp_residual"] = float(_residual(rec, u[None], v[None])[0])
    for term in rec._recommend_terms():
        parts[f"term:{term.type}"] = float(term.scale * term.score(np.array([u_row]), np.array([i_row]))[0, 0])
    score = float(rec.score_pairs(np.array([u_row]), np.array([i_row]))[0])
    content = []
    effects = getattr(rec, "content_effects_", None)
    if effects is not None:
        deltas = effects.deltas[i_row].astype(np.float64)
        dim = len(v)
        change = deltas[:, :dim] @ u + deltas[:, dim]
        without = v[None] - deltas[:, :dim]
        change += _residual(rec, u[None], v[None])[0] - _residual(rec, np.repeat(u[None], len(without), 0), without)
        order = np.argsort(-np.abs(change), kind="stable")
        content = [{"group": effects.names[g], "effect": round(float(change[g]), 6)} for g in order]
    return {
        "user_id": rec.users_.raw(u_row),
        "item_id": rec.items_.raw(i_row),
        "title": rec.display_[i_row][0],
        "score": score,
        "parts": parts,
        "sum_of_parts": float(sum(parts.values())),
        "item_bias_split": {"id": b_id, "content": float(towers.item_bias[i_row]) - b_id},
        "behaviour": {"history_bag": bag_effects(rec, u_row, v, top), **term_effects(rec, u_row, i_row, top)},
        "content": content,
        "notes": (
            "parts add up to score (the unclipped blend). behaviour: how much the score drops without each history"
            " item (history_bag), or each history item's share of a term's part. content: how much the score drops"
            " when the item's feature group is zeroed."
        ),
    }
