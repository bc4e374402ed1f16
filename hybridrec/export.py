"""Export a fitted model's vectors for a vector database or FAISS: Parquet tables keyed by raw ids.

`items.parquet`: item_id, title, price, category, in_training, bias, vector, interactions (training interactions:
similar items weigh a neighbour's cosine by n / (n + h), h = export.json's similar_evidence) and query_vector when
similar items query with a "bought with it" blend. `users.parquet`: user_id, bias, vector. Vectors are one
fixed-size list column of float32 (`vector`), so a table of any width reads back as one (n, dim) array.
`export.json` holds what turns them into the towers' score, `global_mean + user.bias + item.bias + <user.vector,
item.vector>`; the score terms (EASE, content ridge) and the MLP residual are not in the export.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from hybridrec.errors import QueryError
from hybridrec.similar import evidence_half

if TYPE_CHECKING:
    from hybridrec.recommender import HybridRecommender

FORMATS = ("parquet",)


def export_model(rec: HybridRecommender, out: str | Path, fmt: str = "parquet") -> dict[str, Path]:
    """Write the model's item and user vectors, biases and display columns into `out`.

    Parameters
    ----------
    rec : HybridRecommender
        A fitted or loaded recommender.
    out : path
        The folder to write into (created when missing); each file is written under a temporary name and renamed,
        so a reader never sees half a file.
    fmt : str
        "parquet" (the only format so far).

    Returns
    -------
    dict
        {"items": path, "users": path, "meta": path}.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from hybridrec.display import DISPLAY_COLUMNS

    if fmt not in FORMATS:
        raise QueryError(f"unknown export format {fmt!r} (choose from {', '.join(FORMATS)})")
    rec._check_fitted()
    towers = rec.towers_
    dim = int(towers.item_vectors.shape[1])
    title, price, category = ([row[j] for row in rec.display_] for j in range(len(DISPLAY_COLUMNS)))
    items = {
        "item_id": pa.array(rec.items_.raw_ids, pa.string()),
        "title": pa.array([None if t is None else str(t) for t in title], pa.string()),
        "price": pa.array([_price(p) for p in price], pa.float64()),
        "category": pa.array([None if c is None else str(c) for c in category], pa.string()),
        "in_training": pa.array(np.asarray(rec.item_has_id_, bool)),
        "bias": pa.array(np.asarray(towers.item_bias, np.float32)),
        "vector": _vectors(towers.item_vectors),
        "interactions": pa.array(np.asarray(rec.item_counts_, np.int64)),  # for similar items' evidence weight
    }
    if towers.item_queries is not None:
        items["query_vector"] = _vectors(towers.item_queries)
    users = {
        "user_id": pa.array(rec.users_.raw_ids, pa.string()),
        "bias": pa.array(np.asarray(towers.user_bias, np.float32)),
        "vector": _vectors(towers.user_vectors),
    }
    meta = {
        "format": "hybridrec-export",
        "version": 1,
        "model": getattr(rec, "origin_", {}).get("model"),
        "dim": dim,
        "global_mean": float(towers.global_mean),
        "score": "global_mean + user.bias + item.bias + dot(user.vector, item.vector)",
        "similar": "cosine of vectors (query_vector for the query item when present) x interactions / (interactions"
        " + similar_evidence)",
        "similar_evidence": evidence_half(rec),
        "not_exported": [t.type for t in rec.terms_] + (["mlp_residual"] if towers.residual is not None else []),
        "items": len(rec.items_),
        "users": len(rec.users_),
    }
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"items": folder / "items.parquet", "users": folder / "users.parquet", "meta": folder / "export.json"}
    _atomic(paths["items"], lambda p: pq.write_table(pa.table(items), p))
    _atomic(paths["users"], lambda p: pq.write_table(pa.table(users), p))
    _atomic(paths["meta"], lambda p: p.write_text(json.dumps(meta, indent=1)))
    return paths


def _vectors(matrix: np.ndarray):
    """An (n, dim) float32 matrix as one fixed-size list column (zero-copy both ways)."""
    import pyarrow as pa

    m = np.ascontiguousarray(matrix, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(m.reshape(-1)), m.shape[1])


def _price(value) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if np.isfinite(number) else None


def _atomic(path: Path, write) -> None:
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
