"""Benchmark datasets and split files: read once through hybridrec's readers, split deterministically in the harness.

Every split is written under benchmarks/splits/<protocol>/<dataset>/<fold>/ the first time it is needed and read
back by every model afterwards, so all models see byte-identical train / validation / test rows. The split logic
lives here (not in hybridrec.data.splits) so that a library change cannot move a benchmark split; the one piece
shared with the library is `last_per_user` (P2's leave-last-out), imported rather than copied. Split files already
written never move; a change to that function moves P2 splits built afterwards (bump SPLIT_VERSION then).
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import shutil
import tempfile
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd

from hybridrec.config import load_config
from hybridrec.data.dataset import Dataset
from hybridrec.data.readers import read_dataset
from hybridrec.data.splits import last_per_user
from hybridrec.features.documents import metadata_documents

ROOT = Path(__file__).resolve().parents[1]
SPLITS = ROOT / "benchmarks" / "splits"
SEED = 42
SPLIT_VERSION = 2  # bump when a split recipe changes: old split folders are then rebuilt
COLUMNS = ["user_id", "item_id", "rating", "timestamp", "review"]
POSITIVE = 4.0  # explicit ratings >= 4 are positives for ranking metrics (as in hybridrec.evaluation.holdout)
NUMERIC_BINS = 10  # LightFM sees a numeric item column as one of this many quantile-bin tokens (NumericBins)
RETAIL_CUTOFF = "2011-10-01"
RETAIL_TUNING_CUTOFF = "2011-08-01"  # --tune: train before it, truth from it up to RETAIL_CUTOFF
# Online Retail truth sets: name -> (min common test invoices, min lift). The first is the definition; with
# it a popularity list already scores ~0.37 (rare query items pass lift >= 2 with any popular item), so a stricter
# set is reported beside it.
RETAIL_TRUTH = {"precision@10": (2, 2.0), "precision@10_strict": (5, 4.0)}


@dataclass(frozen=True)
class Source:
    """A benchmark dataset: the hybridrec config that reads it and the paths kept from that config."""

    key: str
    config: str  # relative to the repository root; also hybridrec's recipe where benchmarks/configs/ has none
    keep_paths: tuple[str, ...] | None = None  # drop other data.paths (e.g. ML-100K's u1 fold) when given


SOURCES = {
    "ml-100k": Source("ml-100k", "configs/movielens-100k.yaml", ("folder",)),
    "ml-1m-half": Source("ml-1m-half", "configs/movielens-1m.yaml"),
    "goodbooks-399": Source("goodbooks-399", "configs/goodbooks.yaml"),
    "online-retail": Source("online-retail", "configs/online-retail.yaml"),
    "amazon-gift-cards": Source("amazon-gift-cards", "configs/amazon.yaml"),
}


def source_config(key: str, overrides: list[str] | None = None):
    src = SOURCES[key]
    cfg = load_config(ROOT / src.config, overrides or [])
    if src.keep_paths is not None:
        cfg.data.paths = {k: v for k, v in cfg.data.paths.items() if k in src.keep_paths}
    return cfg


@cache
def load(key: str) -> Dataset:
    """The full dataset as hybridrec reads it (raw string ids)."""
    return read_dataset(source_config(key))


def item_documents(dataset: Dataset) -> dict[str, str]:
    """Item id -> metadata text (title, text columns, genres/tags/authors...): what hybridrec's content path reads
    too, minus reviews. Content baselines (TF-IDF, LightFM features) use exactly this text."""
    docs = metadata_documents(dataset.items, dataset.item_schema, max_chars=100_000)
    return dict(zip(dataset.items["item_id"], docs, strict=True))


def item_feature_tokens(dataset: Dataset) -> dict[str, list[str]]:
    """Item id -> categorical content tokens for LightFM: multi-valued labels (genres, tags, authors, category),
    categorical columns (brand, language), a quantile-bin token per numeric column (year, price) and lower-cased
    title/text words."""
    schema = dataset.item_schema
    from hybridrec.features.categorical import cell_values
    from hybridrec.features.numeric import NumericBins

    out: dict[str, list[str]] = {}
    word_cols = [c for c in [schema.title, *schema.text] if c]
    label_cols = [*schema.multi, *schema.categorical]
    items = dataset.items.reset_index(drop=True)
    # numeric columns through hybridrec's own quantile bins (features.numeric_bins), cut over the catalogue
    bins = {c: NumericBins.fit(items[c], NUMERIC_BINS).tokens(items[c]) for c in schema.numeric if c in items}
    for r, row in enumerate(items.to_dict("records")):
        tokens = {f"{col}:{cells[r]}" for col, cells in bins.items() if cells[r] is not None}  # missing: none
        for col in label_cols:
            tokens |= {f"{col}:{v.strip().lower()}" for v in cell_values(row.get(col)) if str(v).strip()}
        for col in word_cols:
            text = " ".join(cell_values(row.get(col)))
            tokens |= {f"w:{w}" for w in _words(text)}
        out[row["item_id"]] = sorted(tokens)
    return out


def _words(text: str) -> list[str]:
    from hybridrec.features.words import words

    return words(text)


# ---------------------------------------------------------------------------------------------------- split files
@dataclass
class BenchSplit:
    """One split: the rows every model trains and is tested on, plus protocol extras."""

    protocol: str
    dataset: str
    fold: str
    train: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame
    cold_items: list[str] = field(default_factory=list)
    negatives: pd.DataFrame | None = None  # P2: user_id, item_id (the positive), negs (99 item ids)
    truth: dict[str, dict[str, list[str]]] | None = None  # P4: truth name -> item -> behaviourally related items
    info: dict = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return SPLITS / self.protocol / self.dataset / self.fold


def _frame(df: pd.DataFrame) -> pd.DataFrame:
    df = df.reindex(columns=COLUMNS).reset_index(drop=True)
    df["review"] = df["review"].fillna("").astype(str)
    df["rating"] = df["rating"].astype(np.float32)
    df["timestamp"] = df["timestamp"].fillna(0).astype(np.int64)
    return df


def save_split(s: BenchSplit) -> None:
    """Written whole into a temporary folder, then renamed into place: two runs started together (2 jobs on 2 cores)
    both build the split, and neither may read the other's half-written files. The first rename wins; the split is
    deterministic, so the loser's copy is the same and is dropped."""
    s.path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{s.fold}-", dir=s.path.parent))
    try:
        for part in ("train", "validation", "test"):
            _frame(getattr(s, part)).to_parquet(staging / f"{part}.parquet", index=False)
        if s.negatives is not None:
            s.negatives.to_parquet(staging / "negatives.parquet", index=False)
        meta = {"version": SPLIT_VERSION, "cold_items": s.cold_items, "info": s.info}
        if s.truth is not None:
            meta["truth"] = s.truth
        (staging / "meta.json").write_text(json.dumps(meta))
        if _is_current(s.path):  # another run renamed its copy first
            return
        shutil.rmtree(s.path, ignore_errors=True)  # an older recipe's files
        try:
            staging.rename(s.path)
        except OSError:  # another run renamed its copy in between
            pass
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _is_current(path: Path) -> bool:
    meta_path = path / "meta.json"
    return meta_path.is_file() and json.loads(meta_path.read_text()).get("version") == SPLIT_VERSION


