"""Loading never executes code, and a config cannot make hybridrec write outside the output directory it was given.

Planted payloads (a `.pkl`, pickled `.npy` object arrays, a torch pickle in place of the weights, a YAML python tag)
would create a marker folder if anything unpickled or evaluated them; the marker must never appear.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from hardening import rewrite_checksum, time_limit
from hybridrec_cli.job import fit_from_config, model_name
from hypothesis import given, settings
from hypothesis import strategies as st

from hybridrec.artifacts import point_link
from hybridrec.config import config_from_dict, load_config
from hybridrec.errors import ConfigError, ModelFileError
from hybridrec.recommender import HybridRecommender

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted([*(ROOT / "hybridrec").rglob("*.py"), *(ROOT / "cli").rglob("*.py")])


class Tripwire:
    """Unpickling this creates a folder: proof that a pickle was executed."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def plain_copy(model: Path, dest: Path) -> Path:
    return Path(shutil.copytree(model.resolve(), dest))


def use_everything(path: Path) -> None:
    rec = HybridRecommender.load(path)
    rec.similar_items("D0031", 5)
    rec.recommend("U0001", 5)
    rec.net  # noqa: B018
    rec.features  # noqa: B018


# ------------------------------------------------------------------------------------------------ the source
FORBIDDEN_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "marshal", "shelve"}


def _keywords(call: ast.Call) -> dict:
    return {k.arg: k.value for k in call.keywords if k.arg}


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return node.id if isinstance(node, ast.Name) else ""


def code_execution_sites(path: Path, root: Path = ROOT) -> list[str]:
    """Places in one source file that could run code from data: pickle-family imports, eval/exec, unsafe YAML,
    torch.load without weights_only=True, np.load without allow_pickle=False, pandas read_pickle."""
    found = []
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        where = f"{path.relative_to(root)}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Import):
            found += [f"{where} import {a.name}" for a in node.names if a.name.split(".")[0] in FORBIDDEN_MODULES]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in FORBIDDEN_MODULES:
            found.append(f"{where} from {node.module} import")
        elif isinstance(node, ast.Call):
            name, kw = _dotted(node.func), _keywords(node)
            if name in ("eval", "exec", "compile", "__import__"):
                found.append(f"{where} {name}()")
            elif name.endswith("yaml.load") or name.endswith(("yaml.unsafe_load", "yaml.full_load", "read_pickle")):
                found.append(f"{where} {name}()")
            elif name == "torch.load" and not (isinstance(kw.get("weights_only"), ast.Constant) and
                                               kw["weights_only"].value is True):  # fmt: skip
                found.append(f"{where} torch.load without weights_only=True")
            elif name in ("np.load", "numpy.load") and not (
                isinstance(kw.get("allow_pickle"), ast.Constant) and kw["allow_pickle"].value is False
            ):
                found.append(f"{where} {name} without allow_pickle=False")
    return found


def test_no_source_file_can_execute_code_from_data():
    assert len(SOURCES) > 20
    sites = [site for path in SOURCES for site in code_execution_sites(path)]
    assert not sites, sites


def test_the_scanner_catches_what_it_looks_for(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import pickle\nimport numpy as np\nimport torch, yaml\nx = eval('1')\nnp.load('a.npy')\n"
        "torch.load('w.pt')\ntorch.load('w.pt', weights_only=False)\nyaml.load('a: 1')\n"
    )
    assert len(code_execution_sites(bad, tmp_path)) == 6


# ------------------------------------------------------------------------------------------ planted payloads
def test_a_planted_pkl_and_pt_file_are_never_opened(demo_model, tmp_path):
    import pickle

    import torch

    marker = tmp_path / "executed"
    model = plain_copy(demo_model.path, tmp_path / "m")
    (model / "model.pkl").write_bytes(pickle.dumps(Tripwire(marker)))
    torch.save({"net": Tripwire(marker)}, model / "weights.pt")
    for name in ("model.pkl", "weights.pt"):
        rewrite_checksum(model, name)  # even listed in the manifest, nothing reads them
    use_everything(model)
    assert not marker.exists(), "a planted pickle was executed"


def test_weights_replaced_by_a_torch_pickle_are_refused_unexecuted(demo_model, tmp_path):
    import torch

    marker = tmp_path / "executed"
    model = plain_copy(demo_model.path, tmp_path / "m")
    torch.save({"items.id_embedding.weight": Tripwire(marker)}, model / "weights.safetensors")
    rewrite_checksum(model, "weights.safetensors")
    with pytest.raises(ModelFileError, match="weights.safetensors"):
        use_everything(model)
    assert not marker.exists(), "the torch pickle was executed"


@pytest.mark.parametrize("name", ["item_vectors", "item_bias", "user_vectors", "user_bias", "item_has_id",
                                  "seen_indptr", "seen_items"])  # fmt: skip
def test_pickled_object_arrays_are_refused_unexecuted(demo_model, tmp_path, name):
    marker = tmp_path / "executed"
    model = plain_copy(demo_model.path, tmp_path / "m")
    path = model / "vectors" / f"{name}.npy"
    np.save(path, np.array([Tripwire(marker)], dtype=object), allow_pickle=True)
    rewrite_checksum(model, f"vectors/{name}.npy")
    with pytest.raises(ModelFileError, match=f"{name}.npy"):
        HybridRecommender.load(model)
    assert not marker.exists()


