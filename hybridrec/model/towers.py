"""Item and user towers: ID embedding plus content (text projection, numeric MLP, categorical bags), fused by sum.

The ID tables, the categorical bags and the history bag of SPARSE_MIN_ROWS rows or more give sparse gradients (only
the rows a batch looked up), so a training step costs what the batch touches rather than the whole catalogue
(train.py steps them with a row-wise optimiser)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from hybridrec.model.spec import TowerSpec

INIT_POSITION_LOGIT = math.log(math.e - 1.0)  # softplus of it is 1: every position starts with the same weight
# Tables this long or longer get sparse gradients. A batch looks up a few thousand rows; below ~1e4 rows one fused
# dense Adam step over the whole table is cheaper than coalescing and stepping those rows one by one (one thread,
# dim 64: 1e3-item hybrid BPR steps 65 ms dense against 109 ms sparse; at 1e5 items a sparse step is 5-16x faster
# than a dense one; benchmarks/results/train-step.md).
SPARSE_MIN_ROWS = 20_000
# ... and only while a step looks up fewer than 1 in SPARSE_SHARE of their rows: the sparse step costs what the
# lookups cost (a sort and a row-wise update of each), the dense one what the table costs, and the two meet near
# 1 in 8 (BPR at batch 512 with 4 negatives looks up 2,560 item rows: 8 x 2,560 ~ SPARSE_MIN_ROWS; at batch 65,536
# with one negative, a 63,000-item table steps 1.6x faster dense; benchmarks/results/train-step.md)
SPARSE_SHARE = 8
# The history bag's lookups (batch x bag width, pads included) meet its rows sooner: its sparse backward copies a
# gradient row per lookup. One thread, 128 wide, fused Adam against SparseAdam, forward + backward + step: 63,001
# rows sparse 12 / 25 / 44 ms against dense 20 / 20 / 25 ms at 6.2 / 3.1 / 1.5 rows a lookup; at 4096 x 100
# lookups 370 against 71 ms; 500,001 rows: sparse 145 against 195 ms at 4.9 rows a lookup, 655 against 257 at 1.2
# (benchmarks/results/train-step.md, "History bags").
BAG_SPARSE_SHARE = 4


def sparse_table(rows: int, lookups: int = 0, share: int | None = None) -> bool:
    """Whether a table of `rows` rows takes sparse gradients when a step looks up `lookups` of them (0: unknown,
    the row count alone decides): only while it has at least `share` (SPARSE_SHARE) rows a lookup."""
    return rows >= SPARSE_MIN_ROWS and rows >= (SPARSE_SHARE if share is None else share) * lookups


class UniformDropout(nn.Dropout):
    """nn.Dropout whose CPU mask comes from uniform floats: torch's CPU `bernoulli_` made dropout on a (49,800, 128)
    batch 2x slower, forward and backward (64 vs 32 ms). Same expectation; on a GPU, torch's own fused dropout."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0 or x.device.type != "cpu" or self.p >= 1:
            return super().forward(x)
        return x * torch.rand_like(x).ge_(self.p).mul_(1.0 / (1.0 - self.p))


