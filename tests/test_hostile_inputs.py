"""Hostile and unlucky inputs of issue 20, classes 1 (typed config), 5 (bounded reads) and 10 (smaller ones).

Every case ends clean: a one-line `error:` with exit code 2, a counted skip, or the right answer. Each test goes
through the real code path (the CLI where the exit code matters, else the library's reader or loader) and is fast:
only the `demo_model` fixture fits, once per session.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import shutil
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import assert_one_line_error
from hybridrec_cli.main import app
from typer.testing import CliRunner

from hybridrec import limits
from hybridrec.config import job_settings, load_config
from hybridrec.data.io import read_table
from hybridrec.data.newitems import read_new_items
from hybridrec.data.readers import PATH_KEYS, READERS, check_path_keys, read_dataset
from hybridrec.errors import ConfigError, DataError

ROOT = Path(__file__).resolve().parents[1]
DEMO_CONFIG = ROOT / "configs" / "default.yaml"
DEEP = "[" * 200_000  # json.loads raises RecursionError on this; PyYAML too


def invoke(*args, env: dict | None = None):
    return CliRunner().invoke(app, [str(a) for a in args], env=env)


def put(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def demo_yaml(tmp_path: Path, **changes) -> Path:
    """The demo config with absolute data paths (so it can live in tmp_path) and top-level changes."""
    payload = yaml.safe_load(DEMO_CONFIG.read_text())
    payload["data"]["paths"] = {k: str((DEMO_CONFIG.parent / v).resolve()) for k, v in payload["data"]["paths"].items()}
    payload.update(changes)
    return put(tmp_path / "demo.yaml", yaml.safe_dump(payload))


def table_config(tmp_path: Path, interactions: Path, **data) -> object:
    payload = {
        "format_version": 2,
        "name": "case",
        "data": {"format": "table", "paths": {"interactions": str(interactions)}, **data},
    }
    return load_config(put(tmp_path / "case.yaml", yaml.safe_dump(payload)))


def gzip_stream(path: Path, head: bytes, chunk: bytes, repeats: int) -> Path:
    """A gzip of `head` + `chunk` x `repeats`, written in pieces (a large expansion costs little to make)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    with open(path, "wb") as fh:
        fh.write(packer.compress(head))
        for _ in range(repeats):
            fh.write(packer.compress(chunk))
        fh.write(packer.flush())
    return path


# ============================================================================================ class 1: typed config


@pytest.mark.parametrize(
    ("text", "key", "expected"),
    [
        ("train:\n  lr: 1e-3\n", "lr", 0.001),
        ("train:\n  weight_decay: 5E-6\n", "weight_decay", 5e-6),
        ("train:\n  l2: +2e-2\n", "l2", 0.02),
    ],
)
def test_a_float_written_without_a_dot_is_a_number_in_yaml(tmp_path, text, key, expected):
    """PyYAML (YAML 1.1) reads `1e-3` as the string '1e-3'; 0.1 crashed with a TypeError comparing it to 0."""
    cfg = load_config(put(tmp_path / "c.yaml", "format_version: 2\n" + text))
    value = getattr(cfg.train, key)
    assert isinstance(value, float) and value == pytest.approx(expected)


def test_a_float_without_a_dot_is_a_number_from_set_in_lists_and_in_terms():
    cfg = load_config(None, ["train.lr=1e-3", "data.rating_range=[1e0, 5e0]", "model.terms=[{type: ease, l2: 5e2}]"])
    assert cfg.train.lr == pytest.approx(0.001)
    assert cfg.data.rating_range == [1.0, 5.0]
    from hybridrec.scoring.base import parse_term

    _, params = parse_term(cfg.model.terms[0], "model.terms[0]")
    assert params.l2 == pytest.approx(500.0)


@pytest.mark.parametrize("word", ["fast", "1e-3x", "nan", "1,5", "[0.1]", "{a: 1}"])
def test_a_word_where_a_float_belongs_is_one_line_naming_the_key(word):
    with pytest.raises(ConfigError, match=r"^train\.lr: expected a number, got "):
        load_config(None, [f"train.lr={word}"])


def test_a_word_where_a_float_belongs_exits_2_from_the_cli(tmp_path):
    result = invoke("fit", "--quiet", "--config", DEMO_CONFIG, "--set", "train.lr=fast", "--out", tmp_path / "out")
    assert_one_line_error(result, "train.lr: expected a number, got 'fast'")
    assert not (tmp_path / "out" / "latest").exists()


def test_a_float_that_overflows_is_out_of_range_not_inf():
    with pytest.raises(ConfigError, match=r"train\.lr: inf is out of range"):
        load_config(None, ["train.lr=1e999"])


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("model.dim", 100_000_000_000),
        ("model.hidden", 100_000_000_000),
        ("features.tfidf_dim", 10**9),
        ("features.batch_size", 10**9),
        ("index.M", 100_000_000),
        ("index.M", 10_001),  # hnswlib caps M at 10000 with a warning and the model would record the other
        ("index.ef_search", 10**12),
        ("train.epochs", 10**11),
        ("train.batch_size", 10**11),
        ("train.negatives", 10**11),
        ("evaluate.k", 10**11),
    ],
)
def test_sizes_have_upper_bounds(key, value):
    with pytest.raises(ConfigError, match=rf"^{key.replace('.', '[.]')}: {value} is out of range \[\d+, \d+\]$"):
        load_config(None, [f"{key}={value}"])


