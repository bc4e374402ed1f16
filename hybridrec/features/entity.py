"""The model inputs of a block of entities: a container with no pandas or text model behind it, so that loading a
saved model for a query imports neither (hybridrec/features/pipeline.py builds it and re-exports it)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class EntityFeatures:
    """Model inputs for a block of rows: text (n, t), numeric (n, m) and one index matrix per categorical column."""

    text: np.ndarray
    numeric: np.ndarray
    categorical: list[np.ndarray] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.numeric)