class ContentEncoder(nn.Module):
    """Text, numeric and categorical inputs -> one vector and one bias; what a brand-new entity is scored from."""

    def __init__(self, spec: TowerSpec, hidden: int, dim: int, dropout: float):
        super().__init__()
        text_dim, numeric_dim, vocab_sizes = spec.text_dim, spec.numeric_dim, spec.vocab_sizes
        # the user's history bag: item row + 1 -> an embedding (0 pads), averaged, with one learned weight per
        # position (most recent first) when history_positions is set, so recent items can count more
        self.history = (
            nn.Embedding(spec.history_items + 1, hidden, padding_idx=0, sparse=sparse_table(spec.history_items + 1))
            if spec.history_items
            else None
        )
        if self.history is not None:
            nn.init.normal_(self.history.weight, std=0.05)
            with torch.no_grad():
                self.history.weight[0].zero_()
        self.position_logits = (
            nn.Parameter(torch.full((spec.history_positions,), INIT_POSITION_LOGIT))
            if spec.history_positions and spec.history_items
            else None
        )
        self.text = nn.Linear(text_dim, hidden) if text_dim else None
        self.numeric = nn.Sequential(nn.Linear(numeric_dim, hidden), nn.GELU()) if numeric_dim else None
        # a cell's values (0 pads) averaged by an EmbeddingBag, which skips the pads (and leaves them out of the
        # count: an empty cell is zeros) without an (n, width, hidden) copy
        self.bags = nn.ModuleList(
            nn.EmbeddingBag(size, hidden, mode="mean", padding_idx=0, sparse=sparse_table(size)) for size in vocab_sizes
        )
        for bag in self.bags:
            assert isinstance(bag, nn.EmbeddingBag)  # ModuleList items are typed as Module
            nn.init.normal_(bag.weight, std=0.05)
            with torch.no_grad():
                bag.weight[0].zero_()
        self.out = nn.Sequential(nn.LayerNorm(hidden), nn.GELU(), UniformDropout(dropout), nn.Linear(hidden, dim))
        self.bias = nn.Linear(hidden, 1)
        self.enabled = bool(text_dim or numeric_dim or vocab_sizes or self.history is not None)

    def forward(
        self,
        text: torch.Tensor,
        numeric: torch.Tensor,
        categorical: list[torch.Tensor],
        rows: torch.Tensor | None = None,
        history: tuple[torch.Tensor, torch.Tensor | None] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs are distinct entities; `rows` maps each output row to its input row (None: one to one).
        `history` = (tokens per output row, the token each row leaves out or None): the history bag, without
        the row's target item (a model that sees its target in the bag learns to copy, not to predict)."""

        def per_row(t: torch.Tensor) -> torch.Tensor:
            return t if rows is None else t[rows]

        parts = []
        if self.text is not None:
            parts.append(per_row(self._project_text(text)))
        if self.numeric is not None:
            parts.append(per_row(self.numeric(numeric)))
        for bag, idx in zip(self.bags, categorical):
            parts.append(per_row(_cell_mean(bag, idx)))
        if self.history is not None and history is not None:
            parts.append(self._history_bag(*history))
        # summed in place into the first part, which no backward reads (stacking then summing copied every part
        # forward and backward; a new tensor per sum is a fresh (rows, hidden) allocation each step)
        hidden = parts[0]
        for part in parts[1:]:
            hidden.add_(part)
        return self.out(hidden), self.bias(hidden).squeeze(-1)

    def _project_text(self, text: torch.Tensor) -> torch.Tensor:
        """The text projection. Text given in bfloat16 (training where bf16 products are native: train.precision)
        is projected in bfloat16 with the bias added in float32; the output is float32 either way. At batch 65,536
        over 63,000 items the float32 product and its weight gradient were ~35% of a hybrid step."""
        assert self.text is not None
        if text.dtype != torch.bfloat16:
            return self.text(text)
        return F.linear(text, self.text.weight.to(torch.bfloat16)).float().add_(self.text.bias)

    def _history_bag(self, tokens: torch.Tensor, leave_out: torch.Tensor | None) -> torch.Tensor:
        assert self.history is not None
        weight = (tokens > 0).float()
        if self.position_logits is not None:
            weight = weight * F.softplus(self.position_logits[: tokens.shape[1]])
        if leave_out is not None:
            weight = weight * (tokens != leave_out.unsqueeze(-1)).float()
        total = F.embedding_bag(
            tokens,
            self.history.weight,
            per_sample_weights=weight,
            mode="sum",
            sparse=self.history.sparse,
            padding_idx=0,
        )
        return _mean(total, weight.sum(1))


def _cell_mean(bag: nn.Module, idx: torch.Tensor) -> torch.Tensor:
    """Each cell's mean embedding (0 pads, an empty cell is zeros). A single-valued column is a plain lookup of the
    same rows (row 0 is zeros and never trained): 4x faster than the bag forward and backward at 47,000 cells."""
    assert isinstance(bag, nn.EmbeddingBag)  # ModuleList items are typed as Module
    if idx.shape[1] == 1:
        return F.embedding(idx[:, 0], bag.weight, padding_idx=0, sparse=bag.sparse)
    return bag(idx)


def _mean(total: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """A bag's weighted sum over its weight (0 for an empty bag)."""
    return torch.where(count.unsqueeze(-1) > 1e-6, total / count.clamp(min=1e-6).unsqueeze(-1), 0.0)


class Tower(nn.Module):
    """ID embedding + content vector. `keep_id` (per row, 0 or 1) hides the ID part: ID dropout and cold start."""

    def __init__(
        self, n_ids: int, spec: TowerSpec, use_id: bool, use_content: bool, hidden: int, dim: int, dropout: float
    ):
        super().__init__()
        self.use_id = use_id
        self.id_embedding = nn.Embedding(n_ids, dim, sparse=sparse_table(n_ids)) if use_id else None
        self.id_bias = nn.Embedding(n_ids, 1, sparse=sparse_table(n_ids)) if use_id else None
        if self.id_embedding is not None and self.id_bias is not None:
            nn.init.normal_(self.id_embedding.weight, std=0.05)
            nn.init.zeros_(self.id_bias.weight)
        content = ContentEncoder(spec, hidden, dim, dropout)
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
        history: tuple[torch.Tensor, torch.Tensor | None] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`rows` and `history` as in ContentEncoder.forward; `keep_id` is per output row."""
        out_ids = ids if rows is None else ids[rows]
        vec: torch.Tensor | None = None
        bias: torch.Tensor | None = None
        if self.id_embedding is not None and self.id_bias is not None:
            vec, bias = self.id_embedding(out_ids), self.id_bias(out_ids).squeeze(-1)
            if keep_id is not None:  # None: every ID shown (no mask pass forward or backward)
                vec, bias = vec * keep_id.unsqueeze(-1), bias * keep_id
        if self.content is not None:
            c_vec, c_bias = self.content(text, numeric, categorical, rows, history)
            vec, bias = (c_vec, c_bias) if vec is None or bias is None else (vec + c_vec, bias + c_bias)
        if vec is None or bias is None:  # neither part: zeros
            return torch.zeros(len(out_ids), self.dim, device=ids.device), torch.zeros(len(out_ids), device=ids.device)
        return vec, bias
