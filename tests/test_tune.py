"""`hybridrec tune` on the bundled demo: trials, trials.csv, best.yaml, resume, pruning, and the test rows never
read. Each run is a few 3-epoch trials without a text model (seconds each)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import DEMO_CONFIG, DEMO_ITEMS_CSV, DEMO_RATINGS_CSV, assert_ok, assert_one_line_error
from hybridrec_cli.main import app
from typer.testing import CliRunner

from hybridrec.config import load_config
from hybridrec.config_checks import setting

QUICK = ["features.text_encoder=none", "train.epochs=3", "train.threads=1"]


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def tune_args(out: Path, cache: Path, *extra: str, config: Path = DEMO_CONFIG) -> list[str]:
    sets = [x for kv in [*QUICK, f"features.cache_dir={cache}"] for x in ("--set", kv)]
    return ["tune", "--config", config, *sets, "--out", out, *extra]


def read_trials(out: Path) -> list[dict[str, str]]:
    with open(out / "trials.csv", newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def param_columns(row: dict[str, str]) -> dict[str, str]:
    fixed = {"number", "state", "value", "lead_se", "seconds", "epochs", "best_epoch", "note"}
    return {k: v for k, v in row.items() if k not in fixed and v != ""}


def same_value(config_value, cell: str) -> bool:
    """A trials.csv cell against the config's value (numbers compared as numbers)."""
    if isinstance(config_value, bool) or not isinstance(config_value, (int, float)):
        return str(config_value) == cell
    return math.isclose(float(config_value), float(cell), rel_tol=1e-9)


def lead_from_units(out: Path, number: int, metric: str, given: int = 0) -> float:
    """Trial `number`'s improvement over the given config's trial per validation unit, as a z statistic."""
    if number == given:
        return 0.0
    zero, other = (np.load(out / "units" / f"trial-{n}.npy", allow_pickle=False) for n in (given, number))
    gain = other - zero if metric.startswith("recall") else zero - other  # squared errors: lower is better
    return float(gain.mean() / (gain.std(ddof=1) / math.sqrt(len(gain))))


def best_matches_row(best: Path, row: dict[str, str]) -> None:
    cfg = load_config(best)
    for label, cell in param_columns(row).items():
        key = label.split("|")[0]
        if key.startswith("terms."):
            kind, name = key.split(".")[1:]
            term = next(t for t in cfg.model.terms if t["type"] == kind)
            assert same_value(term[name], cell), (key, term, cell)
        else:
            assert same_value(setting(cfg, key), cell), (key, setting(cfg, key), cell)


@pytest.mark.parametrize(
    ("extra", "metric", "pick"),
    [((), "rmse", min), (("--set", "train.loss=bpr"), "recall@10", max)],
    ids=["ratings-rmse", "ranking-recall"],
)
def test_tune_writes_the_best_trial_as_a_config_fit_accepts(tmp_path, monkeypatch, extra, metric, pick):
    out = tmp_path / "study"
    result = invoke(*tune_args(out, tmp_path / "cache", "--trials", 3, "--json", *extra))
    assert_ok(result)
    answer = json.loads(result.stdout)
    rows = read_trials(out)
    assert [r["number"] for r in rows] == ["0", "1", "2"]
    assert len(result.stderr.strip().splitlines()) == 1 + 3  # the header, then one line per trial
    complete = [r for r in rows if r["state"] == "COMPLETE"]
    assert complete and answer["metric"] == metric
    top = pick(complete, key=lambda r: float(r["value"]))
    assert answer["top_value"] == float(top["value"]) and answer["top_trial"] == int(top["number"])
    # best.yaml holds the top trial only when its lead over trial 0, recomputed here from the kept per-unit values,
    # is more than two standard errors of the paired difference; otherwise the config as given
    chosen = top if lead_from_units(out, int(top["number"]), metric) > 2.0 else rows[0]
    for row in complete:  # the kept units are what the value is the mean of (RMSE: the root of the mean)
        units = np.load(out / "units" / f"trial-{row['number']}.npy", allow_pickle=False)
        expected = math.sqrt(units.mean()) if metric == "rmse" else units.mean()
        assert math.isclose(float(row["value"]), expected, rel_tol=1e-9)
    assert answer["value"] == float(chosen["value"]) and answer["best_trial"] == int(chosen["number"])
    assert answer["config_as_given"] == float(rows[0]["value"])  # trial 0 is the config as given
    best = Path(answer["best_config"])
    best_matches_row(best, chosen)
    monkeypatch.chdir(tmp_path)  # best.yaml finds its data from anywhere: `fit` it from another folder
    fit = invoke("fit", "--config", best, "--set", "train.epochs=1", "--out", tmp_path / "models", "--quiet", "--json")
    assert_ok(fit)
    assert Path(json.loads(fit.stdout)["model"]).name.startswith("demo-tuned")


