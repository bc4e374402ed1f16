"""Hostile and unlucky cases of issue 20, classes 2, 3, 4, 6, 7, 8 and 9, through the real code paths.

2: a fit whose loss or vectors are not finite never publishes; a save publishes only a folder that loads back.
3: concurrent updates of one model lose nothing (a lock around `score-new --add`, compare-and-swap in `save`).
4: held-out evaluation ends when a test user has had every item.
6: a full disk or `ulimit -f` during the checkpoint or a save: one line `error: PATH: CAUSE`, exit 2, nothing partial.
7: every model file is checked for types, shapes, ranges and agreement (the manifest's checksum is rewritten).
8: a model folder never reaches outside itself (links refused; the text cache is never the model's choice).
9: the text embedding cache detects damage (checksums per entry), rebuilds, and keeps concurrent writers' entries.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hardening import time_limit

from hybridrec.artifacts import write_manifest
from hybridrec.errors import ModelFileError
from hybridrec.recommender import HybridRecommender

CLI = [sys.executable, "-m", "hybridrec_cli.main"]
REPO = Path(__file__).resolve().parents[1]
DEMO_CONFIG = REPO / "configs" / "default.yaml"


# ------------------------------------------------------------------------------------------------------ helpers
def run_cli(*args, cache: Path, fsize: int | None = None, env: dict | None = None, timeout: float = 300):
    """The CLI in a fresh process; `fsize` sets RLIMIT_FSIZE (`ulimit -f`, in bytes) in the child. Python ignores
    SIGXFSZ, so a write past the limit fails with EFBIG instead of killing the process."""

    def limit():
        if fsize is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    environ = {**os.environ, "HYBRIDREC_CACHE_DIR": str(cache), **(env or {})}
    return subprocess.run(
        [*CLI, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=environ,
        preexec_fn=limit,
        cwd=REPO,
    )


def one_error_line(done) -> str:
    """The run failed with exit code 2 and exactly one `error: ...` line on stderr (no traceback)."""
    lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error: ")]
    assert done.returncode == 2, (done.returncode, done.stderr[-3000:])
    assert len(errors) == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    return errors[0]


def copy_out(demo_model, dest: Path) -> Path:
    """A copy of the demo fit's whole output folder (links kept): dest/demo -> .demo.versions/v-..., dest/latest."""
    shutil.copytree(demo_model.out_dir, dest, symlinks=True)
    return dest


def model_copy(demo_model, dest: Path) -> Path:
    """A plain copy of the demo model's version folder, for damage."""
    return Path(shutil.copytree(demo_model.path.resolve(), dest))


def remanifest(folder: Path) -> None:
    """Rewrite every checksum (keeping the manifest's other keys, components included), as someone who can write
    the folder would after changing a file."""
    payload = json.loads((folder / "manifest.json").read_text())
    write_manifest(folder, {k: v for k, v in payload.items() if k not in ("format_version", "created", "files")})


def version_of(link: Path) -> Path:
    return link.resolve()


def leftovers(out: Path) -> list[str]:
    """Partial files a failed write could leave: staging folders and temporary checkpoints."""
    found = [p.name for p in (out / ".demo.versions").glob("tmp-*")]
    found += [p.name for p in (out / ".checkpoints").glob("*tmp*")] if (out / ".checkpoints").is_dir() else []
    return found


def answers(model: Path) -> tuple:
    rec = HybridRecommender.load(model)
    ids, scores = rec.recommend("U0001", 5)
    return len(rec.items_), ids, [round(float(s), 5) for s in scores]


# ==================================================================================== 2: nothing broken publishes
def test_a_diverging_fit_stops_with_one_line_and_latest_does_not_move(demo_model, tmp_path):
    out = copy_out(demo_model, tmp_path / "out")
    before, latest_before = version_of(out / "demo"), os.readlink(out / "latest")
    done = run_cli(
        "fit", "--config", DEMO_CONFIG, "--out", out, "-q",
        "--set", "train.lr=1e10", "--set", "train.threads=1", "--set", f"features.cache_dir={demo_model.cache_dir}",
        cache=demo_model.cache_dir,
    )  # fmt: skip
    line = one_error_line(done)
    assert "epoch 1" in line and "train.lr" in line, line
    assert version_of(out / "demo") == before and os.readlink(out / "latest") == latest_before
    assert len(list((out / ".demo.versions").iterdir())) == 1 and not leftovers(out)
    assert answers(out / "latest") == answers(demo_model.path)


def test_index_M_above_hnswlibs_cap_is_a_config_error_before_any_work(demo_model, tmp_path):
    done = run_cli(
        "fit", "--config", DEMO_CONFIG, "--out", tmp_path / "o", "--set", "index.M=100000000",
        cache=demo_model.cache_dir, timeout=60,
    )  # fmt: skip
    assert "index.M" in one_error_line(done)
    assert not (tmp_path / "o" / "latest").exists()


