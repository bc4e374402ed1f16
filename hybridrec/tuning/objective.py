"""One trial: the tuning rows (read and split once), a fit with the per-epoch validation score reported to Optuna
for pruning, and the trial's score on the validation rows.

The tuning rows are the config's own split without its test part: the fit job trains on `train` and stops early
on `validation`, both carved from the training part with the split kind's own logic (hybridrec/data/splits.py),
and so does every trial. The test rows are counted and dropped: no trial fits, stops or is scored on them.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from hybridrec.config import Config, config_from_dict
from hybridrec.errors import ConfigError, DataError

if TYPE_CHECKING:
    from hybridrec.data.dataset import Dataset
    from hybridrec.tuning.space import Space, Task


@dataclass
class TuningData:
    """What every trial fits on and is scored on."""

    dataset: Dataset  # its interactions are the training and validation rows only
    train: pd.DataFrame  # what a trial fits on
    validation: pd.DataFrame  # what it stops early on and is scored on
    n_test: int  # test rows set aside (counted, never kept)
    cold_items: list[str]  # a cold-items split: the validation items, held out of `train` entirely


def tuning_data(cfg: Config) -> TuningData:
    """Read the data, make the config's split and keep its training and validation parts."""
    from hybridrec.data.readers import read_dataset
    from hybridrec.data.splits import split_interactions

    if cfg.split.validation_fraction <= 0:
        raise ConfigError(
            "split.validation_fraction: 0 leaves no validation rows to score trials on; tune carves them from the"
            " training part (e.g. --set split.validation_fraction=0.1)"
        )
    dataset = read_dataset(cfg)
    split = split_interactions(dataset.interactions, cfg.split, cfg.seed)
    if split.validation.empty:
        raise DataError(f"the {cfg.split.kind} split left no validation rows to score trials on")
    seen = pd.concat([split.train, split.validation], ignore_index=True)
    cold = sorted(set(split.validation["item_id"]) - set(split.train["item_id"])) if split.cold_items else []
    return TuningData(
        dataclasses.replace(dataset, interactions=seen), split.train, split.validation, len(split.test), cold
    )


def run_trial(trial: Any, base_cfg: Config, base: dict, space: Space, task: Task, data: TuningData) -> TrialScore:
    """Fit the trial's config on the tuning rows and score it; raises optuna.TrialPruned when the pruner stops it
    after an epoch (the epoch's validation score is the trial's intermediate value, in the study's direction)."""
    import optuna

    from hybridrec.recommender import HybridRecommender

    cfg = trial_config(base_cfg, base, space, space.sample(trial, base))
    sign = 1.0 if task.direction == "minimize" else -1.0  # the trainer's `val` is lower-is-better

    def on_epoch(row: dict) -> None:
        trial.set_user_attr("epochs", int(row["epoch"]))
        trial.report(sign * float(row["val"]), int(row["epoch"]))
        if trial.should_prune():
            raise optuna.TrialPruned(f"pruned after epoch {row['epoch']}")

    rec = HybridRecommender(cfg, quiet=True).fit(data.dataset, data.train, data.validation, on_epoch=on_epoch)
    trial.set_user_attr("best_epoch", int(rec.train_result_.best_epoch))
    return trial_score(rec, data, task, cfg.evaluate.k)


def trial_config(base_cfg: Config, base: dict, space: Space, values: dict[str, Any]) -> Config:
    """The base config with a trial's values (a ConfigError when they make an invalid config: the trial fails)."""
    return config_from_dict(space.apply(base, values), base_cfg.base_dir)


@dataclass
class TrialScore:
    """A trial's validation value and, where the metric is a mean over validation units, those units' values
    (squared errors for RMSE, per-user recall@k): what `selection` compares two trials on, unit by unit."""

    value: float
    units: np.ndarray | None = None


def trial_score(rec: Any, data: TuningData, task: Task, k: int) -> TrialScore:
    """The trial's value on the validation rows (metric formulas: hybridrec/evaluation/metrics.py)."""
    from hybridrec.evaluation.holdout import evaluate, full_ranking_rows, positives
    from hybridrec.evaluation.metrics import rmse
    from hybridrec.model.history import UserHistory

    val = data.validation
    if task.cold:
        return TrialScore(float(evaluate(rec, val, data.cold_items, k=k).get("cold_auc", math.nan)))
    val = val[val["user_id"].isin(rec.users_.raw_ids) & val["item_id"].isin(rec.items_.raw_ids)]
    if task.metric == "rmse":
        predicted = np.asarray(rec.predict(val["user_id"], val["item_id"]), dtype=np.float64)
        errors = (predicted - val["rating"].to_numpy(dtype=np.float64)) ** 2
        return TrialScore(rmse(val["rating"], predicted), errors)
    pos = positives(val, rec.feedback_)
    if pos.empty:
        return TrialScore(math.nan)
    # left out of each user's ranking: what the trial trained on (the validation items are the answers here)
    trained = UserHistory.distinct(
        rec.users_.indices(data.train["user_id"]), rec.items_.indices(data.train["item_id"]), len(rec.users_)
    )
    recall = full_ranking_rows(rec, pos, k, trained)["recall"]
    return TrialScore(float(recall.mean()) if len(recall) else math.nan, recall)


def has_content(cfg: Config, dataset: Dataset) -> bool:
    """Whether items have the tokens a content ridge regresses on (categorical or list columns, title words,
    numeric bins)."""
    schema = dataset.item_schema
    tokens = bool(schema.categorical or schema.multi)
    return (
        tokens
        or (cfg.features.title_words and bool(schema.title))
        or bool(cfg.features.numeric_bins and schema.numeric)
    )
