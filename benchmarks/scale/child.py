"""One model's work in its own process, so its peak RSS and threads are its own:

  python -m benchmarks.scale.child peer MODEL DATA_DIR WORK_DIR OUT_JSON [--epochs N] [--seed S]
      fit a peer (als, lightfm, ease) on the training rows; time read, train, evaluate, save and load; measure
      in-process `similar` latencies and recall@10.
  python -m benchmarks.scale.child hybridrec MODEL_DIR DATA_DIR OUT_JSON
      load a saved hybridrec model (timed), then the same latencies and recall@10.

The parent sets one thread (OMP/BLAS environment); BLAS pools are capped here as well.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from benchmarks.scale.common import (
    K,
    Split,
    folder_bytes,
    latencies,
    load_split,
    recall_at_k,
    similar_queries,
    write_json,
)

PEERS = ("als", "lightfm", "ease")
DIM = 64
DEFAULT_EPOCHS = {"als": 15, "lightfm": 30}
EASE_LAMBDA = 500.0


def unit_rows(m: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(m, axis=1, keepdims=True)
    return (m / np.where(norm > 0, norm, 1.0)).astype(np.float32)


def top_similar(sims: np.ndarray, item: int, k: int = K) -> np.ndarray:
    s = np.array(sims, dtype=np.float32)
    s[item] = -np.inf
    top = np.argpartition(-s, k)[:k]
    return top[np.argsort(-s[top])]


def fit_peer(name: str, split: Split, epochs: int, seed: int) -> dict[str, np.ndarray]:
    """The arrays a peer's scores and neighbours come from (saved with np.savez: no pickles)."""
    x = split.train
    if name == "als":
        from implicit.cpu.als import AlternatingLeastSquares

        als = AlternatingLeastSquares(
            factors=DIM, regularization=0.1, alpha=10.0, iterations=epochs, random_state=seed, num_threads=1
        )
        als.fit(x, show_progress=False)
        return {"user": np.asarray(als.user_factors), "item": np.asarray(als.item_factors)}
    if name == "lightfm":
        from lightfm import LightFM

        lfm = LightFM(
            no_components=DIM, loss="warp", learning_rate=0.05, item_alpha=1e-6, user_alpha=1e-6, random_state=seed
        )
        lfm.fit(x.tocoo(), epochs=epochs, num_threads=1)
        item_bias, item = lfm.get_item_representations()
        user_bias, user = lfm.get_user_representations()
        return {"user": user, "item": item, "user_bias": user_bias, "item_bias": item_bias}
    if name == "ease":
        gram = (x.T @ x).toarray().astype(np.float64)
        gram[np.diag_indices_from(gram)] += EASE_LAMBDA
        p = np.linalg.inv(gram)
        del gram
        b = -p / np.diag(p)
        b[np.diag_indices_from(b)] = 0.0
        return {"b": b.astype(np.float32)}
    raise ValueError(f"unknown peer {name!r}")


class PeerScorer:
    """Scores and neighbours of a fitted peer's arrays."""

    def __init__(self, arrays: dict[str, np.ndarray], split: Split):
        self.a, self.x = arrays, split.train
        self.unit = unit_rows(arrays["item"]) if "item" in arrays else None

    def scores(self, users: np.ndarray) -> np.ndarray:
        a = self.a
        if "b" in a:
            return np.asarray(self.x[users] @ a["b"])
        out = a["user"][users] @ a["item"].T
        if "item_bias" in a:
            out = out + a["user_bias"][users, None] + a["item_bias"][None, :]
        return out

    def similar(self, item: int) -> np.ndarray:
        sims = self.a["b"][item] if self.unit is None else self.unit @ self.unit[item]
        return top_similar(sims, item)


class Clock:
    """`with clock(stage):` adds the block's wall and CPU seconds to out["stages"] and out["stages_cpu"]."""

    def __init__(self, out: dict):
        self.out = out

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        wall, cpu = time.perf_counter(), time.process_time()
        yield
        self.out["stages"][stage] = time.perf_counter() - wall
        self.out["stages_cpu"][stage] = time.process_time() - cpu


def run_peer(name: str, data: Path, work: Path, epochs: int | None, seed: int) -> dict:
    from threadpoolctl import threadpool_limits

    out: dict = {"model": name, "stages": {}, "stages_cpu": {}}
    clock = Clock(out)
    with threadpool_limits(1):
        with clock("read"):
            split = load_split(data)
        n_epochs = DEFAULT_EPOCHS.get(name, 1) if epochs is None else epochs
        with clock("train"):
            arrays = fit_peer(name, split, n_epochs, seed)
        if name != "ease":
            out["epochs"] = n_epochs
            out["samples_per_second"] = split.n_train * n_epochs / out["stages"]["train"]
        with clock("evaluate"):
            out.update(recall_at_k(split, PeerScorer(arrays, split).scores))
        path = work / f"{name}.npz"
        with clock("save"):
            np.savez(path, **arrays)  # type: ignore[arg-type]  # numpy's stub types **kwds as allow_pickle
        del arrays
        t = time.perf_counter()
        with np.load(path, allow_pickle=False) as z:
            loaded = {k: z[k] for k in z.files}
        scorer = PeerScorer(loaded, split)
        out["load_seconds"] = time.perf_counter() - t
        out["model_bytes"] = folder_bytes(path)
        out.update(latencies(scorer.similar, similar_queries(split)))
        path.unlink()
    out["n_train"] = split.n_train
    return out


def run_hybridrec(model_dir: Path, data: Path) -> dict:
    """Load time, latencies and recall@10 of a saved hybridrec model, scored on the generator's id order."""
    t = time.perf_counter()
    split = load_split(data)
    read = time.perf_counter() - t
    from hybridrec.recommender import HybridRecommender

    t = time.perf_counter()
    rec = HybridRecommender.load(model_dir)
    load = time.perf_counter() - t
    item_rows = rec.items_.indices([str(i) for i in range(split.n_items)])
    user_rows = np.full(split.n_users, -1, np.int64)
    user_rows[split.users] = rec.users_.indices([str(u) for u in split.users])

    out: dict = {"load_seconds": load, "eval_read_seconds": read, "model_bytes": folder_bytes(model_dir)}
    out["query_item"] = int(split.popular[0])  # what the parent times `hybridrec similar` on
    t = time.perf_counter()
    out.update(latencies(lambda i: rec.similar_items(str(i), K), similar_queries(split)))
    out["similar_seconds_total"] = time.perf_counter() - t
    t = time.perf_counter()
    out.update(recall_at_k(split, lambda users: rec.score_matrix(user_rows[users], item_rows)))
    out["recall_seconds"] = time.perf_counter() - t
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="mode", required=True)
    peer = sub.add_parser("peer")
    peer.add_argument("model", choices=PEERS)
    peer.add_argument("data", type=Path)
    peer.add_argument("work", type=Path)
    peer.add_argument("out", type=Path)
    peer.add_argument("--epochs", type=int)
    peer.add_argument("--seed", type=int, default=42)
    hyb = sub.add_parser("hybridrec")
    hyb.add_argument("model_dir", type=Path)
    hyb.add_argument("data", type=Path)
    hyb.add_argument("out", type=Path)
    args = parser.parse_args(argv)
    if args.mode == "peer":
        record = run_peer(args.model, args.data, args.work, args.epochs, args.seed)
    else:
        record = run_hybridrec(args.model_dir, args.data)
    write_json(args.out, record)


if __name__ == "__main__":
    main()
