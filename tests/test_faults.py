"""Faults: damaged model files, a newer format version, queries while the model is replaced, SIGKILL in fit and save.

The long kill campaign is `tests/fault_kill.py` (run it directly); `test_sigkill_during_fit_and_save` runs a short
version of it in CI.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from fault_kill import answers
from hardening import rewrite_checksum, time_limit
from hybridrec_cli.main import app
from typer.testing import CliRunner

from hybridrec.errors import ModelFileError
from hybridrec.recommender import HybridRecommender

TESTS = Path(__file__).resolve().parent
DAMAGES = {
    "truncated": lambda raw: raw[: len(raw) // 2],
    "one byte flipped": lambda raw: (
        raw[: len(raw) // 2] + bytes([raw[len(raw) // 2] ^ 0xFF]) + raw[len(raw) // 2 + 1 :]
    ),
    "emptied": lambda raw: b"",
}


def model_files(model: Path) -> list[str]:
    root = model.resolve()
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def plain_copy(model: Path, dest: Path) -> Path:
    return Path(shutil.copytree(model.resolve(), dest))


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def use_everything(path: Path) -> None:
    """Load and touch every file: ids, vectors, display table, and the lazily read network, features and index."""
    rec = HybridRecommender.load(path)
    rec.similar_items("D0031", 5)
    rec.recommend("U0001", 5)
    rec.net  # noqa: B018
    rec.features  # noqa: B018
    rec.index_  # noqa: B018 - read on first use (artifacts.LazyIndex), as a big catalogue's query would
    rec.trusted_index_  # noqa: B018 - likewise (a model of a big catalogue has one)


# ------------------------------------------------------------------------------------------ (b) damaged files
@pytest.mark.parametrize("damage", list(DAMAGES) + ["deleted"])
def test_every_damaged_file_is_named_on_load(demo_model, tmp_path, damage):
    """Each file of the model folder in turn: loading fails with a ModelFileError naming exactly that file."""
    files = model_files(demo_model.path)
    assert len(files) >= 15 and "weights.safetensors" in files and "manifest.json" in files
    for name in files:
        model = plain_copy(demo_model.path, tmp_path / f"m-{name.replace('/', '_')}")
        path = model / name
        if damage == "deleted":
            path.unlink()
        else:
            path.write_bytes(DAMAGES[damage](path.read_bytes()))
        with time_limit(30), pytest.raises(ModelFileError) as caught:
            HybridRecommender.load(model)  # no lazy file waits for its first use
        message = str(caught.value)
        assert str(path) in message or (name == "manifest.json" and "manifest.json" in message), (name, message)
        assert "\n" not in message


@pytest.mark.parametrize("name", ["vectors/item_vectors.npy", "weights.safetensors", "manifest.json"])
def test_cli_names_the_damaged_file_in_one_line(demo_model, tmp_path, name):
    model = plain_copy(demo_model.path, tmp_path / "m")
    (model / name).write_bytes((model / name).read_bytes()[:50])
    result = invoke("similar", "D0031", "--model", model)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and name in lines[0], result.stderr


@pytest.mark.parametrize("damage", ["truncated", "emptied"])
def test_damaged_files_with_a_matching_checksum_still_fail_cleanly(demo_model, tmp_path, damage):
    """A damaged file whose manifest entry was rewritten to match gets past the checksum; every parser behind it
    must still end in a ModelFileError naming the file (never a crash or a raw exception)."""
    for name in model_files(demo_model.path):
        if name in ("manifest.json", "report.html"):  # report.html is for people: no query reads it
            continue
        model = plain_copy(demo_model.path, tmp_path / f"m-{name.replace('/', '_')}")
        (model / name).write_bytes(DAMAGES[damage]((model / name).read_bytes()))
        rewrite_checksum(model, name)
        try:
            with time_limit(30):
                use_everything(model)
        except ModelFileError as exc:
            assert name.split("/")[-1] in str(exc) or name in str(exc), (name, str(exc))
        else:
            raise AssertionError(f"{name} {damage} with a matching checksum loaded without complaint")


def test_a_crafted_index_header_is_refused_before_hnswlib_reads_it(demo_model, tmp_path):
    """hnswlib trusts its file: an entry point or level out of range crashed the process (SIGSEGV). A file made
    to match its checksum is now refused with a ModelFileError, in a child process so a crash would show."""
    import struct

    model = plain_copy(demo_model.path, tmp_path / "m")
    index = model / "index" / "items.hnsw"
    raw = bytearray(index.read_bytes())
    fields = list(struct.unpack_from("<QQQQQQiIQQQdQ", raw))
    fields[7] = 10**6  # enterpoint_node_
    struct.pack_into("<QQQQQQiIQQQdQ", raw, 0, *fields)
    index.write_bytes(bytes(raw))
    rewrite_checksum(model, "index/items.hnsw")
    code = (
        "import sys\nfrom hybridrec.recommender import HybridRecommender\nfrom hybridrec.errors import ModelFileError\n"
        "try:\n    HybridRecommender.load(sys.argv[1]).index_\n"  # the index is read on first use
        "except ModelFileError as exc:\n    print('refused:', exc)\n"
    )
    done = subprocess.run([sys.executable, "-c", code, str(model)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"exit {done.returncode}: {done.stderr[-500:]}"
    assert "refused:" in done.stdout and "items.hnsw" in done.stdout, done.stdout


# -------------------------------------------------------------------------------------- (c) newer format version
def test_a_newer_format_version_names_the_version_this_hybridrec_reads(demo_model, tmp_path):
    from hybridrec.artifacts import FORMAT_VERSION

    model = plain_copy(demo_model.path, tmp_path / "m")
    manifest = model / "manifest.json"
    manifest.write_text(json.dumps(json.loads(manifest.read_text()) | {"format_version": FORMAT_VERSION + 1}))
    with pytest.raises(ModelFileError, match=rf"version {FORMAT_VERSION + 1} .*\(version {FORMAT_VERSION}\)"):
        HybridRecommender.load(model)
    result = invoke("info", "--model", model)
    assert result.exit_code == 2
    line = result.stderr.strip()
    assert (
        line.startswith("error: ") and f"version {FORMAT_VERSION + 1}" in line and f"version {FORMAT_VERSION})" in line
    )


# ------------------------------------------------------------------------- (d) queries while the model changes
READER = """
import hashlib, json, sys, time, os
sys.path.insert(0, sys.argv[2])
from fault_kill import answers
seen, errors, retries = {}, [], 0
while not os.path.exists(sys.argv[3]):
    for attempt in (1, 2):
        try:
            key = hashlib.sha1(json.dumps(answers(sys.argv[1]), sort_keys=True).encode()).hexdigest()
            seen[key] = seen.get(key, 0) + 1
            break
        except Exception as exc:
            if attempt == 1 and "load it again" in str(exc):
                retries += 1
                continue
            errors.append(f"{type(exc).__name__}: {exc}")