def poisoned_copy(folder: Path, part: str) -> Path:
    """The demo ratings with the rows of one part of the default split (test or validation) given other ratings
    and reviews; the split itself depends on (user, item) pairs only, so every part keeps its rows."""
    from hybridrec.data.readers import read_dataset
    from hybridrec.data.splits import split_interactions

    cfg = load_config(DEMO_CONFIG)
    split = split_interactions(read_dataset(cfg).interactions, cfg.split, cfg.seed)
    pairs = set(zip(getattr(split, part)["user_id"], getattr(split, part)["item_id"]))
    frame = pd.read_csv(DEMO_RATINGS_CSV, dtype=str, keep_default_na=False)
    hit = [(u, i) in pairs for u, i in zip(frame["user_id"], frame["item_id"])]
    assert sum(hit) == len(getattr(split, part))
    frame.loc[hit, "rating"] = ["1" if float(r) >= 3 else "5" for r in frame.loc[hit, "rating"]]
    frame.loc[hit, "review"] = "poison poison poison"
    folder.mkdir()
    frame.to_csv(folder / "ratings.csv", index=False)
    return folder / "ratings.csv"


def tune_on(ratings: Path, out: Path, cache: Path) -> list[dict[str, str]]:
    tfidf = ["--set", "features.text_encoder=tfidf", "--set", "features.tfidf_dim=16"]  # reviews do count
    data = ["--data", f"interactions={ratings}", "--data", f"items={DEMO_ITEMS_CSV}"]
    assert_ok(invoke(*tune_args(out, cache, "--trials", 2, "--quiet", *data, *tfidf)))
    return [{k: v for k, v in r.items() if k != "seconds"} for r in read_trials(out)]


def test_tune_never_reads_the_test_rows(tmp_path, monkeypatch):
    """Other ratings and reviews on the test rows change nothing; on the validation rows they change the scores
    (so the comparison can fail). Every frame a trial fits on holds no test pair."""
    from hybridrec.recommender import HybridRecommender

    fitted: list[pd.DataFrame] = []
    real_fit = HybridRecommender.fit

    def recording_fit(self, dataset, train=None, validation=None, **kwargs):
        fitted.extend([dataset.interactions, train, validation])
        return real_fit(self, dataset, train, validation, **kwargs)

    monkeypatch.setattr(HybridRecommender, "fit", recording_fit)
    cache = tmp_path / "cache"
    plain = tune_on(DEMO_RATINGS_CSV, tmp_path / "plain", cache)
    assert tune_on(poisoned_copy(tmp_path / "test-poisoned", "test"), tmp_path / "a", cache) == plain
    assert tune_on(poisoned_copy(tmp_path / "val-poisoned", "validation"), tmp_path / "b", cache) != plain

    from hybridrec.data.readers import read_dataset
    from hybridrec.data.splits import split_interactions

    cfg = load_config(DEMO_CONFIG)
    test = split_interactions(read_dataset(cfg).interactions, cfg.split, cfg.seed).test
    test_pairs = set(zip(test["user_id"], test["item_id"]))
    assert len(fitted) == 3 * 2 * 3 and test_pairs
    for frame in fitted:
        assert len(frame) and not test_pairs & set(zip(frame["user_id"], frame["item_id"]))


