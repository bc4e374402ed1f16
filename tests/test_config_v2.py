"""Config format 2 (docs/architecture.md) through `load_config` on YAML files: the version gate, the
`model.user_history` block, `model.terms`, the model's and the job's sections; and the saved model's format:
one permission mode for every file, and a 0.1 model refused with a hint to refit."""

from __future__ import annotations

import dataclasses
import json
import shutil
import stat
from pathlib import Path

import pytest
import yaml

from hybridrec.config import (
    JOB_SECTIONS,
    MODEL_SECTIONS,
    Config,
    UserHistoryConfig,
    config_from_dict,
    job_settings,
    load_config,
    model_settings,
)
from hybridrec.errors import ConfigError, ModelFileError
from hybridrec.recommender import HybridRecommender


@pytest.fixture
def write(tmp_path):
    """write(payload) -> the path of a YAML config file holding it (format_version 2 unless the payload says)."""
    count = iter(range(1000))

    def _write(payload: dict, version: int | None = 2):
        body = dict(payload)
        if version is not None:
            body = {"format_version": version, **body}
        path = tmp_path / f"config-{next(count)}.yaml"
        path.write_text(yaml.safe_dump(body, sort_keys=False), encoding="utf-8")
        return path

    return _write


def model(**section) -> dict:
    return {"model": section}


RANKING = {"train": {"loss": "bpr"}}

# ---------------------------------------------------------------------------------------------------------------------
# The version gate


def test_format_version_1_is_refused_with_a_pointer_to_the_key_mapping(write):
    path = write({"model": {"user_history": 20, "history_causal": True}}, version=1)
    with pytest.raises(ConfigError, match="format_version 1") as info:
        load_config(path)
    assert "docs/architecture.md" in str(info.value)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("version", [3, "2", None], ids=["newer", "string", "null"])
def test_other_format_versions_are_refused(write, version):
    path = write({"name": "x"}, version=None)
    path.write_text(yaml.safe_dump({"format_version": version, "name": "x"}), encoding="utf-8")
    with pytest.raises(ConfigError, match="not supported"):
        load_config(path)


def test_format_version_2_and_a_file_without_one_load(write):
    assert load_config(write({"name": "two"})).name == "two"
    assert load_config(write({"name": "unstated"}, version=None)).name == "unstated"


# ---------------------------------------------------------------------------------------------------------------------
# model.user_history


def test_the_user_history_block_parses_every_key(write):
    block = {"length": 20, "order": "causal", "position_weights": True, "similar_weight": 0.4}
    cfg = load_config(write({**model(user_history=block), **RANKING}))
    assert cfg.model.user_history == UserHistoryConfig(20, "causal", True, 0.4)
    assert isinstance(cfg.model.user_history.similar_weight, float)


def test_the_user_history_defaults_are_off(write):
    assert load_config(write({"name": "plain"})).model.user_history == UserHistoryConfig(0, "latest", False, 0.0)
    cfg = load_config(write(model(user_history={"length": 5})))
    assert cfg.model.user_history == UserHistoryConfig(5, "latest", False, 0.0)


@pytest.mark.parametrize(
    "payload, message",
    [
        ({**model(user_history={"length": 5, "order": "causal"})}, "causal needs .*ranking train.loss"),
        ({**model(user_history={"length": 5, "order": "causal"}), "train": {"loss": "mse"}}, "causal needs"),
        ({**model(user_history={"length": 0, "order": "causal"}), **RANKING}, "causal needs .*length > 0"),
        (model(user_history={"similar_weight": 0.5}), "similar_weight: needs model.user_history.length > 0"),
        (model(user_history={"length": 5, "similar_weight": 1.5}), r"similar_weight: 1.5 is out of range \[0, 1\]"),
        (model(user_history={"length": -1}), r"length: -1 is out of range"),
        (model(user_history={"length": 2.5}), "length: expected an integer"),
        (model(user_history={"order": "random"}), r"order: 'random' is not one of \['auto', 'causal', 'latest'\]"),
        (model(user_history={"position_weights": "yes"}), "position_weights: expected true or false"),
        (model(variant="content-only", user_history={"length": 5, "similar_weight": 0.3}), "content-only"),
    ],
    ids=[
        "causal-auto-loss",
        "causal-mse",
        "causal-no-length",
        "similar-no-length",
        "similar-range",
        "length-negative",
        "length-float",
        "order-unknown",
        "position-not-bool",
        "similar-content-only",
    ],
)
def test_bad_user_history_settings_are_config_errors(write, payload, message):
    with pytest.raises(ConfigError, match=message):
        load_config(write(payload))


@pytest.mark.parametrize(
    "key, suggestion",
    [
        ("lenght", "length"),
        ("ordr", "order"),
        ("position_weight", "position_weights"),
        ("similar_wieght", "similar_weight"),
    ],
)
def test_an_unknown_user_history_key_suggests_the_closest(write, key, suggestion):
    with pytest.raises(ConfigError, match=f"unknown config key 'model.user_history.{key}'") as info:
        load_config(write(model(user_history={key: 1})))
    assert f"did you mean 'model.user_history.{suggestion}'" in str(info.value)


