"""Shared test helpers: where the real public data lives, and a marker that skips when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# The data is never copied into the repo (licences); it lives next to the checkout in ../shared/data.
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

requires_shared_data = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"real data not found at {SHARED_DATA}")


@pytest.fixture
def shared_data() -> Path:
    """The shared data folder, or a skip when this machine has none."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA}")
    return SHARED_DATA


# ---------------------------------------------------------------------------------------------------------------------
# The demo model, fitted once per test session and shared by test files (test_recommender.py, test_cli.py).

REPO = Path(__file__).resolve().parents[1]
DEMO_CONFIG = REPO / "configs" / "default.yaml"
DEMO_ITEMS_CSV = REPO / "data" / "demo" / "items.csv"
DEMO_RATINGS_CSV = REPO / "data" / "demo" / "ratings.csv"


class DemoModel:
    """The demo fitted by `fit_from_config` into a session tmp dir; `rec` is the in-memory fitted recommender."""

    def __init__(self, out_dir: Path, path: Path, cache_dir: Path, config, metrics: dict, rec, split):
        self.out_dir = out_dir  # the fit's output folder
        self.path = path  # out_dir / "demo": the published model (a symlink to its version folder)
        self.latest = out_dir / "latest"
        self.cache_dir = cache_dir  # the text-embedding cache this session uses (never the repo's)
        self.config = config  # hybridrec.config.Config
        self.metrics = metrics
        self.rec = rec  # hybridrec.recommender.HybridRecommender; shared, so never mutate it
        self.split = split  # the fit job's split (train, validation, test)

    def load(self):
        """A fresh recommender loaded from disk: use this for anything that mutates (add_items, save)."""
        from hybridrec.recommender import HybridRecommender

        return HybridRecommender.load(self.path)

    def overrides(self, *extra: str) -> list[str]:
        """Config overrides for test fits: the text cache in this session's tmp dir, one torch thread."""
        return quick_fit_overrides(self.cache_dir, *extra)


def quick_fit_overrides(cache_dir: Path, *extra: str) -> list[str]:
    """The text cache goes to a tmp dir (tests never write into the repo); torch trains on one thread, because
    the demo's tiny batches on default threads slow down many times over when other processes share the cores."""
    return [f"features.cache_dir={cache_dir}", "train.threads=1", *extra]


@pytest.fixture(scope="module")
def demo_dataset():
    """The bundled demo read through the default config (per test module: tests may derive datasets from it)."""
    from hybridrec.config import load_config
    from hybridrec.data.readers import read_dataset

    return read_dataset(load_config(DEMO_CONFIG))


def demo_split(dataset, *overrides: str):
    """The default config's split of `dataset` (what the fit job would hold out)."""
    from hybridrec.config import load_config
    from hybridrec.data.splits import split_interactions

    cfg = load_config(DEMO_CONFIG, list(overrides))
    return split_interactions(dataset.interactions, cfg.split, cfg.seed)


def fit_demo(dataset, cache: Path, *overrides: str):
    """A quick fit (2 epochs) of the default config with `overrides` on the training rows of `demo_split`."""
    from hybridrec.config import load_config
    from hybridrec.recommender import HybridRecommender

    cfg = load_config(DEMO_CONFIG, quick_fit_overrides(cache, "train.epochs=2", *overrides))
    split = demo_split(dataset, *overrides)
    return HybridRecommender(cfg).fit(dataset, split.train, split.validation)


@pytest.fixture(scope="session")
def text_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A session-private embedding cache, seeded (read-only) from the checkout's cache when one exists: encoding
    the demo from scratch costs ~30 s of CPU, and a cache entry is keyed by encoder and text, so a copy is safe."""
    import shutil

    cache = tmp_path_factory.mktemp("text-cache")
    repo_cache = REPO / ".hybridrec-cache"
    if repo_cache.is_dir():
        shutil.copytree(repo_cache, cache, dirs_exist_ok=True)
    # queries on loaded models use $HYBRIDREC_CACHE_DIR (never the model's own setting): this cache, not the repo's
    os.environ["HYBRIDREC_CACHE_DIR"] = str(cache)
    return cache


@pytest.fixture(scope="session")
def demo_model(tmp_path_factory: pytest.TempPathFactory, text_cache_dir: Path) -> DemoModel:
    """Fit the bundled demo once (default config) and keep the in-memory recommender as well as the saved one."""
    from hybridrec_cli.job import fit_from_config

    from hybridrec.config import load_config

    out = tmp_path_factory.mktemp("demo-model")
    cfg = load_config(DEMO_CONFIG, quick_fit_overrides(text_cache_dir))
    report = fit_from_config(cfg, out, quiet=True)
    return DemoModel(out, report.model_path, text_cache_dir, cfg, report.metrics, report.recommender, report.split)


@pytest.fixture(scope="session")
def ml100k():
    """MovieLens 100K u.data read directly with pandas (independently of hybridrec's reader), ids as strings."""
    import pandas as pd

    path = SHARED_DATA / "movielens" / "ml-100k" / "u.data"
    if not path.is_file():
        pytest.skip(f"MovieLens 100K not found at {path}")
    df = pd.read_csv(
        path,
        sep="\t",
        names=["user_id", "item_id", "rating", "timestamp"],
        dtype={"user_id": str, "item_id": str, "rating": float, "timestamp": "int64"},
    )
    df["review"] = ""
    return df


def evidence_by_hand(rec):
    """(as a neighbour, as a query) per item row, written out from the settings' definitions: a neighbour with n
    training interactions counts n / (n + h), h = model.similar_evidence when set, else similar_evidence_share x
    the median n over items anybody had (all 1 for content-only models), as a neighbour and as a query."""
    import numpy as np

    n = rec.item_counts_.astype(np.float64)
    model = rec.config.model
    if model.variant == "content-only":
        half = 0.0
    elif model.similar_evidence is not None:
        half = model.similar_evidence
    else:
        half = model.similar_evidence_share * float(np.median(n[n > 0]))
    trust = n / (n + half) if half > 0 else np.ones(len(n))
    return trust, trust


def similar_items_follow(rec, expected_of, query_of, atol: float = 1e-5) -> int:
    """Assert that `similar_items` of three demo items ranks and scores as `expected_of(row)` (the query item's
    own entry left out); returns how many of those lists differ from the index's neighbours of `query_of(row)`."""
    import numpy as np

    changed = 0
    for item in ["D0031", "D0002", "D0150"]:
        row = rec.items_.index(item)
        expected = np.array(expected_of(row), dtype=np.float64)
        expected[row] = -np.inf
        ids, scores = rec.similar_items(item, 5)
        assert ids == rec.items_.raws(np.argsort(-expected, kind="stable")[:5])
        assert np.allclose(scores, np.sort(expected)[::-1][:5], atol=atol)
        changed += rec.index_.query(query_of(row), 5, exclude={item})[0] != ids
    return changed


def assert_one_line_error(result, *fragments: str) -> str:
    """A CLI result that failed the way every bad input must: exit code 2 and one `error:` line on stderr holding
    every fragment, no traceback. Returns the line."""
    assert result.exit_code == 2, f"exit {result.exit_code}\n{result.output}\n{result.exception!r}"
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def assert_ok(result) -> None:
    """A CLI result that succeeded; on failure, what it printed and raised."""
    assert result.exit_code == 0, f"exit {result.exit_code}\n{result.output}\n{result.exception!r}"


@pytest.fixture
def one_torch_thread():
    """Tiny training steps run fastest on one torch thread (the cores are shared); the count is put back after."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