def test_a_huge_dim_from_the_cli_is_a_config_error_not_an_allocation(tmp_path):
    result = invoke(
        "fit", "--quiet", "--config", DEMO_CONFIG, "--set", "model.dim=100000000000", "--out", tmp_path / "out"
    )
    assert_one_line_error(result, "model.dim: 100000000000 is out of range [1, 4096]")
    assert not (tmp_path / "out" / "latest").exists()


def test_sizes_at_their_bound_are_accepted():
    cfg = load_config(None, ["index.M=10000", "model.dim=4096", "features.tfidf_dim=4096"])
    assert (cfg.index.M, cfg.model.dim, cfg.features.tfidf_dim) == (10000, 4096, 4096)


def _alias_bomb(levels: int = 9) -> str:
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for n in range(1, levels):
        lines.append(f"a{n}: &a{n} [" + ", ".join([f"*a{n - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def test_a_yaml_alias_bomb_is_refused_without_expanding_it(tmp_path):
    """9 levels of 9 aliases are 387 million strings once expanded; 0.1 hung rendering the value in its message."""
    config = put(
        tmp_path / "bomb.yaml", "format_version: 2\ndata:\n  options:\n" + _indent(_alias_bomb()) + "name: *a8\n"
    )
    result = invoke("fit", "--quiet", "--config", config, "--out", tmp_path / "out")
    line = assert_one_line_error(result, "YAML aliases", "refusing it")
    assert len(line) < 300


def test_an_alias_bomb_in_a_set_value_is_refused():
    bomb = "{" + ", ".join(_alias_bomb(7).strip().splitlines()).replace(": &", ": &") + "}"
    with pytest.raises(ConfigError, match="YAML aliases"):
        load_config(None, [f"data.options={bomb}"])


def _indent(text: str) -> str:
    return "".join(f"    {line}\n" for line in text.splitlines())


def test_a_small_alias_graph_is_fine_and_messages_stay_short():
    """Under the bound, a wrong type is named with a value cut short, not rendered whole."""
    bomb = "{" + ", ".join(_alias_bomb(5).strip().splitlines()) + "}"  # 59,049 strings: within the bound
    with pytest.raises(ConfigError) as info:
        load_config(None, [f"name={bomb}"])
    message = str(info.value)
    assert message.startswith("name: expected a string, got {") and len(message) < 300


def test_a_huge_value_in_an_error_message_is_cut_short():
    with pytest.raises(ConfigError) as info:
        load_config(None, ["train.lr=" + "x" * 100_000])
    assert str(info.value).startswith("train.lr: expected a number, got 'xxx") and len(str(info.value)) < 200


@pytest.mark.parametrize("term", ["{type: [1, 2]}", "{type: {a: 1}}", "[" + ", ".join(["1"] * 50_000) + "]"])
def test_a_score_term_that_is_no_mapping_or_names_no_type_is_one_short_line(term):
    """A list as a term's type was not hashable: TypeError, a traceback from the CLI."""
    with pytest.raises(ConfigError, match=r"^model\.terms(\[0\])?[.:]") as info:
        load_config(None, [f"model.terms=[{term}]"])
    assert len(str(info.value)) < 200


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.paths.interactions=[1]", "data.paths.interactions: expected a string, got [1]"),
        ("data.paths={interactions: {a: 1}}", "data.paths.interactions: expected a string, got {'a': 1}"),
        ("data.columns={user_id: [1]}", "data.columns.user_id: expected a string, got [1]"),
        ("data.columns={1: user}", "data.columns: keys must be strings, got 1"),
    ],
)
def test_mapping_values_are_typed_too(tmp_path, override, message):
    """A list as a data path was a TypeError inside the reader; a list as a column name an unhashable-type one."""
    result = invoke("fit", "--quiet", "--config", DEMO_CONFIG, "--set", override, "--out", tmp_path / "out")
    assert_one_line_error(result, message)


@pytest.mark.parametrize(
    ("override", "key", "expected"),
    [
        ("split.cutoff=2011-10-01", "cutoff", "2011-10-01"),  # YAML reads an unquoted date as a date
        ("split.cutoff=2011-10-01 08:00:00", "cutoff", "2011-10-01T08:00:00"),
        ("split.cutoff=1317427200", "cutoff", "1317427200"),  # the docs' "epoch seconds"
        ("data.options={since: 2011-10-01}", "options", {"since": "2011-10-01"}),
    ],
)
def test_dates_and_numbers_where_text_belongs_are_that_text(override, key, expected):
    cfg = load_config(None, [override])
    value = getattr(cfg.split, key) if key == "cutoff" else cfg.data.options
    assert value == expected
    json.dumps(job_settings(cfg), allow_nan=False)  # what the fit saves beside the model


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.options={a: !!set {x}}", r"data\.options\.a: \{'x'\} is not a plain value"),
        ("data.options={a: !!binary aGVsbG8=}", r"data\.options\.a: b'hello' is not a plain value"),
        ("data.options={a: .nan}", r"data\.options\.a: nan is not a finite number"),
        ("model.terms=[{type: ease, l2: .nan}]", r"model\.terms\[0\]\.l2: nan is not a finite number"),
        ("seed=" + "9" * 5000, r"override 'seed': not valid YAML \(Exceeds the limit"),
    ],
)
def test_values_a_config_cannot_save_are_refused_before_training(override, message):
    """A set, bytes or NaN in data.options would fail only when job.json is written, after training."""
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_a_huge_unknown_key_is_cut_short_too():
    with pytest.raises(ConfigError) as info:
        load_config(None, ["train." + "k" * 100_000 + "=1"])
    assert "unknown config key" in str(info.value) and len(str(info.value)) < 300


