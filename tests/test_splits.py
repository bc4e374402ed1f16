"""Splits: parts are disjoint and cover the input, each kind holds out what it promises, seeds matter."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from hybridrec.config import SplitConfig
from hybridrec.data.splits import Split, split_interactions
from hybridrec.errors import ConfigError, DataError

KEY = ["user_id", "item_id", "timestamp"]


def synthetic(n_users: int = 30, n_items: int = 40, seed: int = 0) -> pd.DataFrame:
    """Users with 1..12 interactions on distinct items, some equal timestamps to exercise tie-breaks."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        n = 1 if u == 0 else int(rng.integers(2, 13))
        items = rng.choice(n_items, size=n, replace=False)
        ts = rng.integers(1_000, 1_030, size=n)  # narrow range: many ties
        for i, t in zip(items, ts, strict=True):
            rows.append((f"u{u}", f"i{i}", float(rng.integers(1, 6)), int(t), ""))
    df = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp", "review"])
    return df.astype({"timestamp": "int64"})


def parts(split: Split) -> list[pd.DataFrame]:
    return [split.train, split.validation, split.test]


def assert_partition(df: pd.DataFrame, split: Split) -> None:
    """Every input row lands in exactly one part: the multiset union equals the input."""
    union = pd.concat(parts(split), ignore_index=True)
    assert list(union.columns) == list(df.columns)
    cols = list(df.columns)
    left = union.sort_values(cols).reset_index(drop=True)
    right = df.sort_values(cols).reset_index(drop=True)
    pd.testing.assert_frame_equal(left, right, check_dtype=True)
    keys = [set(map(tuple, p[KEY].to_numpy().tolist())) for p in parts(split)]
    assert not (keys[0] & keys[1]) and not (keys[0] & keys[2]) and not (keys[1] & keys[2])


def pair_keys(df: pd.DataFrame) -> set[tuple[str, str]]:
    return set(zip(df["user_id"], df["item_id"], strict=True))


# ---------- every kind ----------


@pytest.mark.parametrize("kind", ["random", "leave-last-out", "time", "cold-items"])
def test_parts_partition_the_input(kind: str) -> None:
    df = synthetic()
    split = split_interactions(df, SplitConfig(kind=kind), seed=3)
    assert split.kind == kind
    assert_partition(df, split)
    assert all(len(p) for p in parts(split))


@pytest.mark.parametrize("kind", ["random", "leave-last-out", "cold-items"])
def test_same_seed_same_split_other_seed_other_split(kind: str) -> None:
    df = synthetic()
    cfg = SplitConfig(kind=kind)
    a, b, c = (split_interactions(df, cfg, seed=s) for s in (7, 7, 8))
    for pa, pb in zip(parts(a), parts(b), strict=True):
        pd.testing.assert_frame_equal(pa, pb)
    assert a.cold_items == b.cold_items
    assert any(not pa.equals(pc) for pa, pc in zip(parts(a), parts(c), strict=True))


def test_input_is_not_modified_and_index_is_fresh() -> None:
    df = synthetic().set_index(np.arange(1000, 1000 + len(synthetic())))
    before = df.copy()
    split = split_interactions(df, SplitConfig(kind="random"), seed=0)
    pd.testing.assert_frame_equal(df, before)
    for p in parts(split):
        assert list(p.index) == list(range(len(p)))


@pytest.mark.parametrize("kind", ["random", "leave-last-out", "time", "cold-items", "given"])
def test_zero_validation_fraction_gives_empty_validation(kind: str) -> None:
    df = synthetic()
    df["fold"] = np.where(np.arange(len(df)) % 4 == 0, "test", "train")
    split = split_interactions(df, SplitConfig(kind=kind, validation_fraction=0.0), seed=1)
    assert split.validation.empty
    assert list(split.validation.columns) == list(df.columns)
    assert len(split.train) + len(split.test) == len(df)


# ---------- random ----------


def test_random_keeps_repeats_of_a_pair_together() -> None:
    df = synthetic()
    repeats = df.sample(40, random_state=0).assign(timestamp=5_000, rating=1.0)
    df = pd.concat([df, repeats], ignore_index=True)
    for seed in range(5):
        split = split_interactions(df, SplitConfig(kind="random", validation_fraction=0.2), seed=seed)
        train, val, test = (pair_keys(p) for p in parts(split))
        assert not (train & test) and not (train & val) and not (val & test)


def test_random_does_not_depend_on_row_order() -> None:
    df = synthetic()
    shuffled = df.sample(frac=1.0, random_state=5)
    a = split_interactions(df, SplitConfig(kind="random"), seed=2)
    b = split_interactions(shuffled, SplitConfig(kind="random"), seed=2)
    assert pair_keys(a.test) == pair_keys(b.test)


