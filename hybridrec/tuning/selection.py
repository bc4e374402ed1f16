"""Which trial `best.yaml` holds. The best validation value of many trials is an optimistic estimate (the largest of
many noisy draws on the same few validation rows: on the ML-1M top-N protocol, 890 positive validation ratings put
one standard error of recall@10 near 0.015, the size of the lead the best trial had and then lost on the test rows).
So a trial replaces the config as given (trial 0) only when it leads it by more than `LEAD_SE` standard errors of
their paired difference, unit by unit on the same validation rows (squared errors for RMSE, per-user recall@k).

The units of each complete trial are kept in OUT/units/trial-N.npy (float64, no pickles) and its lead is computed
once, as it completes, against the given config's units. A trial without a lead (a cold-items AUC, or a study from
before units were kept) can only be chosen when the given config has none either: then the best value wins.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hybridrec.errors import ModelFileError
from hybridrec.safeio import write_checked

UNITS = "units"
LEAD = "lead_se"  # the trial attribute holding its lead over the config as given, in standard errors
LEAD_SE = 2.0  # a one-sided ~98% bar: a lead smaller than this is what picking the best of many noisy trials gives


@dataclass(frozen=True)
class Choice:
    """The chosen trial and how the best ones compare with the config as given (leads in standard errors; None:
    not comparable unit by unit)."""

    trial: Any  # an optuna FrozenTrial: what best.yaml holds
    top: Any  # the trial with the best validation value
    top_lead: float | None
    lead: float | None  # the chosen trial's lead (0 for the given config itself)
    given: int = 0  # the trial that is the config as given (trial 0, or its rerun after an interruption)

    def describe(self, metric: str) -> str:
        """One line on why best.yaml holds this trial."""
        if self.top.number == self.given:
            return f"no trial beat the config as given (trial {self.given}) on validation {metric}"
        if self.top_lead is None and self.trial.number == self.top.number:
            return f"trial {self.top.number} has the best validation {metric} (no per-row values to test its lead)"
        top = f"trial {self.top.number} leads the config as given by {_se(self.top_lead)} standard errors"
        if self.trial.number == self.top.number:
            return f"{top} (the bar is {LEAD_SE:g})"
        if self.trial.number == self.given:
            return f"{top}, within noise (the bar is {LEAD_SE:g}): best.yaml keeps the config as given"
        return f"{top}, within noise; trial {self.trial.number} clears the bar of {LEAD_SE:g} ({_se(self.lead)})"


def _se(value: float | None) -> str:
    return "?" if value is None else f"{value:.1f}"


def units_path(out: Path, number: int) -> Path:
    return out / UNITS / f"trial-{number}.npy"


def save_units(out: Path, number: int, units: np.ndarray) -> None:
    """Keep a complete trial's per-unit validation values (written whole or not at all)."""
    path = units_path(out, number)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")

    def write(target: Path) -> None:
        with open(target, "wb") as fh:  # a handle: np.save would add ".npy" to the temporary name
            np.save(fh, np.ascontiguousarray(units, dtype=np.float64), allow_pickle=False)

    write_checked(tmp, write)
    tmp.replace(path)


def load_units(out: Path, number: int) -> np.ndarray | None:
    """A trial's units, or None when they were never kept; a file that is not a 1-d float array is an error."""
    path = units_path(out, number)
    if not path.exists():
        return None
    try:
        units = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ModelFileError(f"{path}: not a readable .npy file ({exc})") from exc
    if units.ndim != 1 or units.dtype != np.float64:
        raise ModelFileError(f"{path}: expected a 1-d float64 array, found {units.dtype} of shape {units.shape}")
    return units


def lead_in_se(candidate: np.ndarray, given: np.ndarray, direction: str) -> float | None:
    """The candidate's mean improvement over the given config, unit by unit, in standard errors of that mean
    (positive: better). None when the two were not scored on the same units."""
    if candidate.shape != given.shape or len(given) < 2:
        return None
    gain = (candidate - given) if direction == "maximize" else (given - candidate)
    spread = float(gain.std(ddof=1))
    mean = float(gain.mean())
    if spread == 0.0:
        return 0.0 if mean == 0.0 else math.copysign(math.inf, mean)
    return mean / (spread / math.sqrt(len(gain)))


def given_trial(study: Any) -> Any | None:
    """The complete trial that is the config as given: trial 0 (queued first with the base values), or, when trial
    0 was cut short, the later trial that ran the same values again (study._open_study queues it); None before."""
    if not study.trials:
        return None
    values = study.trials[0].params
    return next((t for t in study.trials if t.state.name == "COMPLETE" and t.params == values), None)


def lead_over_given(study: Any, out: Path, units: np.ndarray, values: dict, direction: str) -> float | None:
    """A trial's lead over the config as given, computed once as it completes (kept as its `LEAD` attribute):
    0 for the given config itself (no complete given trial yet, and the values of trial 0); None when the given
    config's units are not there to compare with."""
    done = given_trial(study)
    if done is None:
        return 0.0 if values == study.trials[0].params else None
    given = load_units(out, done.number)
    return None if given is None else lead_in_se(units, given, direction)


def choose(study: Any, direction: str) -> Choice:
    """The best complete trial whose lead over the given config clears `LEAD_SE`; the given config when none does.
    The leads are the ones each trial recorded as it completed (`lead_over_given`)."""
    complete = [t for t in study.trials if t.state.name == "COMPLETE" and t.value is not None]
    ranked = sorted(complete, key=lambda t: t.value, reverse=direction == "maximize")
    top = ranked[0]
    given = given_trial(study)
    if given is None or LEAD not in given.user_attrs:
        return Choice(top, top, None, None)
    if top.number == given.number:
        return Choice(given, given, 0.0, 0.0, given.number)
    top_lead = top.user_attrs.get(LEAD)
    for trial in ranked:
        if trial.number == given.number:
            break  # every trial from here on is no better than the given config
        lead = trial.user_attrs.get(LEAD)
        if lead is not None and lead > LEAD_SE:
            return Choice(trial, top, top_lead, lead, given.number)
    return Choice(given, top, top_lead, 0.0, given.number)
