"""Item and user towers: ID embedding plus content (text projection, numeric MLP, categorical bags), fused by sum."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

INIT_POSITION_LOGIT = math.log(math.e - 1.0)  # softplus of it is 1: every position starts with the same weight


class ContentEncoder(nn.Module):
    """Text, numeric and categorical inputs -> one vector and one bias; what a brand-new entity is scored from."""

    def __init__(
        self,
        text_dim: int,
        numeric_dim: int,
        vocab_sizes: list[int],
        hidden: int,
        dim: int,
        dropout: float,
        positions: list[int] | None = None,
    ):
        super().__init__()
        # positions[k] > 0: column k is an ordered list (a history, most recent first) whose values are averaged
        # with one learned weight per position instead of equally, so recent items can count more.
        self.position_logits = nn.ParameterDict(
            {str(k): nn.Parameter(torch.full((n,), INIT_POSITION_LOGIT)) for k, n in enumerate(positions or []) if n}
        )
        self.text = nn.Linear(text_dim, hidden) if text_dim else None
        self.numeric = nn.Sequential(nn.Linear(numeric_dim, hidden), nn.GELU()) if numeric_dim else None
        self.bags = nn.ModuleList(nn.Embedding(size, hidden, padding_idx=0) for size in vocab_sizes)
        for bag in self.bags:
            nn.init.normal_(bag.weight, std=0.05)
            with torch.no_grad():
                bag.weight[0].zero_()
        self.out = nn.Sequential(nn.LayerNorm(hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim))
        self.bias = nn.Linear(hidden, 1)
        self.enabled = bool(text_dim or numeric_dim or vocab_sizes)

    def forward(
        self,
        text: torch.Tensor,
        numeric: torch.Tensor,
        categorical: list[torch.Tensor],
        rows: torch.Tensor | None = None,
        remove: tuple[int, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs are distinct entities; `rows` maps each output row to its input row (None: one to one).
        `remove` = (column, one value per output row): that value leaves the row's bag in that column (the target
        item leaves its user's history) without recomputing the bag per row."""

        def per_row(t: torch.Tensor) -> torch.Tensor:
            return t if rows is None else t[rows]

        parts = []
        if self.text is not None:
            parts.append(per_row(self.text(text)))
        if self.numeric is not None:
            parts.append(per_row(self.numeric(numeric)))
        for k, (bag, idx) in enumerate(zip(self.bags, categorical)):
            weight = (idx > 0).float()
            if str(k) in self.position_logits:
                weight = weight * F.softplus(self.position_logits[str(k)][: idx.shape[1]])  # cells fit the length
            total, count = per_row((bag(idx) * weight.unsqueeze(-1)).sum(1)), per_row(weight.sum(1))
            if remove is not None and remove[0] == k:
                value = remove[1]
                hit = ((per_row(idx) == value.unsqueeze(-1)).float() * per_row(weight)).sum(1)
                total = total - hit.unsqueeze(-1) * bag(value.clamp(min=0))
                count = count - hit
            parts.append(torch.where(count.unsqueeze(-1) > 1e-6, total / count.clamp(min=1e-6).unsqueeze(-1), 0.0))
        hidden = torch.stack(parts).sum(0)
        return self.out(hidden), self.bias(hidden).squeeze(-1)


class Tower(nn.Module):
    """ID embedding + content vector. `keep_id` (per row, 0 or 1) hides the ID part: ID dropout and cold start."""

    def __init__(self, n_ids: int, spec: dict, use_id: bool, use_content: bool, hidden: int, dim: int, dropout: float):
        super().__init__()
        self.use_id = use_id
        self.id_embedding = nn.Embedding(n_ids, dim) if use_id else None
        self.id_bias = nn.Embedding(n_ids, 1) if use_id else None
        if use_id:
            nn.init.normal_(self.id_embedding.weight, std=0.05)
            nn.init.zeros_(self.id_bias.weight)
        content = ContentEncoder(
            spec["text_dim"], spec["numeric_dim"], spec["vocab_sizes"], hidden, dim, dropout, spec.get("positions")
        )
        self.content = content if (use_content and content.enabled) else None
        self.dim = dim

    def forward(
        self,
        ids: torch.Tensor,
        text: torch.Tensor,
        numeric: torch.Tensor,
        categorical: list[torch.Tensor],
        keep_id: torch.Tensor | None = None,
        rows: torch.Tensor | None = None,
        remove: tuple[int, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`rows` and `remove` as in ContentEncoder.forward; `keep_id` is per output row."""
        out_ids = ids if rows is None else ids[rows]
        vec = torch.zeros(len(out_ids), self.dim, device=ids.device)
        bias = torch.zeros(len(out_ids), device=ids.device)
        if self.use_id:
            keep = torch.ones(len(out_ids), device=ids.device) if keep_id is None else keep_id
            vec = vec + self.id_embedding(out_ids) * keep.unsqueeze(-1)
            bias = bias + self.id_bias(out_ids).squeeze(-1) * keep
        if self.content is not None:
            c_vec, c_bias = self.content(text, numeric, categorical, rows, remove)
            vec, bias = vec + c_vec, bias + c_bias
        return vec, bias