def test_yaml_nested_too_deeply_is_one_line(tmp_path):
    config = put(tmp_path / "deep.yaml", "format_version: 2\nname: " + DEEP + "\n")
    result = invoke("fit", "--quiet", "--config", config, "--out", tmp_path / "out")
    assert_one_line_error(result, "deep.yaml", "nested too deeply")


def test_a_config_deeper_than_the_bound_is_refused():
    with pytest.raises(ConfigError, match="nested deeper than 100"):
        load_config(None, ["data.options={a: " + "[" * 150 + "]" * 150 + "}"])


@pytest.mark.parametrize(
    ("text", "key", "line", "first"),
    [
        ("format_version: 2\ntrain:\n  lr: 0.1\n  epochs: 2\n  lr: 0.5\n", "lr", 5, 3),
        ("format_version: 2\ntrain: {epochs: 2}\nseed: 1\ntrain: {epochs: 3}\n", "train", 4, 2),
        ("format_version: 2\nmodel:\n  terms:\n    - {type: ease, l2: 1, l2: 2}\n", "l2", 4, 4),
        ("format_version: 2\nseed: 1\n'seed': 2\n", "seed", 3, 2),
    ],
)
def test_a_key_given_twice_names_the_key_and_both_lines(tmp_path, text, key, line, first):
    config = put(tmp_path / "dup.yaml", text)
    result = invoke("fit", "--quiet", "--config", config, "--out", tmp_path / "out")
    assert_one_line_error(
        result, f"dup.yaml, line {line}: key '{key}' is given twice in one mapping (first on line {first})"
    )


def test_a_key_given_twice_in_a_set_value_is_an_error():
    with pytest.raises(ConfigError, match="key 'type' is given twice"):
        load_config(None, ["model.terms=[{type: ease, type: content_ridge}]"])


def test_a_yaml_merge_key_is_not_a_duplicate(tmp_path):
    """`<<:` merges a mapping whose keys the mapping itself may override: that is YAML, not a repeated key."""
    config = put(tmp_path / "merge.yaml", "format_version: 2\ntrain:\n  <<: {epochs: 3, lr: 0.01}\n  epochs: 5\n")
    cfg = load_config(config)
    assert (cfg.train.epochs, cfg.train.lr) == (5, 0.01)


def test_a_data_key_the_format_does_not_use_is_an_error_listing_its_keys(tmp_path):
    result = invoke(
        "fit", "--quiet", "--config", DEMO_CONFIG, "--data", f"ratngs={tmp_path / 'r.csv'}", "--out", tmp_path / "o"
    )
    assert_one_line_error(result, "data.paths.ratngs: not used by format 'table' (it uses interactions, items, users)")


@pytest.mark.parametrize(
    ("fmt", "key", "hint"),
    [("amazon", "review", "reviews"), ("movielens-1m", "movie", "movies"), ("goodbooks", "rating", "ratings")],
)
def test_an_unused_data_key_suggests_the_close_one(fmt, key, hint):
    cfg = load_config(None, [f"data.format={fmt}", f"data.paths.{key}=x"])
    with pytest.raises(ConfigError, match=rf"data.paths.{key}: not used by format '{fmt}'.*did you mean '{hint}'"):
        read_dataset(cfg)


def test_every_reader_lists_its_data_keys_and_accepts_them():
    assert set(PATH_KEYS) == set(READERS)
    for fmt, keys in PATH_KEYS.items():
        cfg = load_config(None, [f"data.format={fmt}", *(f"data.paths.{k}=x" for k in keys)])
        check_path_keys(cfg)  # no error
    readme = (ROOT / "README.md").read_text()
    row = next(line for line in readme.splitlines() if line.startswith("| `data.paths`"))
    assert all(f"`{k}`" in row for keys in PATH_KEYS.values() for k in keys), row


def test_a_bad_limit_in_the_environment_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("HYBRIDREC_MAX_LINE_BYTES", "lots")
    path = put(tmp_path / "r.csv", "user_id,item_id,rating\nu,i,4\n")
    with pytest.raises(ConfigError, match="HYBRIDREC_MAX_LINE_BYTES: expected a non-negative integer, got 'lots'"):
        read_table(path)


# ============================================================================================ class 5: bounded reads


