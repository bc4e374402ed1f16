"""The `hybridrec` command on the demo: each command's happy path, one-line errors with exit code 2, help texts.

The installed click/typer keep stderr apart from stdout in CliRunner (`result.stdout`, `result.stderr`;
`result.output` is both, as a terminal would show them).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import assert_ok, assert_one_line_error
from hybridrec_cli.main import app
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]
DEMO_CONFIG = ROOT / "configs" / "default.yaml"
VIDEO = "Video Cables & Adapters"
COMMANDS = ["fit", "similar", "recommend", "score-new", "evaluate", "info"]

NEW_ITEMS = [
    {
        "item_id": "NEW-SV1",
        "title": "Gold-plated S-Video cable 10 ft",
        "brand": "Cablix",
        "category": VIDEO,
        "subcategory": "S-Video Cable",
        "price": 11.99,
        "description": "10 ft S-Video cable, 4-pin Mini-DIN, gold-plated connectors for camcorders and VCRs.",
    },
    {
        "item_id": "NEW-PB1",
        "title": "Slim power bank 10000 mAh USB-C",
        "brand": "Zentro",
        "category": "Chargers & Power",
        "subcategory": "Power Bank",
        "price": 24.99,
        "description": "Pocket power bank with USB-C PD input and output.",
    },
]


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def catalogue() -> dict[str, dict[str, str]]:
    with open(ROOT / "data" / "demo" / "items.csv", newline="", encoding="utf-8") as fh:
        return {row["item_id"]: row for row in csv.DictReader(fh)}


@pytest.fixture(scope="module")
def a_user() -> str:
    with open(ROOT / "data" / "demo" / "ratings.csv", newline="", encoding="utf-8") as fh:
        return next(csv.DictReader(fh))["user_id"]


@pytest.fixture(scope="module")
def cli_fit(text_cache_dir, tmp_path_factory):
    """`hybridrec fit` on the demo into a tmp dir, once for this file: (output dir, CliRunner result). The text
    cache goes to the session's tmp dir; one torch thread keeps training fast on shared cores."""
    out = tmp_path_factory.mktemp("cli-fit")
    sets = ["--set", f"features.cache_dir={text_cache_dir}", "--set", "train.threads=1"]
    result = invoke("fit", "--config", DEMO_CONFIG, "--out", out, "--quiet", *sets)
    assert_ok(result)
    return out, result


@pytest.fixture(scope="module")
def model(cli_fit) -> Path:
    """The model the CLI fit wrote, through its `latest` link (read-only for the tests)."""
    return cli_fit[0] / "latest"


@pytest.fixture
def model_copy(model, tmp_path) -> Path:
    """A private copy of the CLI model, for commands that change it."""
    return Path(shutil.copytree(model.resolve(), tmp_path / "model"))


