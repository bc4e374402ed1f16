"""Title and text words as a multi-valued categorical feature: trainable word embeddings beside the frozen sentence
embedding. A series name or an author's recurring title word ("potter", "discworld") ties a brand-new item to warm
ones more sharply than a sentence vector does (LightFM's cold-start recipe)."""

from __future__ import annotations

import re

import pandas as pd

from hybridrec.data.dataset import FeatureSchema
from hybridrec.features.categorical import cell_values

WORDS = "__words__"  # the derived column
MAX_WORDS = 64  # words kept per item, in order of first appearance


def words(text: str) -> list[str]:
    """Lower-case alphanumeric words of two or more characters, numbers dropped."""
    return [w for w in re.findall(r"[a-z0-9]+", text.lower()) if len(w) > 1 and not w.isdigit()]


def with_words(items: pd.DataFrame, schema: FeatureSchema) -> pd.DataFrame:
    """The table plus the WORDS column built from its title and text columns (missing columns count as empty)."""
    columns = [c for c in [schema.title, *schema.text] if c and c in items.columns]
    cells = []
    for row in items[columns].itertuples(index=False) if columns else [()] * len(items):
        text = " ".join(" ".join(cell_values(v, limit=10_000)) for v in row)
        cells.append(list(dict.fromkeys(words(text)))[:MAX_WORDS])
    out = items.copy()
    out[WORDS] = cells
    return out
