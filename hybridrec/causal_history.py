"""Per-training-row histories: the user's items before that row, most recent first (model.history_causal).

The history bag normally holds a user's latest training items, minus the target. For a row in the middle of a
user's timeline that bag is full of items chosen *after* it, so the model learns what a user's whole history says,
not what comes next. With causal histories each row sees only what its user had before it: the same view the
served bag gives for the user's next item, so recency (model.history_recency) and the item-item term learn
"after j comes i".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch


@dataclass(frozen=True)
class CausalHistories:
    """Users' item tokens in one flat array, each user's block most recent first (then `length` zeros of padding),
    and for every training row where its own history starts and its user's block ends."""

    tokens: torch.Tensor  # int64, PAD (0) after the last block
    starts: torch.Tensor  # per training row: index in `tokens` of the user's item just before this row
    ends: torch.Tensor  # per training row: end (exclusive) of its user's block
    length: int

    def to(self, device: torch.device) -> CausalHistories:
        return CausalHistories(self.tokens.to(device), self.starts.to(device), self.ends.to(device), self.length)

    def rows(self, batch: torch.Tensor) -> torch.Tensor:
        """(len(batch), length) history tokens of those training rows, PAD past the start of the timeline."""
        idx = self.starts[batch].unsqueeze(1) + torch.arange(self.length, device=batch.device)
        return torch.where(idx < self.ends[batch].unsqueeze(1), self.tokens[idx], 0)


def latest_first(users: np.ndarray, timestamps: np.ndarray) -> np.ndarray:
    """Row order that groups each user's rows, most recent first; ties keep row order (a stable sort of the
    timestamp descending). The served history bag and the causal training histories both read this one order."""
    frame = pd.DataFrame({"user": users, "ts": timestamps})
    return frame.sort_values(["user", "ts"], ascending=[True, False], kind="stable").index.to_numpy()


def causal_histories(
    users: np.ndarray, timestamps: np.ndarray, item_tokens: np.ndarray, length: int
) -> CausalHistories:
    """Order each user's rows as the served bag does (latest first; ties keep row order, as in a stable sort of
    the timestamp descending) and point every row at the rows after it in that order."""
    n = len(users)
    order = latest_first(users, timestamps)
    sorted_users = users[order]
    block_end = np.empty(n, np.int64)
    if n:
        boundaries = np.flatnonzero(np.diff(sorted_users)) + 1
        ends_of_blocks = np.append(boundaries, n)
        block_end = np.repeat(ends_of_blocks, np.diff(np.concatenate([[0], ends_of_blocks])))
    starts, ends = np.empty(n, np.int64), np.empty(n, np.int64)
    starts[order] = np.arange(n) + 1
    ends[order] = block_end
    tokens = np.concatenate([item_tokens[order].astype(np.int64), np.zeros(length, np.int64)])
    return CausalHistories(torch.as_tensor(tokens), torch.as_tensor(starts), torch.as_tensor(ends), length)