def test_a_table_jsonl_line_nested_too_deeply_is_one_line(tmp_path):
    data = put(tmp_path / "r.jsonl", '{"user_id": "u1", "item_id": "i1", "rating": 4}\n{"x": ' + DEEP + "\n")
    config = put(tmp_path / "c.yaml", yaml.safe_dump(_table_payload(data)))
    result = invoke("fit", "--quiet", "--config", config, "--out", tmp_path / "out")
    assert_one_line_error(result, "r.jsonl, line 2: not valid JSON (nested too deeply)")


def _table_payload(interactions: Path, **data) -> dict:
    return {
        "format_version": 2,
        "name": "case",
        "data": {"format": "table", "paths": {"interactions": str(interactions)}, **data},
    }


def test_a_score_new_jsonl_nested_too_deeply_is_one_line(tmp_path):
    path = put(tmp_path / "new.jsonl", '{"item_id": "N1", "title": ' + DEEP + "\n")
    with pytest.raises(DataError, match=r"new.jsonl:1: malformed JSON \(nested too deeply\)"):
        read_new_items(path)


def test_a_manifest_nested_too_deeply_is_one_line(tmp_path):
    model = tmp_path / "m"
    put(model / "manifest.json", DEEP)
    result = invoke("info", "--model", model)
    assert_one_line_error(result, "manifest.json: corrupted (not valid JSON: nested too deeply)")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_a_manifest_that_is_a_pipe_is_refused_not_read_forever(tmp_path):
    model = tmp_path / "m"
    model.mkdir()
    os.mkfifo(model / "manifest.json")  # reading it would block forever
    result = invoke("info", "--model", model)
    assert_one_line_error(result, "manifest.json: not a regular file")


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="no /dev/zero here")
def test_a_manifest_linked_to_dev_zero_is_refused(tmp_path):
    model = tmp_path / "m"
    model.mkdir()
    (model / "manifest.json").symlink_to("/dev/zero")
    result = invoke("info", "--model", model)
    assert_one_line_error(result, "manifest.json")


def test_a_manifest_over_the_size_limit_is_refused(tmp_path, monkeypatch):
    model = tmp_path / "m"
    put(model / "manifest.json", json.dumps({"format_version": 2, "files": {}, "pad": "x" * 5000}))
    result = invoke("info", "--model", model, env={"HYBRIDREC_MAX_JSON_BYTES": "1000"})
    assert_one_line_error(result, "more than the 1000 allowed (HYBRIDREC_MAX_JSON_BYTES)")


def _copy_model(demo_model, tmp_path: Path) -> Path:
    target = tmp_path / "model"
    shutil.copytree(demo_model.path.resolve(), target)
    return target


