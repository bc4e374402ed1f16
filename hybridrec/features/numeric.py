"""Numeric columns (price, quantity, age...) as log1p + robust scale + a missing-value indicator."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

CLIP = 5.0


@dataclass
class NumericScaler:
    """Fitted on training items only; heavy-tailed prices become comparable after log1p and median/IQR scaling."""

    column: str
    log1p: bool
    median: float
    scale: float

    @classmethod
    def fit(cls, values: pd.Series, log1p: bool | None = None) -> NumericScaler:
        x = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)
        x = x[np.isfinite(x)]
        if log1p is None:
            log1p = bool(len(x)) and bool((x >= 0).all())
        if log1p:
            x = np.log1p(np.clip(x, 0, None))
        if not len(x):
            return cls(str(values.name), bool(log1p), 0.0, 1.0)
        q25, q50, q75 = np.percentile(x, [25, 50, 75])
        scale = float(q75 - q25) or float(np.std(x)) or 1.0
        return cls(str(values.name), bool(log1p), float(q50), scale)

    def transform(self, values: pd.Series) -> np.ndarray:
        """(n, 2) float32: the scaled value (0 when missing) and the missing flag."""
        x = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)
        missing = ~np.isfinite(x)
        x = np.where(missing, self.median if not self.log1p else np.expm1(self.median), x)
        if self.log1p:
            x = np.log1p(np.clip(x, 0, None))
        z = np.clip((x - self.median) / self.scale, -CLIP, CLIP)
        z[missing] = 0.0
        return np.stack([z, missing.astype(np.float64)], axis=1).astype(np.float32)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, payload: dict) -> NumericScaler:
        return cls(**payload)