# ---------- leave-last-out ----------


def check_leave_last_out(df: pd.DataFrame, split: Split) -> None:
    counts = df.groupby("user_id").size()
    latest = df.groupby("user_id")["timestamp"].max()
    test = split.test
    assert sorted(test["user_id"]) == sorted(counts.index[counts >= 2])  # exactly one row per such user
    assert (test["timestamp"].to_numpy() == latest.loc[test["user_id"]].to_numpy()).all()
    # validation: one row per user, the latest of what train + validation held for that user
    val = split.validation
    assert not val["user_id"].duplicated().any()
    remaining = pd.concat([split.train, val])
    latest_remaining = remaining.groupby("user_id")["timestamp"].max()
    assert (val["timestamp"].to_numpy() == latest_remaining.loc[val["user_id"]].to_numpy()).all()
    assert set(val["user_id"]) <= set(split.train["user_id"])  # nobody loses all training rows


def test_leave_last_out_synthetic() -> None:
    df = synthetic()
    split = split_interactions(df, SplitConfig(kind="leave-last-out"), seed=4)
    check_leave_last_out(df, split)
    assert "u0" in set(split.train["user_id"]) and "u0" not in set(split.test["user_id"])


def test_leave_last_out_ties_are_broken_by_the_seed() -> None:
    # one user, five interactions all at the latest timestamp: which goes to test depends on the seed only
    df = pd.DataFrame(
        {
            "user_id": ["a"] * 6,
            "item_id": [f"i{j}" for j in range(6)],
            "rating": 3.0,
            "timestamp": np.array([1, 9, 9, 9, 9, 9], dtype="int64"),
            "review": "",
        }
    )
    cfg = SplitConfig(kind="leave-last-out", validation_fraction=0.0)
    picks = {split_interactions(df, cfg, seed=s).test["item_id"].item() for s in range(40)}
    assert picks <= {"i1", "i2", "i3", "i4", "i5"} and len(picks) > 1
    assert split_interactions(df, cfg, seed=3).test.equals(split_interactions(df, cfg, seed=3).test)


def test_leave_last_out_movielens(ml100k: pd.DataFrame) -> None:
    split = split_interactions(ml100k, SplitConfig(kind="leave-last-out"), seed=0)
    assert_partition(ml100k, split)
    check_leave_last_out(ml100k, split)
    assert len(split.test) == ml100k["user_id"].nunique() == 943


def test_leave_last_out_needs_a_user_with_two_rows() -> None:
    df = synthetic().drop_duplicates("user_id")
    with pytest.raises(DataError, match="two or more"):
        split_interactions(df, SplitConfig(kind="leave-last-out"), seed=0)


# ---------- time ----------


def check_time(split: Split, cutoff: int) -> None:
    assert (split.train["timestamp"] < cutoff).all()
    assert (split.validation["timestamp"] < cutoff).all()
    assert (split.test["timestamp"] >= cutoff).all()
    if len(split.validation):
        assert split.train["timestamp"].max() < split.validation["timestamp"].min()


def test_time_quantile_cutoff_movielens(ml100k: pd.DataFrame) -> None:
    split = split_interactions(ml100k, SplitConfig(kind="time", test_fraction=0.2), seed=0)
    assert_partition(ml100k, split)
    cutoff = int(split.test["timestamp"].min())
    check_time(split, cutoff)
    assert abs(len(split.test) / len(ml100k) - 0.2) < 0.01


@pytest.mark.parametrize(
    "cutoff,epoch",
    [("1998-03-01", 888_710_400), ("888710400", 888_710_400), ("1998-03-01T00:00:00+01:00", 888_706_800)],
)
def test_time_explicit_cutoff_movielens(ml100k: pd.DataFrame, cutoff: str, epoch: int) -> None:
    split = split_interactions(ml100k, SplitConfig(kind="time", cutoff=cutoff), seed=0)
    assert_partition(ml100k, split)
    check_time(split, epoch)
    assert len(split.test) == int((ml100k["timestamp"] >= epoch).sum())


def test_time_ties_at_the_cutoff_go_to_test() -> None:
    df = synthetic()
    split = split_interactions(df, SplitConfig(kind="time", cutoff="1015"), seed=0)
    assert len(split.test) == int((df["timestamp"] >= 1015).sum())
    check_time(split, 1015)