def load_split(protocol: str, dataset: str, fold: str, build) -> BenchSplit:
    """The split from its files, building and writing them first when absent or of an older recipe."""
    path = SPLITS / protocol / dataset / fold
    if _is_current(path):
        meta = json.loads((path / "meta.json").read_text())
        parts = {p: pd.read_parquet(path / f"{p}.parquet") for p in ("train", "validation", "test")}
        neg = pd.read_parquet(path / "negatives.parquet") if (path / "negatives.parquet").is_file() else None
        return BenchSplit(
            protocol,
            dataset,
            fold,
            **parts,
            cold_items=meta["cold_items"],
            negatives=neg,
            truth=meta.get("truth"),
            info=meta.get("info", {}),
        )
    split = build()
    split.train, split.validation, split.test = (_frame(split.train), _frame(split.validation), _frame(split.test))
    save_split(split)
    return load_split(protocol, dataset, fold, build)


def _sorted(df: pd.DataFrame) -> pd.DataFrame:
    """Row order independent of the reader: by user, item, time."""
    return df.sort_values(["user_id", "item_id", "timestamp"], kind="stable").reset_index(drop=True)


def _random_rows(df: pd.DataFrame, fraction: float, rng: np.random.Generator) -> np.ndarray:
    mask = np.zeros(len(df), dtype=bool)
    mask[rng.permutation(len(df))[: int(round(fraction * len(df)))]] = True
    return mask


