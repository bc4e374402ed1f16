"""Big catalogues: index build, model load, `similar` in-process and as a CLI process, at 1e5 and 5e5 items.

Fits a small dim-64 hybrid model (no text encoder, one epoch on a few rows) on a seeded synthetic catalogue of
N items whose titles, brands, categories and prices give every item its own content vector (most items are cold,
as in a real long tail), then times:

- the HNSW build over the model's item vectors with 1 and with 2 threads, and the recall@10 of each against the
  exact cosine neighbours of 200 seeded queries;
- the save, and the load of the saved folder in this process (after the imports);
- `similar_items` in this process, p50 / p99 over 1,000 seeded queries, on the model with no score terms (the
  index path) and on the one with the default co-occurrence term (the exact path, which blends catalogue-wide
  scores per query);
- `hybridrec similar ITEM` as a fresh process (wall time, median of 3), on both.

Run from the repository root (one torch thread; `nice` on a shared machine):

    OMP_NUM_THREADS=1 nice -n 10 python -m benchmarks.catalogue_scale --items 100000 500000 --label after

It appends a section to benchmarks/results/catalogue-scale.md with the command. Never part of the test run.
"""

from __future__ import annotations

import argparse
import inspect
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "catalogue-scale.md"
NOUNS = ["cable", "charger", "speaker", "drive", "adapter", "mouse", "keyboard", "case", "lens", "battery"]


def synthetic(n_items: int, n_rows: int, seed: int):
    """A catalogue of `n_items` (brand, category, price, title) and `n_rows` power-law interactions."""
    from hybridrec.data.dataset import Dataset, FeatureSchema

    rng = np.random.default_rng(seed)
    k = np.arange(n_items)
    brand = rng.zipf(1.3, n_items) % 2000
    category = rng.integers(0, 300, n_items)
    price = np.round(np.exp(rng.normal(3.0, 1.0, n_items)), 2)
    noun = np.asarray(NOUNS)[rng.integers(0, len(NOUNS), n_items)]
    items = pd.DataFrame(
        {
            "item_id": [f"P{i:07d}" for i in k],
            "title": [f"brand{b} {w} {i}" for b, w, i in zip(brand, noun, k)],
            "brand": [f"brand{b}" for b in brand],
            "category": [f"cat{c}" for c in category],
            "price": price,
        }
    )
    n_users = max(n_rows // 10, 10)
    popular = rng.permutation(n_items)[np.minimum(rng.zipf(1.2, n_rows) - 1, n_items - 1)]
    interactions = pd.DataFrame(
        {
            "user_id": [f"U{u}" for u in rng.integers(0, n_users, n_rows)],
            "item_id": items["item_id"].to_numpy()[popular],
            "rating": rng.integers(1, 6, n_rows).astype(float),
            "timestamp": rng.integers(1_400_000_000, 1_500_000_000, n_rows),
            "review": "",
        }
    )
    schema = FeatureSchema(title="title", numeric=["price"], categorical=["brand", "category"])
    return Dataset("catalogue-scale", interactions, items, item_schema=schema)


def fit(dataset, seed: int):
    from hybridrec.config import Config
    from hybridrec.recommender import HybridRecommender

    cfg = Config(seed=seed)
    cfg.features.text_encoder = "none"
    cfg.model.dim = 64
    cfg.model.terms = [{"type": "cooccurrence", "similar_weight": 0.9}]  # the default of a config naming none
    cfg.train.epochs = 1
    cfg.train.batch_size = 1024
    cfg.train.threads = 1
    return HybridRecommender(cfg).fit(dataset)


def build_times(rec, seed: int) -> dict:
    """The index build over the model's vectors with 1 and 2 threads, and each one's recall@10 of the exact
    cosine neighbours of 200 seeded items."""
    from hybridrec.index import ItemIndex

    vectors = np.ascontiguousarray(rec.towers_.item_vectors, np.float32)
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    queries = np.random.default_rng(seed).choice(len(vectors), 200, replace=False)
    exact = np.argsort(-(unit[queries] @ unit.T), axis=1)[:, :10]
    threaded = "threads" in inspect.signature(ItemIndex.build).parameters
    out = {}
    for threads in (1, 2):
        if threads > 1 and not threaded:
            out[threads] = None
            continue
        index = ItemIndex(rec.items_, vectors.shape[1])
        t0 = time.perf_counter()
        index.build(vectors, seed=seed, **({"threads": threads} if threaded else {}))
        seconds = time.perf_counter() - t0
        got, _ = index.query_rows(vectors[queries], 10)
        recall = np.mean([len(set(g) & set(e)) / 10 for g, e in zip(got, exact)])
        out[threads] = (seconds, float(recall))
    return out


def latencies(rec, ids: list[str]) -> tuple[float, float, float]:
    """p50 / p99 wall and p99 thread-CPU milliseconds of similar_items over `ids` (after 10 warm-up queries): on a
    shared machine the wall p99 is mostly waiting for a core, which the CPU time leaves out."""
    for item in ids[:10]:
        rec.similar_items(item, 10)
    times, cpu = [], []
    for item in ids:
        t0, c0 = time.perf_counter(), time.thread_time()
        rec.similar_items(item, 10)
        times.append((time.perf_counter() - t0) * 1000)
        cpu.append((time.thread_time() - c0) * 1000)
    return float(np.percentile(times, 50)), float(np.percentile(times, 99)), float(np.percentile(cpu, 99))


def cli_seconds(model: Path, item: str, runs: int = 3) -> float:
    """Median wall time of `hybridrec similar ITEM` as a fresh process (the same interpreter and PYTHONPATH)."""
    code = "import sys; from hybridrec_cli.main import app; sys.argv[0] = 'hybridrec'; app()"
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-c", code, "similar", item, "--model", str(model), "-k", "10"],
            capture_output=True,
            text=True,
            env=os.environ | {"OMP_NUM_THREADS": "1"},
        )
        times.append(time.perf_counter() - t0)
        if done.returncode:
            raise SystemExit(f"hybridrec similar failed: {done.stderr.strip()[-400:]}")
    return statistics.median(times)