@pytest.mark.parametrize("cutoff,empty", [("1970-01-01", "train"), ("2100-01-01", "test"), ("1030", "test")])
def test_time_cutoff_that_empties_a_part_is_an_error(cutoff: str, empty: str) -> None:
    with pytest.raises(DataError, match=f"leaves {empty} empty"):
        split_interactions(synthetic(), SplitConfig(kind="time", cutoff=cutoff), seed=0)


def test_time_with_unknown_timestamps_is_an_error() -> None:
    df = synthetic().assign(timestamp=0)
    with pytest.raises(DataError, match="leaves train empty"):
        split_interactions(df, SplitConfig(kind="time"), seed=0)


def test_time_bad_cutoff_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="split.cutoff"):
        split_interactions(synthetic(), SplitConfig(kind="time", cutoff="next tuesday"), seed=0)


# ---------- cold items ----------


def check_cold(df: pd.DataFrame, split: Split, fraction: float) -> None:
    test_items = set(split.test["item_id"])
    assert test_items == set(split.cold_items)
    assert not test_items & set(split.train["item_id"])
    assert not test_items & set(split.validation["item_id"])
    assert not set(split.validation["item_id"]) & set(split.train["item_id"])  # validation is cold too
    n_items = df["item_id"].nunique()
    assert abs(len(split.cold_items) - fraction * n_items) <= 1
    # every interaction of a cold item is in test
    assert len(split.test) == int(df["item_id"].isin(split.cold_items).sum())


@pytest.mark.parametrize("fraction", [0.1, 0.25])
def test_cold_items_synthetic(fraction: float) -> None:
    df = synthetic()
    split = split_interactions(df, SplitConfig(kind="cold-items", test_fraction=fraction), seed=9)
    assert_partition(df, split)
    check_cold(df, split, fraction)


def test_cold_items_movielens(ml100k: pd.DataFrame) -> None:
    split = split_interactions(ml100k, SplitConfig(kind="cold-items", test_fraction=0.2), seed=1)
    assert_partition(ml100k, split)
    check_cold(ml100k, split, 0.2)
    remaining = ml100k["item_id"].nunique() - len(split.cold_items)
    assert abs(split.validation["item_id"].nunique() - 0.1 * remaining) <= 1


# ---------- given ----------


def test_given_uses_the_fold_column() -> None:
    df = synthetic()
    df["fold"] = np.where(np.arange(len(df)) % 5 == 0, "test", "train")
    split = split_interactions(df, SplitConfig(kind="given", validation_fraction=0.2), seed=0)
    assert_partition(df, split)
    assert (split.test["fold"] == "test").all()
    assert (split.train["fold"] == "train").all() and (split.validation["fold"] == "train").all()
    assert len(split.test) == int((df["fold"] == "test").sum())


def test_given_without_fold_is_an_error() -> None:
    with pytest.raises(DataError, match="fold"):
        split_interactions(synthetic(), SplitConfig(kind="given"), seed=0)


def test_given_with_unknown_fold_values_is_an_error() -> None:
    df = synthetic().assign(fold="train")
    df.loc[0, "fold"] = "dev"
    with pytest.raises(DataError, match="dev"):
        split_interactions(df, SplitConfig(kind="given"), seed=0)


def test_given_without_test_rows_is_an_error() -> None:
    with pytest.raises(DataError, match="test part empty"):
        split_interactions(synthetic().assign(fold="train"), SplitConfig(kind="given"), seed=0)


# ---------- bad input and config ----------


def test_empty_input_is_an_error() -> None:
    with pytest.raises(DataError, match="empty"):
        split_interactions(synthetic().iloc[0:0], SplitConfig(), seed=0)


def test_unknown_kind_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="split.kind"):
        split_interactions(synthetic(), SplitConfig(kind="stratified"), seed=0)


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_test_fraction_outside_open_unit_interval_is_a_config_error(fraction: float) -> None:
    with pytest.raises(ConfigError, match="test_fraction"):
        split_interactions(synthetic(), SplitConfig(test_fraction=fraction), seed=0)


@pytest.mark.parametrize("fraction", [-0.1, 1.0])
def test_bad_validation_fraction_is_a_config_error(fraction: float) -> None:
    with pytest.raises(ConfigError, match="validation_fraction"):
        split_interactions(synthetic(), SplitConfig(validation_fraction=fraction), seed=0)


def test_single_row_cannot_be_split() -> None:
    with pytest.raises(DataError, match="too few"):
        split_interactions(synthetic().iloc[:1], SplitConfig(kind="random"), seed=0)


def test_errors_are_one_line() -> None:
    with pytest.raises(DataError) as info:
        split_interactions(synthetic().assign(timestamp=0), SplitConfig(kind="time"), seed=0)
    assert "\n" not in str(info.value)