def _rewrite(model: Path, name: str, text: str | None) -> None:
    """Replace one model file (None: as it is now) and its checksum in the manifest: only the file's own reader
    can refuse it."""
    if text is not None:
        (model / name).write_text(text)
    manifest = json.loads((model / "manifest.json").read_text())
    manifest["files"][name] = hashlib.sha256((model / name).read_bytes()).hexdigest()
    (model / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("name", ["id_maps/items.json", "id_maps/users.json", "config.json"])
def test_a_model_json_file_nested_too_deeply_is_one_line(demo_model, tmp_path, name):
    model = _copy_model(demo_model, tmp_path)
    _rewrite(model, name, DEEP)
    result = invoke("recommend", "U0001", "--model", model)  # reads the users' id map (`info` does not)
    assert_one_line_error(result, name, "nested too deeply")


def test_a_display_row_nested_too_deeply_is_one_line(demo_model, tmp_path):
    """The display table (format 4) is read a row at a time: the row a query shows is parsed then, within bounds."""
    model = _copy_model(demo_model, tmp_path)
    rows = (model / "display/rows.jsonl").read_bytes().splitlines(keepends=True)
    rows[0] = DEEP.encode() + b"\n"
    _rewrite(model, "display/rows.jsonl", b"".join(rows).decode())
    offsets = np.cumsum([0, *map(len, rows)]).astype(np.int64)
    with open(model / "display/offsets.npy", "wb") as fh:
        np.save(fh, offsets, allow_pickle=False)
    _rewrite(model, "display/offsets.npy", None)
    first = json.loads((model / "id_maps/items.json").read_text())["ids"][0]
    result = invoke("similar", first, "--model", model)
    assert_one_line_error(result, "display/rows.jsonl", "row 0 is not valid JSON (nested too deeply)")


def test_a_gzip_line_bomb_with_default_limits_is_one_line(tmp_path):
    """A 100 MB line (100 KB of gzip) stops at 64 MiB with the default limits, naming the file."""
    data = gzip_stream(tmp_path / "r.csv.gz", b"user_id,item_id,rating\n", b"a" * (1 << 20), 100)
    config = put(tmp_path / "c.yaml", yaml.safe_dump(_table_payload(data)))
    result = invoke("fit", "--quiet", "--config", config, "--out", tmp_path / "out")
    line = assert_one_line_error(result, "r.csv.gz:")
    assert "a possible gzip bomb" in line or "a line is longer than 67108864 bytes" in line, line


def test_a_long_line_is_refused_at_the_configured_limit(tmp_path, monkeypatch):
    monkeypatch.setenv("HYBRIDREC_MAX_LINE_BYTES", "4096")
    path = put(tmp_path / "r.csv", "user_id,item_id,rating\nu1,i1,4\nu2," + "i" * 10_000 + ",5\n")
    with pytest.raises(DataError, match=r"r\.csv: a line is longer than 4096 bytes \(raise HYBRIDREC_MAX_LINE_BYTES"):
        read_table(path, text_columns=["user_id", "item_id"])
    monkeypatch.setenv("HYBRIDREC_MAX_LINE_BYTES", "0")  # 0: no bound
    assert len(read_table(path, text_columns=["user_id", "item_id"])) == 2


@pytest.mark.parametrize(
    ("fmt", "name", "key", "head"),
    [
        ("table", "r.jsonl.gz", "interactions", b'{"user_id": "u1", "item_id": "i1", "rating": 4}\n{"review": "'),
        ("amazon", "reviews.json.gz", "reviews", b'{"reviewerID": "u1", "asin": "i1", "overall": 4}\n{"x": "'),
        ("movielens-1m", "ratings.dat.gz", "ratings", b"1::2::5::978300760\n1::"),
        ("online-retail", "tx.csv.gz", "transactions", b"InvoiceNo,StockCode\n1,"),
    ],
)
def test_a_gzip_with_one_endless_line_is_refused_by_every_reader(tmp_path, monkeypatch, fmt, name, key, head):
    monkeypatch.setenv("HYBRIDREC_MAX_LINE_BYTES", str(1 << 20))
    data = gzip_stream(tmp_path / name, head, b"x" * (1 << 20), 8)  # an 8 MB line from 8 KB of gzip
    cfg = load_config(None, [f"data.format={fmt}", f"data.paths.{key}={data}"])
    with pytest.raises(DataError, match=rf"{name.replace('.', '[.]')}: a line is longer than 1048576 bytes"):
        read_dataset(cfg)


def test_a_gzip_of_valid_rows_beyond_the_ratio_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(limits, "GZIP_FLOOR_BYTES", 1 << 20)
    data = gzip_stream(tmp_path / "r.csv.gz", b"user_id,item_id,rating\n", b"u1,i1,5\n" * 4096, 200)  # 6.5 MB
    size = data.stat().st_size
    assert size * 100 < 200 * 4096 * 8  # the expansion is more than 100x
    with pytest.raises(DataError, match=r"r\.csv\.gz: decompresses to more than \d+ bytes.*gzip bomb"):
        read_table(data, text_columns=["user_id", "item_id"])
    monkeypatch.setenv("HYBRIDREC_MAX_GZIP_RATIO", "0")  # 0: no bound
    assert len(read_table(data, text_columns=["user_id", "item_id"])) == 200 * 4096


def test_the_ratio_limit_is_configurable(tmp_path, monkeypatch):
    monkeypatch.setattr(limits, "GZIP_FLOOR_BYTES", 1 << 16)
    lines = "".join(f"u{n},i{n % 97},{n % 5 + 1}\n" for n in range(20_000))  # about 5x
    data = put(tmp_path / "r.csv.gz", gzip.compress(("user_id,item_id,rating\n" + lines).encode()))
    assert len(read_table(data, text_columns=["user_id", "item_id"])) == 20_000
    monkeypatch.setenv("HYBRIDREC_MAX_GZIP_RATIO", "2")
    with pytest.raises(DataError, match="gzip bomb"):
        read_table(data, text_columns=["user_id", "item_id"])


def test_score_new_is_bounded_too(tmp_path, monkeypatch):
    monkeypatch.setenv("HYBRIDREC_MAX_LINE_BYTES", "1000")
    path = put(tmp_path / "new.jsonl", json.dumps({"item_id": "N1", "title": "t" * 5000}) + "\n")
    with pytest.raises(DataError, match=r"new\.jsonl: a line is longer than 1000 bytes"):
        read_new_items(path)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_a_score_new_file_that_is_a_pipe_is_refused(tmp_path):
    os.mkfifo(tmp_path / "new.jsonl")
    with pytest.raises(DataError, match="new.jsonl: not a regular file"):
        read_new_items(tmp_path / "new.jsonl")


def test_a_config_file_over_the_size_limit_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("HYBRIDREC_MAX_JSON_BYTES", "2000")
    config = put(tmp_path / "big.yaml", "format_version: 2\n# " + "x" * 5000 + "\n")
    with pytest.raises(ConfigError, match=r"big\.yaml: more than 2000 bytes"):
        load_config(config)


def test_real_sized_data_reads_within_the_default_limits():
    """The demo (and any file of normal lines) is untouched by the bounds."""
    dataset = read_dataset(load_config(DEMO_CONFIG))
    expected = pd.read_csv(ROOT / "data" / "demo" / "ratings.csv", dtype=str, keep_default_na=False)
    assert len(dataset.interactions) == len(expected.drop_duplicates(["user_id", "item_id"]))


def test_the_line_check_finds_a_long_line_inside_one_big_read(tmp_path):
    """pandas may read a file in one call: a long line between short ones is still found."""
    data = b"a\n" * 1000 + b"b" * 5000 + b"\n" + b"c\n" * 1000
    for limit_bytes, refused in ((4999, True), (5000, False)):
        if refused:
            with pytest.raises(DataError, match="longer than 4999"):
                limits.longest_run_check(data, 0, limit_bytes, tmp_path, DataError)
        else:
            assert limits.longest_run_check(data, 0, limit_bytes, tmp_path, DataError) == 0


# ============================================================================================ class 10: smaller ones


@pytest.mark.parametrize("pandas_cuts_nul", [None, True], ids=["as-installed", "pandas-2-parser"])
def test_a_nul_byte_in_an_id_is_a_counted_bad_row(tmp_path, monkeypatch, pandas_cuts_nul):
    """pandas 2's and 3.0's C parser cuts a cell at a NUL byte: there the readers parse such a file with the Python
    parser (as the installed pandas' own probe says, and forced on whatever pandas is installed, gzip included)."""
    from hybridrec.data import io as data_io

    if pandas_cuts_nul is not None:
        monkeypatch.setattr(data_io, "PANDAS_CUTS_NUL", pandas_cuts_nul)
    rows = ["user_id,item_id,rating"] + [f"u{n},i{n % 5},4" for n in range(40)] + ["u\x001,i1,5", "u1,i\x002,3"]
    data = tmp_path / "r.csv.gz"
    data.write_bytes(gzip.compress(("\n".join(rows) + "\n").encode()))
    assert data_io.has_nul_byte(data) and not data_io.has_nul_byte(put(tmp_path / "clean.csv", "a,b\n1,2\n"))
    dataset = read_dataset(table_config(tmp_path, data))
    report = dataset.reports[0]
    assert report.skipped["id with a NUL byte"] == 2
    assert not any("\x00" in u for u in dataset.interactions["user_id"])
    assert sorted(set(dataset.items["item_id"])) == [f"i{n}" for n in range(5)]


def test_an_id_that_is_a_list_or_a_mapping_is_a_counted_bad_row(tmp_path):
    """JSON lines can hold a list where an id belongs: it was an unhashable-type traceback."""
    rows = [{"user_id": f"u{n}", "item_id": f"i{n % 4}", "rating": 4} for n in range(40)]
    odd = [{"user_id": ["a", "b"], "item_id": "i1", "rating": 4}, {"user_id": "x", "item_id": {"k": 1}, "rating": 4}]
    data = put(tmp_path / "r.jsonl", "".join(json.dumps(r) + "\n" for r in rows + odd))
    dataset = read_dataset(table_config(tmp_path, data))
    assert dataset.reports[0].skipped["id that is not a single value"] == 2
    assert sorted(set(dataset.interactions["user_id"])) == sorted(f"u{n}" for n in range(40))


def test_nul_ids_in_an_item_table_are_counted_too(tmp_path):
    rows = ["user_id,item_id,rating"] + [f"u{n},i{n % 5},4" for n in range(40)]
    data = put(tmp_path / "r.csv", "\n".join(rows) + "\n")
    items = put(tmp_path / "items.csv", "item_id,title\n" + "".join(f"i{n},T{n}\n" for n in range(5)) + "i\x009,bad\n")
    payload = _table_payload(data, max_bad_fraction=0.5)
    payload["data"]["paths"]["items"] = str(items)
    dataset = read_dataset(load_config(put(tmp_path / "c.yaml", yaml.safe_dump(payload))))
    assert dataset.reports[1].skipped["item_id with a NUL byte"] == 1
    assert "i\x009" not in set(dataset.items["item_id"])


def test_a_nul_byte_in_amazon_movielens_and_goodbooks_ids_is_counted(tmp_path):
    reviews = [json.dumps({"reviewerID": f"u{n}", "asin": f"a{n % 3}", "overall": 4}) for n in range(30)]
    reviews.append(json.dumps({"reviewerID": "u\x00x", "asin": "a1", "overall": 5}))
    amazon = put(tmp_path / "reviews.json", "\n".join(reviews) + "\n")
    ratings = "".join(f"{n}::{n % 4}::3::978300760\n" for n in range(1, 30)) + "7\x00::1::5::978300760\n"
    ml = put(tmp_path / "ratings.dat", ratings)
    books = put(tmp_path / "books.csv", "book_id,goodreads_book_id,title,authors\n1,11,A,X\n2,12,B,Y\n")
    gb = put(
        tmp_path / "gb.csv",
        "user_id,book_id,rating\n" + "".join(f"{n},{n % 2 + 1},4\n" for n in range(30)) + "9\x00,1,5\n",
    )
    for overrides in (
        ["data.format=amazon", f"data.paths.reviews={amazon}"],
        ["data.format=movielens-1m", f"data.paths.ratings={ml}"],
        ["data.format=goodbooks", f"data.paths.ratings={gb}", f"data.paths.books={books}"],
    ):
        dataset = read_dataset(load_config(None, overrides))
        assert dataset.reports[0].skipped["id with a NUL byte"] == 1, overrides[0]
        assert not any("\x00" in u for u in dataset.interactions["user_id"]), overrides[0]


def test_a_nul_byte_in_a_new_item_id_is_an_error(tmp_path):
    path = put(tmp_path / "new.csv", "item_id,title\nN1,ok\nN\x002,bad\n")
    with pytest.raises(DataError, match=r"new.csv:3: item_id holds a NUL byte"):
        read_new_items(path)


WORDS = ["NaN", "None", "null", "NA", "nan", "NULL", "N/A", "<NA>"]


def test_words_pandas_reads_as_missing_are_ids_in_a_csv(tmp_path):
    """0.1 dropped them as missing ids (a few % of rows, under max_bad_fraction: no error, data silently lost)."""
    rows = ["user_id,item_id,rating"] + [f"{w},{WORDS[(n + 1) % len(WORDS)]},{n % 5 + 1}" for n, w in enumerate(WORDS)]
    rows.append(",i1,4")  # an empty cell is still a missing id
    data = put(tmp_path / "r.csv", "\n".join(rows) + "\n")
    dataset = read_dataset(table_config(tmp_path, data, max_bad_fraction=0.5))
    assert sorted(dataset.interactions["user_id"]) == sorted(WORDS)
    assert set(dataset.interactions["item_id"]) == set(WORDS)
    assert dataset.reports[0].skipped["missing user or item id"] == 1


def test_ids_in_json_lines_are_kept_as_written(tmp_path):
    """pandas' read_json turned "007" into 7 and "NaN" into a missing value, and 1e400 into inf."""
    records = [
        {"user_id": "007", "item_id": "NaN", "rating": 4},
        {"user_id": "None", "item_id": "null", "rating": 5},
        {"user_id": "u3", "item_id": "x", "rating": 3},
    ]
    text = "".join(json.dumps(r) + "\n" for r in records) + '{"user_id": 1e400, "item_id": 42.0, "rating": 2}\n'
    data = put(tmp_path / "r.jsonl", text)
    dataset = read_dataset(table_config(tmp_path, data))
    pairs = set(zip(dataset.interactions["user_id"], dataset.interactions["item_id"], strict=True))
    assert pairs == {("007", "NaN"), ("None", "null"), ("u3", "x"), ("1e400", "42")}


def test_words_are_ids_in_goodbooks_and_online_retail(tmp_path):
    books = put(tmp_path / "books.csv", "book_id,goodreads_book_id,title,authors\n1,11,A,X\n2,12,B,Y\n")
    gb = put(tmp_path / "gb.csv", "user_id,book_id,rating\n" + "".join(f"{w},1,4\n" for w in WORDS) + "u9,2,5\n")
    dataset = read_dataset(
        load_config(None, ["data.format=goodbooks", f"data.paths.ratings={gb}", f"data.paths.books={books}"])
    )
    assert set(dataset.interactions["user_id"]) == {*WORDS, "u9"}
    head = "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n"
    lines = "".join(f"5{n},{w},thing,2,2011-01-0{n % 9 + 1} 10:00,1.5,{1000 + n},UK\n" for n, w in enumerate(WORDS))
    tx = put(tmp_path / "tx.csv", head + lines + "600,85123A,heart,1,2011-01-02 10:00,2.5,,UK\n")
    retail = read_dataset(load_config(None, ["data.format=online-retail", f"data.paths.transactions={tx}"]))
    assert set(retail.interactions["item_id"]) == set(WORDS)  # the row without a CustomerID is filtered


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('{"item_id": 1e400, "title": "t"}', "1e400"),
        ('{"item_id": 1e3, "title": "t"}', "1e3"),
        ('{"item_id": 42.0, "title": "t"}', "42"),
        ('{"item_id": 42, "title": "t"}', "42"),
        ('{"item_id": "NaN", "title": "t"}', "NaN"),
        ('{"item_id": -0.5, "title": "t", "price": 1e1}', "-0.5"),
    ],
)
def test_score_new_json_ids_stay_as_written(tmp_path, line, expected):
    frame = read_new_items(put(tmp_path / "new.jsonl", line + "\n"))
    assert frame["item_id"].tolist() == [expected]
    if "price" in frame:
        assert float(frame["price"].iloc[0]) == 10.0  # other numbers stay numbers


