"""`train.refit`: early stopping chooses the epoch count on the validation rows, then the model is trained again
from the start on the training and validation rows together, for that many epochs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import DEMO_CONFIG, demo_split, quick_fit_overrides

from hybridrec.config import load_config
from hybridrec.errors import ConfigError
from hybridrec.recommender import HybridRecommender

SETTINGS = ("features.text_encoder=none", "train.epochs=6", "train.patience=1", "train.loss=bpr")


def fit(dataset, cache, train, validation, *extra: str) -> HybridRecommender:
    cfg = load_config(DEMO_CONFIG, quick_fit_overrides(cache, *SETTINGS, *extra))
    return HybridRecommender(cfg).fit(dataset, train, validation)


def test_refit_trains_the_kept_epoch_count_again_on_train_and_validation(demo_dataset, tmp_path):
    split = demo_split(demo_dataset)
    cache = tmp_path / "cache"
    once = fit(demo_dataset, cache, split.train, split.validation)
    refit = fit(demo_dataset, cache, split.train, split.validation, "train.refit=true")
    kept = once.train_result_.best_epoch
    assert 1 <= kept <= 6 and refit.train_result_.best_epoch == kept  # the first fit's record is kept
    rows = pd.concat([split.train, split.validation], ignore_index=True)
    assert refit.train_result_.refit_rows == len(rows) and once.train_result_.refit_rows == 0
    # the same as fitting the rows of both parts for that many epochs without validation, to the last bit
    by_hand = fit(demo_dataset, cache, rows, None, f"train.epochs={kept}", "train.early_stopping=false")
    np.testing.assert_array_equal(refit.towers_.item_vectors, by_hand.towers_.item_vectors)
    np.testing.assert_array_equal(refit.towers_.user_vectors, by_hand.towers_.user_vectors)
    assert not np.array_equal(refit.towers_.item_vectors, once.towers_.item_vectors)


def test_refit_without_validation_rows_is_a_single_fit(demo_dataset, tmp_path):
    split = demo_split(demo_dataset)
    rec = fit(demo_dataset, tmp_path / "cache", split.train, None, "train.refit=true", "train.epochs=2")
    assert rec.train_result_.refit_rows == 0


def test_refit_under_torchrun_is_refused_before_any_work(demo_dataset, tmp_path, monkeypatch):
    """Ranks other than 0 leave after the first training, so a refit would wait on them forever: refused."""
    split = demo_split(demo_dataset)
    monkeypatch.setenv("WORLD_SIZE", "2")  # what torchrun sets; no process group is made before the check
    with pytest.raises(ConfigError, match="train.refit runs on one process only"):
        fit(demo_dataset, tmp_path / "cache", split.train, split.validation, "train.refit=true")


def test_a_refit_fit_job_reports_the_rows_and_leaves_no_checkpoint(tmp_path):
    """`hybridrec fit --set train.refit=true`: the run record names the rows trained again; neither phase's
    per-epoch state outlives the finished job."""
    import json

    from hybridrec_cli.main import app
    from typer.testing import CliRunner

    out = tmp_path / "models"
    sets = [x for kv in quick_fit_overrides(tmp_path / "cache", *SETTINGS, "train.refit=true") for x in ("--set", kv)]
    result = CliRunner().invoke(app, ["fit", "--config", str(DEMO_CONFIG), *sets, "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    run = json.loads(result.stdout)["run"]
    assert run["refit_rows"] == run["n_train"] + run["n_validation"]
    assert run["best_epoch"] >= 1
    assert list((out / ".checkpoints").iterdir()) == []