def run_size(n_items: int, n_rows: int, seed: int, folder: Path) -> dict:
    from hybridrec.recommender import HybridRecommender

    dataset = synthetic(n_items, n_rows, seed)
    t0 = time.perf_counter()
    rec = fit(dataset, seed)
    fit_seconds = time.perf_counter() - t0
    builds = build_times(rec, seed)
    exact_dir, index_dir = folder / f"exact-{n_items}", folder / f"index-{n_items}"
    t0 = time.perf_counter()
    rec.save(exact_dir)
    save_seconds = time.perf_counter() - t0
    rec.config.model.terms = []  # the same towers and index with no similar term: `similar` is the index's answer
    rec.terms_ = []
    rec.save(index_dir)
    loads = []
    for _ in range(2):
        t0 = time.perf_counter()
        loaded = HybridRecommender.load(index_dir)
        loads.append(time.perf_counter() - t0)
    ids = list(np.random.default_rng(seed + 1).choice(loaded.items_.raw_ids, 1000, replace=False))
    index_p = latencies(loaded, ids)
    exact = HybridRecommender.load(exact_dir)
    exact_p = latencies(exact, ids[:200])
    return {
        "items": n_items,
        "rows": n_rows,
        "fit": fit_seconds,
        "fit_stats": rec.fit_stats_,
        "build": builds,
        "save": save_seconds,
        "load": min(loads),
        "index_p": index_p,
        "exact_p": exact_p,
        "cli_index": cli_seconds(index_dir, ids[0]),
        "cli_exact": cli_seconds(exact_dir, ids[0]),
        "import": import_seconds(),
    }


def import_seconds() -> float:
    """Wall time of a process that only imports the CLI (median of 3)."""
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import hybridrec_cli.main"], check=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def report(results: list[dict], label: str, command: str) -> str:
    def build(r: dict, threads: int) -> str:
        got = r["build"][threads]
        return "n/a (single-threaded build)" if got is None else f"{got[0]:.1f} s (recall@10 {got[1]:.3f})"

    lines = [
        f"## {label} ({time.strftime('%Y-%m-%d %H:%M')}, {platform.machine()}, {os.cpu_count()} cores, "
        f"load average {os.getloadavg()[0]:.1f} at the end: other jobs shared the cores)",
        "",
        f"`{command}`",
        "",
        "| items | fit (1 epoch) | build 1 thread | build 2 threads | save | load | similar p50 / p99, index "
        "| similar p50 / p99, exact (co-occurrence) | CLI similar, index | CLI similar, exact | CLI import |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['items']:,} | {r['fit']:.1f} s | {build(r, 1)} | {build(r, 2)} | {r['save']:.1f} s "
            f"| {r['load']:.2f} s | {r['index_p'][0]:.2f} / {r['index_p'][1]:.2f} ms (CPU p99 {r['index_p'][2]:.2f}) "
            f"| {r['exact_p'][0]:.1f} / {r['exact_p'][1]:.1f} ms | {r['cli_index']:.2f} s | {r['cli_exact']:.2f} s "
            f"| {r['import']:.2f} s |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, nargs="+", default=[100_000, 500_000])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--label", default="run")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--keep", type=Path, help="write the model folders here (kept) instead of a temp folder")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    results = []
    with tempfile.TemporaryDirectory(prefix="catalogue-scale-") as tmp:
        for n in args.items:
            results.append(run_size(n, args.rows, args.seed, args.keep or Path(tmp)))
            print(results[-1], flush=True)
    command = "python -m benchmarks.catalogue_scale " + " ".join(sys.argv[1:])
    text = report(results, args.label, command)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "a") as fh:
        fh.write(("" if args.out.exists() and args.out.stat().st_size else "# Catalogue scale\n\n") + text + "\n")


if __name__ == "__main__":
    main()
