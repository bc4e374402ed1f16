"""SIGINT and SIGTERM during `hybridrec fit`: the previous model stays loadable and answers as before, the
interrupted run prints no traceback, and `--resume` finishes the run from its last checkpoint."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import DEMO_CONFIG
from fault_kill import answers

HYBRIDREC = [sys.executable, "-c", "from hybridrec_cli.main import app; app()"]


def fit_command(out: Path, cache: Path, *extra: str) -> list[str]:
    return [
        *HYBRIDREC,
        "fit",
        "--config",
        str(DEMO_CONFIG),
        "--out",
        str(out),
        "--set",
        f"features.cache_dir={cache}",
        "--set",
        "train.threads=1",
        "--set",
        "train.epochs=60",
        "--set",
        "train.patience=100",
        *extra,
    ]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_during_fit_leaves_the_previous_model_and_resume_finishes(demo_model, tmp_path, sig):
    out = tmp_path / "models"
    shutil.copytree(demo_model.out_dir, out, symlinks=True)
    before = answers(out / "latest")
    checkpoint = out / ".checkpoints" / "demo.safetensors"
    proc = subprocess.Popen(fit_command(out, demo_model.cache_dir, "-q"), stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not checkpoint.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert checkpoint.exists(), "no epoch was checkpointed"
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    assert "Traceback" not in stderr, stderr
    if sig == signal.SIGINT:
        assert proc.returncode == 130 and stderr.strip().splitlines()[-1] == "interrupted", stderr
    assert answers(out / "latest") == before  # the published model is untouched
    assert not list((out / ".demo.versions").glob("tmp-*")), "a staging folder was left behind"
    resumed = subprocess.run(
        fit_command(out, demo_model.cache_dir, "--resume", "-q", "--json"), capture_output=True, text=True, timeout=600
    )
    assert resumed.returncode == 0, resumed.stderr
    report = json.loads(resumed.stdout)
    assert _find(report, "resumed_from_epoch") >= 1, report  # continued after the checkpointed epoch
    assert not checkpoint.exists()  # a finished run leaves nothing to resume
    assert answers(out / "latest")["n_items"] == before["n_items"]


def _find(payload, key: str):
    """A key anywhere in nested JSON (the fit report groups its fields)."""
    if isinstance(payload, dict):
        if key in payload:
            return payload[key]
        for value in payload.values():
            found = _find(value, key)
            if found is not None:
                return found
    return None