@pytest.mark.parametrize(
    "damage, named",
    [
        ("nan item vector", "item_vectors.npy"),
        ("inf user bias", "user_bias.npy"),
        ("nan network weight", "network weight"),
        ("nan global mean", "model.json"),
    ],
)
def test_a_save_of_non_finite_state_is_refused_and_the_old_model_kept(demo_model, tmp_path, damage, named):
    out = copy_out(demo_model, tmp_path / "out")
    before = version_of(out / "demo")
    rec = HybridRecommender.load(out / "demo")
    if damage == "nan item vector":
        rec.towers_.item_vectors = rec.towers_.item_vectors.copy()
        rec.towers_.item_vectors[3, 1] = np.nan
    elif damage == "inf user bias":
        rec.towers_.user_bias = rec.towers_.user_bias.copy()
        rec.towers_.user_bias[0] = np.inf
    elif damage == "nan network weight":
        next(p for p in rec.net.parameters() if p.is_floating_point()).data[0] = float("nan")
    else:
        rec.towers_.global_mean = float("nan")
    with pytest.raises(ModelFileError, match="not finite") as caught:
        rec.save(out / "demo")
    assert named in str(caught.value) and "\n" not in str(caught.value)
    assert version_of(out / "demo") == before and not leftovers(out)
    assert answers(out / "demo") == answers(demo_model.path)


def test_a_save_that_would_not_load_back_is_not_published(demo_model, tmp_path):
    """index.M above hnswlib's cap (hnswlib silently builds with 10000): the 0.1 save published a model that could
    never be loaded. The save loads the staged folder first and refuses."""
    out = copy_out(demo_model, tmp_path / "out")
    before = version_of(out / "demo")
    rec = HybridRecommender.load(out / "demo")
    rec.index_.M = 100_000_000
    with pytest.raises(ModelFileError, match="does not load back") as caught:
        rec.save(out / "demo")
    assert "index/index.json" in str(caught.value)
    assert version_of(out / "demo") == before and not leftovers(out)
    HybridRecommender.load(out / "demo")


