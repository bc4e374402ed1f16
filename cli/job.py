"""The `fit` job end to end: read, split, fit, evaluate on the held-out part, save, and point `latest` at it.

Splitting and held-out evaluation are the job's, not the library's: `HybridRecommender.fit` takes training and
validation rows and never sees the test rows.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

from hybridrec.artifacts import point_link
from hybridrec.config import Config, job_settings
from hybridrec.errors import ConfigError


@dataclass
class FitReport:
    model_path: Path
    metrics: dict
    data_summary: list[str]
    recommender: object  # the fitted HybridRecommender
    split: object  # the Split the job made (test rows included: the recommender never held them)


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
    from hybridrec.evaluation.holdout import evaluate
    from hybridrec.recommender import HybridRecommender

    out_dir = Path(out_dir)
    t0 = time.perf_counter()
    dataset = read_dataset(cfg)
    summary = [r.summary() for r in dataset.reports]
    checkpoints = out_dir / ".checkpoints"
    if checkpoints.is_symlink() or (checkpoints.exists() and not checkpoints.is_dir()):
        raise ConfigError(f"{checkpoints} must be a plain folder inside --out (found a link or a file)")
    checkpoint = checkpoints / f"{model_name(cfg)}.safetensors"
    split = split_interactions(dataset.interactions, cfg.split, cfg.seed)
    rec = HybridRecommender(cfg, quiet=quiet)
    rec.fit(dataset, split.train, split.validation, checkpoint=checkpoint, resume=resume)
    metrics = evaluate(rec, split.test, split.cold_items, k=cfg.evaluate.k, seed=cfg.seed)
    result = rec.train_result_
    metrics.update(
        {
            "dataset": dataset.name,
            "variant": cfg.model.variant,
            "split": cfg.split.kind,
            "n_users": len(rec.users_),
            "n_items": len(rec.items_),
            "n_train": int(len(split.train)),
            "best_epoch": result.best_epoch,
            "validation_score": result.best_score,  # RMSE, or 1 - sampled AUC: tune on this, not test
            **rec.fit_stats_,
            "fit_seconds": round(time.perf_counter() - t0, 2),
            "seed": cfg.seed,
            "resumed_from_epoch": result.resumed_from,
        }
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / model_name(cfg)
    rec.save(target, metrics=metrics, job=job_settings(cfg))
    point_link(out_dir / "latest", target)
    checkpoint.unlink(missing_ok=True)  # the run is complete: nothing to resume
    return FitReport(target, metrics, summary, rec, split)
