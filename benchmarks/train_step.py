"""What one training step and one epoch of the towers cost, on seeded synthetic data (issue 18, item 2).

    OMP_NUM_THREADS=1 nice -n 10 python -m benchmarks.train_step                  # 1e3 / 1e4 / 1e5 items
    OMP_NUM_THREADS=1 nice -n 10 python -m benchmarks.train_step --sizes 1e4 --threads 2

For each catalogue size, variant (id-only: ID embeddings only; hybrid: item text, numeric and two categorical
bags plus the user's history bag) and loss (BPR, sampled softmax) it builds a Trainer straight from arrays (no
feature pipeline, no text encoder) and times `Trainer.fit`:

- step: the second of two epochs over `--steps` batches (the first pays for allocation and optimiser state), in
  ms per step and samples/s;
- epoch: one fresh one-epoch fit over `--rows` rows, wall time (optimiser creation included), in samples/s.

Only the public Trainer constructor and `fit` are used, so the same file times any version of the model code.
Results are printed as a markdown table (benchmarks/results/train-step.md keeps the runs).
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch

from hybridrec.config import TrainConfig
from hybridrec.features.pipeline import EntityFeatures
from hybridrec.model.network import HybridNet, NetShape
from hybridrec.model.spec import TowerSpec
from hybridrec.model.train import Dropouts, HistoryInputs, Interactions, Trainer

SEED = 7
TEXT_DIM = 384  # a MiniLM sentence vector
HISTORY = 20  # history bag length (hybrid)
BRANDS, CATEGORIES, PATH = 1000, 500, 6  # one single-valued and one multi-valued (category path) column
LOSSES = {"bpr": {"batch_size": 512, "negatives": 4}, "sampled-softmax": {"batch_size": 1024, "negatives": 1024}}


def synthetic(n_items: int, rows: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(users, items) of `rows` interactions: power-law item popularity, twice as many users as items."""
    n_users = 2 * n_items
    popularity = 1.0 / np.arange(1, n_items + 1) ** 0.8
    items = rng.choice(n_items, size=rows, p=popularity / popularity.sum())
    users = rng.integers(0, n_users, size=rows)
    return users, items


def item_features(n_items: int, hybrid: bool, rng: np.random.Generator) -> tuple[EntityFeatures, TowerSpec]:
    if not hybrid:
        return EntityFeatures(np.zeros((n_items, 0), np.float32), np.zeros((n_items, 0), np.float32)), TowerSpec()
    text = rng.normal(size=(n_items, TEXT_DIM)).astype(np.float32)
    numeric = rng.normal(size=(n_items, 2)).astype(np.float32)
    brand = rng.integers(1, BRANDS, size=(n_items, 1))
    path = rng.integers(1, CATEGORIES, size=(n_items, PATH))
    path[:, 3:] *= rng.random((n_items, PATH - 3)) < 0.5  # paths of 3 to 6 levels (0 pads)
    spec = TowerSpec(TEXT_DIM, 2, (BRANDS, CATEGORIES))
    return EntityFeatures(text, numeric, [brand, path]), spec


def history_tokens(users: np.ndarray, items: np.ndarray, n_users: int) -> np.ndarray:
    """Each user's last HISTORY items (item row + 1, 0 pads), most recent first."""
    tokens = np.zeros((n_users, HISTORY), dtype=np.int64)
    fill = np.zeros(n_users, dtype=np.int64)
    for u, i in zip(users[::-1], items[::-1]):
        if fill[u] < HISTORY:
            tokens[u, fill[u]] = i + 1
            fill[u] += 1
    return tokens


def trainer(
    n_items: int, variant: str, loss: str, users: np.ndarray, items: np.ndarray, epochs: int, threads: int = 1
) -> Trainer:
    rng = np.random.default_rng(SEED)
    hybrid = variant == "hybrid"
    n_users = 2 * n_items
    item_feats, item_spec = item_features(n_items, hybrid, rng)
    user_feats = EntityFeatures(np.zeros((n_users, 0), np.float32), np.zeros((n_users, 0), np.float32))
    user_spec = TowerSpec(history_items=n_items if hybrid else 0, history_positions=HISTORY if hybrid else 0)
    shape = NetShape(variant=variant, dim=64, hidden=128, dropout=0.1)
    net = HybridNet(n_users, n_items, item_spec, user_spec, shape, 0.0)
    settings = TrainConfig(
        loss=loss, epochs=epochs, early_stopping=False, device="cpu", threads=threads, **LOSSES[loss]
    )
    history = HistoryInputs(history_tokens(users, items, n_users)) if hybrid else None
    item_has_id = np.ones(n_items, dtype=bool)
    user_has_id = np.ones(n_users, dtype=bool)
    dropouts = Dropouts(item_id=0.1 if hybrid else 0.0)
    device = torch.device("cpu")
    return Trainer(
        net, item_feats, user_feats, item_has_id, user_has_id, settings, loss, dropouts, SEED, device, None, history
    )


def rows_of(users: np.ndarray, items: np.ndarray) -> Interactions:
    n = len(users)
    return Interactions(users, items, np.ones(n, dtype=np.float32), np.ones(n, dtype=np.float32))


def measure(n_items: int, variant: str, loss: str, steps: int, rows: int, threads: int) -> dict:
    rng = np.random.default_rng(SEED)
    batch = LOSSES[loss]["batch_size"]
    users, items = synthetic(n_items, max(rows, steps * batch), rng)
    torch.manual_seed(SEED)
    small = trainer(n_items, variant, loss, users, items, 2, threads)
    result = small.fit(rows_of(users[: steps * batch], items[: steps * batch]), None)
    step_s = result.history[-1]["seconds"] / steps
    full = trainer(n_items, variant, loss, users, items, 1, threads)
    started = time.perf_counter()
    full.fit(rows_of(users[:rows], items[:rows]), None)
    epoch_s = time.perf_counter() - started
    return {"step_ms": 1000 * step_s, "step_sps": batch / step_s, "epoch_s": epoch_s, "epoch_sps": rows / epoch_s}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="1e3,1e4,1e5", help="comma list of catalogue sizes")
    p.add_argument("--variants", default="id-only,hybrid")
    p.add_argument("--losses", default="bpr,sampled-softmax")
    p.add_argument("--steps", type=int, default=20, help="batches in the timed step epoch")
    p.add_argument("--rows", type=int, default=20000, help="rows of the timed epoch")
    p.add_argument("--threads", type=int, default=1, help="torch threads (train.threads)")
    p.add_argument("--batch", type=int, default=0, help="batch size for every loss (0: each loss's own)")
    p.add_argument("--negatives", type=int, default=0, help="negatives for every loss (0: each loss's own)")
    args = p.parse_args()
    for key, value in (("batch_size", args.batch), ("negatives", args.negatives)):
        for settings in LOSSES.values() if value else ():
            settings[key] = value
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), {platform.processor() or platform.machine()}")
    print(f"steps {args.steps}, epoch rows {args.rows}, dim 64, hidden 128; batch/negatives {LOSSES}")
    print("| items | variant | loss | step ms | step samples/s | epoch s | epoch samples/s |")
    print("|---|---|---|---|---|---|---|")
    for size in (int(float(s)) for s in args.sizes.split(",")):
        for variant in args.variants.split(","):
            for loss in args.losses.split(","):
                r = measure(size, variant, loss, args.steps, args.rows, args.threads)
                print(
                    f"| {size:,} | {variant} | {loss} | {r['step_ms']:.1f} | {r['step_sps']:,.0f} | "
                    f"{r['epoch_s']:.2f} | {r['epoch_sps']:,.0f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
