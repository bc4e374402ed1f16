"""What a fit shows and keeps: progress records through logging (phases, epoch i/N with the metric named, the early
stop announced, data notes before training), the CLI display (plain lines off a terminal, silent with --quiet, a
live bar on one), metrics.json split into metrics / baseline / run with a popularity baseline computed by the same
code, the epoch history in `info`, ratings clipped in `recommend`, titles beside `score-new` neighbours, and the
Amazon category path."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import DEMO_CONFIG, DEMO_ITEMS_CSV, DEMO_RATINGS_CSV, assert_ok, quick_fit_overrides
from hybridrec_cli.main import app
from typer.testing import CliRunner

from hybridrec.config import load_config

TFIDF = "features.text_encoder=tfidf"  # no sentence-transformer load: these tests are about output


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


# ------------------------------------------------------------------------------------------- logging records
@pytest.fixture(scope="module")
def logged_fit(tmp_path_factory, text_cache_dir):
    """A fit that cannot gain after its first epoch (lr 1e-9, patience 1): it must stop after epoch 2, keeping 1."""
    from hybridrec_cli.job import fit_from_config

    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record)

    logger = logging.getLogger("hybridrec")
    handler, old = Keep(logging.DEBUG), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        overrides = quick_fit_overrides(text_cache_dir, TFIDF, "train.epochs=5", "train.patience=1", "train.lr=1.0e-9")
        report = fit_from_config(load_config(DEMO_CONFIG, overrides), tmp_path_factory.mktemp("logged"), quiet=True)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old)
    return records, report


def test_progress_goes_through_hybridrec_loggers_in_phase_order(logged_fit):
    records, _ = logged_fit
    assert records and all(r.name.startswith("hybridrec.") for r in records)
    lines = [r.getMessage() for r in records if r.levelno >= logging.INFO]

    def first(prefix: str) -> int:
        return next(i for i, line in enumerate(lines) if line.startswith(prefix))

    data_notes = next(i for i, line in enumerate(lines) if line.endswith("ratings.csv: 10242 rows read"))
    order = [
        first("reading data"),
        data_notes,  # what the reader kept and dropped, before any training
        first("split random:"),
        first("features: 218 items"),
        first("training: up to 5 epochs, loss mse, early stopping on val rmse"),
        first("epoch 1/5"),
        first("epoch 2/5"),
        first("stopped early"),
        first("evaluating on"),
        first("saving the model and report.html"),
    ]
    assert order == sorted(order), lines
    phases = [r.hybridrec["phase"] for r in records if hasattr(r, "hybridrec")]
    seen = list(dict.fromkeys(phases))
    assert seen == ["read", "encode", "train", "evaluate", "save"]


def test_the_epoch_line_names_the_metric_and_the_early_stop_is_announced(logged_fit):
    records, report = logged_fit
    lines = [r.getMessage() for r in records if r.levelno >= logging.INFO]
    epoch_lines = [line for line in lines if line.startswith("epoch ")]
    assert [line.split()[1] for line in epoch_lines] == ["1/5", "2/5"]  # nothing after the stop
    history = report.recommender.train_result_.history
    first = epoch_lines[0]
    assert f"train loss {history[0]['train_loss']:.4f}" in first and f"val rmse {history[0]['val']:.4f}" in first
    assert "s/epoch" in first and "ETA up to" in first
    stop = next(line for line in lines if line.startswith("stopped early"))
    kept = f"keeping epoch 1 (val rmse {history[0]['val']:.4f})"
    assert stop == f"stopped early after epoch 2: no gain in 1 epoch; {kept}"


def test_epoch_progress_events_carry_the_bar_fields(logged_fit):
    records, _ = logged_fit
    epochs = [r.hybridrec for r in records if r.getMessage().startswith("epoch ")]
    assert [(e["phase"], e["done"], e["total"]) for e in epochs] == [("train", 1, 5), ("train", 2, 5)]


# ------------------------------------------------------------------------------------------- metrics.json
def test_metrics_json_separates_metrics_baseline_and_run(logged_fit):
    _, report = logged_fit
    saved = json.loads((report.model_path / "metrics.json").read_text())
    assert set(saved) == {"metrics", "baseline", "run"}
    assert set(saved["metrics"]) == {"rmse", "mae", "hr@10_sampled", "ndcg@10_sampled", "recall@10", "ndcg@10"}
    assert set(saved["baseline"]) == set(saved["metrics"])
    for key in ("n_users", "n_items", "n_train", "n_test", "fit_seconds", "text_cache_hits", "best_epoch", "seed"):
        assert key in saved["run"], key
    assert saved["run"]["validation_metric"] == "rmse" and saved["run"]["best_epoch"] == 1
    assert saved["metrics"] == pytest.approx(report.metrics) and saved["run"]["n_users"] == 400


def test_the_popularity_baseline_matches_an_independent_computation(logged_fit):
    """recall@10 of "the most popular training items" and RMSE of "the item's mean training rating", computed
    here with pandas from the split alone (no hybridrec code), equal what the job saved."""
    _, report = logged_fit
    baseline = json.loads((report.model_path / "metrics.json").read_text())["baseline"]
    rec, split = report.recommender, report.split
    train, seen_rows, test = split.train, pd.concat([split.train, split.validation]), split.test
    counts = train["item_id"].value_counts().reindex(list(rec.items_.raw_ids), fill_value=0)
    seen = seen_rows.groupby("user_id")["item_id"].agg(set)
    positives = test[test["rating"] >= 4].groupby("user_id")["item_id"].agg(set)
    # Items tied on the 10th place may enter the list in any order: bound each user's recall by the best and
    # the worst choice among them, and require the saved figure between the means (and the bounds to be tight).
    low, high = [], []
    for user, relevant in positives.items():
        left = counts.drop(list(seen.get(user, set())), errors="ignore").sort_values(ascending=False)
        cut = left.iloc[9]
        above, tied = set(left.index[left > cut]), set(left.index[left == cut])
        slots, sure = 10 - len(above), len(relevant & above)
        hit_tied = len(relevant & tied)
        low.append((sure + max(0, slots - (len(tied) - hit_tied))) / min(10, len(relevant)))
        high.append((sure + min(slots, hit_tied)) / min(10, len(relevant)))
    assert np.mean(low) - 1e-9 <= baseline["recall@10"] <= np.mean(high) + 1e-9
    assert np.mean(high) - np.mean(low) < 0.05  # the bounds say something

    item_mean = train.groupby("item_id")["rating"].mean()
    predicted = test["item_id"].map(item_mean).fillna(train["rating"].mean())
    assert baseline["rmse"] == pytest.approx(np.sqrt(np.mean((test["rating"] - predicted) ** 2)), abs=1e-9)


# ------------------------------------------------------------------------------------------- the CLI
@pytest.fixture(scope="module")
def all_fives(tmp_path_factory, text_cache_dir):
    """`hybridrec fit` (not quiet) on the demo with every rating set to 5: predictions scatter around 5, so raw
    scores above the rating range are certain. Returns (output folder, CliRunner result)."""
    folder = tmp_path_factory.mktemp("fives")
    ratings = pd.read_csv(DEMO_RATINGS_CSV)
    ratings["rating"] = 5
    ratings.to_csv(folder / "ratings.csv", index=False)
    out = folder / "models"
    sets = [item for kv in quick_fit_overrides(text_cache_dir, TFIDF, "train.epochs=3") for item in ("--set", kv)]
    data = ["--data", f"interactions={folder / 'ratings.csv'}", "--data", f"items={DEMO_ITEMS_CSV}"]
    result = invoke("fit", "--config", DEMO_CONFIG, "--out", out, *data, *sets)
    assert_ok(result)
    return out, result


def test_cli_fit_off_a_terminal_prints_plain_progress_lines(all_fives):
    _, result = all_fives
    err = result.stderr
    assert "\x1b[" not in err  # no terminal codes in a pipe or a log
    lines = err.splitlines()
    assert any(line.startswith("epoch 1/3  train loss ") and "val rmse" in line for line in lines), err
    assert "reading data (format table)" in lines[0]
    assert any(line.startswith("evaluating on") for line in lines)
    assert "report.html" in result.stdout and "popularity baseline" in result.stdout
    assert result.stdout.index("recall@10") < result.stdout.index("n_users")  # metrics first, bookkeeping apart


def test_cli_fit_quiet_prints_no_progress(tmp_path, text_cache_dir):
    sets = [item for kv in quick_fit_overrides(text_cache_dir, TFIDF, "train.epochs=1") for item in ("--set", kv)]
    result = invoke("fit", "--config", DEMO_CONFIG, "--out", tmp_path, "--quiet", *sets)
    assert_ok(result)
    assert result.stderr == ""
    assert "held-out metrics" in result.stdout


def test_info_shows_the_saved_epoch_history(all_fives):
    out, _ = all_fives
    result = invoke("info", "--model", out / "latest", "--json")
    assert_ok(result)
    training = json.loads(result.stdout)["training"]
    assert training["metric"] == "rmse" and [r["epoch"] for r in training["history"]] == [1, 2, 3]
    assert all(r["seconds"] >= 0 and np.isfinite(r["val"]) for r in training["history"])
    table = invoke("info", "--model", out / "latest")
    assert_ok(table)
    assert "val rmse" in table.stdout and f"{training['best_epoch']} *" in table.stdout
    assert f"{training['history'][0]['train_loss']:.4f}" in table.stdout


def test_recommend_shows_ratings_clipped_to_the_rating_range(all_fives):
    from hybridrec.recommender import HybridRecommender

    out, _ = all_fives
    rec = HybridRecommender.load(out / "latest")
    raw_top = {u: float(rec.recommend(u, 1)[1][0]) for u in rec.users_.raw_ids[:50]}
    user = max(raw_top, key=raw_top.get)
    assert raw_top[user] > 5.0  # the precondition: an unclipped score above the range
    result = invoke("recommend", user, "--model", out / "latest", "-k", "5", "--json")
    assert_ok(result)
    scores = [r["score"] for r in json.loads(result.stdout)["results"]]
    assert scores[0] == 5.0 and all(1.0 <= s <= 5.0 for s in scores)
    ids, raw = rec.recommend(user, 5)
    assert scores == [round(float(min(max(s, 1.0), 5.0)), 4) for s in raw]


def test_score_new_lists_neighbours_with_titles(all_fives, tmp_path):
    out, _ = all_fives
    catalogue = pd.read_csv(DEMO_ITEMS_CSV).set_index("item_id")["title"]
    new = tmp_path / "new.jsonl"
    new.write_text(json.dumps({"item_id": "NEW-1", "title": "Gold-plated S-Video cable 10 ft"}) + "\n")
    result = invoke("score-new", new, "--model", out / "latest", "--json")
    assert_ok(result)
    row = json.loads(result.stdout.splitlines()[0])
    assert len(row["neighbours"]) == 5
    assert row["neighbour_titles"] == [catalogue[i] for i in row["neighbours"]]
    table = invoke("score-new", new, "--model", out / "latest")
    assert_ok(table)
    first = row["neighbours"][0]
    assert first in table.stdout and catalogue[first].split(",")[0].split()[0] in table.stdout


# ------------------------------------------------------------------------------------------- the live display
def test_the_terminal_display_draws_a_bar_and_prints_lines_above_it():
    from hybridrec_cli.progress import FitDisplay

    from hybridrec.progress import event, get_logger

    stream = io.StringIO()
    display = FitDisplay(stream, live=True)
    logger = get_logger("test-display")
    logger.addHandler(display)
    logger.setLevel(logging.DEBUG)
    try:
        event(logger, "encoding: 256/512 texts", "encode", logging.DEBUG, 256, 512, "texts", "210 texts/s")
        event(logger, "epoch 3/30  train loss 0.5000", "train", logging.INFO, 3, 30, "epochs", "val rmse 0.9")
        logger.warning("something odd")
    finally:
        logger.removeHandler(display)
        display.close()
    text = stream.getvalue()
    assert "epoch 3/30  train loss 0.5000" in text and "warning: something odd" in text
    assert "encoding: 256/512 texts" not in text  # bar updates move the bar, never print a line
    assert "\x1b[" in text  # drawn for a terminal


def test_plain_display_throttles_bar_updates():
    from hybridrec_cli.progress import FitDisplay

    from hybridrec.progress import event, get_logger

    stream = io.StringIO()
    display = FitDisplay(stream, live=False)
    logger = get_logger("test-plain")
    logger.addHandler(display)
    logger.setLevel(logging.DEBUG)
    try:
        for done in range(0, 1000, 100):  # a start (not shown) and nine updates within a second: one line
            event(logger, f"encoding: {done}/1000 texts", "encode", logging.DEBUG, done, 1000, "texts")
        logger.debug("an internal detail")
    finally:
        logger.removeHandler(display)
        display.close()
    lines = stream.getvalue().splitlines()
    assert lines == ["encoding: 100/1000 texts"]


# ------------------------------------------------------------------------------------------- Amazon category
def test_amazon_category_path_from_the_metadata():
    from hybridrec.data.amazon import category_path

    assert category_path({"category": ["Gift Cards", "Gift Cards"]}) == "Gift Cards"
    assert (
        category_path({"category": ["Gift Cards", "Gift Card Accessories", "Made with thick, 100% recycled paper."]})
        == "Gift Cards > Gift Card Accessories"
    )
    junk = ["Magazine Subscriptions", "Professional &amp; Educational Journals", "</span></span>", "Starbucks"]
    assert category_path({"category": junk}) == "Magazine Subscriptions > Professional & Educational Journals"
    assert category_path({"category": ["Gift Cards", "x" * 61]}) == "Gift Cards"
    assert category_path({"categories": [["Electronics", "Cables", "Cables"], ["Other"]]}) == "Electronics > Cables"
    assert category_path({}) == "" and category_path({"category": []}) == ""


def test_amazon_items_show_their_category(shared_data: Path):
    from hybridrec.data.amazon import read_amazon
    from hybridrec.fitting import display_rows

    folder = shared_data / "amazon2018"
    for name in ("Gift_Cards", "Magazine_Subscriptions"):
        ds = read_amazon(folder / f"{name}_5.json.gz", folder / f"meta_{name}.json.gz")
        shown = [row[2] for row in display_rows(ds.items)]
        filled = sum(bool(c) for c in shown) / len(shown)
        assert filled > 0.9, (name, filled)  # was 0: the top level was dropped from every row
        assert all(len(part) <= 60 for c in shown for part in c.split(" > "))


def test_a_library_fit_prints_progress_only_when_asked_and_logging_is_not_configured():
    """HybridRecommender(quiet=False) without logging configured prints to stderr; quiet=True prints nothing; a
    configured root handler receives the records instead (a fresh interpreter: pytest configures logging)."""
    import subprocess
    import sys

    script = (
        "import logging, sys\n"
        "from hybridrec.progress import fit_output, get_logger\n"
        "if sys.argv[1] == 'configured': logging.basicConfig(level=logging.INFO, format='ROOT %(name)s %(message)s')\n"
        "with fit_output(quiet=sys.argv[1] == 'quiet'):\n"
        "    get_logger('fit').info('epoch 1/2  train loss 0.5')\n"
    )

    def stderr(mode: str) -> str:
        done = subprocess.run([sys.executable, "-c", script, mode], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stderr

    assert stderr("loud") == "epoch 1/2  train loss 0.5\n"
    assert stderr("quiet") == ""
    assert stderr("configured") == "ROOT hybridrec.fit epoch 1/2  train loss 0.5\n"
