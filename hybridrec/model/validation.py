"""The per-epoch validation score in bounded memory and time, whatever the size of the validation split.

At most `train.validation_max_rows` validation rows are scored (a seeded subsample, the same rows every epoch;
0 = all), a chunk of VALIDATION_CHUNK rows at a time: neither the user tower nor the 100 sampled negatives per
row ever run over the whole split at once (100 negatives x 1e5 rows x 64 dims would be 2.6 GB per tensor).
Split out of the Trainer (model/train.py), which calls `validation_score` with the network in eval mode.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from hybridrec.model.train import Interactions, Trainer

VALIDATION_NEGATIVES = 100  # fixed negatives per validation pair (sampled AUC)
VALIDATION_CHUNK = 2048  # rows per chunk: two (rows x 100 x dim) float32 tensors, ~100 MB at dim 64


def capped(val: Interactions, max_rows: int, seed: int) -> Interactions:
    """`val`, or a seeded subsample of `max_rows` of its rows (in their order) when it has more (0: no cap)."""
    if max_rows <= 0 or len(val) <= max_rows:
        return val
    keep = np.sort(np.random.default_rng(seed + 2).choice(len(val), size=max_rows, replace=False))
    return type(val)(val.users[keep], val.items[keep], val.ratings[keep], val.weights[keep])


@torch.no_grad()
def validation_score(trainer: Trainer, val: Interactions) -> float:
    """Lower is better: RMSE for ratings, 1 - sampled AUC (100 fixed negatives per pair) for implicit data, over
    the (capped) validation rows. Wins and ties are counted exactly, so the chunking does not change the score."""
    val = capped(val, trainer.cfg.validation_max_rows, trainer.seed)
    device = trainer.device
    v_all, b_all = (torch.as_tensor(a, device=device) for a in trainer.all_item_vectors())
    negatives = None
    if trainer.loss_kind != "mse":
        rng = np.random.default_rng(trainer.seed + 1)
        negatives = rng.choice(trainer._validation_pool(val), size=(len(val), VALIDATION_NEGATIVES))
    squared, wins = 0.0, 0.0
    for start in range(0, len(val), VALIDATION_CHUNK):
        rows = slice(start, start + VALIDATION_CHUNK)
        i_idx = torch.as_tensor(val.items[rows], device=device)
        u, b_u = trainer.user_vectors(torch.as_tensor(val.users[rows], device=device))
        pred = trainer.net.head(u, b_u, v_all[i_idx], b_all[i_idx])
        if negatives is None:
            target = torch.as_tensor(np.array(val.ratings[rows]), device=device)
            squared += float(((pred - target) ** 2).double().sum())
            continue
        neg = torch.as_tensor(negatives[rows], device=device).reshape(-1)
        n = VALIDATION_NEGATIVES
        scores = trainer.net.head(u.repeat_interleave(n, 0), b_u.repeat_interleave(n, 0), v_all[neg], b_all[neg])
        scores = scores.view(-1, n)
        wins += float((pred.unsqueeze(-1) > scores).sum()) + 0.5 * float((pred.unsqueeze(-1) == scores).sum())
    if negatives is None:
        return float(np.sqrt(squared / len(val)))
    return float(1.0 - wins / (len(val) * VALIDATION_NEGATIVES))
