"""Seeded, vectorised generator of Electronics-like data for the scale benchmark.

Three Parquet files that `hybridrec fit` reads through a `data.format: table` config, and a meta.json:
  interactions.parquet  user_id, item_id (int64), rating (1-5), timestamp (epoch s), review (a short text whose
                        words come from the item's category and from the rating: text carries signal)
  items.parquet         item_id, title, brand, department, category (path), price, description
  users.parquet         user_id, region
Item popularity follows a power law inside each category; users favour one category and its department, so
behaviour carries signal too. A share of the catalogue (`COLD_SHARE`) has no interactions at all, every other item
has at least one. Items are released over time and only rated after release, so a time split has new items.

Memory: the row arrays (a few int32/int64 columns) are built at once, the review strings a chunk at a time as they
are written, so L (1e7 rows) stays within a few GB.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

GEN_VERSION = 1  # bump when the generated data changes: cached folders of another version are rebuilt
DATA_ROOT = Path(__file__).resolve().parent.parent / ".scale-data"  # gitignored
COLD_SHARE = 0.10  # items with no interactions
TEST_SHARE = 0.20  # the latest share of rows is the time split's test part
CHUNK = 500_000  # rows per written row group (review strings exist a chunk at a time)
START = 1_451_606_400  # 2016-01-01 UTC
SPAN = 2 * 365 * 86_400  # two years of interactions
PREFER_LEAF, PREFER_DEPT = 0.5, 0.3  # a row's item: from the user's category, else its department, else anywhere
POPULARITY_EXPONENT = 0.9  # item weight ~ rank ** -exponent inside the catalogue


@dataclass(frozen=True)
class Size:
    rows: int
    items: int
    users: int


SIZES = {
    "XS": Size(2_000, 400, 250),  # tests
    "S": Size(100_000, 10_000, 11_000),
    "M": Size(1_700_000, 63_000, 190_000),  # Amazon Electronics 5-core
    "L": Size(10_000_000, 500_000, 2_000_000),
}

DEPARTMENTS = {  # name: (words of its reviews and descriptions, typical price)
    "Computers & Accessories": (["laptop", "keyboard", "usb", "drive", "monitor", "mouse"], 60.0),
    "Camera & Photo": (["lens", "camera", "tripod", "shutter", "zoom", "flash"], 120.0),
    "Headphones": (["headphones", "bass", "earbuds", "noise", "ears", "sound"], 45.0),
    "Television & Video": (["tv", "screen", "remote", "hdmi", "picture", "streaming"], 250.0),
    "Cell Phones": (["phone", "case", "charger", "screen", "battery", "cable"], 20.0),
    "Car Electronics": (["car", "dash", "radio", "gps", "mount", "stereo"], 70.0),
    "Home Audio": (["speaker", "receiver", "subwoofer", "volume", "bluetooth", "amp"], 150.0),
    "Video Games": (["controller", "console", "games", "gaming", "headset", "lag"], 55.0),
    "Wearables": (["watch", "band", "fitness", "tracker", "wrist", "steps"], 90.0),
    "Networking": (["router", "wifi", "signal", "ethernet", "modem", "range"], 65.0),
}
SENTIMENT = {  # rating: words only reviews of that rating use
    1: ["broke", "terrible", "returned", "useless", "defective", "awful"],
    2: ["disappointing", "flimsy", "poor", "weak", "unreliable", "cheaply"],
    3: ["okay", "average", "fine", "mixed", "mediocre", "acceptable"],
    4: ["good", "solid", "nice", "works", "happy", "decent"],
    5: ["excellent", "love", "perfect", "amazing", "flawless", "recommend"],
}
FILLER = ["the", "it", "this", "with", "for", "and", "my", "very", "after", "use", "price", "quality", "item", "so"]
ADJECTIVES = ["Compact", "Pro", "Ultra", "Wireless", "Portable", "Premium", "Slim", "Smart", "Rugged", "Mini"]
REGIONS = ["US-East", "US-West", "US-Central", "Canada", "UK", "Germany", "France", "Japan"]
LEAF_WORDS = 3  # pseudo-words of each leaf category
REVIEW_WORDS = (8, 16)  # words per review, inclusive range
DESCRIPTION_WORDS = 12
SYLLABLES = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]


@dataclass
class Catalogue:
    """The item side: category of each item (leaf, department), vocabulary and per-word-kind offsets into it."""

    leaf: np.ndarray  # int32 per item
    dept: np.ndarray  # int32 per item
    vocab: list[str]  # every word reviews and descriptions use
    leaf_names: list[str]
    dept_word0: int  # vocab offset of department words: dept d's words are dept_word0 + 6 d + [0, 6)
    leaf_word0: int  # leaf l's words: leaf_word0 + LEAF_WORDS l + [0, LEAF_WORDS)
    sentiment0: int  # rating r's words: sentiment0 + 6 (r - 1) + [0, 6)
    filler0: int


def pseudo_words(rng: np.random.Generator, n: int, taken: set[str]) -> list[str]:
    """n distinct pronounceable made-up words (three syllables), none of them in `taken`."""
    out: list[str] = []
    seen = set(taken)
    while len(out) < n:
        for row in rng.integers(len(SYLLABLES), size=(n - len(out), 3)):
            word = "".join(SYLLABLES[s] for s in row)
            if word not in seen:
                seen.add(word)
                out.append(word)
    return out


def catalogue(rng: np.random.Generator, n_items: int) -> Catalogue:
    n_dept = len(DEPARTMENTS)
    per_dept = int(np.clip(n_items // (100 * n_dept), 2, 100))
    n_leaves = per_dept * n_dept
    leaf = rng.integers(n_leaves, size=n_items).astype(np.int32)
    vocab: list[str] = []
    dept_word0 = len(vocab)
    for words, _ in DEPARTMENTS.values():
        vocab += words
    taken = set(vocab) | set(FILLER) | {w for ws in SENTIMENT.values() for w in ws}
    leaf_word0 = len(vocab)
    leaf_vocab = pseudo_words(rng, n_leaves * LEAF_WORDS, taken)
    vocab += leaf_vocab
    sentiment0 = len(vocab)
    for r in range(1, 6):
        vocab += SENTIMENT[r]
    filler0 = len(vocab)
    vocab += FILLER
    depts = list(DEPARTMENTS)
    leaf_names = [
        f"{leaf_vocab[LEAF_WORDS * i].capitalize()} {depts[i // per_dept].split()[0]}" for i in range(n_leaves)
    ]
    return Catalogue(leaf, leaf // per_dept, vocab, leaf_names, dept_word0, leaf_word0, sentiment0, filler0)


def text_words(
    rng: np.random.Generator, cat: Catalogue, items: np.ndarray, ratings: np.ndarray | None, width: int
) -> np.ndarray:
    """(len(items), width) vocabulary ids: category words (leaf or department) and filler, plus sentiment words of
    the rating when `ratings` is given (reviews); descriptions have no sentiment."""
    n = len(items)
    kind = rng.random((n, width))
    sentiment = 0.3 if ratings is not None else 0.0
    pick6 = rng.integers(6, size=(n, width))
    leaf_w = cat.leaf_word0 + LEAF_WORDS * cat.leaf[items][:, None] + rng.integers(LEAF_WORDS, size=(n, width))
    dept_w = cat.dept_word0 + 6 * cat.dept[items][:, None] + pick6
    filler_w = cat.filler0 + rng.integers(len(FILLER), size=(n, width))
    words = np.where(kind < 0.2, leaf_w, np.where(kind < 0.4, dept_w, filler_w))
    if ratings is not None:
        senti_w = cat.sentiment0 + 6 * (ratings.astype(np.int64)[:, None] - 1) + pick6
        words = np.where(kind >= 1.0 - sentiment, senti_w, words)
    return words


def join_words(vocab: list[str], words: np.ndarray, lengths: np.ndarray) -> list[str]:
    """Each row's first `length` words as one space-separated string."""
    get = vocab.__getitem__
    return [" ".join(map(get, row[:k])) for row, k in zip(words.tolist(), lengths.tolist(), strict=True)]


