"""The `fit` job end to end: read, split, fit, evaluate on the held-out part, save, and point `latest` at it.

Splitting and held-out evaluation are the job's, not the library's: `HybridRecommender.fit` takes training and
validation rows and never sees the test rows.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hybridrec.artifacts import point_link
from hybridrec.config import Config, job_settings
from hybridrec.errors import ConfigError
from hybridrec.progress import event, get_logger

LOG = get_logger("job")
# what evaluation reports beside its metrics: bookkeeping, not metrics
COUNT_KEYS = ("n_test", "cold_items", "test_users", "ranked_users")


@dataclass
class FitReport:
    model_path: Path
    metrics: dict  # held-out metrics only (rmse, recall@10, ...)
    data_summary: list[str]
    recommender: object  # the fitted HybridRecommender
    split: object  # the Split the job made (test rows included: the recommender never held them)
    baseline: dict = field(default_factory=dict)  # the same metrics of the popularity baseline
    run: dict = field(default_factory=dict)  # bookkeeping: sizes, epochs, seconds, cache hits, seed


def held_out(rec, split, k: int, seed: int, max_users: int = 0) -> tuple[dict, dict, dict]:
    """Held-out metrics of `rec` and of the popularity baseline fitted on the same training rows (same code,
    same sampled negatives), and the counts evaluation reports beside them (test rows, cold items)."""
    from hybridrec.evaluation.baseline import PopularityBaseline
    from hybridrec.evaluation.holdout import evaluate

    metrics = evaluate(rec, split.test, split.cold_items, k=k, seed=seed, max_users=max_users)
    popularity = PopularityBaseline(rec, split.train)
    baseline = evaluate(popularity, split.test, split.cold_items, k=k, seed=seed, max_users=max_users)
    counts = {key: metrics.pop(key) for key in COUNT_KEYS if key in metrics}
    for key in COUNT_KEYS:
        baseline.pop(key, None)
    return metrics, baseline, counts


def model_name(cfg: Config) -> str:
    """A folder-safe name: a config can never make hybridrec write outside the output directory."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", cfg.name).strip(".-")
    if not name:
        raise ConfigError(f"name {cfg.name!r} gives an empty folder name")
    return name


def fit_from_config(cfg: Config, out_dir: str | Path, quiet: bool = False, resume: bool = False) -> FitReport:
    """Train with a per-epoch checkpoint in OUT/.checkpoints (continued with resume=True), evaluate, save, point
    latest at the new model."""
    from hybridrec.data.readers import read_dataset
    from hybridrec.data.splits import split_interactions
    from hybridrec.fitting import refit_checkpoint
    from hybridrec.recommender import HybridRecommender
    from hybridrec.report import render_report

    out_dir = Path(out_dir)
    t0 = time.perf_counter()
    event(LOG, f"reading data (format {cfg.data.format})", "read")
    dataset = read_dataset(cfg)
    summary = [r.summary() for r in dataset.reports]
    for line in summary:  # what was dropped and why (notes included), before any training
        LOG.info(line)
    checkpoints = out_dir / ".checkpoints"
    if checkpoints.is_symlink() or (checkpoints.exists() and not checkpoints.is_dir()):
        raise ConfigError(f"{checkpoints} must be a plain folder inside --out (found a link or a file)")
    checkpoint = checkpoints / f"{model_name(cfg)}.safetensors"
    split = split_interactions(dataset.interactions, cfg.split, cfg.seed)
    LOG.info(
        f"split {cfg.split.kind}: {len(split.train):,} training, {len(split.validation):,} validation and "
        f"{len(split.test):,} test rows"
    )
    rec = HybridRecommender(cfg, quiet=quiet)
    rec.fit(dataset, split.train, split.validation, checkpoint=checkpoint, resume=resume)
    event(LOG, f"evaluating on {len(split.test):,} held-out rows, beside a popularity baseline", "evaluate")
    metrics, baseline, counts = held_out(rec, split, cfg.evaluate.k, cfg.seed, cfg.evaluate.max_users)
    result = rec.train_result_
    run = {
        "dataset": dataset.name,
        "variant": cfg.model.variant,
        "split": cfg.split.kind,
        "n_users": len(rec.users_),
        "n_items": len(rec.items_),
        "n_train": int(len(split.train)),
        "n_validation": int(len(split.validation)),
        **counts,
        "best_epoch": result.best_epoch,
        "refit_rows": result.refit_rows,  # train.refit: the best_epoch epochs trained again on train + validation
        "validation_metric": result.metric,
        "validation_score": result.best_score,  # RMSE, or 1 - sampled AUC: tune on this, not test
        **rec.fit_stats_,
        "fit_seconds": round(time.perf_counter() - t0, 2),
        "seed": cfg.seed,
        "resumed_from_epoch": result.resumed_from,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / model_name(cfg)
    event(LOG, f"saving the model and report.html to {target}", "save")
    counts_per_item = np.bincount(rec.items_.indices(split.train["item_id"]), minlength=len(rec.items_))
    html = render_report(rec, metrics, baseline, run, counts_per_item)
    record = {"metrics": metrics, "baseline": baseline, "run": run}
    rec.save(target, metrics=record, job=job_settings(cfg), extra_files={"report.html": html})
    point_link(out_dir / "latest", target)
    for done in (checkpoint, refit_checkpoint(checkpoint)):  # the run is complete: nothing to resume
        done.unlink(missing_ok=True)
    return FitReport(target, metrics, summary, rec, split, baseline, run)