@pytest.mark.parametrize("word", ["None", "null", "NaN", "NA"])
def test_score_new_csv_ids_that_look_missing_are_ids(tmp_path, word):
    frame = read_new_items(put(tmp_path / "new.csv", f"item_id,title,price\n{word},thing,NA\n"))
    assert frame["item_id"].tolist() == [word]
    assert frame["price"].isna().all()  # a missing price is still missing


def _tiny_checkpoint(path: Path, parts: dict, fingerprint: str) -> None:
    import torch

    from hybridrec.model.checkpoint import Checkpointer

    net = torch.nn.Linear(2, 1)
    opt = torch.optim.Adam(net.parameters())
    extra = {"bad_epochs": 0, "history": [], "best_epoch": 1, "best_score": 1.0, "stopped_early": False}
    Checkpointer(path, fingerprint, parts).save(net, opt, None, np.random.default_rng(0), 1, extra)


@pytest.mark.parametrize(
    ("changed", "why"),
    [
        ({"config": "c2", "data": "d1"}, "the config changed"),
        ({"config": "c1", "data": "d2"}, "the training data changed"),
        ({"config": "c2", "data": "d2"}, "the config and the training data changed"),
    ],
)
def test_resume_after_a_change_says_it_starts_over_and_why(tmp_path, caplog, changed, why):
    import torch

    from hybridrec.model.checkpoint import Checkpointer

    path = tmp_path / ".checkpoints" / "demo.safetensors"
    _tiny_checkpoint(path, {"config": "c1", "data": "d1"}, "run-1")
    net = torch.nn.Linear(2, 1)
    ckpt = Checkpointer(path, "run-2", changed, resume=True)
    with caplog.at_level(logging.WARNING, logger="hybridrec"):
        restored = ckpt.load(net, torch.optim.Adam(net.parameters()), np.random.default_rng(0))
    assert restored is None
    notices = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(notices) == 1 and "\n" not in notices[0]
    assert f"({why}); starting over at epoch 1" in notices[0], notices


