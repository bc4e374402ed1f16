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


@dataclass
class NumericBins:
    """A numeric column cut at its training quantiles, so a model can learn a free effect per range (a decade of
    release years, a price band) instead of one smooth curve; token models such as LightFM see numbers this way."""

    column: str
    edges: list[float]

    @property
    def name(self) -> str:
        return f"{self.column}#bin"

    @classmethod
    def fit(cls, values: pd.Series, bins: int) -> NumericBins:
        x = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)
        x = x[np.isfinite(x)]
        inner = np.quantile(x, np.linspace(0, 1, bins + 1)[1:-1]) if len(x) else np.array([])
        return cls(str(values.name), [float(e) for e in np.unique(inner)])

    def tokens(self, values: pd.Series) -> pd.Series:
        """One token per row ("bin0" below the first edge ... "binK" from the last edge on); None when missing."""
        x = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)
        index = np.searchsorted(np.asarray(self.edges), x, side="right")
        cells = [f"bin{k}" if np.isfinite(v) else None for k, v in zip(index, x, strict=True)]
        return pd.Series(cells, index=values.index, name=self.name, dtype=object)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, payload: dict) -> NumericBins:
        return cls(str(payload["column"]), [float(e) for e in payload["edges"]])
