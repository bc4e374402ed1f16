"""Run benchmark protocols x models on identical split files; append JSON lines and regenerate RESULTS.md.

    python -m benchmarks.run --protocol P4
    python -m benchmarks.run --protocol P1 --datasets ml-100k --models hybridrec,surprise-svd
    python -m benchmarks.run --protocol all --quick
    python -m benchmarks.run --report          # only rebuild RESULTS.md from results.jsonl

Needs ../shared/data (the configs in configs/ and benchmarks/configs/ point there) and the `bench` extra (see
benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import subprocess
import sys
import time
import traceback
import uuid
from importlib import metadata
from pathlib import Path

from benchmarks import report
from benchmarks.data import ROOT, SEED
from benchmarks.protocols import DATASETS, RUNNERS, TASK, TUNABLE

RESULTS = ROOT / "benchmarks" / "results" / "results.jsonl"
# overrides that change only where and how fast a model trains: the row keeps the model's plain name (the command
# still records them)
SPEED_ONLY = ("train.threads=", "train.device=")
TUNING = ROOT / "benchmarks" / "results" / "tuning.jsonl"
DEFAULT_MODELS = {
    "P1": [
        "hybridrec",
        "hybridrec-id",
        "hybridrec-content",
        "surprise-baseline",
        "surprise-svd",
        "surprise-svdpp",
        "surprise-knnbaseline",
    ],
    "P2": ["hybridrec", "hybridrec-id", "popularity", "itemknn", "ease", "implicit-als", "implicit-bpr", "lightfm"],
    "P3": ["hybridrec", "hybridrec-content", "hybridrec-id", "tfidf-knn", "lightfm-hybrid", "lightfm-content"],
    "P4": [
        "hybridrec",
        "hybridrec-default",
        "hybridrec-id",
        "hybridrec-content",
        "popularity",
        "itemknn",
        "ease",
        "ease-similar",
        "implicit-als",
        "tfidf-knn",
        "lightfm-hybrid",
    ],
}
# Left out of the default set for budget (several minutes each); run them by naming them in --models.
EXPENSIVE = {("P1", "ml-1m-half", "surprise-svdpp")}
PACKAGES = [
    "hybridrec",
    "numpy",
    "pandas",
    "scipy",
    "scikit-learn",
    "torch",
    "sentence-transformers",
    "scikit-surprise",
    "implicit",
    "lightfm-next",
    "lightfm",
    "hnswlib",
]


def versions() -> dict:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def git_state() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
        paths = ["hybridrec", "configs", "benchmarks/configs"]  # the library and every recipe it may read
        dirty = subprocess.run(["git", "status", "--porcelain", "--", *paths], cwd=ROOT, capture_output=True, text=True)
        return rev.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except OSError:
        return "unknown"


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.run", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--protocol", default="all", help="P1, P2, P3, P4, a comma list, or all (default)")
    p.add_argument("--models", help="comma list (default: the protocol's standard set)")
    p.add_argument("--datasets", help="comma list (default: the protocol's datasets)")
    p.add_argument("--quick", action="store_true", help="1 fold, fewer epochs, no grids: for iteration")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="hybridrec config override for this run (repeatable); the model is labelled with it",
    )
    p.add_argument(
        "--tune",
        action="store_true",
        help="score on a nested tuning split (the split's validation part as test) and append to tuning.jsonl: "
        "for choosing configs without looking at test rows (P2, P3, P4 Online Retail)",
    )
    p.add_argument(
        "--cold-draw",
        type=int,
        default=None,
        metavar="SEED",
        help="P3 only: another 20%% cold draw (the same recipe with this seed), reported in its own table as a "
        "robustness check beside the seed-42 split that decides",
    )
    p.add_argument(
        "--model-seed",
        type=int,
        default=None,
        metavar="SEED",
        help="seed every model with this instead of 42, on the same split files, reported in its own table: how "
        "much of a gap between two models is the luck of one seed",
    )
    p.add_argument("--results", default=None, help="JSON lines file to append to (default: results/results.jsonl)")
    p.add_argument("--report", action="store_true", help="only regenerate RESULTS.md from the results file")
    p.add_argument("--no-report", action="store_true", help="do not regenerate RESULTS.md")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse(argv)
    results = Path(args.results or (TUNING if args.tune else RESULTS))
    if args.report:
        report.write(results, report_path(results))
        return 0
    from benchmarks.adapters import registry

    overrides = tuple(args.set)
    models = registry(overrides)
    protocols = list(RUNNERS) if args.protocol == "all" else [p.strip().upper() for p in args.protocol.split(",")]
    command = "python -m benchmarks.run " + shlex.join(argv)
    run_id, env = uuid.uuid4().hex[:8], versions()
    git = git_state()
    failures = 0
    for protocol in protocols:
        if protocol not in RUNNERS:
            raise SystemExit(f"error: unknown protocol {protocol!r} (choose from {', '.join(RUNNERS)} or all)")
        if args.cold_draw is not None and (protocol != "P3" or args.tune):
            raise SystemExit("error: --cold-draw is for P3 test runs only (not --tune, not other protocols)")
        if args.tune and protocol not in TUNABLE:
            raise SystemExit(f"error: --tune has no nested split for {protocol} (only {', '.join(sorted(TUNABLE))})")
        names = args.models.split(",") if args.models else DEFAULT_MODELS[protocol]
        datasets = args.datasets.split(",") if args.datasets else DATASETS[protocol]
        for dataset in datasets:
            if dataset not in DATASETS[protocol]:
                print(f"skip: {protocol} does not use {dataset}", file=sys.stderr)
                continue
            for name in names:
                if name not in models:
                    raise SystemExit(f"error: unknown model {name!r} (choose from {', '.join(sorted(models))})")
                make = models[name]
                if TASK[protocol] not in make().tasks:
                    print(f"skip: {name} does not do {TASK[protocol]} ({protocol})", file=sys.stderr)
                    continue
                if not args.models and (protocol, dataset, name) in EXPENSIVE:
                    print(
                        f"skip: {name} on {dataset} is outside the default budget; name it in --models", file=sys.stderr
                    )
                    continue
                shown = [o for o in overrides if not o.startswith(SPEED_ONLY)]
                label = name + (f"[{','.join(shown)}]" if shown and name.startswith("hybridrec") else "")
                print(f"== {protocol} {dataset} {label}", file=sys.stderr, flush=True)
                t0 = time.perf_counter()
                try:
                    run = RUNNERS[protocol]
                    extra = {"tune": True} if args.tune else {}
                    if args.cold_draw is not None:
                        extra["draw"] = args.cold_draw
                    if args.model_seed is not None:
                        extra["seed"] = args.model_seed
                    out = run(make, dataset, args.quick, **extra)
                except Exception:  # noqa: BLE001 - one failing model must not lose the others' results
                    failures += 1
                    traceback.print_exc()
                    continue
                row = {
                    "date": time.strftime("%Y-%m-%d %H:%M:%S"),
                    "run_id": run_id,
                    "command": command,
                    "protocol": protocol,
                    # another cold draw or model seed is its own table in RESULTS.md, never mixed with the deciding
                    # run's
                    "dataset": robustness_label(dataset, args.cold_draw, args.model_seed),
                    "model": label,
                    "quick": args.quick,
                    "tune": args.tune,
                    "seed": SEED if args.model_seed is None else args.model_seed,
                    **out,
                    "wall_seconds": round(time.perf_counter() - t0, 2),
                    "git": git,
                    "versions": env,
                }
                results.parent.mkdir(parents=True, exist_ok=True)
                with open(results, "a") as fh:
                    fh.write(json.dumps(row, default=_json_default) + "\n")
                shown = {k: round(v, 4) for k, v in out["metrics"].items()}
                print(f"   {shown}  fit {out['fit_seconds']:.1f}s  wall {row['wall_seconds']:.0f}s", file=sys.stderr)
    if not args.no_report and not args.tune:
        report.write(results, report_path(results))
    return 1 if failures else 0


def report_path(results: Path) -> Path:
    """RESULTS.md for the shared results file; a results file elsewhere gets its own report beside it (a run
    recorded apart, such as an experiment, once rebuilt RESULTS.md from its few rows alone)."""
    return report.OUT if results.resolve() == RESULTS.resolve() else results.with_suffix(".md")


def robustness_label(dataset: str, cold_draw: int | None, model_seed: int | None) -> str:
    """The table a row belongs to: the dataset, or a robustness check on it (another cold draw, another seed)."""
    label = dataset if cold_draw is None else f"{dataset}, cold draw {cold_draw}"
    return label if model_seed is None else f"{label}, model seed {model_seed}"


def _json_default(value):
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (set, tuple)):
        return list(value)
    return str(value)


if __name__ == "__main__":
    raise SystemExit(main())
