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
import statistics
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
    p.add_argument("--report-only", action="store_true", help="rewrite distributed.md from distributed.jsonl")
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


def report(rows: list[dict], meta: dict) -> str:
    """Every row of distributed.jsonl for this size, under the commands that made them."""
    runs = list(dict.fromkeys((r["command"], r["when"], r["revision"]) for r in rows))
    lines = [
        "# Distributed training: 1 rank against N ranks (issue 18 item 6)",
        "",
        *[f"- `{c}` ({w}, hybridrec at git {v})" for c, w, v in runs],
        "",
        f"Machine: {platform.machine()}, {len(os.sched_getaffinity(0))} CPUs shared with other jobs; one torch "
        "thread per rank, gloo.",
        "",
        f"Data: the scale benchmark's {meta['size']} ({meta['rows']:,} rows, {meta['items']:,} items, "
        f"{meta['users']:,} users, data seed {meta['seed']}, time split), the `topn` recipe. recall@10 / ndcg@10: "
        "full ranking of the test rows by benchmarks/scale/child.py, as in the scale benchmark. A global batch is "
        "`train.batch_size` rows on any number of ranks (each rank takes its share), so N ranks make the same "
        "optimiser steps as one. val score: 1 - sampled AUC on the validation rows (lower is better). RSS GB: the "
        "largest single process (a rank or the launcher), not the ranks' sum. Times come from a 2-core machine shared "
        "with other jobs (2 ranks use both cores, 1 rank one): they say nothing about speed-up elsewhere.",
        "",
        "| ranks | model seed | status | fit s | train s | best epoch | val score | recall@10 | ndcg@10 | RSS GB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        cells = [r["nproc"], r["seed"], r["status"], r["fit_seconds"], r.get("train_seconds"), r.get("best_epoch")]
        cells += [_f(r.get("validation_score")), _f(r.get("recall@10")), _f(r.get("ndcg@10")), r["peak_rss_gb"]]
        lines.append("| " + " | ".join("" if c is None else str(c) for c in cells) + " |")
    lines += ["", "Per rank count, over the model seeds above (seed noise: the spread of the 1-rank fits):", ""]
    lines += ["| ranks | fits | recall@10 mean | min | max | ndcg@10 mean |", "|---|---|---|---|---|---|"]
    for nproc in sorted({r["nproc"] for r in rows}):
        done = [r for r in rows if r["nproc"] == nproc and r.get("recall@10") is not None]
        if done:
            recall = [r["recall@10"] for r in done]
            ndcg = statistics.mean(r["ndcg@10"] for r in done)
            cells = [nproc, len(done), _f(statistics.mean(recall)), _f(min(recall)), _f(max(recall)), _f(ndcg)]
            lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def _f(value) -> str | None:
    return None if value is None else f"{value:.4f}"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    data, meta = generate.ensure(args.size, 42)
    if args.report_only:
        write_report(args, meta)
        return
    work = data.parent / "runs" / f"{data.name}-distributed"
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    # the code the fits run (read now: a commit landing meanwhile is not theirs)
    revision = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    for nproc in [int(n) for n in args.nproc.split(",")]:
        for seed in [int(s) for s in args.seeds.split(",")]:
            print(f"fit: {nproc} rank(s), seed {seed}", flush=True)
            rows.append(one_fit(args, data, meta, work, nproc, seed))
            print(f"  {rows[-1]}", flush=True)
    command = "python -m benchmarks.distributed " + shlex.join(sys.argv[1:] if argv is None else argv)
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    args.results.mkdir(parents=True, exist_ok=True)
    log = args.results / "distributed.jsonl"
    with open(log, "a") as fh:
        for row in rows:
            fh.write(json.dumps({"command": command, "when": when, "revision": revision, "size": args.size, **row}))
            fh.write("\n")
    write_report(args, meta)


def write_report(args: argparse.Namespace, meta: dict) -> None:
    log = args.results / "distributed.jsonl"
    everything = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    mine = sorted((r for r in everything if r.get("size", "S") == args.size), key=lambda r: (r["nproc"], r["seed"]))
    (args.results / "distributed.md").write_text(report(mine, meta))
    print(f"wrote {args.results / 'distributed.md'}")


if __name__ == "__main__":
    main()
