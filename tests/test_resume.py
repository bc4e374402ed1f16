"""A fit killed mid-training continues from its last epoch checkpoint and ends where an uninterrupted fit ends."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from conftest import DEMO_CONFIG, quick_fit_overrides

import hybridrec.fitting as fitting_module
from hybridrec.config import load_config
from hybridrec.data.readers import read_dataset
from hybridrec.errors import ModelFileError
from hybridrec.recommender import HybridRecommender


class Killed(Exception):
    pass


@pytest.fixture(scope="module")
def setup(text_cache_dir):
    cfg = load_config(DEMO_CONFIG, quick_fit_overrides(text_cache_dir, "train.epochs=4", "train.patience=10"))
    return cfg, read_dataset(cfg)


@pytest.mark.parametrize("average_last", [0, 3], ids=["best-epoch", "weight-average"])
def test_resumed_fit_matches_an_uninterrupted_one(setup, tmp_path, monkeypatch, average_last):
    cfg, dataset = setup
    if average_last:  # the running mean over epochs 2..4 is cut after epoch 2 and must carry on from the checkpoint
        train = dataclasses.replace(cfg.train, early_stopping=False, average_last=average_last)
        cfg = dataclasses.replace(cfg, train=train)
    whole = HybridRecommender(cfg).fit(dataset)

    kills = []

    def die_in_epoch_3(row):
        if row["epoch"] == 3 and not kills:  # epoch 2 is checkpointed; epoch 3 is lost
            kills.append(row)
            raise Killed

    ckpt = tmp_path / "run.safetensors"
    monkeypatch.setattr(fitting_module, "_print_epoch", die_in_epoch_3)
    with pytest.raises(Killed):
        HybridRecommender(cfg, quiet=False).fit(dataset, checkpoint=ckpt)
    assert ckpt.is_file()
    resumed = HybridRecommender(cfg, quiet=False).fit(dataset, checkpoint=ckpt, resume=True)
    assert resumed.train_result_.resumed_from == 2
    assert [r["epoch"] for r in resumed.train_result_.history] == [1, 2, 3, 4]
    np.testing.assert_allclose(resumed.towers_.item_vectors, whole.towers_.item_vectors, atol=1e-6)
    np.testing.assert_allclose(resumed.towers_.user_bias, whole.towers_.user_bias, atol=1e-6)


def test_a_checkpoint_of_another_run_is_not_resumed(setup, tmp_path, monkeypatch):
    cfg, dataset = setup
    ckpt = tmp_path / "run.safetensors"
    short = load_config(DEMO_CONFIG, quick_fit_overrides(cfg.features.cache_dir, "train.epochs=1"))
    HybridRecommender(short).fit(dataset, checkpoint=ckpt)
    other = load_config(DEMO_CONFIG, [*quick_fit_overrides(cfg.features.cache_dir, "train.epochs=1"), "train.lr=0.001"])
    rec = HybridRecommender(other).fit(dataset, checkpoint=ckpt, resume=True)
    assert rec.train_result_.resumed_from == 0


def test_a_damaged_checkpoint_is_a_clear_error(setup, tmp_path):
    cfg, dataset = setup
    ckpt = tmp_path / "run.safetensors"
    ckpt.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not a header")
    with pytest.raises(ModelFileError, match="run.safetensors"):
        HybridRecommender(cfg).fit(dataset, checkpoint=ckpt, resume=True)


def test_cli_fit_killed_with_sigkill_resumes(text_cache_dir, tmp_path):
    import json
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    exe = Path(sys.executable).with_name("hybridrec")
    args = [str(exe), "fit", "--config", str(DEMO_CONFIG), "--out", str(tmp_path / "out"), "--quiet", "--json"]
    for item in quick_fit_overrides(text_cache_dir, "train.epochs=12", "train.patience=12", "train.batch_size=64"):
        args += ["--set", item]
    ckpt = tmp_path / "out" / ".checkpoints" / "demo.safetensors"
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not ckpt.is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "fit ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "out" / "demo").exists()  # nothing was published
    done = subprocess.run([*args, "--resume"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    run = json.loads(done.stdout)["run"]  # bookkeeping, apart from the held-out metrics
    assert run["resumed_from_epoch"] >= 1
    assert not ckpt.exists()  # a finished run leaves nothing to resume


def test_checkpoints_never_follow_a_link_out_of_the_output_folder(tmp_path):
    from hybridrec_cli.job import fit_from_config

    from hybridrec.errors import ConfigError

    (tmp_path / "out").mkdir()
    (tmp_path / "outside").mkdir()
    (tmp_path / "out" / ".checkpoints").symlink_to(tmp_path / "outside")
    with pytest.raises(ConfigError, match=".checkpoints"):
        fit_from_config(load_config(DEMO_CONFIG), tmp_path / "out", quiet=True)
    assert list((tmp_path / "outside").iterdir()) == []


def test_a_checkpoint_carries_the_gpu_generators(tmp_path, monkeypatch):
    """On CUDA, dropout masks and negatives are drawn by the GPU's own generators: a resumed fit must go on with their
    streams, or it leaves the uninterrupted fit's path (on an H200 the item vectors of this file's test ended up to
    0.35 apart). No GPU in CI: torch.cuda's generator calls are stood in for; the checkpoint's file is real."""
    import torch

    from hybridrec.model.checkpoint import Checkpointer

    states = [torch.arange(16, dtype=torch.uint8), torch.arange(16, 32, dtype=torch.uint8)]  # two GPUs
    restored: list = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: states)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", restored.extend)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    net = torch.nn.Linear(2, 1)
    opt = torch.optim.Adam(net.parameters())
    extra = {"bad_epochs": 0, "history": [], "best_epoch": 1, "best_score": 1.0, "stopped_early": False}
    path = tmp_path / "run.safetensors"
    Checkpointer(path, "run").save(net, opt, None, np.random.default_rng(0), 1, extra)
    assert Checkpointer(path, "run").load(net, opt, np.random.default_rng(1)) is not None
    assert [s.tolist() for s in restored] == [s.tolist() for s in states]
    restored.clear()  # a machine with one GPU restores the first one's stream
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    Checkpointer(path, "run").load(net, opt, np.random.default_rng(1))
    assert [s.tolist() for s in restored] == [states[0].tolist()]