@pytest.fixture
def new_items_files(tmp_path) -> tuple[Path, Path]:
    jsonl = tmp_path / "new.jsonl"
    jsonl.write_text("".join(json.dumps(row) + "\n" for row in NEW_ITEMS))
    with open(tmp_path / "new.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(NEW_ITEMS[0]))
        writer.writeheader()
        writer.writerows(NEW_ITEMS)
    return jsonl, tmp_path / "new.csv"


# ------------------------------------------------------------------------------------------------ happy paths
def test_fit_exits_0_and_prints_rmse_and_the_saved_path(cli_fit):
    out, result = cli_fit
    assert "rmse" in result.stdout
    assert f"model saved to {out / 'demo'}" in result.stdout
    assert (out / "latest" / "manifest.json").is_file()


def test_similar_by_title_resolves_to_the_svideo_cable_and_lists_video_cables(model, catalogue):
    result = invoke("similar", "S-Video cable", "--model", model, "--json")
    assert_ok(result)
    answer = json.loads(result.stdout)
    assert answer["resolved_id"] == "D0031" and answer["match"] == "title"
    rows = answer["results"]
    assert len(rows) == 10  # the default k
    assert [r["rank"] for r in rows] == list(range(1, 11))
    assert all(r["title"] == catalogue[r["item_id"]]["title"] for r in rows)
    assert all(catalogue[r["item_id"]]["category"] == VIDEO for r in rows[:5])
    assert 5 <= sum(r["category"] == VIDEO for r in rows) <= 10


def test_similar_by_id_respects_k_and_prints_a_table(model):
    result = invoke("similar", "D0031", "--model", model, "-k", "3")
    assert_ok(result)
    assert "query resolved to D0031" in result.stdout
    answer = json.loads(invoke("similar", "D0031", "--model", model, "-k", "3", "--json").stdout)
    assert len(answer["results"]) == 3 and "D0031" not in {r["item_id"] for r in answer["results"]}
    for row in answer["results"]:
        assert row["item_id"] in result.stdout


def test_recommend_for_a_real_user(model, a_user, catalogue):
    result = invoke("recommend", a_user, "--model", model, "-k", "5", "--json")
    assert_ok(result)
    answer = json.loads(result.stdout)
    assert answer["user_id"] == a_user
    rows = answer["results"]
    assert len(rows) == 5 and all(r["item_id"] in catalogue for r in rows)
    scores = [r["score"] for r in rows]
    assert scores == sorted(scores, reverse=True)
    assert_ok(invoke("recommend", a_user, "--model", model, "-k", "5"))


def test_info_json_describes_the_model(model):
    result = invoke("info", "--model", model, "--json")
    assert_ok(result)
    info = json.loads(result.stdout)
    assert (info["name"], info["items"], info["users"], info["feedback"]) == ("demo", 218, 400, "explicit")
    assert "rmse" in info["metrics"]
    assert_ok(invoke("info", "--model", model))


def test_evaluate_json_reports_the_fit_rmse_given_the_config(model):
    result = invoke("evaluate", "--model", model, "--config", DEMO_CONFIG, "--json")
    assert_ok(result)
    metrics = json.loads(result.stdout)["metrics"]
    saved = json.loads(invoke("info", "--model", model, "--json").stdout)["metrics"]
    assert metrics["rmse"] == pytest.approx(saved["rmse"], abs=1e-6)


def test_evaluate_json_rereads_the_data_with_the_models_own_config(model, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the saved config must find its data from any working directory
    result = invoke("evaluate", "--model", model, "--json")
    assert_ok(result)
    assert "rmse" in json.loads(result.stdout)["metrics"]


def test_score_new_jsonl_for_a_user(model, new_items_files):
    result = invoke("score-new", new_items_files[0], "--model", model, "--users", "U0001", "--json")
    assert_ok(result)
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(r["item_id"], r["user_id"]) for r in rows] == [("NEW-SV1", "U0001"), ("NEW-PB1", "U0001")]
    assert all(len(r["neighbours"]) == 5 and 1 <= r["score"] <= 5 for r in rows)


def test_score_new_csv_with_add_puts_the_items_in_the_saved_model(model_copy, new_items_files, catalogue):
    result = invoke("score-new", new_items_files[1], "--model", model_copy, "--add")
    assert_ok(result)
    assert "NEW-SV1" in result.stdout and "added 2 items" in result.stderr
    similar = invoke("similar", "NEW-SV1", "--model", model_copy, "-k", "5", "--json")
    assert_ok(similar)
    answer = json.loads(similar.stdout)
    assert answer["resolved_id"] == "NEW-SV1" and answer["resolved_title"] == NEW_ITEMS[0]["title"]
    assert len(answer["results"]) == 5 and all(
        r["item_id"] in catalogue or r["item_id"] == "NEW-PB1" for r in answer["results"]
    )
    assert json.loads(invoke("info", "--model", model_copy, "--json").stdout)["items"] == 218 + 2


def test_installed_console_script_runs(model):
    exe = shutil.which("hybridrec", path=str(Path(sys.executable).parent)) or shutil.which("hybridrec")
    assert exe, "the hybridrec console script is not installed"
    done = subprocess.run(
        [exe, "similar", "D0031", "--model", str(model), "-k", "3", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["resolved_id"] == "D0031" and len(answer["results"]) == 3


# ------------------------------------------------------------------------------------------------ errors
def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _fit(config: Path, tmp: Path, *extra) -> list:
    return ["fit", "--config", config, "--out", tmp / "o", "-q", "--set", f"features.cache_dir={tmp / 'c'}", *extra]


BAD_YAML = "name: x\ndata: [unclosed\n  a: : b\n"
BAD_JSONL = '{"item_id": "N1", "title": "ok"}\n{"item_id": "N2", \n'

# case -> (arguments from (model, tmp_path), fragments the error line must contain)
ERROR_CASES = {
    "missing config": (lambda m, t: _fit(t / "nope.yaml", t), ["nope.yaml"]),
    "malformed yaml": (lambda m, t: _fit(_write(t / "bad.yaml", BAD_YAML), t), ["bad.yaml", "YAML"]),
    "unknown config key": (
        lambda m, t: _fit(_write(t / "typo.yaml", "trian:\n  epochs: 3\n"), t),
        ["'trian'", "did you mean 'train'"],
    ),
    "missing data file": (
        lambda m, t: _fit(DEMO_CONFIG, t, "--data", "interactions=/nonexistent.csv"),
        ["/nonexistent.csv"],
    ),
    "unknown item": (lambda m, t: ["similar", "B00NOPE123", "--model", m], ["B00NOPE123"]),
    "unknown user": (lambda m, t: ["recommend", "NOBODY", "--model", m], ["NOBODY"]),
    "missing model dir": (lambda m, t: ["similar", "D0031", "--model", t / "no-model"], ["no-model"]),
    "k zero": (lambda m, t: ["similar", "S-Video cable", "--model", m, "-k", "0"], ["k must be"]),
    "recommend k negative": (lambda m, t: ["recommend", "U0001", "--model", m, "-k", "-2"], ["k must be"]),
    "malformed json line": (
        lambda m, t: ["score-new", _write(t / "bad.jsonl", BAD_JSONL), "--model", m],
        ["bad.jsonl:2", "JSON"],
    ),
    "missing title column": (
        lambda m, t: ["score-new", _write(t / "notitle.csv", "item_id,name\nN1,cable\n"), "--model", m],
        ["notitle.csv", "'title'"],
    ),
}


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_errors_are_one_line_with_exit_code_2(case, model, tmp_path):
    make_args, fragments = ERROR_CASES[case]
    result = invoke(*make_args(model, tmp_path))
    assert_one_line_error(result, *fragments)
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


# ------------------------------------------------------------------------------------------------ help
@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_an_example(command):
    result = invoke(command, "--help")
    assert_ok(result)
    assert "Example" in result.stdout


def test_score_new_add_through_latest_updates_the_named_model(model, new_items_files, tmp_path):
    """`--add` on models/latest must update models/<name> (which latest names), not detach latest from it."""
    out = tmp_path / "models"
    shutil.copytree(model.resolve(), out / ".demo.versions" / "v-copy")
    (out / "demo").symlink_to(Path(".demo.versions") / "v-copy")
    (out / "latest").symlink_to("demo")
    assert_ok(invoke("score-new", new_items_files[1], "--model", out / "latest", "--add"))
    assert (out / "latest").is_symlink() and os.readlink(out / "latest") == "demo"
    for link in ("demo", "latest"):
        answer = invoke("similar", "NEW-SV1", "--model", out / link, "-k", "3", "--json")
        assert_ok(answer)
        assert json.loads(answer.stdout)["resolved_id"] == "NEW-SV1"