def test_resume_with_no_checkpoint_says_so_and_a_plain_fit_says_nothing(tmp_path, caplog):
    import torch

    from hybridrec.model.checkpoint import Checkpointer

    net = torch.nn.Linear(2, 1)
    opt = torch.optim.Adam(net.parameters())
    with caplog.at_level(logging.WARNING, logger="hybridrec"):
        Checkpointer(tmp_path / "none.safetensors", "run", {}, resume=False).load(net, opt, np.random.default_rng(0))
        assert not caplog.records
        Checkpointer(tmp_path / "none.safetensors", "run", {}, resume=True).load(net, opt, np.random.default_rng(0))
    assert [r.getMessage() for r in caplog.records] == [
        f"--resume: no checkpoint at {tmp_path / 'none.safetensors'}; starting at epoch 1"
    ]


def test_resume_of_the_same_run_restores_without_a_notice(tmp_path, caplog):
    import torch

    from hybridrec.model.checkpoint import Checkpointer

    path = tmp_path / "run.safetensors"
    _tiny_checkpoint(path, {"config": "c", "data": "d"}, "same")
    net = torch.nn.Linear(2, 1)
    with caplog.at_level(logging.WARNING, logger="hybridrec"):
        meta = Checkpointer(path, "same", {"config": "c", "data": "d"}, resume=True).load(
            net, torch.optim.Adam(net.parameters()), np.random.default_rng(0)
        )
    assert meta is not None and meta["epoch"] == 1 and not caplog.records


