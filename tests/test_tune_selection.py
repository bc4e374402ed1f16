"""Which trial best.yaml holds (hybridrec/tuning/selection.py): the config as given unless a trial leads it by more
than two standard errors of the paired per-unit difference on the same validation rows."""

from __future__ import annotations

import numpy as np
import optuna
import pytest

from hybridrec.errors import ModelFileError
from hybridrec.tuning.selection import LEAD, LEAD_SE, choose, lead_in_se, lead_over_given, load_units, save_units


def study_of(tmp_path, units: dict[int, np.ndarray | None], direction: str = "maximize"):
    """A study whose trial n completed with the mean of units[n] (kept in tmp_path/units unless None), each trial's
    lead over trial 0 recorded as `tune` records it when the trial completes (lead_over_given)."""
    study = optuna.create_study(direction=direction)
    for number, values in units.items():
        mean = float(np.mean(values)) if values is not None else 0.5
        attrs = {}
        if values is not None:
            save_units(tmp_path, number, values)
            lead = lead_over_given(study, tmp_path, values, {}, direction) if number else 0.0
            attrs = {} if lead is None else {LEAD: lead}
        study.add_trial(optuna.trial.create_trial(value=mean, params={}, distributions={}, user_attrs=attrs))
    return study


def test_a_lead_within_noise_keeps_the_config_as_given(tmp_path):
    rng = np.random.default_rng(0)
    given = rng.binomial(1, 0.26, 900).astype(float)
    # trial 1: 0.015 ahead on average (the ML-1M tune's lead), but on a few rows, noisy: under two errors
    lucky = given.copy()
    flips = rng.choice(np.flatnonzero(given == 0), 40, replace=False)
    lucky[flips] = 1.0
    back = rng.choice(np.flatnonzero(given == 1), 27, replace=False)
    lucky[back] = 0.0
    study = study_of(tmp_path, {0: given, 1: lucky})
    lead = lead_in_se(lucky, given, "maximize")
    gain = lucky - given
    assert lead == pytest.approx(gain.mean() / (gain.std(ddof=1) / np.sqrt(900)))
    assert 0 < lead < LEAD_SE
    choice = choose(study, "maximize")
    assert choice.top.number == 1 and choice.trial.number == 0
    assert "within noise" in choice.describe("recall@10")


def test_a_clear_lead_wins_and_the_next_best_is_tried_when_the_top_is_noise(tmp_path):
    rng = np.random.default_rng(1)
    given = rng.binomial(1, 0.26, 900).astype(float)
    clear = np.maximum(given, rng.binomial(1, 0.1, 900))  # only ever gains: ~0.08 ahead, far above the bar
    study = study_of(tmp_path, {0: given, 1: clear})
    assert choose(study, "maximize").trial.number == 1
    # squared errors, lower is better. Trial 1 lowers every row's error by 2%: a small, clear lead. Trial 2 is lower
    # still on average, but by noise on every row: the best value, within noise, so the next best is chosen
    errors = rng.gamma(1.0, 0.8, 2000)
    noisy = errors - 0.03 + rng.normal(0.0, 2.0, 2000)
    study = study_of(tmp_path / "rmse", {0: errors, 1: errors * 0.98, 2: noisy}, direction="minimize")
    assert noisy.mean() < (errors * 0.98).mean()
    assert lead_in_se(noisy, errors, "minimize") < LEAD_SE < lead_in_se(errors * 0.98, errors, "minimize")
    choice = choose(study, "minimize")
    assert (choice.top.number, choice.trial.number) == (2, 1) and choice.lead > LEAD_SE
    assert "trial 1 clears the bar" in choice.describe("rmse")


def test_trials_without_units_fall_back_to_the_best_value(tmp_path):
    study = study_of(tmp_path, {0: None, 1: None})
    study.add_trial(optuna.trial.create_trial(value=0.7, params={}, distributions={}))
    assert choose(study, "maximize").trial.number == 2


def test_a_units_file_that_is_not_a_float_vector_is_an_error(tmp_path):
    (tmp_path / "units").mkdir()
    np.save(tmp_path / "units" / "trial-3.npy", np.zeros((2, 2)))
    with pytest.raises(ModelFileError, match=r"trial-3\.npy: expected a 1-d float64 array"):
        load_units(tmp_path, 3)
    assert load_units(tmp_path, 4) is None