def _random_split(df: pd.DataFrame, test_fraction: float, seed: int) -> tuple[pd.DataFrame, ...]:
    """Random (user, item) pairs (the readers already merged repeated pairs), validation 10% of train."""
    df = _sorted(df)
    rng = np.random.default_rng(seed)
    test = _random_rows(df, test_fraction, rng)
    train = df[~test].reset_index(drop=True)
    val = _random_rows(train, 0.1, rng)
    return train[~val], train[val], df[test]


# P1 ----------------------------------------------------------------------------------------------------------------
def p1_split(dataset: str, fold: str) -> BenchSplit:
    def build() -> BenchSplit:
        ds = load(dataset)
        inter = ds.interactions
        if dataset == "ml-100k":  # the official fold: u{k}.test pairs are test, the rest of u.data is train
            folder = Path(source_config(dataset).data_path("folder"))
            with gzip.open(folder / f"{fold}.test.gz", "rt") as fh:
                pairs = pd.read_csv(fh, sep="\t", header=None, names=["u", "i", "r", "t"], dtype=str)
            key = set(zip(pairs["u"], pairs["i"], strict=True))
            inter = _sorted(inter)
            test = np.array([(u, i) in key for u, i in zip(inter["user_id"], inter["item_id"], strict=True)])
            train = inter[~test].reset_index(drop=True)
            val = _random_rows(train, 0.1, np.random.default_rng(SEED + int(fold[1:])))
            parts = train[~val], train[val], inter[test]
            info = {"recipe": f"official {fold}.base/{fold}.test; validation = random 10% of the base pairs"}
        else:
            frac = 0.2 if dataset == "goodbooks-399" else 0.1
            parts = _random_split(inter, frac, SEED)
            info = {"recipe": f"random {1 - frac:.0%}/{frac:.0%} of pairs (seed {SEED}); validation = 10% of train"}
        return BenchSplit("P1", dataset, fold, *parts, info=info)

    return load_split("P1", dataset, fold, build)


# P2 ----------------------------------------------------------------------------------------------------------------
def _sampled_negatives(test: pd.DataFrame, items: np.ndarray, seen: dict, rng: np.random.Generator) -> pd.DataFrame:
    """99 items per test row drawn uniformly from the items its user never interacted with (NCF protocol)."""
    negs = []
    for u in test["user_id"]:
        taken, chosen = seen[u], []
        while len(chosen) < 99:
            cand = items[rng.integers(0, len(items), size=128)]
            chosen += [c for c in cand if c not in taken and c not in chosen][: 99 - len(chosen)]
        negs.append(chosen)
    return pd.DataFrame({"user_id": test["user_id"], "item_id": test["item_id"], "negs": negs})


def p2_split(dataset: str) -> BenchSplit:
    def build() -> BenchSplit:
        ds = load(dataset)
        df = _sorted(ds.interactions)
        df["rating"] = 1.0  # implicit view: every rating is a positive interaction
        rng = np.random.default_rng(SEED)
        test = last_per_user(df, rng)
        train = df[~test].reset_index(drop=True)
        val = last_per_user(train, rng)
        test_df = df[test].reset_index(drop=True)
        items = np.array(sorted(ds.items["item_id"]))
        neg = _sampled_negatives(test_df, items, df.groupby("user_id")["item_id"].agg(set).to_dict(), rng)
        info = {
            "recipe": "leave-last-out per user (latest timestamp, seeded tie-break; users with >= 2 interactions), "
            "validation = the latest remaining; all interactions are positives; 99 negatives per test user drawn "
            "uniformly from items the user never interacted with",
        }
        return BenchSplit("P2", dataset, "llo", train[~val], train[val], test_df, negatives=neg, info=info)

    return load_split("P2", dataset, "llo", build)


