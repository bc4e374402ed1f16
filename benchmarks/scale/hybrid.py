"""hybridrec in the scale benchmark: the config it is fitted with, `hybridrec fit` as a child process timed per stage
from its progress lines, then a child that loads the model and measures it, and the `hybridrec similar` CLI."""

from __future__ import annotations

import json
import re
import statistics
import sys
from pathlib import Path

import yaml

from benchmarks.scale import proc
from benchmarks.scale.common import K

VARIANTS = {"hybridrec": "hybrid", "hybridrec-id": "id-only"}
TASK = "topn"  # the library's recipe for ranking the catalogue (hybridrec/recipes.py)
# the first progress line of each stage (cli/job.py, hybridrec/fitting.py); "startup" is the time before reading
STAGE_MARKERS = (
    ("read", "reading data"),
    ("encode", "features: "),
    ("terms", "score terms: "),
    ("train", "training: "),
    ("evaluate", "evaluating on "),
    ("save", "saving the model"),
)
CLI_REPEATS = 3
EPOCH_LINE = re.compile(r"\bepoch (\d+)/\d+")
TRAIN_ROWS = re.compile(r"^\s*split \S+: ([\d,]+) training")


def executable() -> str:
    """The `hybridrec` script of the running interpreter's environment."""
    return str(Path(sys.executable).with_name("hybridrec"))


def write_config(data: Path, meta: dict, text: bool, cache_dir: Path, path: Path, name: str) -> Path:
    """A table config over the generated files and its time split (test = rows at or after the cutoff)."""
    columns = {c: c for c in ("user_id", "item_id", "rating", "timestamp", "title")}
    if text:
        columns["review"] = "review"
    config = {
        "format_version": 2,
        "name": name,
        "seed": int(meta["seed"]),
        "data": {
            "format": "table",
            "paths": {
                "interactions": str(data / "interactions.parquet"),
                "items": str(data / "items.parquet"),
                "users": str(data / "users.parquet"),
            },
            "columns": columns,
            "item_text": ["description"] if text else [],
            "item_numeric": ["price"],
            "item_categorical": ["brand", "department", "category"],
            "feedback": "explicit",
            "rating_range": [1, 5],
            "options": {"user_categorical": ["region"]},
        },
        "split": {"kind": "time", "cutoff": str(meta["cutoff"]), "validation_fraction": 0.1},
        "features": {"text_encoder": "sentence-transformer" if text else "none", "cache_dir": str(cache_dir)},
        "evaluate": {"k": K},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def stage_seconds(child: proc.Child) -> dict[str, float]:
    """Seconds per stage from when each stage's first progress line arrived; the last stage ends at exit."""
    marks: list[tuple[str, float]] = [("startup", 0.0)]
    for t, line in child.lines:
        for stage, marker in STAGE_MARKERS:
            if marker in line and stage not in dict(marks):
                marks.append((stage, t))
    ends = [t for _, t in marks[1:]] + [child.seconds]
    return {stage: round(end - t, 2) for (stage, t), end in zip(marks, ends, strict=True)}


def epochs_trained(child: proc.Child) -> int | None:
    """The last `epoch N/M` progress line's N (early stopping ends before M)."""
    done = [int(m.group(1)) for _, line in child.lines if (m := EPOCH_LINE.search(line))]
    return max(done) if done else None


def training_rows(child: proc.Child) -> int | None:
    """N of the split line 'split time: N training, ...' (the rows the model trains on)."""
    found = [m.group(1) for _, line in child.lines if (m := TRAIN_ROWS.search(line))]
    return int(found[0].replace(",", "")) if found else None


def fit_command(config: Path, out: Path, model: str, epochs: int | None, overrides: list[str]) -> list[str]:
    cmd = [executable(), "fit", "--config", str(config), "--out", str(out), "--task", TASK]
    sets = ["train.threads=1", f"model.variant={VARIANTS[model]}"]
    if epochs is not None:
        sets.append(f"train.epochs={epochs}")
    for item in sets + overrides:
        cmd += ["--set", item]
    return cmd


def run_hybridrec(
    model: str,
    data: Path,
    meta: dict,
    work: Path,
    text: bool,
    epochs: int | None,
    overrides: list[str],
    timeout: float,
    echo: bool,
) -> dict:
    name = f"scale-{meta['size']}-{model}"
    config = write_config(data, meta, text, work.parent / "text-cache", work / f"{name}.yaml", name)
    cmd = fit_command(config, work / "models", model, epochs, overrides)
    fit = proc.run(cmd, timeout, echo=echo, cwd=str(work))
    row: dict = {
        "stages": stage_seconds(fit),
        "fit_seconds": round(fit.seconds, 2),
        "fit_cpu_seconds": round(fit.cpu_seconds, 2),
        "peak_rss_gb": round(fit.peak_rss_gb, 3),
        "config": {"task": TASK, "set": cmd[cmd.index("--set") :][1::2]},
        "n_train": training_rows(fit),
        "epochs": epochs_trained(fit),
    }
    # a fit killed after training still tells its throughput: training rows x epochs / the train stage
    train_seconds = row["stages"].get("train") if "evaluate" in row["stages"] else None
    if not fit.ok:
        row["status"] = "timeout" if fit.timed_out else f"fit failed (exit {fit.returncode}): {fit.tail()}"
    else:
        model_dir = work / "models" / name
        run = json.loads((model_dir / "metrics.json").read_text()).get("run", {})
        row["fit_stats"] = {k: run[k] for k in ("feature_seconds", "terms_seconds", "train_seconds") if k in run}
        row["n_train"] = run.get("n_train", row["n_train"])
        train_seconds = run.get("train_seconds")
    if train_seconds and row["n_train"] and row["epochs"]:
        row["samples_per_second"] = row["n_train"] * row["epochs"] / train_seconds
    if not fit.ok:
        return row
    out = work / f"{name}-eval.json"
    cmd = [sys.executable, "-m", "benchmarks.scale.child", "hybridrec", str(model_dir), str(data), str(out)]
    child = proc.run(cmd, timeout, cwd=str(work))
    row["eval_peak_rss_gb"] = round(child.peak_rss_gb, 3)
    if not child.ok:
        row["status"] = "timeout" if child.timed_out else f"evaluation failed (exit {child.returncode}): {child.tail()}"
        return row
    row.update(json.loads(out.read_text()))
    row["cli_similar_seconds"] = cli_similar(model_dir, str(row.pop("query_item", 0)), timeout)
    row["status"] = "ok"
    return row


def cli_similar(model_dir: Path, item: str, timeout: float) -> float | None:
    """Median wall time of a `hybridrec similar ITEM` process (start, load, answer, exit)."""
    times = []
    for _ in range(CLI_REPEATS):
        cmd = [executable(), "similar", item, "--model", str(model_dir), "-k", str(K)]
        child = proc.run(cmd, timeout, cwd=str(model_dir.parent))
        if not child.ok:
            return None
        times.append(child.seconds)
    return round(statistics.median(times), 3)
