"""The joint network: score = mu + b_u + b_i + <u, v_i> (+ an optional MLP residual on (u, v, u*v))."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from hybridrec.model.towers import Tower, TowerSpec
from hybridrec.scoring.towers import head

VARIANTS = {"hybrid": (True, True), "id-only": (True, False), "content-only": (False, True)}


@dataclass(frozen=True)
class NetShape:
    """The network's own settings (from `model:` in the config)."""

    variant: str = "hybrid"
    dim: int = 64
    hidden: int = 128
    dropout: float = 0.3
    mlp_residual: bool = False

    @classmethod
    def of(cls, model_cfg) -> NetShape:
        c = model_cfg
        return cls(c.variant, c.dim, c.hidden, c.dropout, c.mlp_residual)


class HybridNet(nn.Module):
    """A dot product between user and item towers keeps item vectors in a metric space worth indexing."""

    def __init__(
        self,
        n_users: int,
        n_items: int,
        item_spec: TowerSpec,
        user_spec: TowerSpec,
        shape: NetShape,
        global_mean: float,
    ):
        super().__init__()
        use_item_id, use_item_content = VARIANTS[shape.variant]
        h, d, p = shape.hidden, shape.dim, shape.dropout
        self.items = Tower(n_items, item_spec, use_item_id, use_item_content, h, d, p)
        # Users always have an ID embedding; user features (age, occupation...) and the history bag add to it.
        self.users = Tower(n_users, user_spec, True, True, h, d, p)
        self.register_buffer("global_mean", torch.tensor(float(global_mean)))
        self.residual = nn.Sequential(nn.Linear(3 * d, h), nn.GELU(), nn.Linear(h, 1)) if shape.mlp_residual else None
        if self.residual is not None:  # starts as the plain dot product: the residual learns only what it adds
            last = self.residual[-1]
            assert isinstance(last, nn.Linear)  # Sequential items are typed as Module
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)

    def head(self, u: torch.Tensor, b_u: torch.Tensor, v: torch.Tensor, b_i: torch.Tensor) -> torch.Tensor:
        """Score rows of (user, item) pairs from tower outputs (scoring/towers.py holds the formula)."""
        score = head(self.global_mean, b_u, b_i, u, v)
        if self.residual is not None:
            score = score + self.residual_score(u, v)
        return score

    def residual_score(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        assert self.residual is not None
        return self.residual(torch.cat([u, v, u * v], dim=-1)).squeeze(-1)
