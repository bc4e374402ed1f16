"""Full-rank item-to-item weights learned jointly with the towers (the SLIM / EASE idea inside the network).

A low-rank history bag cannot say "readers of book j read book i next" for every pair; on short histories and
co-purchase data that pairwise signal is what wins (EASE). W[t, i] is how much history token t raises item i; a
user's score for i is the sum over their history divided by sqrt(len) (FISM's alpha = 0.5), so longer histories
give sharper, not just larger, scores.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# vocab x catalogue floats (plus Adam's two moments): past this a dense W no longer fits a laptop
MAX_ITEMS = 20_000


class ItemItemWeights(nn.Module):
    """W: history vocabulary x item rows, zero at start so training begins from the tower model."""

    def __init__(self, vocab_size: int, n_items: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(vocab_size, n_items))

    def bag(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per row of history tokens (0 = padding): the summed rows of W and the number of history items."""
        present = (tokens > 0).float()
        sums = F.embedding_bag(tokens, self.weight, per_sample_weights=present, mode="sum")
        return sums, present.sum(1)

    @staticmethod
    def normalise(sums: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        return sums * counts.clamp(min=1.0).rsqrt().unsqueeze(-1)
