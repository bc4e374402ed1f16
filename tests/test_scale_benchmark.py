"""The scale benchmark's generator (benchmarks/scale/generate.py) and its runner end to end on the XS size."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmarks.scale import generate as gen


@pytest.fixture(scope="module")
def xs(tmp_path_factory) -> tuple[Path, dict]:
    return gen.ensure("XS", seed=7, root=tmp_path_factory.mktemp("scale"))


def frames(folder: Path) -> dict[str, pd.DataFrame]:
    return {name: pd.read_parquet(folder / f"{name}.parquet") for name in ("interactions", "items", "users")}


def test_same_seed_same_files_other_seed_other_files(xs, tmp_path):
    folder, meta = xs
    again = gen.generate("XS", 7, tmp_path / "again")
    gen.generate("XS", 8, tmp_path / "other")
    first, second, third = frames(folder), frames(tmp_path / "again"), frames(tmp_path / "other")
    for name in first:
        pd.testing.assert_frame_equal(first[name], second[name])
    assert not first["interactions"].equals(third["interactions"])
    drop = ("generate_seconds", "peak_rss_gb")
    assert {k: v for k, v in meta.items() if k not in drop} == {k: v for k, v in again.items() if k not in drop}


def test_sizes_and_shares_are_as_asked(xs):
    folder, meta = xs
    size = gen.SIZES["XS"]
    f = frames(folder)
    inter, items, users = f["interactions"], f["items"], f["users"]
    assert len(inter) == meta["rows"] == size.rows
    assert len(items) == items["item_id"].nunique() == size.items
    assert len(users) == inter["user_id"].nunique() == size.users
    assert not inter.duplicated(["user_id", "item_id"]).any()  # a re-rating would be dropped by the reader
    assert set(inter["rating"].unique()) <= {1, 2, 3, 4, 5}
    test = inter["timestamp"] >= meta["cutoff"]
    assert test.sum() == meta["test_rows"]
    assert abs(test.mean() - gen.TEST_SHARE) < 0.01
    assert inter["timestamp"].is_monotonic_increasing
    counts = inter["item_id"].value_counts()
    assert counts.iloc[:10].sum() > 5 * counts.iloc[-10:].sum()  # power law: the head outweighs the tail
    assert (items["price"] > 0).all() and items["category"].str.startswith("Electronics > ").all()


@pytest.mark.parametrize("share", [gen.COLD_SHARE, 0.3])
def test_cold_share_is_honoured(share, tmp_path, monkeypatch):
    monkeypatch.setattr(gen, "COLD_SHARE", share)
    meta = gen.generate("XS", 3, tmp_path / "d")
    inter = pd.read_parquet(tmp_path / "d" / "interactions.parquet")
    n_items = gen.SIZES["XS"].items
    without = n_items - inter["item_id"].nunique()
    assert without == meta["cold_items"] == round(share * n_items)  # and every other item has a row
    assert len(inter) == gen.SIZES["XS"].rows


def test_review_words_depend_on_category_and_rating(xs):
    folder, _ = xs
    f = frames(folder)
    inter = f["interactions"].merge(f["items"][["item_id", "department"]], on="item_id")
    words = inter["review"].str.split()
    # rating: each rating's sentiment words appear in its reviews and in no review of another rating
    for rating, vocab in gen.SENTIMENT.items():
        mine = inter["rating"] == rating
        has = words.map(lambda ws, v=set(vocab): bool(v.intersection(ws)))
        assert has[mine].mean() > 0.8, rating
        assert not has[~mine].any(), rating
    # category: the department named by a review's words (majority vote) is its item's department
    dept_of = {w: d for d, (ws, _) in gen.DEPARTMENTS.items() for w in ws}
    guesses = []
    for ws, dept in zip(words, inter["department"], strict=True):
        votes = Counter(dept_of[w] for w in ws if w in dept_of)
        if votes:
            guesses.append(votes.most_common(1)[0][0] == dept)
    assert len(guesses) > 0.7 * len(inter)
    assert np.mean(guesses) > 0.9
    # and a department's reviews use only its own category words (some, like "screen", two departments share)
    used = inter.groupby("department")["review"].apply(lambda s: set(" ".join(s).split()) & set(dept_of))
    for dept, words_used in used.items():
        assert words_used and words_used <= set(gen.DEPARTMENTS[dept][0]), dept


def test_runner_end_to_end_on_xs(tmp_path):
    from benchmarks.scale.run import main

    results = tmp_path / "results"
    main(
        ["--size", "XS", "--models", "hybridrec,ease", "--epochs", "1", "--quiet", "--timeout", "300"]
        + ["--data-root", str(tmp_path / "data"), "--results", str(results)]
    )
    rows = [json.loads(line) for line in (results / "scale.jsonl").read_text().splitlines()]
    assert [r["model"] for r in rows] == ["hybridrec", "ease"]  # EASE: a peer that needs no bench extra
    for r in rows:
        assert r["status"] == "ok", r["status"]
        assert 0.0 <= r["recall@10"] <= 1.0 and r["eval_users"] > 0
        assert r["peak_rss_gb"] > 0 and r["model_bytes"] > 0 and r["load_seconds"] >= 0
        assert 0 < r["fit_cpu_seconds"] < 2 * r["fit_seconds"] + 1  # one thread: CPU time within wall time
        assert 0 < r["similar_p50_ms"] <= r["similar_p99_ms"]
        assert {"read", "train", "evaluate", "save"} <= set(r["stages"])
    # closed form: EASE has no epochs to count samples over
    assert rows[0]["samples_per_second"] > 0 and rows[0]["epochs"] == 1 and "samples_per_second" not in rows[1]
    hyb = rows[0]
    assert {"startup", "encode"} <= set(hyb["stages"]) and hyb["cli_similar_seconds"] > 0
    assert abs(sum(hyb["stages"].values()) - hyb["fit_seconds"]) < 0.1  # the stages cover the whole fit
    report = (results / "scale.md").read_text()
    assert "python -m benchmarks.scale --size XS" in report and "| `ease` | ok |" in report
