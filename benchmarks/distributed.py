"""1-rank against N-rank `hybridrec fit` on the scale benchmark's data (issue 18 item 6): quality and time.

    python -m benchmarks.distributed --size S --nproc 1,2 --seeds 42,7

For each (processes, model seed) it fits the scale benchmark's hybridrec config (benchmarks/scale/hybrid.py: the
generated data, its time split, the topn recipe, one torch thread per process) with `hybridrec fit --nproc N`
(torchrun, gloo on CPU), then scores the saved model with the scale benchmark's own child (full-ranking recall@10
and ndcg@10 on the test rows), and writes benchmarks/results/distributed.md (+ .jsonl). Two model seeds of the
1-rank fit give the seed noise the N-rank figures are read against. On a 2-core machine N ranks are not faster;
the question here is whether the quality holds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.scale import generate, proc
from benchmarks.scale.hybrid import fit_command, write_config

RESULTS = Path(__file__).resolve().parent / "results"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", default="S", choices=["XS", "S", "M", "L"])
    p.add_argument("--nproc", default="1,2", help="comma list of process counts")
    p.add_argument("--seeds", default="42,7", help="comma list of model seeds (the data stays seed 42's)")
    p.add_argument("--epochs", type=int, default=None, help="train.epochs (default: the recipe's)")
    p.add_argument("--text", choices=["on", "off"], default="off")
    p.add_argument("--set", dest="overrides", action="append", default=[], help="hybridrec config key=value")
    p.add_argument("--timeout", type=float, default=1800)
    p.add_argument("--results", type=Path, default=RESULTS)
    return p.parse_args(argv)


def one_fit(args: argparse.Namespace, data: Path, meta: dict, work: Path, nproc: int, seed: int) -> dict:
    name = f"dist-{meta['size']}-n{nproc}-s{seed}"
    config = write_config(data, meta, args.text == "on", work / "text-cache", work / f"{name}.yaml", name)
    cmd = fit_command(config, work / "models", "hybridrec", args.epochs, args.overrides)
    cmd += ["--seed", str(seed)] + (["--nproc", str(nproc)] if nproc > 1 else [])
    fit = proc.run(cmd, args.timeout, cwd=str(work))
    row: dict = {"nproc": nproc, "seed": seed, "fit_seconds": round(fit.seconds, 1), "status": "ok"}
    row["peak_rss_gb"] = round(fit.peak_rss_gb, 3)  # the largest single process (a rank or the launcher)
    if not fit.ok:
        return row | {"status": "timeout" if fit.timed_out else f"fit failed (exit {fit.returncode}): {fit.tail()}"}
    model = work / "models" / name
    run = json.loads((model / "metrics.json").read_text())["run"]
    row |= {k: run.get(k) for k in ("train_seconds", "feature_seconds", "best_epoch", "validation_score")}
    out = work / f"{name}-eval.json"
    child = proc.run(
        [sys.executable, "-m", "benchmarks.scale.child", "hybridrec", str(model), str(data), str(out)], 900
    )
    if not child.ok:
        return row | {"status": f"evaluation failed (exit {child.returncode}): {child.tail()}"}
    scored = json.loads(out.read_text())
    return row | {"recall@10": scored["recall@10"], "ndcg@10": scored["ndcg@10"]}


def report(rows: list[dict], meta: dict, command: str, when: str, revision: str) -> str:
    lines = [
        "# Distributed training: 1 rank against N ranks (issue 18 item 6)",
        "",
        f"`{command}` ({when}, hybridrec at git {revision}; {platform.machine()}, "
        f"{len(os.sched_getaffinity(0))} CPUs shared with other jobs, one torch thread per rank, gloo).",
        "",
        f"Data: the scale benchmark's {meta['size']} ({meta['rows']:,} rows, {meta['items']:,} items, "
        f"{meta['users']:,} users, data seed {meta['seed']}, time split), the `topn` recipe. recall@10 / ndcg@10: "
        "full ranking of the test rows by benchmarks/scale/child.py, as in the scale benchmark. A global batch is "
        "`train.batch_size` rows on any number of ranks (each rank takes its share), so N ranks make the same "
        "optimiser steps as one; time on this 2-core machine says nothing about speed-up.",
        "",
        "| ranks | model seed | status | fit s | train s | best epoch | val score | recall@10 | ndcg@10 | RSS GB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        cells = [r["nproc"], r["seed"], r["status"], r["fit_seconds"], r.get("train_seconds"), r.get("best_epoch")]
        cells += [_f(r.get("validation_score")), _f(r.get("recall@10")), _f(r.get("ndcg@10")), r["peak_rss_gb"]]
        lines.append("| " + " | ".join("" if c is None else str(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def _f(value) -> str | None:
    return None if value is None else f"{value:.4f}"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    data, meta = generate.ensure(args.size, 42)
    work = data.parent / "runs" / f"{data.name}-distributed"
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for nproc in [int(n) for n in args.nproc.split(",")]:
        for seed in [int(s) for s in args.seeds.split(",")]:
            print(f"fit: {nproc} rank(s), seed {seed}", flush=True)
            rows.append(one_fit(args, data, meta, work, nproc, seed))
            print(f"  {rows[-1]}", flush=True)
    command = "python -m benchmarks.distributed " + shlex.join(sys.argv[1:] if argv is None else argv)
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    revision = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    args.results.mkdir(parents=True, exist_ok=True)
    with open(args.results / "distributed.jsonl", "a") as fh:
        for row in rows:
            fh.write(json.dumps({"command": command, "when": when, "revision": revision, **row}) + "\n")
    (args.results / "distributed.md").write_text(report(rows, meta, command, when, revision))
    print(f"wrote {args.results / 'distributed.md'}")


if __name__ == "__main__":
    main()