@pytest.mark.parametrize(
    "payload",
    [model(user_history=20), model(history_causal=True), model(similar_history_weight=0.5), model(item_item=True)],
    ids=["bare-length", "history_causal", "similar_history_weight", "item_item"],
)
def test_0_1_model_keys_are_refused(write, payload):
    """The 0.1 spellings (docs/architecture.md maps them) are errors, never silently ignored."""
    with pytest.raises(ConfigError, match="model"):
        load_config(write(payload))


# ---------------------------------------------------------------------------------------------------------------------
# model.terms


def test_terms_parse_in_order_with_their_own_params(write):
    terms = [
        {"type": "ease", "l2": 200, "similar_weight": 0.5},
        {"type": "content_ridge", "l2": 300, "recommend_weight": 0.5},
    ]
    cfg = load_config(write({**model(terms=terms), **RANKING}))
    assert cfg.model.terms == terms
    from hybridrec.scoring.base import build_terms

    built = build_terms(cfg)
    assert [t.type for t in built] == ["ease", "content_ridge"]
    assert built[0].params.l2 == 200.0 and built[0].params.similar_weight == 0.5
    assert built[0].params.recommend_weight == 0.0
    assert built[1].params.recommend_weight == 0.5 and built[1].params.similar_weight == 0.0


def test_an_unknown_term_type_suggests_the_closest(write):
    with pytest.raises(ConfigError, match=r"model.terms\[0\].type: unknown score term 'eas'") as info:
        load_config(write(model(terms=[{"type": "eas"}])))
    assert "did you mean 'ease'" in str(info.value)
    with pytest.raises(ConfigError, match="unknown score term 'zzzz'.*known:.*content_ridge.*ease"):
        load_config(write(model(terms=[{"type": "zzzz"}])))


@pytest.mark.parametrize(
    "key, suggestion",
    [("recommend_weigth", "recommend_weight"), ("similar_wieght", "similar_weight"), ("l_2", "l2")],
)
def test_an_unknown_term_key_suggests_the_closest(write, key, suggestion):
    terms = [{"type": "ease", "similar_weight": 0.2}, {"type": "content_ridge", key: 1}]
    with pytest.raises(ConfigError, match=rf"unknown config key 'model.terms\[1\].{key}'") as info:
        load_config(write(model(terms=terms)))
    assert f"did you mean 'model.terms[1].{suggestion}'" in str(info.value)


@pytest.mark.parametrize("key", ["recommend_weight", "similar_weight"])
@pytest.mark.parametrize("value", [1.0, 1.5, -0.1, float("nan")], ids=["one", "above", "negative", "nan"])
def test_term_weights_outside_0_to_1_are_refused(write, key, value):
    with pytest.raises(ConfigError, match=rf"model.terms\[0\].{key}: .*(out of range \[0, 1\)|not a finite)"):
        load_config(write({**model(terms=[{"type": "ease", key: value}]), **RANKING}))


def test_term_weights_inside_0_to_1_are_accepted(write):
    for value in (0, 0.0, 0.5, 0.999):
        term = {"type": "ease", "recommend_weight": value, "similar_weight": value}
        load_config(write({**model(terms=[term]), **RANKING}))


def test_a_term_type_may_appear_once(write):
    terms = [{"type": "ease", "l2": 100}, {"type": "ease", "l2": 900}]
    with pytest.raises(ConfigError, match=r"model.terms\[1\]: a second 'ease' term"):
        load_config(write(model(terms=terms)))


def test_a_similar_weight_on_a_term_with_no_similar_view_is_refused(write):
    terms = [{"type": "ease", "similar_weight": 0.6}, {"type": "content_ridge", "similar_weight": 0.3}]
    with pytest.raises(ConfigError, match=r"model\.terms\[1\]\.similar_weight: a 'content_ridge' term has no similar"):
        load_config(write(model(terms=terms)))
    terms[1]["similar_weight"] = 0.0
    assert len(load_config(write(model(terms=terms))).model.terms) == 2


@pytest.mark.parametrize(
    "terms, message",
    [
        ([{"l2": 5}], "expected a mapping with a `type`"),
        (["ease"], r"model.terms\[0\]: expected a mapping, got .ease."),
        ({"type": "ease"}, "model.terms: expected a list"),
        ([{"type": "ease", "l2": 0}], r"model.terms\[0\] \(ease\): l2: 0.0 must be > 0"),
        ([{"type": "ease", "l2": "big"}], r"model.terms\[0\].l2: expected a number, got 'big'"),
        ([{"type": "content_ridge", "recommend_weight": 0.5}], r"model.terms\[0\] \(content_ridge\): .*ranking"),
    ],
    ids=["no-type", "bare-string", "not-a-list", "ease-l2", "l2-type", "ridge-needs-ranking-loss"],
)
def test_malformed_terms_are_config_errors(write, terms, message):
    with pytest.raises(ConfigError, match=message):
        load_config(write(model(terms=terms)))