print(json.dumps({"seen": seen, "errors": errors[:5], "n_errors": len(errors), "retries": retries}))
"""


def digest(payload: dict) -> str:
    import hashlib

    return hashlib.sha1(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def test_queries_never_see_a_half_written_model(demo_model, tmp_path):
    """A reader process and a reader thread answer from the model in a loop while two different models are saved
    over it in turn: every answer is exactly one of the two, and no load fails."""
    target = tmp_path / "models" / "demo"
    first = demo_model.load()
    second = demo_model.load()
    from hybridrec.index import ItemIndex

    flipped = np.ascontiguousarray(second.towers_.item_vectors[::-1])  # a different, consistent model
    second.towers_.item_vectors = flipped
    second.index_ = ItemIndex(second.items_, flipped.shape[1]).build(flipped)
    first.save(target)
    expected = {digest(answers(target))}
    second.save(target)
    expected.add(digest(answers(target)))
    assert len(expected) == 2

    stop = tmp_path / "stop"
    proc = subprocess.Popen(
        [sys.executable, "-c", READER, str(target), str(TESTS), str(stop)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    thread_seen: dict[str, int] = {}
    thread_errors: list[str] = []

    def reader_thread():
        while not stop.exists():
            try:
                key = digest(answers(target))
                thread_seen[key] = thread_seen.get(key, 0) + 1
            except ModelFileError as exc:
                if "load it again" not in str(exc):
                    thread_errors.append(str(exc))
            except Exception as exc:  # noqa: BLE001
                thread_errors.append(f"{type(exc).__name__}: {exc}")

    thread = threading.Thread(target=reader_thread, daemon=True)
    thread.start()
    time.sleep(1.5)  # the reader process is importing; let it start reading
    saves, deadline, cap = 0, time.monotonic() + 4, time.monotonic() + 120
    while (time.monotonic() < deadline or saves < 10) and time.monotonic() < cap:  # a count, not a speed
        (first if saves % 2 else second).save(target)
        saves += 1
        time.sleep(0.05)
    stop.touch()
    thread.join(timeout=30)
    out, err = proc.communicate(timeout=60)
    report = json.loads(out.strip().splitlines()[-1]) if out.strip() else {"error": err[-500:]}
    assert "seen" in report, report
    print(f"\n{saves} saves; reader process: {report}; reader thread: {thread_seen}")
    assert not report["n_errors"] and not thread_errors, (report, thread_errors[:3])
    assert set(report["seen"]) <= expected and set(thread_seen) <= expected, "an answer from neither model"
    assert sum(report["seen"].values()) >= 5 and sum(thread_seen.values()) >= 5, (report, thread_seen)
    assert saves >= 10


# ------------------------------------------------------------------------------------------ (a) SIGKILL, short
@pytest.mark.skipif(not hasattr(os, "fork"), reason="the save-kill children are forked")
def test_sigkill_during_fit_and_save(demo_model, text_cache_dir, tmp_path):
    """tests/fault_kill.py in short: 2 `hybridrec fit` runs killed (training, saving) and 10 forked saves killed
    at random points; after each kill the model loads and answers exactly as before."""
    cmd = [sys.executable, str(TESTS / "fault_kill.py"), "--fit-kills", "2", "--phases", "saving,training",
           "--save-kills", "10", "--seed", "1", "--work", str(tmp_path / "work"), "--cache", str(text_cache_dir),
           "--baseline", str(demo_model.path), "--no-reader", "--json"]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=400)
    assert done.returncode in (0, 1), done.stderr[-2000:]
    stats = json.loads(done.stdout.strip().splitlines()[-1])
    assert stats["ok"], stats
    assert stats["kills"] >= 10 and stats["loads_intact"] == stats["kills"], stats