def test_resume_continues_the_study_and_an_existing_one_needs_resume(tmp_path):
    out, cache = tmp_path / "study", tmp_path / "cache"
    assert_ok(invoke(*tune_args(out, cache, "--trials", 2, "--quiet")))
    first = read_trials(out)
    assert_one_line_error(invoke(*tune_args(out, cache, "--trials", 3)), "study.journal", "--resume")
    assert read_trials(out) == first  # the refused run touched nothing
    other = invoke(*tune_args(out, cache, "--trials", 3, "--resume", "--set", "model.hidden=8"))
    assert_one_line_error(other, "another config")
    assert_ok(invoke(*tune_args(out, cache, "--trials", 3, "--resume", "--quiet")))
    rows = read_trials(out)
    assert [r["number"] for r in rows] == ["0", "1", "2"] and rows[:2] == first
    assert param_columns(rows[2]) not in [param_columns(r) for r in first]  # a new draw, not a repeat


def interrupt_fit(monkeypatch, call: int) -> None:
    """Make the `call`-th fit of this test raise KeyboardInterrupt (Ctrl-C in the middle of that trial)."""
    from hybridrec.recommender import HybridRecommender

    real_fit, calls = HybridRecommender.fit, []

    def fit_or_interrupt(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == call:
            raise KeyboardInterrupt
        return real_fit(self, *args, **kwargs)

    monkeypatch.setattr(HybridRecommender, "fit", fit_or_interrupt)


def test_an_interrupted_trial_is_run_again_on_resume(tmp_path, monkeypatch):
    out, cache = tmp_path / "study", tmp_path / "cache"
    interrupt_fit(monkeypatch, 2)
    stopped = invoke(*tune_args(out, cache, "--trials", 2, "--quiet"))
    assert stopped.exit_code == 130 and "interrupted" in stopped.stderr
    rows = read_trials(out)
    assert [(r["number"], r["state"], r["note"]) for r in rows] == [("0", "COMPLETE", ""), ("1", "FAIL", "interrupted")]
    assert_ok(invoke(*tune_args(out, cache, "--trials", 2, "--resume", "--quiet")))
    rows = read_trials(out)
    assert [(r["number"], r["state"]) for r in rows] == [("0", "COMPLETE"), ("1", "FAIL"), ("2", "COMPLETE")]
    assert param_columns(rows[2]) == param_columns(rows[1])  # the same draw, run to its end


def test_when_trial_0_is_interrupted_its_rerun_is_the_config_as_given(tmp_path, monkeypatch):
    """Trial 0 (the config as given) cut short: the resumed study runs the same values again under trial 1, and
    that trial is what the others' leads are measured against and what best.yaml falls back to."""
    out, cache = tmp_path / "study", tmp_path / "cache"
    interrupt_fit(monkeypatch, 1)
    assert invoke(*tune_args(out, cache, "--trials", 1, "--quiet")).exit_code == 130
    resumed = invoke(*tune_args(out, cache, "--trials", 2, "--resume", "--quiet", "--json"))
    assert_ok(resumed)
    rows = read_trials(out)
    assert [(r["number"], r["state"]) for r in rows] == [("0", "FAIL"), ("1", "COMPLETE"), ("2", "COMPLETE")]
    assert param_columns(rows[1]) == param_columns(rows[0])  # the given values, run again
    answer = json.loads(resumed.stdout)
    assert answer["config_as_given"] == float(rows[1]["value"])
    assert rows[1]["lead_se"] == "0.0"
    gain = lead_from_units(out, 2, answer["metric"], given=1)
    assert float(rows[2]["lead_se"]) == pytest.approx(gain, abs=1e-3)
    assert answer["best_trial"] == (2 if gain > 2.0 else 1)


def test_pruned_trials_stop_after_the_epoch_the_pruner_rejects(tmp_path):
    """A pruner that rejects every reported RMSE stops each trial after its first epoch; no trial completes, so
    there is no best config, and the table says why."""
    import optuna

    from hybridrec.errors import TrainingError
    from hybridrec.tuning import tune

    cfg = load_config(DEMO_CONFIG, [*QUICK, f"features.cache_dir={tmp_path / 'cache'}"])
    out = tmp_path / "study"
    with pytest.raises(TrainingError, match="no trial finished with a score.*2 pruned"):
        tune(cfg, out, trials=2, pruner=optuna.pruners.ThresholdPruner(upper=0.0))
    rows = read_trials(out)
    assert [(r["state"], r["epochs"], r["note"]) for r in rows] == [("PRUNED", "1", "pruned after epoch 1")] * 2
    assert not (out / "best.yaml").exists()


def test_each_epoch_s_validation_score_is_reported_to_the_study(tmp_path):
    import optuna

    from hybridrec.tuning import tune
    from hybridrec.tuning.study import JOURNAL, STUDY, _storage

    cfg = load_config(DEMO_CONFIG, [*QUICK, f"features.cache_dir={tmp_path / 'cache'}"])
    result = tune(cfg, tmp_path / "study", trials=1)
    study = optuna.load_study(study_name=STUDY, storage=_storage(tmp_path / "study" / JOURNAL))
    (trial,) = study.trials
    row = read_trials(tmp_path / "study")[0]
    assert sorted(trial.intermediate_values) == list(range(1, int(row["epochs"]) + 1))
    assert all(0.5 < v < 2.0 for v in trial.intermediate_values.values())  # validation RMSE per epoch
    assert trial.value == result.best_value == result.base_value


def test_a_space_file_replaces_the_default_space(tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text("model.dim: [8, 16]\ntrain.l2: {log: [0.001, 0.1]}\n")
    out = tmp_path / "study"
    assert_ok(invoke(*tune_args(out, tmp_path / "cache", "--trials", 3, "--quiet", "--space", space)))
    rows = read_trials(out)
    assert all(set(param_columns(r)) == {"model.dim", "train.l2"} for r in rows)
    assert rows[0]["model.dim"] == "32"  # the config's own value joins the choices: trial 0 is the config as given
    assert all(r["model.dim"] in {"8", "16", "32"} and 0.001 <= float(r["train.l2"]) <= 0.1 for r in rows)


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        ((), ("--minutes", "--trials")),
        (("--minutes", 0), ("--minutes",)),
        (("--trials", 0), ("--trials",)),
        (("--trials", 1, "--set", "split.validation_fraction=0"), ("validation_fraction",)),
    ],
)
def test_bad_budgets_and_splits_are_one_line_errors(tmp_path, args, fragments):
    assert_one_line_error(invoke(*tune_args(tmp_path / "study", tmp_path / "cache", *args)), *fragments)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("model.dimm: [8]\n", "not a config key"),
        ("terms.ease.weight: {float: [0, 1]}\n", "score term field"),
        ("train.l2: {log: [0, 1]}\n", "not a valid log range"),
        ("train.lr: {float: [1]}\n", "expected [choices]"),
        ("- model.dim\n", "expected a mapping"),
    ],
)
def test_bad_space_files_are_one_line_errors(tmp_path, text, fragment):
    space = tmp_path / "space.yaml"
    space.write_text(text)
    result = invoke(*tune_args(tmp_path / "study", tmp_path / "cache", "--trials", 1, "--space", space))
    assert_one_line_error(result, "space.yaml", fragment)


def test_a_trial_left_running_by_a_killed_run_is_closed_and_run_again(tmp_path):
    """A run killed outright (SIGKILL, power loss) leaves its trial RUNNING in the journal: resume marks it failed
    (interrupted, not counted against the budget) and runs its draw again."""
    import optuna

    from hybridrec.tuning import tune
    from hybridrec.tuning.study import JOURNAL, STUDY, _storage

    cfg = load_config(DEMO_CONFIG, [*QUICK, f"features.cache_dir={tmp_path / 'cache'}"])
    out = tmp_path / "study"
    tune(cfg, out, trials=1)
    study = optuna.load_study(study_name=STUDY, storage=_storage(out / JOURNAL))
    left = study.ask()  # what a killed run leaves: a trial that drew its values and never reported back
    left.suggest_categorical("model.dim", [16, 32, 64, 128])
    del study, left
    result = tune(cfg, out, trials=2, resume=True)
    rows = read_trials(out)
    assert [(r["number"], r["state"], r["note"]) for r in rows] == [
        ("0", "COMPLETE", ""),
        ("1", "FAIL", "interrupted"),
        ("2", "COMPLETE", ""),
    ]
    assert rows[2]["model.dim"] == rows[1]["model.dim"] and result.new_trials == 1