# P3 ----------------------------------------------------------------------------------------------------------------
def p3_split(dataset: str, draw: int | None = None) -> BenchSplit:
    """The P3 split; `draw` = another seed for the same recipe (a robustness check: which 20% goes cold moves
    the scores a lot on a small catalogue), never the split the protocol is judged on."""
    fold = "cold20" if draw is None else f"cold20-draw{draw}"

    def build() -> BenchSplit:
        df = _sorted(load(dataset).interactions)
        rng = np.random.default_rng(SEED if draw is None else draw)
        items = np.array(sorted(df["item_id"].unique()))
        perm = rng.permutation(len(items))
        n_test = int(round(0.2 * len(items)))
        cold = np.sort(items[perm[:n_test]])
        rest = items[perm[n_test:]]
        cold_val = set(rest[rng.permutation(len(rest))[: int(round(0.1 * len(rest)))]])
        is_test = df["item_id"].isin(set(cold)).to_numpy()
        is_val = df["item_id"].isin(cold_val).to_numpy()
        info = {
            "recipe": "20% of items (seeded) held out with all their ratings; validation holds out 10% of the rest "
            "as cold validation items; positives = ratings >= 4"
            + ("" if draw is None else f". Cold draw {draw}: the same recipe with seed {draw} instead of {SEED}"),
            "cold_validation_items": len(cold_val),
        }
        return BenchSplit(
            "P3",
            dataset,
            fold,
            df[~is_test & ~is_val],
            df[is_val],
            df[is_test],
            cold_items=cold.tolist(),
            info=info,
        )

    return load_split("P3", dataset, fold, build)


# P4 ----------------------------------------------------------------------------------------------------------------
def _retail_lines() -> pd.DataFrame:
    """Clean product purchase lines with their invoice (the reader merges lines into pairs and drops invoices)."""
    from hybridrec.data.online_retail import is_non_product

    path = source_config("online-retail").data_path("transactions")
    raw = pd.read_parquet(path)
    code = raw["StockCode"].astype(str).str.strip()
    inv = raw["InvoiceNo"].astype(str).str.strip()
    keep = (
        (raw["Quantity"] > 0)
        & (raw["UnitPrice"] > 0)
        & raw["CustomerID"].notna()
        & ~inv.str.upper().str.startswith("C")
        & ~code.map(is_non_product)
    )
    when = pd.to_datetime(raw.loc[keep, "InvoiceDate"])
    return pd.DataFrame(
        {
            "invoice": inv[keep].to_numpy(),
            "user_id": raw.loc[keep, "CustomerID"].astype("int64").astype(str).to_numpy(),
            "item_id": code[keep].to_numpy(),
            "quantity": raw.loc[keep, "Quantity"].astype(float).to_numpy(),
            "when": when.to_numpy(),
        }
    )


def co_purchase_truth(lines: pd.DataFrame, min_invoices: int = 2, min_lift: float = 2.0) -> dict[str, list[str]]:
    """Item -> items bought with it in >= min_invoices invoices whose lift n_ab * N / (n_a * n_b) >= min_lift."""
    baskets = lines[["invoice", "item_id"]].drop_duplicates()
    inv_codes, inv = pd.factorize(baskets["invoice"])
    item_codes, item_ids = pd.factorize(baskets["item_id"])
    from scipy import sparse

    x = sparse.csr_matrix((np.ones(len(baskets), np.float32), (inv_codes, item_codes)), shape=(len(inv), len(item_ids)))
    co = (x.T @ x).tocoo()
    n_item = np.asarray(x.sum(0)).ravel()
    n = len(inv)
    lift = co.data * n / (n_item[co.row] * n_item[co.col])
    ok = (co.row != co.col) & (co.data >= min_invoices) & (lift >= min_lift)
    truth: dict[str, list[str]] = {}
    for a, b in zip(co.row[ok], co.col[ok], strict=True):
        truth.setdefault(item_ids[a], []).append(item_ids[b])
    return {k: sorted(v) for k, v in sorted(truth.items())}


def _latest_tenth(rows: pd.DataFrame) -> np.ndarray:
    """The latest 10% of training rows by timestamp: P4's validation part."""
    ts = rows["timestamp"].to_numpy()
    return ts >= np.sort(ts)[int(0.9 * len(ts))]


