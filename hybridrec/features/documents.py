"""Item documents: metadata text for every item, and review text from TRAINING interactions only."""

from __future__ import annotations

import pandas as pd

from hybridrec.data.dataset import FeatureSchema
from hybridrec.features.categorical import cell_values


def _clean(value: object) -> str:
    return " ".join(" ".join(cell_values(value)).split())


def metadata_documents(items: pd.DataFrame, schema: FeatureSchema, max_chars: int) -> list[str]:
    """Title, text columns and multi-valued labels (genres, tags): what a brand-new item also has."""
    parts = [c for c in [schema.title, *schema.text, *schema.multi, *schema.categorical] if c]
    frame = items.reindex(columns=parts)  # new items may lack some metadata columns: they count as empty
    docs = []
    for row in frame.itertuples(index=False):
        text = ". ".join(t for t in (_clean(v) for v in row) if t)
        docs.append(text[:max_chars])
    return docs


def review_documents(
    item_ids: list[str], train_interactions: pd.DataFrame, max_reviews: int, max_chars: int
) -> list[str]:
    """Up to max_reviews most recent training reviews per item, joined and truncated; '' when there are none.

    Only the interactions passed in are read, so the caller passes the training split: test reviews never leak.
    """
    reviews = train_interactions.loc[train_interactions["review"].str.len() > 0, ["item_id", "timestamp", "review"]]
    if reviews.empty:
        return [""] * len(item_ids)
    reviews = reviews.sort_values(["item_id", "timestamp"], ascending=[True, False], kind="stable")
    top = reviews.groupby("item_id", sort=False).head(max_reviews)
    joined = top.groupby("item_id", sort=False)["review"].agg(lambda s: " ".join(" ".join(s).split())[:max_chars])
    return [joined.get(i, "") for i in item_ids]