# ---------------------------------------------------------------------------------------------------------------------
# The model's sections and the job's


@pytest.fixture
def full_config(write):
    payload = {
        "name": "split-test",
        "seed": 7,
        "data": {"format": "table", "paths": {"interactions": "ratings.csv"}, "feedback": "implicit"},
        "split": {"kind": "leave-last-out"},
        "evaluate": {"k": 5},
        "features": {"text_encoder": "tfidf", "tfidf_dim": 16},
        "model": {"dim": 8, "user_history": {"length": 3}, "terms": [{"type": "ease", "similar_weight": 0.4}]},
        "train": {"loss": "bpr", "epochs": 2},
        "index": {"M": 8},
    }
    return load_config(write(payload))


def test_model_settings_hold_exactly_the_models_sections(full_config):
    settings = model_settings(full_config)
    assert set(settings) == {"format_version", "seed", "features", "model", "train", "index"}
    assert set(MODEL_SECTIONS) == {"seed", "features", "model", "train", "index"}
    assert settings["format_version"] == 2
    assert settings["seed"] == 7
    assert settings["model"]["user_history"]["length"] == 3
    assert settings["model"]["terms"] == [{"type": "ease", "similar_weight": 0.4}]
    assert settings["index"]["M"] == 8
    json.dumps(settings)  # plain JSON, as saved in config.json


def test_job_settings_hold_the_jobs_sections_and_base_dir(full_config, tmp_path):
    job = job_settings(full_config)
    assert set(job) == {"format_version", "base_dir", "name", "data", "split", "evaluate"}
    assert set(JOB_SECTIONS) == {"name", "data", "split", "evaluate"}
    assert job["name"] == "split-test" and job["split"]["kind"] == "leave-last-out" and job["evaluate"]["k"] == 5
    assert job["base_dir"] == str(tmp_path.resolve())
    assert not set(job) & set(model_settings(full_config)) - {"format_version"}
    json.dumps(job)


def test_the_models_and_the_jobs_sections_rebuild_the_config(full_config):
    """What load_model does with config.json and job.json: together they are the whole config again."""
    rebuilt = config_from_dict(job_settings(full_config) | model_settings(full_config))
    assert rebuilt == dataclasses.replace(full_config, base_dir=str(Path(full_config.base_dir).resolve()))
    alone = config_from_dict(model_settings(full_config))  # the model's own sections suffice to serve
    assert alone.model == full_config.model and alone.train == full_config.train
    assert alone.data == Config().data and alone.name == Config().name


# ---------------------------------------------------------------------------------------------------------------------
# The saved model's format


def test_every_file_of_a_saved_model_has_one_permission_mode(demo_model):
    root = demo_model.path.resolve()
    files = [p for p in root.rglob("*") if p.is_file()]
    names = {str(p.relative_to(root)) for p in files}
    assert {"weights.safetensors", "manifest.json", "config.json", "index/items.hnsw"} <= names
    assert any(name.startswith("features/") for name in names)
    modes = {str(p.relative_to(root)): stat.S_IMODE(p.stat().st_mode) & 0o777 for p in files}
    assert len(set(modes.values())) == 1, modes
    assert next(iter(modes.values())) & 0o600 == 0o600  # the owner can read and rewrite them
    folders = {stat.S_IMODE(p.stat().st_mode) & 0o777 for p in [root, *root.rglob("*")] if p.is_dir()}
    assert len(folders) == 1, folders


def test_a_format_version_1_model_is_refused_with_a_hint_to_refit(demo_model, tmp_path):
    copy = tmp_path / "old-model"
    shutil.copytree(demo_model.path, copy, symlinks=False)
    assert HybridRecommender.load(copy).items_.raw_ids == demo_model.rec.items_.raw_ids  # the copy itself loads
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["format_version"] = 1
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelFileError, match="format version 1") as info:
        HybridRecommender.load(copy)
    assert "refit" in str(info.value)
    from hybridrec.artifacts import FORMAT_VERSION

    manifest["format_version"] = FORMAT_VERSION + 1
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelFileError, match="upgrade hybridrec"):
        HybridRecommender.load(copy)


@pytest.mark.parametrize(
    "payload, message",
    [
        ({"train": {"lr": "fast"}}, "train.lr: expected a number, got 'fast'"),
        (model(dropout=True), "model.dropout: expected a number, got True"),
        (model(user_history={"length": 3, "similar_weight": "half"}), "similar_weight: expected a number"),
    ],
    ids=["word", "boolean", "nested"],
)
def test_a_non_number_where_a_number_belongs_is_a_config_error(write, payload, message):
    """Not a TypeError from the range checks: the key is named."""
    with pytest.raises(ConfigError, match=message):
        load_config(write(payload))