def user_counts(rng: np.random.Generator, size: Size, cap: int) -> np.ndarray:
    """Rows per user: a floor for everyone (5-core-like) and a power-law share of the rest, at most `cap` each."""
    floor = int(max(1, min(5, size.rows // size.users // 2)))
    weights = rng.pareto(2.0, size.users) + 1.0
    counts = floor + rng.multinomial(size.rows - floor * size.users, weights / weights.sum())
    while (excess := int(np.maximum(counts - cap, 0).sum())) > 0:
        counts = np.minimum(counts, cap)
        room = counts < cap
        counts[room] += rng.multinomial(excess, np.full(int(room.sum()), 1.0 / room.sum()))
    return counts


def sample_items(
    rng: np.random.Generator, users: np.ndarray, home: np.ndarray, cat: Catalogue, weight: np.ndarray
) -> np.ndarray:
    """One item per row: from the user's home category, else its department, else the whole catalogue, each by
    popularity (cumulative weights over items grouped by leaf, so a group is a contiguous range)."""
    order = np.argsort(cat.leaf, kind="stable")
    cum = np.cumsum(weight[order])
    n_leaves = int(cat.leaf.max()) + 1
    per_dept = n_leaves // int(cat.dept.max() + 1)
    bounds = np.concatenate([[0.0], cum[np.searchsorted(cat.leaf[order], np.arange(n_leaves), side="right") - 1]])
    leaf = home[users]
    mode = rng.random(len(users))
    lo, hi = np.zeros(len(users)), np.full(len(users), cum[-1])
    in_leaf = mode < PREFER_LEAF
    lo[in_leaf], hi[in_leaf] = bounds[leaf[in_leaf]], bounds[leaf[in_leaf] + 1]
    in_dept = (mode >= PREFER_LEAF) & (mode < PREFER_LEAF + PREFER_DEPT)
    first = (leaf[in_dept] // per_dept) * per_dept
    lo[in_dept], hi[in_dept] = bounds[first], bounds[first + per_dept]
    empty = hi <= lo  # a category with no warm item: anywhere
    lo[empty], hi[empty] = 0.0, cum[-1]
    pick = np.searchsorted(cum, lo + rng.random(len(users)) * (hi - lo), side="right")
    return order[np.minimum(pick, len(order) - 1)].astype(np.int32)


def interactions(
    rng: np.random.Generator, size: Size, cat: Catalogue, warm: np.ndarray, weight: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(users, items) of every row: each warm item once, then items drawn by preference; repeated pairs redrawn."""
    counts = user_counts(rng, size, cap=max(1, min(len(warm) // 4, 50 * size.rows // size.users)))
    users = rng.permutation(np.repeat(np.arange(size.users, dtype=np.int32), counts))
    home = rng.integers(int(cat.leaf.max()) + 1, size=size.users)  # each user's favourite category
    items = sample_items(rng, users, home, cat, weight)
    items[: len(warm)] = rng.permutation(warm)  # every warm item has a row; these rows are never redrawn
    for attempt in range(21):
        repeat = repeated_pairs(users, items, len(cat.leaf))
        if not repeat.any() or attempt == 20:
            break
        if attempt < 10:
            items[repeat] = sample_items(rng, users[repeat], home, cat, weight)
        else:  # a heavy user of a small category: any warm item
            items[repeat] = warm[rng.integers(len(warm), size=int(repeat.sum()))]
    return users[~repeat], items[~repeat]  # what 20 redraws could not fix is dropped (never seen in practice)


def repeated_pairs(users: np.ndarray, items: np.ndarray, n_items: int) -> np.ndarray:
    """True on every row whose (user, item) pair an earlier row already has."""
    _, first = np.unique(users.astype(np.int64) * n_items + items, return_index=True)
    repeat = np.ones(len(users), bool)
    repeat[first] = False
    return repeat


def ratings_of(rng: np.random.Generator, users: np.ndarray, items: np.ndarray, n_users: int, n_items: int):
    """1-5 stars skewed high like Amazon's: item quality + user leniency + noise."""
    quality = rng.normal(0.0, 0.6, n_items)
    leniency = rng.normal(0.0, 0.4, n_users)
    raw = 3.9 + quality[items] + leniency[users] + rng.normal(0.0, 0.8, len(items))
    return np.clip(np.rint(raw), 1, 5).astype(np.int8)


def item_table(rng: np.random.Generator, cat: Catalogue, n_items: int) -> dict:
    depts = list(DEPARTMENTS)
    n_brands = int(np.clip(n_items // 50, 20, 2000))
    brand_names = [w.capitalize() for w in pseudo_words(rng, n_brands, set(cat.vocab))]
    brand_w = 1.0 / np.arange(1, n_brands + 1)
    brand = rng.choice(n_brands, size=n_items, p=brand_w / brand_w.sum())
    typical = np.array([p for _, p in DEPARTMENTS.values()])[cat.dept]
    price = np.round(np.exp(np.log(typical) + rng.normal(0.0, 0.6, n_items)), 2)
    adjective = rng.integers(len(ADJECTIVES), size=n_items)
    model_no = rng.integers(100, 1000, size=n_items)
    letter = rng.integers(26, size=n_items)
    title = [
        f"{brand_names[b]} {ADJECTIVES[a]} {cat.leaf_names[lf]} {chr(65 + c)}{m}"
        for b, a, lf, c, m in zip(brand, adjective, cat.leaf, letter, model_no, strict=True)
    ]
    words = text_words(rng, cat, np.arange(n_items), None, DESCRIPTION_WORDS)
    return {
        "item_id": np.arange(n_items, dtype=np.int64),
        "title": title,
        "brand": [brand_names[b] for b in brand],
        "department": [depts[d] for d in cat.dept],
        "category": [f"Electronics > {depts[d]} > {cat.leaf_names[lf]}" for d, lf in zip(cat.dept, cat.leaf)],
        "price": price,
        "description": join_words(cat.vocab, words, np.full(n_items, DESCRIPTION_WORDS)),
    }


def generate(size_name: str, seed: int, out: Path) -> dict:
    """Write the three files and meta.json into `out` (a new folder); returns the meta."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    t0 = time.perf_counter()
    size = SIZES[size_name]
    rng = np.random.default_rng(seed)
    cat = catalogue(rng, size.items)
    n_cold = int(round(COLD_SHARE * size.items))
    perm = rng.permutation(size.items)
    warm = np.sort(perm[n_cold:]).astype(np.int32)
    weight = np.zeros(size.items)
    weight[warm] = rng.permutation(np.arange(1, len(warm) + 1, dtype=np.float64)) ** -POPULARITY_EXPONENT
    users, items = interactions(rng, size, cat, warm, weight)
    release = (rng.random(size.items) * 0.85 * SPAN).astype(np.int64)
    stamps = START + release[items] + (rng.random(len(items)) * (SPAN - release[items])).astype(np.int64)
    ratings = ratings_of(rng, users, items, size.users, size.items)
    order = np.argsort(stamps, kind="stable")  # rows in time order, as a log would hold them
    users, items, stamps, ratings = users[order], items[order], stamps[order], ratings[order]
    cutoff = int(np.quantile(stamps, 1.0 - TEST_SHARE, method="higher"))

    out.mkdir(parents=True)
    pq.write_table(pa.table(item_table(rng, cat, size.items)), out / "items.parquet")
    region = rng.integers(len(REGIONS), size=size.users)
    users_table = {"user_id": np.arange(size.users, dtype=np.int64), "region": [REGIONS[r] for r in region]}
    pq.write_table(pa.table(users_table), out / "users.parquet")
    schema = pa.schema(
        [
            ("user_id", pa.int64()),
            ("item_id", pa.int64()),
            ("rating", pa.int8()),
            ("timestamp", pa.int64()),
            ("review", pa.string()),
        ]
    )
    with pq.ParquetWriter(out / "interactions.parquet", schema) as writer:
        for start in range(0, len(users), CHUNK):
            part = slice(start, start + CHUNK)
            n = len(users[part])
            words = text_words(rng, cat, items[part], ratings[part], REVIEW_WORDS[1])
            lengths = rng.integers(REVIEW_WORDS[0], REVIEW_WORDS[1] + 1, size=n)
            columns = [
                users[part].astype(np.int64),
                items[part].astype(np.int64),
                ratings[part],
                stamps[part],
                join_words(cat.vocab, words, lengths),
            ]
            writer.write_table(pa.table(columns, schema=schema))
    meta = {
        "size": size_name,
        "seed": seed,
        "version": GEN_VERSION,
        "requested": asdict(size),
        "rows": int(len(users)),
        "items": size.items,
        "users": int(len(np.unique(users))),
        "cold_items": n_cold,
        "cutoff": cutoff,
        "test_rows": int((stamps >= cutoff).sum()),
        "leaf_categories": int(cat.leaf.max()) + 1,
        "generate_seconds": round(time.perf_counter() - t0, 2),
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3),
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    return meta


def data_dir(size_name: str, seed: int, root: Path = DATA_ROOT) -> Path:
    return root / f"{size_name}-seed{seed}"


def cached_meta(folder: Path) -> dict | None:
    """The meta of a complete folder of this generator version, else None."""
    try:
        meta = json.loads((folder / "meta.json").read_text())
    except (OSError, ValueError):
        return None
    return meta if meta.get("version") == GEN_VERSION else None


def ensure(size_name: str, seed: int = 42, root: Path = DATA_ROOT) -> tuple[Path, dict]:
    """The data folder of (size, seed), generated unless a complete one of this version is cached. Written to a
    temporary folder and renamed, so an interrupted run never leaves a folder that looks complete."""
    folder = data_dir(size_name, seed, root)
    meta = cached_meta(folder)
    if meta is not None:
        return folder, meta
    tmp = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    meta = generate(size_name, seed, tmp)
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return folder, meta


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Generate (or find cached) scale-benchmark data; prints its meta.")
    parser.add_argument("--size", choices=list(SIZES), required=True)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--root", type=Path, default=DATA_ROOT)
    args = parser.parse_args(argv)
    folder, meta = ensure(args.size, args.seed, args.root)
    print(json.dumps({"folder": str(folder), **meta}))


if __name__ == "__main__":
    main()