def _truth_sets(baskets: pd.DataFrame, spec: dict[str, tuple[int, float]], train_items: set) -> dict:
    """truth name -> item -> items in >= n common baskets with lift >= l (co_purchase_truth), for items with
    training interactions only (an item the model never saw cannot be queried)."""
    return {
        name: {k: v for k, v in co_purchase_truth(baskets, n, lift).items() if k in train_items}
        for name, (n, lift) in spec.items()
    }


def _retail_split(cutoff: str, end: str | None = None) -> BenchSplit:
    """Online Retail pairs bought before `cutoff`; truth from the invoices from `cutoff` up to `end` (or the end)."""
    lines = _retail_lines()
    before = lines[lines["when"] < pd.Timestamp(cutoff)]
    pairs = before.groupby(["user_id", "item_id"], sort=True).agg(rating=("quantity", "sum"), timestamp=("when", "max"))
    pairs = pairs.reset_index()
    pairs["timestamp"] = (pairs["timestamp"] - pd.Timestamp(0)) // pd.Timedelta(seconds=1)
    pairs["review"] = ""
    val = _latest_tenth(pairs)
    after = lines[(lines["when"] >= pd.Timestamp(cutoff)) & (lines["when"] < pd.Timestamp(end or "2100-01-01"))]
    truth = _truth_sets(after, RETAIL_TRUTH, set(pairs.loc[~val, "item_id"]))
    info = {
        "recipe": f"clean purchase lines before {cutoff} merged into customer x product pairs "
        "(rating = summed quantity), validation = latest 10% of those pairs; truth from invoices on or after "
        "the cutoff: items in >= 2 common invoices with lift >= 2 (`precision@10`), or >= 5 invoices with "
        "lift >= 4 (`precision@10_strict`); query items = items with truth and training interactions",
        "test_invoices": int(after["invoice"].nunique()),
    }
    return BenchSplit("P4", "online-retail", "time", pairs[~val], pairs[val], pairs.iloc[:0], truth=truth, info=info)


MOVIELENS_TEST_SHARE = 0.2  # P4 MovieLens: the latest 20% of ratings (by time) give the truth
# MovieLens truth sets: name -> (min users who liked both after the cutoff, min lift), as for Online Retail
MOVIELENS_TRUTH = {"precision@10": (2, 2.0), "precision@10_strict": (5, 4.0)}


def _movielens_similar_split(dataset: str) -> BenchSplit:
    """Ratings before a time cutoff are training data (validation = their latest 10%); the truth is which films the
    same users liked (rated >= 4) together after the cutoff more often than chance (lift), as for Online Retail with
    users in place of invoices."""
    df = _sorted(load(dataset).interactions)
    ts = df["timestamp"].to_numpy()
    cutoff = np.sort(ts)[int((1 - MOVIELENS_TEST_SHARE) * len(ts))]
    before, after = df[ts < cutoff].reset_index(drop=True), df[ts >= cutoff]
    val = _latest_tenth(before)
    liked = after[after["rating"] >= POSITIVE].rename(columns={"user_id": "invoice"})
    truth = _truth_sets(liked, MOVIELENS_TRUTH, set(before.loc[~val, "item_id"]))
    info = {
        "recipe": f"ratings before the {1 - MOVIELENS_TEST_SHARE:.0%} time quantile are training data (validation ="
        " their latest 10%); truth from the later ratings >= 4: films liked by >= 2 common users with lift >= 2"
        " (`precision@10`), or >= 5 users with lift >= 4 (`precision@10_strict`); query items = items with truth"
        " and training interactions",
        "test_ratings": int(len(after)),
    }
    return BenchSplit("P4", dataset, "time", before[~val], before[val], df.iloc[:0], truth=truth, info=info)


