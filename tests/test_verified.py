"""A model loaded again, unchanged, is neither hashed nor rescanned (hybridrec/verified.py); any change since, even
one that keeps the file's size and modification time, is hashed and checked in full. What a query does not need
is not read: the users' id map waits for a user query."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from hardening import rewrite_checksum

from hybridrec import artifacts, verified
from hybridrec.errors import ModelFileError
from hybridrec.recommender import HybridRecommender


@pytest.fixture
def model(demo_model, tmp_path, monkeypatch):
    """A private copy of the demo model, a private record folder, and no settling time (the copy is seconds old)."""
    monkeypatch.setenv("HYBRIDREC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(verified, "SETTLED_S", 0.0)
    return Path(shutil.copytree(demo_model.path.resolve(), tmp_path / "m"))


@pytest.fixture
def hashed(monkeypatch):
    """The files hashed so far (artifacts._sha256's calls)."""
    names: list[str] = []
    original = artifacts._sha256
    monkeypatch.setattr(artifacts, "_sha256", lambda path: names.append(Path(path).name) or original(path))
    return names


@pytest.fixture
def scanned(monkeypatch):
    """The arrays whose values were scanned for NaN or infinity so far (np.isfinite over a whole array)."""
    sizes: list[int] = []
    original = np.isfinite

    def spy(array, *args, **kwargs):
        sizes.append(np.size(array))
        return original(array, *args, **kwargs)

    monkeypatch.setattr(artifacts.np, "isfinite", spy)
    return sizes


def answers(rec) -> tuple:
    item = rec.items_.raw(3)
    return rec.similar_items(item, 5)[0], rec.recommend("U0001", 5)[0]


def test_an_unchanged_model_is_not_hashed_or_scanned_again_and_answers_the_same(model, hashed, scanned):
    first = HybridRecommender.load(model)
    listed = json.loads((model / "manifest.json").read_text())["files"]
    assert len(hashed) == len(listed)  # every file, the first time
    vectors = first.towers_.item_vectors.size
    assert vectors in scanned  # the item vectors were scanned for NaN
    expected = answers(first)
    hashed.clear(), scanned.clear()
    again = HybridRecommender.load(model)
    assert hashed == [] and vectors not in scanned
    assert answers(again) == expected


def test_a_change_that_keeps_size_and_modification_time_is_still_caught(model):
    HybridRecommender.load(model)  # recorded
    path = model / "vectors" / "item_vectors.npy"
    info = path.stat()
    raw = bytearray(path.read_bytes())
    raw[-5] ^= 0xFF
    path.write_bytes(bytes(raw))
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns))  # the times set back: the status-change time moves
    assert path.stat().st_size == info.st_size and path.stat().st_mtime_ns == info.st_mtime_ns
    with pytest.raises(ModelFileError, match="item_vectors.npy: corrupted or truncated"):
        HybridRecommender.load(model)


def test_a_damaged_file_with_its_checksum_rewritten_after_the_record_is_checked_in_full(model):
    HybridRecommender.load(model)  # recorded: its files read and checked
    path = model / "vectors" / "item_vectors.npy"
    vectors = np.load(path)
    vectors[2, 0] = np.nan
    np.save(path, vectors, allow_pickle=False)
    rewrite_checksum(model, "vectors/item_vectors.npy")  # the manifest changes: no record applies
    with pytest.raises(ModelFileError, match="item_vectors.npy: holds values that are not finite"):
        HybridRecommender.load(model)


def test_a_record_of_another_version_or_an_unwritable_record_folder_means_a_full_check(model, hashed, monkeypatch):
    HybridRecommender.load(model)
    records = list((Path(os.environ["HYBRIDREC_CACHE_DIR"]) / "verified").glob("*.json"))
    assert len(records) == 1
    payload = json.loads(records[0].read_text())
    records[0].write_text(json.dumps(payload | {"version": "0.0.1"}))
    hashed.clear()
    HybridRecommender.load(model)
    assert len(hashed) == len(payload["files"])  # hashed again, and recorded anew
    blocker = model.parent / "not-a-folder"
    blocker.write_text("x")
    monkeypatch.setenv("HYBRIDREC_CACHE_DIR", str(blocker))  # records cannot be written under a file
    hashed.clear()
    rec = HybridRecommender.load(model)
    HybridRecommender.load(model)
    assert len(hashed) == 2 * len(payload["files"]) and answers(rec)  # no error: each load checks in full


def test_the_users_id_map_is_read_at_the_first_user_query(model):
    rec = HybridRecommender.load(model)
    item = rec.items_.raw(0)
    rec.similar_items(item, 5)
    assert rec.users_._map is None and len(rec.users_) == len(rec.towers_.user_vectors)
    assert rec.recommend("U0001", 3)[0]
    assert rec.users_._map is not None and rec.users_.index("U0001") >= 0


@pytest.mark.parametrize("planted", ["dev-zero", "fifo", "deep", "another user's"])
def test_a_record_that_is_not_a_plain_record_of_this_user_is_ignored(model, hashed, monkeypatch, planted):
    """A record is read only if it is a regular file of this user's, within bounds, parsed within bounds: a link to
    /dev/zero, a FIFO, a nested document or (in a shared cache folder) someone else's file means a full check,
    never a hang or an error."""
    HybridRecommender.load(model)
    (record,) = (Path(os.environ["HYBRIDREC_CACHE_DIR"]) / "verified").glob("*.json")
    if planted == "another user's":
        monkeypatch.setattr(verified.os, "geteuid", lambda: os.getuid() + 1)  # as if someone else owned it
    else:
        record.unlink()
        if planted == "dev-zero":
            if not Path("/dev/zero").exists():
                pytest.skip("no /dev/zero")
            record.symlink_to("/dev/zero")
        elif planted == "fifo":
            os.mkfifo(record)
        else:
            record.write_text("[" * 200_000)
    hashed.clear()
    rec = HybridRecommender.load(model)
    assert len(hashed) == len(json.loads((model / "manifest.json").read_text())["files"]) and answers(rec)


def test_a_mapped_load_answers_as_a_read_one(model):
    """`load(mapped=True)` (the CLI's) maps the arrays instead of reading them; the answers are the same."""
    read, mapped = HybridRecommender.load(model), HybridRecommender.load(model, mapped=True)
    assert not isinstance(read.towers_.item_vectors, np.memmap)
    assert isinstance(mapped.towers_.item_vectors, np.memmap)
    assert answers(mapped) == answers(read)
    assert mapped.display_[2] == read.display_[2] and list(mapped.display_) == list(read.display_)
