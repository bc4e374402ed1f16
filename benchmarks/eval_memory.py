"""Extra memory and time of held-out evaluation (`hybridrec.evaluation.holdout.evaluate`) as the test set grows.

A fitted-model-like scorer (random tower vectors in a real `TowerScores`, real `IdMap`s and a real `UserHistory`)
over `--items` items is evaluated on synthetic test sets of each size: power-law item popularity, `--per-user` test
rows and twice as many seen items per user, and one user who has seen every item. Each size runs in its own
process: the setup is built, the peak-RSS mark is reset (/proc/self/clear_refs), `evaluate` runs, and the extra
memory is the peak RSS during evaluation minus the RSS before it. An address-space cap (`--cap-gb` above the
process's size before evaluation) turns an evaluation that would exhaust the machine into a recorded MemoryError.

Run from the repository root (one thread; `PYTHONPATH=<other checkout>` measures another version of holdout.py):

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python -m benchmarks.eval_memory --sizes 1e4,1e5,1e6,2.5e6

Prints one JSON line per size and a markdown table; never part of the test run.

`--fit CONFIG` instead fits CONFIG (with `--set` overrides) and evaluates the model and its popularity baseline
on the fit's own test split with this checkout's holdout.py and, with `--before DIR`, with DIR's
hybridrec/evaluation/holdout.py too (the same fitted model): metrics and seconds side by side.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


class SyntheticModel:
    """What `holdout.evaluate` reads of a fitted HybridRecommender, backed by random tower vectors."""

    def __init__(self, n_users: int, n_items: int, dim: int, seen_users: np.ndarray, seen_items: np.ndarray):
        from hybridrec.config import Config
        from hybridrec.data.idmap import IdMap
        from hybridrec.model.history import UserHistory
        from hybridrec.scoring.towers import TowerScores

        rng = np.random.default_rng(1)
        self.users_ = IdMap((f"u{i}" for i in range(n_users)), "user")
        self.items_ = IdMap((f"i{i}" for i in range(n_items)), "item")
        self.feedback_ = "implicit"
        self.config = Config()
        vectors = [rng.standard_normal((n, dim)).astype(np.float32) / np.sqrt(dim) for n in (n_users, n_items)]
        biases = [rng.standard_normal(n).astype(np.float32) * 0.1 for n in (n_users, n_items)]
        self.towers_ = TowerScores(0.0, vectors[0], biases[0], vectors[1], biases[1])
        self.seen_ = UserHistory.from_rows(seen_users, seen_items, n_users)

    def seen_rows(self, user_row: int) -> np.ndarray:
        return self.seen_.of(user_row)

    def score_matrix(self, user_rows: np.ndarray, item_rows: np.ndarray | None = None) -> np.ndarray:
        return self.towers_.matrix(user_rows, item_rows)

    def score_pairs(self, user_rows: np.ndarray, item_rows: np.ndarray) -> np.ndarray:
        return self.towers_.pairs(np.asarray(user_rows, np.int64), np.asarray(item_rows, np.int64))


def build(n_rows: int, n_items: int, per_user: int, dim: int) -> tuple[SyntheticModel, pd.DataFrame]:
    """The model and a test set of n_rows rows; user 0 has seen every item."""
    rng = np.random.default_rng(0)
    n_users = max(2, n_rows // per_user)
    popularity = 1.0 / (np.arange(n_items) + 10.0) ** 0.8
    popularity /= popularity.sum()
    test_users = np.repeat(np.arange(n_users), per_user)[:n_rows]
    test_items = rng.choice(n_items, size=n_rows, p=popularity)
    seen_users = np.concatenate([np.repeat(np.arange(1, n_users), 2 * per_user), np.zeros(n_items, np.int64)])
    seen_items = np.concatenate(
        [rng.choice(n_items, size=(n_users - 1) * 2 * per_user, p=popularity), np.arange(n_items)]
    )
    model = SyntheticModel(n_users, n_items, dim, seen_users, seen_items)
    users = np.array([f"u{u}" for u in range(n_users)], dtype=object)
    items = np.array([f"i{i}" for i in range(n_items)], dtype=object)
    test = pd.DataFrame({"user_id": users[test_users], "item_id": items[test_items], "rating": 1.0})
    return model, test


def _status(field: str) -> int:
    """A /proc/self/status figure in bytes (VmRSS, VmHWM, VmSize)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def one(n_rows: int, n_items: int, per_user: int, dim: int, cap_gb: float) -> dict:
    """Evaluate one size in this process; the peak-RSS mark is reset right before evaluation."""
    from hybridrec.evaluation.holdout import evaluate

    model, test = build(n_rows, n_items, per_user, dim)
    gc.collect()
    before = _status("VmRSS")
    limit = _status("VmSize") + int(cap_gb * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    out: dict = {"rows": n_rows, "users": len(model.users_), "items": n_items, "dim": dim}
    started = time.perf_counter()
    try:
        metrics = evaluate(model, test, None, k=10, seed=0)
        out["metrics"] = {k: round(float(v), 6) for k, v in metrics.items()}
    except MemoryError:
        out["error"] = f"MemoryError under a {cap_gb:g} GB cap"
    out["seconds"] = round(time.perf_counter() - started, 2)
    out["extra_mb"] = round((_status("VmHWM") - before) / 2**20, 1)
    out["rss_before_mb"] = round(before / 2**20, 1)
    return out


def compare_on_fit(config: str, overrides: list[str], before: str | None) -> None:
    """Fit `config`, then evaluate the model and the popularity baseline with this checkout's holdout.py and
    baseline.py, and with DIR's (`before`) if given."""
    import importlib.util
    import tempfile

    from hybridrec_cli.job import fit_from_config

    from hybridrec.config import load_config
    from hybridrec.evaluation import baseline, holdout

    def load(name: str):
        assert before is not None
        spec = importlib.util.spec_from_file_location(
            f"before_{name}", Path(before) / f"hybridrec/evaluation/{name}.py"
        )
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    versions = {"after": (holdout, baseline)}
    if before:
        versions["before"] = (load("holdout"), load("baseline"))
    cfg = load_config(Path(config), overrides)
    with tempfile.TemporaryDirectory() as out:
        report = fit_from_config(cfg, out, quiet=True)
    rec, split = report.recommender, report.split
    for name in ("model", "baseline"):
        for label, (evaluation, baselines) in sorted(versions.items(), reverse=True):
            model = rec if name == "model" else baselines.PopularityBaseline(rec, split.train)
            started = time.perf_counter()
            metrics = evaluation.evaluate(model, split.test, split.cold_items, k=cfg.evaluate.k, seed=cfg.seed)
            seconds = round(time.perf_counter() - started, 2)
            print(json.dumps({"scorer": name, "holdout": label, "seconds": seconds, **metrics}), flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1e4,1e5,1e6,2.5e6", help="test rows, comma separated")
    parser.add_argument("--items", type=int, default=60_000)
    parser.add_argument("--per-user", type=int, default=5, help="test rows per user (seen items: twice this)")
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--cap-gb", type=float, default=6.0, help="address space allowed on top of the setup")
    parser.add_argument("--one", type=float, help=argparse.SUPPRESS)  # run one size in this process
    parser.add_argument("--fit", help="a config to fit and evaluate instead of the synthetic sizes")
    parser.add_argument("--set", action="append", default=[], help="config overrides for --fit")
    parser.add_argument("--before", help="a checkout whose holdout.py also evaluates the --fit model")
    args = parser.parse_args(argv)
    if args.fit:
        compare_on_fit(args.fit, args.set, args.before)
        return
    if args.one is not None:
        print(json.dumps(one(int(args.one), args.items, args.per_user, args.dim, args.cap_gb)), flush=True)
        return
    rows = []
    for size in args.sizes.split(","):
        cmd = [sys.executable, "-m", "benchmarks.eval_memory", "--one", size, "--items", str(args.items)]
        cmd += ["--per-user", str(args.per_user), "--dim", str(args.dim), "--cap-gb", str(args.cap_gb)]
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=os.environ.copy())
        if done.returncode != 0:
            tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
            row = {"rows": int(float(size)), "error": f"exit {done.returncode}: {tail}"}
        else:
            row = json.loads(done.stdout.strip().splitlines()[-1])
        print(json.dumps(row), flush=True)
        rows.append(row)
    print("\n| test rows | users | items | extra peak RSS (MB) | seconds | note |\n|---|---|---|---|---|---|")
    for r in rows:
        note = r.get("error") or ", ".join(f"{k} {v}" for k, v in r.get("metrics", {}).items() if k != "n_test")
        print(
            f"| {r['rows']:,} | {r.get('users', '')} | {r.get('items', '')} | {r.get('extra_mb', '')} | "
            f"{r.get('seconds', '')} | {note} |"
        )


if __name__ == "__main__":
    main()