def p4_split(dataset: str) -> BenchSplit:
    def build() -> BenchSplit:
        if dataset == "online-retail":
            return _retail_split(RETAIL_CUTOFF)
        if dataset in ("ml-100k", "ml-1m-half"):
            return _movielens_similar_split(dataset)
        from hybridrec.evaluation.holdout import co_view_truth

        ds = load(dataset)
        df = _sorted(ds.interactions)
        val = _random_rows(df, 0.1, np.random.default_rng(SEED))
        truth = {"precision@10": {k: sorted(v) for k, v in sorted(co_view_truth(ds.items).items()) if v}}
        info = {
            "recipe": "all reviews are training data (validation = random 10% of pairs); truth = also_buy ∪ "
            "also_view restricted to reviewed items (hybridrec.evaluation.holdout.co_view_truth)",
        }
        return BenchSplit("P4", dataset, "all", df[~val], df[val], df.iloc[:0], truth=truth, info=info)

    return load_split("P4", dataset, "all" if dataset == "amazon-gift-cards" else "time", build)


def tuning_split(split: BenchSplit) -> BenchSplit:
    """A nested split for choosing hyperparameters without touching the test rows: the split's validation part
    becomes the test, and a new validation is carved from its train the same way (P2: each user's latest remaining
    row; P3: 10% of the remaining items held out cold). Never written to disk; deterministic from the seed."""
    rng = np.random.default_rng(SEED + 7)
    train = split.train.reset_index(drop=True)
    if split.protocol == "P2":
        val = last_per_user(train, rng)
        test = split.validation.reset_index(drop=True)
        everything = pd.concat([split.train, split.validation, split.test])
        items = np.array(sorted(everything["item_id"].unique()))
        neg = _sampled_negatives(test, items, everything.groupby("user_id")["item_id"].agg(set).to_dict(), rng)
        info = {**split.info, "tuning": "test = the split's validation; validation = latest remaining per user"}
        return dataclasses.replace(split, train=train[~val], validation=train[val], test=test, negatives=neg, info=info)
    if split.protocol == "P3":
        return p3_tuning_folds(split)[0]
    if split.protocol == "P4" and split.dataset == "online-retail":
        tuning = _retail_split(RETAIL_TUNING_CUTOFF, RETAIL_CUTOFF)
        tuning.info["tuning"] = f"train before {RETAIL_TUNING_CUTOFF}, truth from then up to {RETAIL_CUTOFF}"
        return tuning
    raise ValueError(f"no tuning split for {split.protocol} {split.dataset}")


P3_TUNING_FOLDS = 4


def p3_tuning_folds(split: BenchSplit) -> list[BenchSplit]:
    """Nested cold-item splits for tuning P3 (a single 10% hold-out of a 399-book catalogue is 32 books: too noisy
    to choose on). The items outside the test split are cut into 4 folds; fold f holds its items out cold as the
    test, 10% of the other items as cold validation, and trains on the rest. Deterministic from the seed."""
    rng = np.random.default_rng(SEED + 11)
    known = pd.concat([split.train, split.validation], ignore_index=True)
    items = np.array(sorted(known["item_id"].unique()))
    folds = np.array_split(items[rng.permutation(len(items))], P3_TUNING_FOLDS)
    out = []
    for f, cold in enumerate(folds):
        is_test = known["item_id"].isin(set(cold)).to_numpy()
        rest = np.array(sorted(set(items) - set(cold)))
        held = set(rest[rng.permutation(len(rest))[: int(round(0.1 * len(rest)))]])
        is_val = known["item_id"].isin(held).to_numpy() & ~is_test
        info = {
            **split.info,
            "tuning": f"fold {f + 1}/{P3_TUNING_FOLDS} of the non-test items held out cold; validation = 10% of the"
            " rest",
        }
        out.append(
            dataclasses.replace(
                split,
                fold=f"tune{f + 1}",
                train=known[~is_test & ~is_val],
                validation=known[is_val],
                test=known[is_test],
                cold_items=sorted(cold.tolist()),
                info=info,
            )
        )
    return out


def dataset_for(split: BenchSplit, implicit: bool = False) -> Dataset:
    """The hybridrec Dataset of a split: the source's items and users, and exactly the split's interactions."""
    ds = load(split.dataset)
    inter = pd.concat([split.train, split.validation, split.test], ignore_index=True)
    changes: dict = {"interactions": inter}
    if implicit:
        changes.update(feedback="implicit", rating_range=None)
    return dataclasses.replace(ds, **changes)