# ===================================================================================== 3: concurrent writers
def test_two_concurrent_score_new_add_runs_lose_no_item(demo_model, tmp_path):
    """Both runs end with exit 0 and both items are in the model, or a run fails with exit 2 and one line and its
    item is absent; an item reported as added is never lost."""
    out = copy_out(demo_model, tmp_path / "m")
    (tmp_path / "a.csv").write_text("item_id,title\nA1,USB-C hub with four ports\n")
    (tmp_path / "b.csv").write_text("item_id,title\nB1,Optical audio cable two metres\n")
    env = {**os.environ, "HYBRIDREC_CACHE_DIR": str(demo_model.cache_dir)}
    procs = {
        item: subprocess.Popen(
            [*CLI, "score-new", str(tmp_path / f"{name}.csv"), "--model", str(out / "demo"), "--add"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=REPO,
        )
        for item, name in (("A1", "a"), ("B1", "b"))
    }
    results = {item: (p.wait(timeout=300), p.stderr.read() if p.stderr else "") for item, p in procs.items()}
    for p in procs.values():
        for stream in (p.stdout, p.stderr):
            if stream:
                stream.close()
    rec = HybridRecommender.load(out / "demo")
    for item, (code, err) in results.items():
        assert code in (0, 2), (item, code, err[-2000:])
        if code == 0:
            assert item in rec.items_, f"{item} was reported added but is not in the model"
            assert "added 1 items" in err
        else:
            assert "retry" in err and "Traceback" not in err, err[-2000:]
            assert item not in rec.items_
    assert len(rec.items_) == len(demo_model.rec.items_) + sum(code == 0 for code, _ in results.values())
    assert sum(code == 0 for code, _ in results.values()) >= 1


def test_a_save_over_a_model_that_changed_since_load_is_refused(demo_model, tmp_path):
    """Compare-and-swap in save: two processes (here two recommenders) load the same version; the second save
    would overwrite the first one's item."""
    out = copy_out(demo_model, tmp_path / "m")
    first, second = HybridRecommender.load(out / "demo"), HybridRecommender.load(out / "latest")
    first.add_items(pd.DataFrame({"item_id": ["A1"], "title": ["USB-C hub"]}))
    first.save(out / "demo")
    second.add_items(pd.DataFrame({"item_id": ["B1"], "title": ["Optical cable"]}))
    with pytest.raises(ModelFileError, match="changed since it was loaded.*retry"):
        second.save(out / "latest")  # `latest` names the same model link
    rec = HybridRecommender.load(out / "demo")
    assert "A1" in rec.items_ and "B1" not in rec.items_ and not leftovers(out)
    first.add_items(pd.DataFrame({"item_id": ["A2"], "title": ["USB-C hub, second"]}))
    first.save(out / "demo")  # the writer that saved last may save again: it knows the current version
    assert {"A1", "A2"} <= set(HybridRecommender.load(out / "demo").items_.raw_ids)


def test_score_new_add_waits_for_the_lock_then_fails_with_one_line(demo_model, tmp_path):
    from hybridrec.safeio import model_lock

    out = copy_out(demo_model, tmp_path / "m")
    (tmp_path / "a.csv").write_text("item_id,title\nA1,USB-C hub\n")
    with model_lock(out / "demo"):  # another writer holds the model
        done = run_cli(
            "score-new", tmp_path / "a.csv", "--model", out / "demo", "--add",
            cache=demo_model.cache_dir, env={"HYBRIDREC_LOCK_TIMEOUT": "1"},
        )  # fmt: skip
    assert "another process is updating" in one_error_line(done)
    assert "A1" not in HybridRecommender.load(out / "demo").items_


# ================================================================================ 4: a power user in evaluation
def test_sampled_negatives_leave_out_a_user_who_had_every_item():
    from hybridrec.evaluation.holdout import sampled_negatives
    from hybridrec.evaluation.streaming import ItemSets

    users = np.array([0, 1, 1, 2])
    taken = {0: np.arange(6), 1: np.array([0, 1]), 2: np.array([5])}
    sets = ItemSets.from_pairs(
        np.repeat(list(taken), [len(v) for v in taken.values()]), np.concatenate(list(taken.values())), 3, 6
    )
    with time_limit(20):
        neg, has = sampled_negatives(users, sets, 99, seed=0)
    assert has.tolist() == [False, True, True, True]
    for row in np.flatnonzero(has):
        assert neg[row].shape == (99,) and not np.isin(neg[row], taken[users[row]]).any()
        assert set(neg[row]) == set(range(6)) - set(taken[users[row]].tolist())  # 99 draws from 4 or 5 items


def test_a_fit_with_a_power_user_on_a_tiny_catalogue_ends_with_metrics(tmp_path, text_cache_dir):
    items = [f"I{i}" for i in range(6)]
    rows = [("P", item) for item in items]  # the power user has every item
    rng = np.random.default_rng(3)
    for u in range(30):
        rows += [(f"U{u:02d}", item) for item in rng.choice(items, size=3, replace=False)]
    pd.DataFrame(rows, columns=["user_id", "item_id"]).assign(rating=1.0).to_csv(tmp_path / "r.csv", index=False)
    (tmp_path / "c.yaml").write_text(
        "format_version: 2\nname: power\n"
        "data: {format: table, paths: {interactions: r.csv}, feedback: implicit}\n"
        "split: {kind: random, test_fraction: 0.3, validation_fraction: 0.1}\n"
        "features: {text_encoder: none}\nmodel: {dim: 8, hidden: 8}\ntrain: {epochs: 2, threads: 1}\n"
    )
    done = run_cli("fit", "--config", tmp_path / "c.yaml", "--out", tmp_path / "o", "--json", "-q",
                   cache=text_cache_dir, timeout=240)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads(done.stdout.strip().splitlines()[-1])["metrics"]
    assert 0.0 <= metrics["hr@10_sampled"] <= 1.0 and 0.0 <= metrics["recall@10"] <= 1.0
    assert (tmp_path / "o" / "latest").resolve().is_dir()


# ======================================================================================== 6: disk errors
def test_checkpoint_past_the_file_size_limit_is_one_line_and_leaves_nothing(demo_model, tmp_path):
    """The per-epoch checkpoint (~2 MB) under `ulimit -f` of 1 MB: safetensors raises SafetensorError, not OSError;
    the fit ends with `error: PATH: File too large`, no partial checkpoint, the previous model untouched."""
    out = copy_out(demo_model, tmp_path / "out")
    before = version_of(out / "demo")
    done = run_cli(
        "fit", "--config", DEMO_CONFIG, "--out", out, "-q",
        "--set", "train.threads=1", "--set", f"features.cache_dir={demo_model.cache_dir}",
        cache=demo_model.cache_dir, fsize=1_000_000,
    )  # fmt: skip
    line = one_error_line(done)
    assert line == f"error: {out / '.checkpoints' / 'demo.safetensors'}: File too large", line
    assert not leftovers(out) and not list((out / ".checkpoints").iterdir())
    assert version_of(out / "demo") == before
    assert answers(out / "latest") == answers(demo_model.path)


def test_add_save_past_the_file_size_limit_is_one_line_and_keeps_the_model(demo_model, tmp_path):
    """`score-new --add` whose save hits `ulimit -f` (the weights file is ~530 KB): 0.1 said `error: 1752 requested
    and 992 written`, naming neither the file nor the cause."""
    out = copy_out(demo_model, tmp_path / "m")
    before = version_of(out / "demo")
    (tmp_path / "a.csv").write_text("item_id,title\nA1,USB-C hub\n")
    done = run_cli("score-new", tmp_path / "a.csv", "--model", out / "demo", "--add",
                   cache=demo_model.cache_dir, fsize=300_000)  # fmt: skip
    line = one_error_line(done)
    assert line.startswith(f"error: {out / 'demo'}/") and line.endswith(": File too large"), line
    assert version_of(out / "demo") == before and not leftovers(out)
    assert "A1" not in HybridRecommender.load(out / "demo").items_


def test_disk_errors_without_a_cause_get_one():
    import errno

    from safetensors import SafetensorError

    from hybridrec.safeio import disk_error

    full = disk_error(SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)"), "x")
    assert (full.errno, full.strerror, full.filename) == (errno.ENOSPC, "No space left on device", "x")
    python = disk_error(OSError(errno.EFBIG, "File too large"), "m/items.json")
    assert (python.errno, python.filename) == (errno.EFBIG, "m/items.json")


def test_numpys_causeless_write_error_is_diagnosed(tmp_path):
    """numpy's `tofile` says `N requested and M written`; the file at the size limit and the cause are found."""
    code = (
        "import resource, numpy as np, sys\n"
        "from hybridrec.safeio import disk_error\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (50000, 50000))\n"
        f"path = {str(tmp_path / 'x.npy')!r}\n"
        "try:\n    np.save(path, np.zeros(100000))\n"
        "except OSError as exc:\n    e = disk_error(exc, 'unknown', folder=" + repr(str(tmp_path)) + ")\n"
        "    print(e.errno, e.strerror, e.filename, sep='|')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == f"27|File too large|{tmp_path / 'x.npy'}", done.stderr


# ============================================================================== 7: every model file is checked
def _edit_json(name, fn):
    def apply(folder: Path) -> None:
        path = folder / name
        payload = json.loads(path.read_text())
        path.write_text(json.dumps(fn(payload)))

    return apply


def _edit_npy(name, fn):
    def apply(folder: Path) -> None:
        path = folder / "vectors" / f"{name}.npy"
        np.save(path, fn(np.load(path)), allow_pickle=False)

    return apply


def _set(obj, key, value):
    obj[key] = value
    return obj


def _ids(fn):
    return lambda p: {**p, "ids": fn(list(p["ids"]))}


def _edit_display(fn):
    """The display table (format 4: display/rows.jsonl, one JSON row per line, and its byte offsets): fn(rows)."""

    def apply(folder: Path) -> None:
        rows = [json.loads(line) for line in (folder / DR).read_text().splitlines()]
        lines = [json.dumps(row).encode() + b"\n" for row in fn(rows)]
        (folder / DR).write_bytes(b"".join(lines))
        np.save(folder / DO, np.cumsum([0, *map(len, lines)]).astype(np.int64), allow_pickle=False)

    return apply


def _edit_term(term, name, fn):
    def apply(folder: Path) -> None:
        path = folder / "terms" / term / f"{name}.npy"
        np.save(path, fn(np.load(path)), allow_pickle=False)

    return apply


def _row0(col, value):
    """Row 0's value in column `col` (0 title, 1 price, 2 category)."""
    return _edit_display(lambda rows: [[value if j == col else v for j, v in enumerate(rows[0])], *rows[1:]])


def _spec(key, value):
    return lambda m: {**m, "item_spec": {**m["item_spec"], key: value}}


def _index(key, value):
    return lambda p: {**p, key: value}


def _numeric(key, value):
    def fn(p):
        p["items"]["numeric"][0][key] = value
        return p

    return fn


def _at(array, index, value):
    array = array.copy()
    array[index] = value
    return array


IM, UM, DR, DO, MJ = (
    "id_maps/items.json",
    "id_maps/users.json",
    "display/rows.jsonl",
    "display/offsets.npy",
    "model.json",
)
ME, TJ, XJ, FJ = "metrics.json", "training.json", "index/index.json", "features/features.json"
J, N = _edit_json, _edit_npy
TC = "terms/cooccurrence"


def _slice_off(m):
    return {**m, "review_slice": [m["review_slice"][0] + 1, m["review_slice"][1]]}


def _numbers_vocab(p):
    return _set(p, "items", {**p["items"], "categorical": [{"column": "brand", "values": [1, 2]}]})


DAMAGE = {
    # id maps
    "item ids shifted by one row": (J(IM, _ids(lambda ids: ids[-1:] + ids[:-1])), IM),
    "two item ids swapped": (J(IM, _ids(lambda ids: [ids[1], ids[0], *ids[2:]])), IM),
    "a user id that is null": (J(UM, _ids(lambda ids: [None, *ids[1:]])), UM),
    "a user id that is a list": (J(UM, _ids(lambda ids: [["U1"], *ids[1:]])), UM),
    "an item id that is a dict": (J(IM, _ids(lambda ids: [{"a": 1}, *ids[1:]])), IM),
    "an item id that is a number": (J(IM, _ids(lambda ids: [7, *ids[1:]])), IM),
    "an empty item id": (J(IM, _ids(lambda ids: ["", *ids[1:]])), IM),
    "duplicate item ids": (J(IM, _ids(lambda ids: [ids[0], ids[0], *ids[2:]])), IM),
    "one item id missing": (J(IM, _ids(lambda ids: ids[:-1])), IM),
    "user ids labelled as items": (J(UM, lambda p: {**p, "entity": "item"}), UM),
    "the id map is a list": (J(UM, lambda p: p["ids"]), UM),
    # the display table
    "a price that is a string": (_row0(1, "12.50"), DR),
    "a price that is true": (_row0(1, True), DR),
    "a price of 1e999": (_row0(1, 1e999), DR),
    "a price of 10**400 (an int no float holds)": (_row0(1, 10**400), DR),
    "a title that is a number": (_row0(0, 5), DR),
    "a category that is a list": (_row0(2, ["a"]), DR),
    "a display row too short": (_edit_display(lambda rows: [rows[0][:2], *rows[1:]]), DR),
    "one display row missing": (_edit_display(lambda rows: rows[:-1]), DO),
    # vectors and seen items
    "a NaN user bias": (N("user_bias", lambda a: _at(a, 3, np.nan)), "vectors/user_bias.npy"),
    "an infinite item vector": (N("item_vectors", lambda a: _at(a, (2, 0), np.inf)), "vectors/item_vectors.npy"),
    "user vectors one column short": (N("user_vectors", lambda a: a[:, :-1]), "vectors/user_vectors.npy"),
    "item vectors of dimension 3": (N("item_vectors", lambda a: a[:, :, None]), "vectors/item_vectors.npy"),
    "seen_indptr corrupted": (N("seen_indptr", lambda a: _at(a, 5, 10**9)), "vectors/seen_"),
    "seen_items out of range": (N("seen_items", lambda a: _at(a, 0, 10**6)), "vectors/seen_"),
    "negative seen_items": (N("seen_items", lambda a: _at(a, 0, -1)), "vectors/seen_"),
    "co-occurrence rows as floats": (_edit_term("cooccurrence", "indptr", lambda a: a.astype(np.float64)), TC),
    # model.json
    "text_dim 1e10 (a float)": (J(MJ, _spec("text_dim", 1e10)), MJ),
    "text_dim 2**31 - 1": (J(MJ, _spec("text_dim", 2**31 - 1)), MJ),
    "text_dim negative": (J(MJ, _spec("text_dim", -1)), MJ),
    "a vocabulary size of 2**40": (J(MJ, _spec("vocab_sizes", [2**40])), MJ),
    "n_users one more than the ids": (J(MJ, lambda m: {**m, "n_users": m["n_users"] + 1}), MJ),
    "n_items_trained above the catalogue": (J(MJ, lambda m: {**m, "n_items_trained": 10**6}), MJ),
    "a NaN global mean": (J(MJ, lambda m: {**m, "global_mean": float("nan")}), MJ),
    "a global mean that is a string": (J(MJ, lambda m: {**m, "global_mean": "3.5"}), MJ),
    "feedback 'both'": (J(MJ, lambda m: {**m, "feedback": "both"}), MJ),
    "a reversed rating range": (J(MJ, lambda m: {**m, "rating_range": [5, 1]}), MJ),
    "a review slice off by one": (J(MJ, _slice_off), MJ),
    "model.json is a list": (J(MJ, lambda m: [m]), MJ),
    # the small JSON files
    "metrics.json is a list": (J(ME, lambda m: [m]), ME),
    "metrics.json is a number": (J(ME, lambda m: 3), ME),
    "training.json best_epoch a string": (J(TJ, lambda t: {**t, "best_epoch": "x"}), TJ),
    "training.json history a dict": (J(TJ, lambda t: {**t, "history": {}}), TJ),
    "training.json stopped_early a string": (J(TJ, lambda t: {**t, "stopped_early": "no"}), TJ),
    # the index description
    "index M above hnswlib's cap": (J(XJ, _index("M", 100_000_000)), XJ),
    "index ef_search 1e12": (J(XJ, _index("ef_search", 10**12)), XJ),
    "index dim a float": (J(XJ, _index("dim", 32.5)), XJ),
    "index count of one more item": (J(XJ, lambda p: {**p, "count": p["count"] + 1}), XJ),
    # the feature state
    "a NaN numeric median": (J(FJ, _numeric("median", float("nan"))), FJ),
    "a numeric scale of zero": (J(FJ, _numeric("scale", 0)), FJ),
    "a vocabulary of numbers": (J(FJ, _numbers_vocab), FJ),
    "a feature text_dim unlike model.json": (J(FJ, lambda p: {**p, "text_dim": p["text_dim"] + 2}), FJ),
    "no text encoder but a text width": (J(FJ, lambda p: {**p, "encoder": None}), FJ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(DAMAGE))
def test_a_damaged_and_rechecksummed_model_file_is_refused_naming_it(demo_model, tmp_path, case):
    damage, named = DAMAGE[case]
    model = model_copy(demo_model, tmp_path / "m")
    damage(model)
    remanifest(model)
    with time_limit(60), pytest.raises(ModelFileError) as caught:
        rec = HybridRecommender.load(model)
        rec.users_.ready()  # the users' id map is read and checked at its first use
        rec.display_[0]  # noqa: B018 - and a display row when a query shows it
    message = str(caught.value)
    assert str(model / named) in message, message
    assert "\n" not in message


def test_a_negative_format_version_is_refused(demo_model, tmp_path):
    model = model_copy(demo_model, tmp_path / "m")
    manifest = json.loads((model / "manifest.json").read_text())
    (model / "manifest.json").write_text(json.dumps({**manifest, "format_version": -1}))
    with pytest.raises(ModelFileError, match="manifest.json: corrupted"):
        HybridRecommender.load(model)


def test_the_cli_refuses_shifted_ids_with_one_line(demo_model, tmp_path):
    model = model_copy(demo_model, tmp_path / "m")
    DAMAGE["item ids shifted by one row"][0](model)
    remanifest(model)
    line = one_error_line(run_cli("recommend", "U0001", "--model", model, "--json", cache=demo_model.cache_dir))
    assert line.startswith(f"error: {model / 'id_maps' / 'items.json'}: "), line


def test_a_huge_size_in_model_json_is_refused_before_the_network_is_allocated(demo_model, tmp_path):
    """user_spec.history_items 2**30 passes every per-file check (a valid size) but would allocate a 2**30-row
    embedding (~128 GB) when a free-text query builds the network: the safetensors header is compared first."""
    model = model_copy(demo_model, tmp_path / "m")
    _edit_json("model.json", lambda m: {**m, "user_spec": {**m["user_spec"], "history_items": 2**30}})(model)
    remanifest(model)
    rec = HybridRecommender.load(model)
    with time_limit(60), pytest.raises(ModelFileError, match="weights.safetensors: the weights do not match"):
        rec.similar_to_text("a cable for a television", 3)


def test_a_text_width_unlike_the_encoders_is_refused(demo_model, tmp_path):
    """text_dim changed in model.json and features.json alike: the files agree with each other but not with the
    text encoder; the free-text query says so instead of feeding misshapen features to the network."""
    model = model_copy(demo_model, tmp_path / "m")
    width = json.loads((model / "model.json").read_text())["item_spec"]["text_dim"] + 20_000

    def grow(m):
        if m.get("text_slots"):  # the free-text slot record holds one mean of the encoder's width
            m["text_slots"]["meta_mean"] = [0.0] * ((width - 1) // 2)
        return {**_spec("text_dim", width)(m), "review_slice": [(width - 1) // 2, width]}

    _edit_json("model.json", grow)(model)
    _edit_json("features/features.json", lambda p: {**p, "text_dim": width})(model)
    remanifest(model)
    try:  # refused on load (the items' text vectors have the old width) or at the first free-text query
        HybridRecommender.load(model).similar_to_text("a cable for a television", 3)
    except ModelFileError as exc:
        assert "width" in str(exc) or "item_text.npy" in str(exc), str(exc)
    else:
        raise AssertionError("a text width unlike the encoder's was accepted")
    assert list(demo_model.cache_dir.rglob("shard-*.npz")), "a wrong model must never delete the shared cache"


def test_nan_in_a_score_terms_array_is_refused(demo_model, demo_dataset, tmp_path):
    from conftest import fit_demo

    rec = fit_demo(demo_dataset, demo_model.cache_dir, "model.terms=[{type: ease, l2: 500, recommend_weight: 0.3}]")
    rec.save(tmp_path / "ease")
    model = Path(shutil.copytree((tmp_path / "ease").resolve(), tmp_path / "m"))
    weights = model / "terms" / "ease" / "weights.npy"
    np.save(weights, _at(np.load(weights), (1, 2), np.nan), allow_pickle=False)
    remanifest(model)
    with pytest.raises(ModelFileError, match="terms/ease/weights.npy: holds values that are not finite"):
        HybridRecommender.load(model)


# ========================================================================== 8: a model never reaches outside
def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_metrics_linked_to_etc_passwd_is_refused(demo_model, tmp_path):
    passwd = Path("/etc/passwd")
    if not passwd.is_file():
        pytest.skip("no /etc/passwd here")
    model = model_copy(demo_model, tmp_path / "m")
    (model / "metrics.json").unlink()
    (model / "metrics.json").symlink_to(passwd)
    manifest = json.loads((model / "manifest.json").read_text())
    manifest["files"]["metrics.json"] = _sha(passwd)
    (model / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelFileError, match="metrics.json: a link inside the model folder"):
        HybridRecommender.load(model)
    line = one_error_line(run_cli("info", "--model", model, cache=demo_model.cache_dir))
    assert "metrics.json: a link inside the model folder" in line


@pytest.mark.parametrize("name", ["vectors/item_bias.npy", "weights.safetensors", "vectors", "manifest.json"])
def test_a_link_to_an_identical_file_outside_the_folder_is_refused(demo_model, tmp_path, name):
    """The checksum matches (the target is an exact copy), so only the link itself can be the reason."""
    model = model_copy(demo_model, tmp_path / "m")
    outside = tmp_path / "outside" / name
    outside.parent.mkdir(parents=True)
    shutil.move(model / name, outside)
    (model / name).symlink_to(outside, target_is_directory=outside.is_dir())
    with pytest.raises(ModelFileError, match="a link inside the model folder"):
        HybridRecommender.load(model)


def test_the_text_cache_of_a_loaded_model_is_never_the_models_choice(demo_model, tmp_path, monkeypatch):
    model = model_copy(demo_model, tmp_path / "m")
    planted = tmp_path / "planted-cache"
    _edit_json("config.json", lambda c: _set(c, "features", {**c["features"], "cache_dir": str(planted)}))(model)
    remanifest(model)
    ours = tmp_path / "our-cache"
    monkeypatch.setenv("HYBRIDREC_CACHE_DIR", str(ours))
    rec = HybridRecommender.load(model)
    rec.similar_to_text("a brand new query nobody typed before 8817", 3)
    assert not planted.exists()
    assert list(ours.rglob("shard-*.npz"))


# ============================================================================================ 9: the text cache
class FakeEncoder:
    """Deterministic vectors from the text, counting what it encodes; `during` runs inside encode (a concurrent
    writer)."""

    key = "fake:1"
    dim = 6

    def __init__(self, during=None):
        self.encoded: list[str] = []
        self.during = during

    def encode(self, texts, show_progress=False):
        self.encoded += list(texts)
        if self.during is not None:
            during, self.during = self.during, None
            during()
        return np.stack([self.vector(t) for t in texts]) if texts else np.zeros((0, self.dim), np.float32)

    @staticmethod
    def vector(text: str) -> np.ndarray:
        seed = int(hashlib.sha1(text.encode()).hexdigest()[:8], 16)
        return np.random.default_rng(seed).normal(size=FakeEncoder.dim).astype(np.float32)


def _cache(root: Path):
    from hybridrec.features.cache import EmbeddingCache

    return EmbeddingCache(root, FakeEncoder.key, FakeEncoder.dim)


def _expected(texts):
    return np.stack([FakeEncoder.vector(t) for t in texts])


def _rewrite_shard(folder: Path, fn) -> None:
    """Change the one shard's arrays with `fn(keys, vectors, checks)`, keeping everything else."""
    (shard,) = list(folder.glob("shard-*.npz"))
    with np.load(shard) as z:
        arrays = {k: z[k] for k in ("keys", "vectors", "checks")}
    arrays = fn(**arrays)
    with open(shard, "wb") as fh:
        np.savez(fh, **arrays)


def _swap_rows(keys, vectors, checks):
    return {"keys": keys, "vectors": vectors[[1, 0, *range(2, len(vectors))]], "checks": checks}


def _nan_row(keys, vectors, checks):
    return {"keys": keys, "vectors": _at(vectors, (1, 2), np.nan), "checks": checks}


def _bad_key(keys, vectors, checks):
    return {"keys": np.array([b"x" * 40, *keys[1:]], dtype=keys.dtype), "vectors": vectors, "checks": checks}


def _garbage(keys, vectors, checks):
    return {"keys": keys[:2], "vectors": vectors, "checks": checks}


def _narrow(keys, vectors, checks):
    return {"keys": keys, "vectors": vectors[:, :3], "checks": checks}


@pytest.mark.parametrize("damage", [_swap_rows, _nan_row, _bad_key, _garbage, _narrow], ids=lambda f: f.__name__)
def test_a_damaged_cache_shard_is_dropped_with_one_warning_and_rebuilt(tmp_path, caplog, damage):
    texts = ["usb cable", "hdmi switch", "optical cable", "tv mount"]
    _cache(tmp_path).encode(FakeEncoder(), texts)
    _rewrite_shard(_cache(tmp_path).folder, damage)
    encoder, cache = FakeEncoder(), _cache(tmp_path)
    with caplog.at_level(logging.WARNING, logger="hybridrec.cache"):
        out = cache.encode(encoder, texts)
    np.testing.assert_array_equal(out, _expected(texts))  # never a swapped, NaN or foreign vector
    assert sorted(encoder.encoded) == sorted(texts)  # rebuilt: every text encoded again
    warnings = [r for r in caplog.records if r.name == "hybridrec.cache"]
    assert len(warnings) == 1 and "\n" not in warnings[0].getMessage()
    again = FakeEncoder()
    np.testing.assert_array_equal(_cache(tmp_path).encode(again, texts), _expected(texts))
    assert again.encoded == []  # the rebuilt cache serves everything


def test_a_shard_that_is_not_a_zip_is_dropped(tmp_path):
    texts = ["a", "b"]
    _cache(tmp_path).encode(FakeEncoder(), texts)
    (shard,) = list(_cache(tmp_path).folder.glob("shard-*.npz"))
    shard.write_bytes(b"\x00garbage")
    np.testing.assert_array_equal(_cache(tmp_path).encode(FakeEncoder(), texts), _expected(texts))


def test_the_old_layouts_corrupted_key_file_is_a_rebuild_not_an_indexerror(tmp_path):
    """0.2's layout: keys.json (text hash -> row) + vectors.npy. One row number out of range crashed fit."""
    from hybridrec.features.cache import _text_hash

    texts = ["usb cable", "hdmi switch"]
    folder = _cache(tmp_path).folder
    folder.mkdir(parents=True)
    (folder / "keys.json").write_text(json.dumps({_text_hash(texts[0]): 0, _text_hash(texts[1]): 7}))
    np.save(folder / "vectors.npy", _expected(texts), allow_pickle=False)
    encoder = FakeEncoder()
    np.testing.assert_array_equal(_cache(tmp_path).encode(encoder, texts), _expected(texts))
    assert sorted(encoder.encoded) == sorted(texts)


def test_a_valid_old_layout_cache_is_kept(tmp_path):
    from hybridrec.features.cache import _text_hash

    texts = ["usb cable", "hdmi switch"]
    folder = _cache(tmp_path).folder
    folder.mkdir(parents=True)
    (folder / "keys.json").write_text(json.dumps({_text_hash(t): i for i, t in enumerate(texts)}))
    np.save(folder / "vectors.npy", _expected(texts), allow_pickle=False)
    encoder = FakeEncoder()
    np.testing.assert_array_equal(_cache(tmp_path).encode(encoder, texts), _expected(texts))
    assert encoder.encoded == [] and not (folder / "keys.json").exists()


def test_two_writers_interleaved_keep_both_sets_of_entries(tmp_path):
    """Writer A reads the cache, then (while A encodes) writer B reads, encodes and stores; then A stores. 0.2
    rewrote one file per writer, so A's store dropped B's entries."""
    b_texts = ["optical cable", "tv mount"]
    a_texts = ["usb cable", "hdmi switch"]
    a = FakeEncoder(during=lambda: _cache(tmp_path).encode(FakeEncoder(), b_texts))
    _cache(tmp_path).encode(a, a_texts)
    later = FakeEncoder()
    np.testing.assert_array_equal(_cache(tmp_path).encode(later, a_texts + b_texts), _expected(a_texts + b_texts))
    assert later.encoded == []


def test_concurrent_processes_sharing_the_cache_lose_no_entries(tmp_path):
    code = (
        "import sys, time, numpy as np, hashlib\n"
        "from hybridrec.features.cache import EmbeddingCache\n"
        "class E:\n"
        "    key, dim = 'fake:1', 6\n"
        "    def encode(self, texts, show_progress=False):\n"
        "        time.sleep(0.05)\n"
        "        return np.stack([np.random.default_rng(int(hashlib.sha1(t.encode()).hexdigest()[:8], 16))"
        ".normal(size=6).astype(np.float32) for t in texts])\n"
        "root, tag = sys.argv[1], sys.argv[2]\n"
        "for n in range(20):\n"
        "    EmbeddingCache(root, 'fake:1', 6).encode(E(), [f'{tag}-{n}'])\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path), tag]) for tag in ("a", "b", "c")]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0]
    texts = [f"{tag}-{n}" for tag in ("a", "b", "c") for n in range(20)]
    encoder = FakeEncoder()
    np.testing.assert_array_equal(_cache(tmp_path).encode(encoder, texts), _expected(texts))
    assert encoder.encoded == []  # all 60 entries survived, merged shards included
    assert len(list(_cache(tmp_path).folder.glob("shard-*.npz"))) <= 17
