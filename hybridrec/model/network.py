"""The joint network: score = mu + b_u + b_i + <u, v_i> (+ an optional MLP residual on (u, v, u*v))."""

from __future__ import annotations

import torch
from torch import nn

from hybridrec.config import ModelConfig
from hybridrec.model.item_item import ItemItemWeights
from hybridrec.model.towers import Tower

VARIANTS = {"hybrid": (True, True), "id-only": (True, False), "content-only": (False, True)}


class HybridNet(nn.Module):
    """A dot product between user and item towers keeps item vectors in a metric space worth indexing."""

    def __init__(
        self, n_users: int, n_items: int, item_spec: dict, user_spec: dict, cfg: ModelConfig, global_mean: float
    ):
        super().__init__()
        use_item_id, use_item_content = VARIANTS[cfg.variant]
        self.items = Tower(n_items, item_spec, use_item_id, use_item_content, cfg.hidden, cfg.dim, cfg.dropout)
        # Users always have an ID embedding; user features (age, occupation...) add to it when present.
        self.users = Tower(n_users, user_spec, True, True, cfg.hidden, cfg.dim, cfg.dropout)
        self.register_buffer("global_mean", torch.tensor(float(global_mean)))
        self.feature_dropout = cfg.feature_dropout
        self.residual = (
            nn.Sequential(nn.Linear(3 * cfg.dim, cfg.hidden), nn.GELU(), nn.Linear(cfg.hidden, 1))
            if cfg.mlp_residual
            else None
        )
        # user_spec["history_slot"]: the user column holding the history bag, whose tokens index W's rows
        slot = user_spec.get("history_slot")
        self.item_item = (
            ItemItemWeights(user_spec["vocab_sizes"][slot], n_items) if cfg.item_item and slot is not None else None
        )
        if self.residual is not None:
            nn.init.zeros_(self.residual[-1].weight)
            nn.init.zeros_(self.residual[-1].bias)

    def head(self, u: torch.Tensor, b_u: torch.Tensor, v: torch.Tensor, b_i: torch.Tensor) -> torch.Tensor:
        """Score rows of (user, item) pairs from tower outputs."""
        score = self.global_mean + b_u + b_i + (u * v).sum(-1)
        if self.residual is not None:
            score = score + self.residual(torch.cat([u, v, u * v], dim=-1)).squeeze(-1)
        return score
