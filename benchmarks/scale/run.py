"""The scale benchmark: generate (or reuse) a size's data, fit hybridrec and the peers on it, each in its own
one-thread process, and record time per stage, peak RSS, model size, load time, `similar` latencies, training
throughput and full-ranking recall@10 on the time split.

    python -m benchmarks.scale --size S
    python -m benchmarks.scale --size M --text on --models hybridrec,lightfm --timeout 1800

Rows are appended to benchmarks/results/scale.jsonl; benchmarks/results/scale.md is rebuilt from it.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.scale import hybrid, proc
from benchmarks.scale.generate import DATA_ROOT, SIZES, cached_meta, data_dir
from benchmarks.scale.report import write_markdown

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
MODELS = ("hybridrec", "hybridrec-id", "als", "lightfm", "ease")
EASE_MAX_ITEMS = 20_000  # a dense items x items inverse: beyond this it neither fits the time nor the memory


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scale", description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=list(SIZES), required=True)
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma list of {', '.join(MODELS)}")
    parser.add_argument("--epochs", type=int, help="epochs for every model (ALS: iterations); default: each one's own")
    parser.add_argument("--text", choices=("on", "off"), default="off", help="hybridrec encodes descriptions+reviews")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per model process before it is killed")
    parser.add_argument("--seed", type=int, default=42, help="data and model seed")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="hybridrec config key=value")
    parser.add_argument(
        "--src", type=Path, help="run hybridrec from this source tree (a snapshot with cli/ and a REVISION file)"
    )
    parser.add_argument("--label", default="", help="a note stored with the rows (e.g. 'partial: 1 epoch')")
    parser.add_argument("--data-root", type=Path, default=DATA_ROOT)
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder of scale.jsonl and scale.md")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    return parser.parse_args(argv)


def say(args: argparse.Namespace, message: str) -> None:
    if not args.quiet:
        print(message, flush=True)


def git_revision(src: Path | None) -> str:
    if src is not None:
        revision = src / "REVISION"
        return revision.read_text().strip() if revision.is_file() else f"source tree {src}"
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "hybridrec", "cli"], cwd=ROOT, capture_output=True, text=True
        )
        return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except OSError:
        return "unknown"


def prepare_data(args: argparse.Namespace) -> tuple[Path, dict]:
    """The size's data folder; generated in a child process (meta.json: its time and peak RSS) unless cached."""
    folder = data_dir(args.size, args.seed, args.data_root)
    meta = cached_meta(folder)
    if meta is None:
        say(args, f"generating {args.size} data into {folder}")
        cmd = [sys.executable, "-m", "benchmarks.scale.generate", "--size", args.size, "--seed", str(args.seed)]
        child = proc.run([*cmd, "--root", str(args.data_root)], args.timeout)
        meta = cached_meta(folder)
        if not child.ok or meta is None:
            raise SystemExit(f"data generation failed (exit {child.returncode}): {child.tail()}")
    return folder, meta


def run_peer(name: str, args: argparse.Namespace, folder: Path, work: Path) -> dict:
    out = work / f"{name}.json"
    cmd = [sys.executable, "-m", "benchmarks.scale.child", "peer", name, str(folder), str(work), str(out)]
    cmd += ["--seed", str(args.seed)] + (["--epochs", str(args.epochs)] if args.epochs is not None else [])
    child = proc.run(cmd, args.timeout, cwd=str(work))
    row: dict = {"process_seconds": round(child.seconds, 2), "peak_rss_gb": round(child.peak_rss_gb, 3)}
    if not child.ok:
        row["status"] = "timeout" if child.timed_out else f"failed (exit {child.returncode}): {child.tail()}"
        return row
    result = json.loads(out.read_text())
    result.pop("model", None)
    row.update(result, status="ok")
    row["stages"] = {k: round(v, 2) for k, v in row["stages"].items()}
    row["fit_seconds"] = round(sum(row["stages"].values()), 2)  # read, train, evaluate, save: as hybridrec's fit
    row["fit_cpu_seconds"] = round(sum(row.pop("stages_cpu").values()), 2)
    return row


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = sorted(set(models) - set(MODELS))
    if unknown:
        raise SystemExit(f"--models: unknown {', '.join(unknown)} (choose from {', '.join(MODELS)})")
    args.data_root, args.results = args.data_root.resolve(), args.results.resolve()
    # children run in the work folder, importing benchmarks from this checkout and hybridrec from --src when given
    paths = ([str(args.src.resolve())] if args.src is not None else []) + [str(ROOT)]
    os.environ["PYTHONPATH"] = os.pathsep.join(paths + [p for p in [os.environ.get("PYTHONPATH")] if p])
    folder, meta = prepare_data(args)
    say(args, f"data {folder}: {meta['rows']:,} rows, {meta['items']:,} items, {meta['users']:,} users")
    work = args.data_root / "runs" / f"{args.size}-seed{args.seed}"
    work.mkdir(parents=True, exist_ok=True)
    started = datetime.datetime.now(datetime.timezone.utc)
    common = {
        "run": started.strftime("%Y-%m-%d %H:%M UTC"),
        "command": "python -m benchmarks.scale " + shlex.join(sys.argv[1:] if argv is None else argv),
        "git": git_revision(args.src),
        "size": args.size,
        "text": args.text,
        "label": args.label,
        "data": meta,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
    }
    args.results.mkdir(parents=True, exist_ok=True)
    for model in models:
        if model == "ease" and meta["items"] > EASE_MAX_ITEMS:
            say(args, f"ease: skipped ({meta['items']:,} items > {EASE_MAX_ITEMS:,})")
            continue
        say(args, f"{model}: fitting ...")
        t = time.perf_counter()
        if model in hybrid.VARIANTS:
            row = hybrid.run_hybridrec(
                model, folder, meta, work, args.text == "on", args.epochs, args.overrides, args.timeout, not args.quiet
            )
        else:
            row = run_peer(model, args, folder, work)
        row = {**common, "model": model, **row, "wall_seconds": round(time.perf_counter() - t, 2)}
        with open(args.results / "scale.jsonl", "a") as fh:
            fh.write(json.dumps(row, default=float) + "\n")
        say(args, f"{model}: {row['status']}, fit {row.get('fit_seconds')} s, recall@10 {row.get('recall@10')}")
    write_markdown(args.results / "scale.jsonl", args.results / "scale.md")
    say(args, f"results: {args.results / 'scale.md'}")
