"""`hybridrec fit --task rating|topn|similar|cold`: one recipe per task in place of the config's model and train
sections, whatever the dataset; `--set` still applies on top and the machine settings stay the config's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import DEMO_CONFIG, REPO
from hybridrec_cli.main import app
from typer.testing import CliRunner

from hybridrec.config import load_config
from hybridrec.errors import ConfigError
from hybridrec.recipes import RECIPES, TASKS

SHIPPED = sorted((REPO / "configs").glob("*.yaml"))


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("config", SHIPPED, ids=lambda p: p.stem)
def test_every_recipe_is_a_valid_config_over_every_shipped_dataset(config: Path, task: str):
    cfg = load_config(config, task=task)
    recipe = RECIPES[task]
    assert cfg.model.dim == recipe["model"]["dim"] and cfg.model.variant == recipe["model"]["variant"]
    for key, value in recipe["train"].items():
        assert getattr(cfg.train, key) == value, key
    own = yaml.safe_load(config.read_text())
    assert cfg.data.format == own["data"]["format"]  # the data section is the config's


def test_the_recipe_replaces_model_and_train_but_keeps_where_training_runs(tmp_path):
    payload = yaml.safe_load(DEMO_CONFIG.read_text())
    payload["model"] = {"variant": "id-only", "dim": 8, "terms": [{"type": "ease", "similar_weight": 0.5}]}
    payload["train"] = {"epochs": 3, "threads": 1, "device": "cpu", "lr": 0.5}
    payload["data"]["paths"] = {k: str((DEMO_CONFIG.parent / v).resolve()) for k, v in payload["data"]["paths"].items()}
    path = tmp_path / "own.yaml"
    path.write_text(yaml.safe_dump(payload))
    cfg = load_config(path, ["train.epochs=7"], task="topn")
    assert cfg.model.variant == "hybrid" and cfg.model.dim == RECIPES["topn"]["model"]["dim"]
    assert cfg.model.user_history.order == "auto"
    assert [t["type"] for t in cfg.model.terms] == ["cooccurrence"]  # the file's EASE term is gone; the default
    assert cfg.train.lr == RECIPES["topn"]["train"]["lr"]  # the file's lr is the recipe's now
    assert (cfg.train.threads, cfg.train.device) == (1, "cpu")  # the machine settings stay
    assert cfg.train.epochs == 7  # --set wins over the recipe
    cold = load_config(path, task="cold")
    assert [t["type"] for t in cold.model.terms] == ["content_ridge", "cooccurrence"]
    assert load_config(path).model.variant == "id-only"  # without --task: the file as written


def test_an_unknown_task_is_a_config_error_and_one_cli_line(tmp_path):
    with pytest.raises(ConfigError, match="choose from rating, topn, similar, cold"):
        load_config(DEMO_CONFIG, task="ranking")
    result = invoke("fit", "--config", DEMO_CONFIG, "--task", "ranking", "--out", tmp_path, "--quiet")
    assert result.exit_code == 2
    assert result.stderr.strip() == "error: --task 'ranking': choose from rating, topn, similar, cold"
    assert not any(tmp_path.iterdir())


def test_fit_with_a_task_saves_the_recipe_it_trained(text_cache_dir, tmp_path):
    sets = ["--set", f"features.cache_dir={text_cache_dir}", "--set", "train.threads=1", "--set", "train.epochs=2"]
    result = invoke("fit", "--config", DEMO_CONFIG, "--task", "topn", "--out", tmp_path, "--quiet", "--json", *sets)
    assert result.exit_code == 0, result.stdout + result.stderr
    from hybridrec.recommender import HybridRecommender

    rec = HybridRecommender.load(Path(json.loads(result.stdout)["model"]))
    assert rec.config.train.loss == "sampled-softmax" and rec.config.model.user_id_dropout == 1.0
    assert rec.config.train.epochs == 2 and rec.config.model.dim == RECIPES["topn"]["model"]["dim"]
    assert load_config(DEMO_CONFIG).model.dim != rec.config.model.dim  # not what the file alone gives
    ids, _ = rec.recommend(rec.users_.raw(0), 5)
    assert len(ids) == 5


def test_order_auto_is_causal_only_for_timed_rows_and_a_ranking_loss():
    import numpy as np

    from hybridrec.model.history import resolve_order

    timed, untimed = np.array([3, 1, 2]), np.zeros(3)
    assert resolve_order("auto", "sampled-softmax", timed) == "causal"
    assert resolve_order("auto", "sampled-softmax", untimed) == "latest"  # goodbooks: no "before" to learn from
    assert resolve_order("auto", "mse", timed) == "latest"  # a rating loss keeps the rated item in the bag
    assert resolve_order("causal", "bpr", untimed) == "causal" and resolve_order("latest", "bpr", timed) == "latest"


@pytest.mark.parametrize("timed", [True, False])
def test_a_fit_with_order_auto_trains_the_bag_the_data_allows(demo_dataset, text_cache_dir, caplog, timed):
    import dataclasses
    import logging

    from conftest import fit_demo

    data = (
        demo_dataset
        if timed
        else dataclasses.replace(demo_dataset, interactions=demo_dataset.interactions.assign(timestamp=0))
    )
    sets = ("train.loss=sampled-softmax", "model.user_history.length=20", "model.user_history.order=auto")
    with caplog.at_level(logging.INFO, logger="hybridrec"):
        rec = fit_demo(data, text_cache_dir, *sets)
    said = [r.getMessage() for r in caplog.records if "user history order auto" in r.getMessage()]
    expected = "causal" if timed else "latest"
    assert len(said) == 1 and said[0].startswith(f"user history order auto: {expected} (")
    assert rec.config.model.user_history.order == "auto"  # saved as asked: the rule is re-applied on refit