def test_pickled_tfidf_arrays_are_never_unpickled(demo_model, tmp_path):
    """A model switched to a TF-IDF encoder whose arrays are pickles: loading the features refuses them."""
    marker = tmp_path / "executed"
    model = plain_copy(demo_model.path, tmp_path / "m")
    features = model / "features"
    payload = json.loads((features / "features.json").read_text())
    payload["encoder"] = {"kind": "tfidf", "key": "tfidf:2:x"}
    (features / "features.json").write_text(json.dumps(payload))
    (features / "tfidf.json").write_text(json.dumps({"vocabulary": {"cable": 0}, "key": "tfidf:2:x"}))
    for array in ("tfidf_idf", "tfidf_components"):
        np.save(features / f"{array}.npy", np.array([Tripwire(marker)], dtype=object), allow_pickle=True)
    for name in ("features.json", "tfidf.json", "tfidf_idf.npy", "tfidf_components.npy"):
        rewrite_checksum(model, f"features/{name}")
    rec = HybridRecommender.load(model)
    with pytest.raises(ModelFileError, match="TF-IDF"):
        rec.features  # noqa: B018
    assert not marker.exists(), "a pickled TF-IDF array was executed"


def test_a_pickle_in_the_text_cache_is_dropped_not_unpickled(tmp_path):
    from hybridrec.features.cache import EmbeddingCache

    marker = tmp_path / "executed"
    cache = EmbeddingCache(tmp_path / "cache", "st:test")
    cache.folder.mkdir(parents=True)
    (cache.folder / "keys.json").write_text(json.dumps({"abc": 0}))
    np.save(cache.folder / "vectors.npy", np.array([Tripwire(marker)], dtype=object), allow_pickle=True)
    assert cache._load() == {}  # the old-layout cache is dropped, never unpickled
    assert not marker.exists()


def test_a_yaml_python_tag_is_a_config_error_not_a_call(tmp_path):
    marker = tmp_path / "executed"
    config = tmp_path / "c.yaml"
    config.write_text(f"name: !!python/object/apply:os.mkdir ['{marker}']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(config)
    assert not marker.exists()


# -------------------------------------------------------------------------------------- writing outside --out
HOSTILE_NAMES = ["..", ".", "../x", "/etc/x", "a/../../b", "latest", "~", "\\..\\x", "C:\\x", ".hidden", "-", "x\x00y"]


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(name=st.one_of(st.text(max_size=20), st.sampled_from(HOSTILE_NAMES)))
def test_any_config_name_gives_one_folder_inside_out(name):
    """Every name is refused (ConfigError) or becomes exactly one plain folder name directly inside --out."""
    try:
        cfg = config_from_dict({"name": name})
    except ConfigError:
        return
    folder = model_name(cfg)
    out = Path("/srv/models")
    assert folder not in ("", ".", "..", "latest") and "/" not in folder and "\\" not in folder and "\x00" not in folder
    assert (out / folder).parent == out and os.path.normpath(out / folder) == str(out / folder)


def snapshot(root: Path, skip: Path) -> set[str]:
    return {str(p) for p in root.rglob("*") if not str(p).startswith(str(skip))}


def test_a_hostile_name_and_planted_links_keep_a_fit_inside_out(tmp_path):
    """`name: ../../escape` with out/escape pre-planted as a link to a folder outside: the fit writes only under
    out (the planted link is replaced, the folder it pointed at is untouched)."""
    out, outside = tmp_path / "out", tmp_path / "outside"
    out.mkdir()
    outside.mkdir()
    (outside / "keep.txt").write_text("untouched")
    (out / "escape").symlink_to(outside)
    before = snapshot(tmp_path, out)
    overrides = ["name=../../escape", "features.text_encoder=none", "train.epochs=1", "train.threads=1"]
    cfg = load_config(ROOT / "configs" / "default.yaml", overrides)
    with time_limit(120):
        report = fit_from_config(cfg, out, quiet=True)
    assert report.model_path == out / "escape"
    assert snapshot(tmp_path, out) == before, "the fit wrote outside its output directory"
    assert [p.name for p in outside.iterdir()] == ["keep.txt"]
    assert (out / "escape").resolve().parent == (out / ".escape.versions").resolve()
    HybridRecommender.load(out / "latest").similar_items("D0031", 3)


def test_a_link_chain_out_of_the_output_folder_is_not_followed(demo_model, tmp_path):
    """out/demo -> ../elsewhere/link -> ../elsewhere/real: a save replaces out/demo instead of writing beside the
    link it leads to (only links to siblings, such as latest -> demo, are followed)."""
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    (elsewhere / "real").mkdir(parents=True)
    (elsewhere / "link").symlink_to("real")
    (out / "demo").symlink_to(Path("..") / "elsewhere" / "link")
    demo_model.rec.save(out / "demo")
    point_link(out / "latest", out / "demo")
    assert sorted(p.name for p in elsewhere.iterdir()) == ["link", "real"] and not any((elsewhere / "real").iterdir())
    assert (out / "demo").resolve().parent == (out / ".demo.versions").resolve()
    HybridRecommender.load(out / "latest").similar_items("D0031", 3)


def test_a_versions_folder_planted_as_a_link_is_refused(demo_model, tmp_path):
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    (out / ".demo.versions").symlink_to(elsewhere)
    with pytest.raises(ModelFileError, match=r"\.demo\.versions"):
        demo_model.rec.save(out / "demo")
    assert not any(elsewhere.iterdir())


def test_latest_planted_as_a_link_elsewhere_is_replaced_not_written_through(demo_model, tmp_path):
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    (out / "latest").symlink_to(elsewhere)
    demo_model.rec.save(out / "demo")
    point_link(out / "latest", out / "demo")
    assert not any(elsewhere.iterdir()) and os.readlink(out / "latest") == "demo"
