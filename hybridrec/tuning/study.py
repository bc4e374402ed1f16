"""The study: Optuna's journal in OUT/study.journal (a later run with resume=True continues it), the budget, a line
per trial, and the outputs a killed run still leaves usable: trials.csv after every trial, best.yaml whenever the
best trial changes.

Budget: `minutes` is this run's wall clock, checked before each trial starts (the trial in flight at the deadline
finishes); `trials` is the study's count of finished trials, earlier runs included, so rerunning the same command
with resume=True finishes the same budget.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import fcntl
import gc
import hashlib
import io
import json
import math
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hybridrec.config import FORMAT_VERSION, Config, dump_config, load_config
from hybridrec.errors import ConfigError, HybridrecError, TrainingError
from hybridrec.safeio import write_checked
from hybridrec.tuning.objective import has_content, run_trial, tuning_data
from hybridrec.tuning.selection import LEAD, Choice, choose, given_trial, lead_over_given, save_units
from hybridrec.tuning.space import Space, Task, default_space, read_space, task_of

STUDY = "hybridrec-tune"
JOURNAL, TRIALS, BEST = "study.journal", "trials.csv", "best.yaml"
# settings that may change between the runs of one study (how it runs, not what it finds)
VOLATILE = ("train.threads", "train.device", "features.cache_dir", "features.batch_size")
INTERRUPTED = "interrupted"
# trials a failed fit does not stop the study for: bad combinations (ConfigError), divergence (TrainingError), torch
# running out of memory on a large dim (RuntimeError); anything else is a bug and stops it
TRIAL_ERRORS = (HybridrecError, RuntimeError, MemoryError)


@dataclass
class TuneResult:
    out: Path
    best_yaml: Path
    trials_csv: Path
    metric: str
    direction: str
    best_number: int  # the trial best.yaml holds (selection.choose: trial 0 unless a trial's lead clears the noise)
    best_value: float
    base_value: float | None  # the config as given: trial 0's value (or its rerun's, after an interruption)
    best_params: dict[str, Any]
    choice: str  # why best.yaml holds that trial (selection.Choice.describe)
    top_number: int  # the trial with the best validation value
    top_value: float
    counts: dict[str, int] = field(default_factory=dict)  # finished trials by state (COMPLETE, PRUNED, FAIL)
    new_trials: int = 0  # trials this run finished


def tune(
    cfg: Config,
    out: str | Path,
    *,
    minutes: float | None = None,
    trials: int | None = None,
    resume: bool = False,
    seed: int | None = None,
    space_file: str | Path | None = None,
    say: Callable[[str], None] | None = None,
    pruner: Any = None,
) -> TuneResult:
    """Search `cfg`'s settings within the budget and write OUT/best.yaml and OUT/trials.csv.

    seed: the sampler's (default: the config's); space_file: a YAML space replacing the default one
    (space.read_space); say: gets the progress lines (None: silent); pruner: an Optuna pruner (default: the median
    rule once 3 trials have finished, from epoch 3 on).
    """
    import optuna

    _check_budget(minutes, trials)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    journal = out / JOURNAL
    with _exclusive(out):
        if journal.exists() and not resume:
            raise ConfigError(
                f"{journal}: a study is there already; add --resume to continue it, or choose another --out"
            )
        data = tuning_data(cfg)
        task = task_of(cfg, data.dataset.feedback)
        base = base_payload(cfg, task)
        space = (
            read_space(space_file)
            if space_file
            else default_space(cfg, task, len(data.dataset.items), has_content(cfg, data.dataset))
        )
        space = space.including_base(base)
        study = _open_study(journal, base, space, task, pruner)
        study.sampler = optuna.samplers.TPESampler(
            seed=((cfg.seed if seed is None else seed) + len(study.trials)) % 2**32
        )
        tell = say or (lambda _line: None)
        tell(_header(cfg, data, task, space, journal, minutes, trials, _finished(study)))
        deadline = None if minutes is None else time.monotonic() + 60 * minutes
        paths = (out / TRIALS, out / BEST)
        started = _finished(study)
        try:
            while (trials is None or _finished(study) < trials) and (deadline is None or time.monotonic() < deadline):
                line = _one_trial(study, cfg, base, space, task, data, out)
                _write_trials(study, space, paths[0])
                if _complete(study):
                    _write_best(study, cfg, base, space, task, paths[1])
                tell(line + _best_note(study, task))
                gc.collect()
        finally:
            _write_trials(study, space, paths[0])
        if not _complete(study):
            raise TrainingError(_none_complete(study, paths[0]))
        choice = _write_best(study, cfg, base, space, task, paths[1])
        best = choice.trial
        given = given_trial(study)
        return TuneResult(
            out,
            paths[1],
            paths[0],
            task.metric,
            task.direction,
            best.number,
            float(best.value),
            float(given.value) if given is not None else None,
            dict(best.params),
            choice.describe(task.metric),
            choice.top.number,
            float(choice.top.value),
            _counts(study),
            _finished(study) - started,
        )


def base_payload(cfg: Config, task: Task) -> dict:
    """The config as the dict every trial starts from, `train.loss: auto` resolved (the loss searched is named)."""
    payload = dump_config(cfg)
    payload["train"]["loss"] = task.loss
    return payload


def _check_budget(minutes: float | None, trials: int | None) -> None:
    if minutes is None and trials is None:
        raise ConfigError("give a budget: --minutes M and/or --trials N")
    if minutes is not None and not (math.isfinite(minutes) and minutes > 0):
        raise ConfigError(f"--minutes: {minutes!r} must be a number > 0")
    if trials is not None and trials < 1:
        raise ConfigError(f"--trials: {trials!r} must be at least 1")


@contextmanager
def _exclusive(out: Path) -> Iterator[None]:
    """One tune at a time per folder: two would both write its journal's trials and its outputs."""
    fd = os.open(out / ".tune.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(f"{out}: another `hybridrec tune` is running on this folder") from None
        yield
    finally:
        os.close(fd)


def _storage(journal: Path) -> Any:
    import optuna

    try:
        from optuna.storages.journal import JournalFileBackend
    except ImportError:  # optuna < 4.0
        return optuna.storages.JournalStorage(optuna.storages.JournalFileStorage(str(journal)))
    return optuna.storages.JournalStorage(JournalFileBackend(str(journal)))


def _open_study(journal: Path, base: dict, space: Space, task: Task, pruner: Any) -> Any:
    """A new study (trial 0 queued: the base config) or the one in `journal`, checked to be this config's; an
    interrupted last trial is marked failed and queued again."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    fresh = not journal.exists()
    pruner = pruner or optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=3)
    try:
        study = optuna.create_study(
            study_name=STUDY,
            storage=_storage(journal),
            direction=task.direction,
            pruner=pruner,
            load_if_exists=True,
        )
    except Exception as exc:  # noqa: BLE001 - a damaged journal is bad input: one line naming it
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"{journal}: not a study journal tune can read ({first})") from None
    mark = _fingerprint(base, space, task)
    if fresh or (not study.trials and not study.user_attrs):
        study.set_user_attr("fingerprint", mark)
        study.set_user_attr("metric", task.metric)
        study.enqueue_trial(space.base_values(base))
        return study
    if study.user_attrs.get("fingerprint") != mark:
        raise ConfigError(
            f"{journal}: that study was started from another config, data or search space; resume with the same"
            " --config, --data, --set and --space, or choose another --out"
        )
    if not study.trials:
        return study
    last = study.trials[-1]
    running = last.state == optuna.trial.TrialState.RUNNING  # its process was killed
    if running or last.user_attrs.get("note") == INTERRUPTED:
        if running:
            storage = study._storage  # noqa: SLF001 - a killed trial is closed through the study's own storage
            storage.set_trial_user_attr(last._trial_id, "note", INTERRUPTED)  # noqa: SLF001
            storage.set_trial_state_values(last._trial_id, optuna.trial.TrialState.FAIL)  # noqa: SLF001
        study.enqueue_trial(dict(last.params))
    return study


def _fingerprint(base: dict, space: Space, task: Task) -> str:
    """What a resumed study must share with the run that started it: config (less VOLATILE), space and task."""
    stable = copy.deepcopy(base)
    for key in VOLATILE:
        section, name = key.split(".")
        stable.get(section, {}).pop(name, None)
    record = {"config": stable, "space": [p.describe() for p in space.params], "task": dataclasses.asdict(task)}
    return hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _one_trial(study: Any, cfg: Config, base: dict, space: Space, task: Task, data: Any, out: Path) -> str:
    """Run one trial to its end (complete, pruned or failed) and say how it went. A complete trial's per-unit
    validation values are kept, and its lead over trial 0 in standard errors is a trial attribute (selection.py)."""
    import optuna

    trial = study.ask()
    started = time.perf_counter()
    try:
        score = run_trial(trial, cfg, base, space, task, data)
        value = score.value
    except optuna.TrialPruned as exc:
        trial.set_user_attr("note", str(exc))
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        outcome = str(exc)
    except TRIAL_ERRORS as exc:
        note = f"failed: {_first_line(exc)}"
        trial.set_user_attr("note", note)
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        outcome = note
    except KeyboardInterrupt:
        trial.set_user_attr("note", INTERRUPTED)
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        raise
    else:
        if math.isfinite(value):
            if score.units is not None:
                save_units(out, trial.number, score.units)
                lead = lead_over_given(study, out, score.units, trial.params, task.direction)
                if lead is not None:
                    trial.set_user_attr(LEAD, lead)
            study.tell(trial, value)
            outcome = f"{task.metric} {value:.4f}"
        else:
            trial.set_user_attr("note", f"failed: the {task.metric} is not a number")
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            outcome = f"failed: the {task.metric} is not a number"
    seconds = time.perf_counter() - started
    return f"trial {trial.number:>3}  {outcome}  {seconds:.0f} s  {_summary(trial.params)}"


def _best_note(study: Any, task: Task) -> str:
    if not _complete(study):
        return ""
    best = study.best_trial
    return f"  (best {best.value:.4f}, trial {best.number})"


def _summary(params: dict[str, Any]) -> str:
    """`dim=32 lr=0.0052 user_history.length=100 ease.recommend_weight=0.21`: short keys, 3 significant digits."""
    parts = []
    for label, value in params.items():
        key = label.split("|")[0].removeprefix("model.").removeprefix("train.").removeprefix("terms.")
        parts.append(f"{key}={value:.3g}" if isinstance(value, float) else f"{key}={value}")
    return " ".join(parts)


def _header(
    cfg: Config,
    data: Any,
    task: Task,
    space: Space,
    journal: Path,
    minutes: float | None,
    trials: int | None,
    existing: int,
) -> str:
    budget = " or ".join(
        ([f"{trials} trials in the study"] if trials else []) + ([f"{minutes:g} min"] if minutes else [])
    )
    resumed = f", resumed after {existing} finished trials" if existing else ""
    deadline = " (a trial running at the deadline finishes)" if minutes else ""
    return (
        f"tune {cfg.name}: {task.metric} ({task.direction}) on {len(data.validation):,} validation rows carved from"
        f" the training part; trials fit on {len(data.train):,} rows; the {data.n_test:,} test rows are set aside."
        f" {len(space.params)} settings; budget {budget}{deadline};"
        f" study {journal}{resumed}"
    )


def _finished(study: Any) -> int:
    """Trials that count against the budget: complete, pruned or failed (an interrupted one is run again)."""
    return sum(1 for t in study.trials if t.state.is_finished() and t.user_attrs.get("note") != INTERRUPTED)


def _complete(study: Any) -> list:
    return [t for t in study.trials if t.state.name == "COMPLETE"]


def _counts(study: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for t in study.trials:
        if t.state.is_finished():
            counts[t.state.name] = counts.get(t.state.name, 0) + 1
    return counts


def _none_complete(study: Any, table: Path) -> str:
    counts = ", ".join(f"{n} {state.lower()}" for state, n in _counts(study).items()) or "no trials"
    notes = [t.user_attrs["note"] for t in study.trials if str(t.user_attrs.get("note", "")).startswith("failed")]
    return f"no trial finished with a score ({counts}{'; first ' + notes[0] if notes else ''}); see {table}"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _write_trials(study: Any, space: Space, path: Path) -> None:
    """trials.csv: number, state, value (complete trials), seconds, epochs trained, the kept epoch, a note (why
    pruned or failed), then one column per searched setting (empty where the trial did not draw it)."""
    labels = [p.label for p in space.params]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["number", "state", "value", "lead_se", "seconds", "epochs", "best_epoch", "note", *labels])
    for t in study.trials:
        if not t.state.is_finished():
            continue
        value = repr(float(t.value)) if t.state.name == "COMPLETE" and t.value is not None else ""
        took = (
            (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_start and t.datetime_complete else 0
        )
        attrs = t.user_attrs
        writer.writerow(
            [t.number, t.state.name, value, _rounded(attrs.get(LEAD)), f"{took:.1f}", attrs.get("epochs", "")]
            + [attrs.get("best_epoch", "")]
            + [attrs.get("note", ""), *(t.params.get(label, "") for label in labels)]
        )
    _write_atomic(path, buffer.getvalue())


def _rounded(lead: float | None) -> str:
    return "" if lead is None else repr(round(float(lead), 3))


def _write_best(study: Any, cfg: Config, base: dict, space: Space, task: Task, path: Path) -> Choice:
    """best.yaml: the base config with the chosen trial's values (selection.choose), named `<name>-tuned`, its
    data paths absolute so `hybridrec fit --config best.yaml` reads the same data from this folder; checked by
    loading it back."""
    choice = choose(study, task.direction)
    best = choice.trial
    payload = space.apply(base, best.params)
    payload.pop("base_dir", None)
    payload["name"] = f"{cfg.name}-tuned"
    paths = payload.get("data", {}).get("paths", {})
    for key in paths:
        resolved = cfg.data_path(key, required=False)
        if resolved is not None:
            paths[key] = os.path.abspath(resolved)
    payload = {"format_version": FORMAT_VERSION, **{k: v for k, v in payload.items() if k != "format_version"}}
    zero = given_trial(study)
    given = f"; the config as given (trial {zero.number}): {zero.value:.4f}" if zero is not None else ""
    header = (
        f"# hybridrec tune: the chosen of {len(_complete(study))} complete trials in {JOURNAL} beside this file\n"
        f"# trial {best.number}: validation {task.metric} {best.value:.4f}{given}\n"
        f"# {choice.describe(task.metric)}\n"
        f"# data paths are absolute; fit it with: hybridrec fit --config {path}\n"
    )
    text = header + yaml.safe_dump(payload, sort_keys=False, allow_unicode=True)
    _write_atomic(path, text, check=lambda tmp: load_config(tmp))
    return choice


def _write_atomic(path: Path, text: str, check: Callable[[Path], Any] | None = None) -> None:
    """Write beside `path` and rename over it: a reader (or a killed run) sees the old file or the new, whole."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")

    def write(target: Path) -> None:
        with open(target, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())

    try:
        write_checked(tmp, write)
        if check is not None:
            check(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