def test_evaluate_on_rows_the_model_trained_on_is_refused_with_counts(demo_model, tmp_path):
    """Another seed splits the same data differently: part of its test rows were the fit's training rows."""
    from hybridrec.data.splits import split_interactions

    config = demo_yaml(tmp_path, seed=7)
    cfg = load_config(config)
    test = split_interactions(read_dataset(cfg).interactions, cfg.split, cfg.seed).test
    fitted = pd.concat([demo_model.split.train, demo_model.split.validation])
    trained = set(zip(fitted["user_id"], fitted["item_id"], strict=True))
    overlap = sum((u, i) in trained for u, i in zip(test["user_id"], test["item_id"], strict=True))
    assert overlap > 0
    result = invoke("evaluate", "--model", demo_model.path, "--config", config)
    assert_one_line_error(result, f"{overlap} of {len(test)} test rows are (user, item) pairs the model was fitted on")


def test_the_fits_own_split_has_no_overlap(demo_model):
    from hybridrec.evaluation.holdout import training_overlap

    assert training_overlap(demo_model.rec, demo_model.split.test) == 0
    fitted = demo_model.split.train.head(25)
    assert training_overlap(demo_model.rec, fitted) == 25


def test_info_on_a_metrics_file_that_is_a_list_is_clean(demo_model, tmp_path):
    model = _copy_model(demo_model, tmp_path)
    _rewrite(model, "metrics.json", json.dumps([1, 2, 3]))
    for extra in ((), ("--json",)):
        result = invoke("info", "--model", model, *extra)
        assert "Traceback" not in result.output
        if result.exit_code == 2:
            assert_one_line_error(result, "metrics.json")
        else:
            assert result.exit_code == 0, result.output
            assert result.stderr.strip() == ""


def test_a_checkpoints_folder_planted_as_a_link_is_refused(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (out / ".checkpoints").symlink_to(elsewhere)
    result = invoke("fit", "--quiet", "--config", DEMO_CONFIG, "--out", out, "--set", "train.epochs=1")
    assert_one_line_error(result, ".checkpoints must be a plain folder")
    assert list(elsewhere.iterdir()) == []
    docs = (ROOT / "docs" / "failure-modes.md").read_text()
    assert "the checkpoint is written through it" not in docs


def test_amazon_numeric_ids_stay_as_written(tmp_path):
    lines = [json.dumps({"reviewerID": f"u{n}", "asin": f"a{n % 3}", "overall": 4.0}) for n in range(20)]
    lines.append('{"reviewerID": 1e400, "asin": 7.50, "overall": 5.0}')
    reviews = put(tmp_path / "reviews.json", "\n".join(lines) + "\n")
    dataset = read_dataset(load_config(None, ["data.format=amazon", f"data.paths.reviews={reviews}"]))
    row = dataset.interactions[dataset.interactions["user_id"] == "1e400"]
    assert row["item_id"].tolist() == ["7.50"] and row["rating"].tolist() == [5.0]
