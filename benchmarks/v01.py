"""The hybridrec 0.1 acceptance numbers on real data, written to benchmarks/results/v0.1.{md,jsonl}.

Run from the repository root (needs ../shared/data): python -m benchmarks.v01 [--quick]
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hybridrec_cli.job import fit_from_config

from hybridrec.config import load_config
from hybridrec.data.readers import read_dataset
from hybridrec.evaluation.holdout import co_view_truth, similar_precision
from hybridrec.recommender import HybridRecommender

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
TIMING_KEYS = {"feature_seconds", "train_seconds", "fit_seconds", "text_cache_hits", "text_cache_misses"}


def fit(config: str, out: Path, overrides: list[str]) -> dict:
    cfg = load_config(ROOT / config, overrides)
    report = fit_from_config(cfg, out, quiet=True)
    return {**report.metrics, **report.run}  # held-out metrics and the run's bookkeeping (fit_seconds, ...)


def movielens(out: Path, overrides: list[str]) -> list[dict]:
    rows = []
    for variant in ("hybrid", "id-only", "content-only"):
        m = fit("configs/movielens-100k.yaml", out, [f"model.variant={variant}", *overrides])
        rows.append(
            {
                "protocol": "ml-100k u1 rating",
                "variant": variant,
                "rmse": m["rmse"],
                "mae": m["mae"],
                "fit_seconds": m["fit_seconds"],
            }
        )
    for variant in ("hybrid", "content-only", "id-only"):
        m = fit(
            "configs/movielens-100k.yaml",
            out,
            [f"model.variant={variant}", "split.kind=cold-items", "split.test_fraction=0.2", *overrides],
        )
        rows.append(
            {
                "protocol": "ml-100k cold items (20% of items held out)",
                "variant": variant,
                "cold_auc": m["cold_auc"],
                "cold_recall@10": m["cold_recall@10"],
                "fit_seconds": m["fit_seconds"],
            }
        )
    return rows


def amazon_similar(out: Path, overrides: list[str]) -> list[dict]:
    cfg = load_config(ROOT / "configs/amazon.yaml", overrides)
    truth = co_view_truth(read_dataset(cfg).items)
    rows = []
    for variant in ("hybrid", "id-only", "content-only"):
        fit("configs/amazon.yaml", out, [f"model.variant={variant}", *overrides])
        rec = HybridRecommender.load(out / "amazon")
        rows.append(
            {
                "protocol": "amazon gift cards similar items P@10 (also_buy ∪ also_view, reviewed items)",
                "variant": variant,
                "precision@10": similar_precision(rec, truth, 10),
                "items_with_truth": sum(1 for v in truth.values() if v),
            }
        )
    return rows


def cache_and_seed(out: Path) -> list[dict]:
    cache = Path(tempfile.mkdtemp(prefix="hybridrec-cache-"))
    rows = []
    metrics = []
    for attempt in ("first fit (empty text cache)", "second fit (same config)"):
        t0 = time.perf_counter()
        m = fit("configs/default.yaml", out, [f"features.cache_dir={cache}"])
        rows.append(
            {
                "protocol": "demo fit time",
                "variant": attempt,
                "wall_seconds": round(time.perf_counter() - t0, 2),
                "text_cache_misses": m["text_cache_misses"],
                "text_cache_hits": m["text_cache_hits"],
            }
        )
        metrics.append({k: v for k, v in m.items() if k not in TIMING_KEYS})
    rows.append({"protocol": "same seed, same metrics", "variant": "demo x2", "identical": metrics[0] == metrics[1]})
    shutil.rmtree(cache, ignore_errors=True)
    return rows


def similar_latency(out: Path, runs: int = 7) -> list[dict]:
    fit("configs/default.yaml", out, [])
    exe = Path(sys.executable).with_name("hybridrec")
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(
            [str(exe), "similar", "S-Video cable", "--model", str(out / "demo")], check=True, capture_output=True
        )
        times.append(time.perf_counter() - t0)
    return [
        {
            "protocol": '`hybridrec similar "S-Video cable"` wall time incl. process start',
            "variant": "demo",
            "median_seconds": round(statistics.median(times), 3),
            "max_seconds": round(max(times), 3),
            "runs": runs,
        }
    ]


def write(rows: list[dict], command: str) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y-%m-%d %H:%M")
    with open(RESULTS / "v0.1.jsonl", "a") as fh:
        for row in rows:
            fh.write(json.dumps({"date": stamp, **row}) + "\n")
    lines = [
        "# hybridrec 0.1 acceptance numbers\n",
        f"Produced by `{command}` on {stamp} ({platform.machine()}, Python {platform.python_version()}, CPU).\n",
    ]
    protocol = None
    for row in rows:
        if row["protocol"] != protocol:
            protocol = row["protocol"]
            keys = [k for k in row if k not in ("protocol",)]
            lines += [f"\n## {protocol}\n", "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
        lines.append("| " + " | ".join(_fmt(k, row.get(k)) for k in keys) + " |")
    (RESULTS / "v0.1.md").write_text("\n".join(lines) + "\n")


def _fmt(key: str, v) -> str:
    if isinstance(v, float):
        return f"{v:.2f}" if "seconds" in key else f"{v:.4f}"
    return str(v)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", default="movielens,amazon,cache,latency")
    parser.add_argument("--set", action="append", default=[], help="extra config override for the real-data fits")
    args = parser.parse_args()
    out = Path(tempfile.mkdtemp(prefix="hybridrec-bench-"))
    rows: list[dict] = []
    parts = args.only.split(",")
    if "movielens" in parts:
        rows += movielens(out, args.set)
    if "amazon" in parts:
        rows += amazon_similar(out, args.set)
    if "cache" in parts:
        rows += cache_and_seed(out)
    if "latency" in parts:
        rows += similar_latency(out)
    for row in rows:
        print(json.dumps(row))
    write(rows, "python -m benchmarks.v01 " + " ".join(sys.argv[1:]))
    shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
