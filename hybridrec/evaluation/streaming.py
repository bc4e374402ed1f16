"""Bounded-memory building blocks of held-out evaluation: chunk sizes from a byte budget, per-user item sets as
sorted numpy arrays (no Python set per user or per row), and sampled negatives that are a pure function of
(seed, test row, slot), so any chunking of the test rows draws the very same negatives.

Numpy only: the training loop's validation imports `chunk_rows` too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

EVAL_BUDGET_BYTES = 256 * 2**20  # what one chunk of evaluation may hold at once (the scores and their work arrays)
# per (user, item) cell of a full-ranking chunk: the float32 scores (float64 once score terms are added, with their
# own float64 rows and sums), top-k's copy of them and its masks
SCORE_CELL_BYTES = 40
# per sampled negative of a test row: its item (int64), hash and lookup key (uint64 / int64), lookup position
# (int64), score (float64) and masks
NEGATIVE_BYTES = 48


def chunk_rows(n_cols: int, cell_bytes: int = SCORE_CELL_BYTES, budget: int = EVAL_BUDGET_BYTES) -> int:
    """How many rows of `n_cols` cells of `cell_bytes` fit in `budget` (at least one: a row is the unit)."""
    return max(1, int(budget) // max(1, int(n_cols) * int(cell_bytes)))


@dataclass(frozen=True)
class ItemSets:
    """Per owner (a user, or a chunk-local user row) a set of item rows, as one sorted array of keys
    owner x n_items + item: the numpy form of a dict of sets, looked up by binary search."""

    keys: np.ndarray  # int64, sorted, distinct
    n_owners: int
    n_items: int

    @classmethod
    def from_pairs(cls, owners: np.ndarray, items: np.ndarray, n_owners: int, n_items: int) -> ItemSets:
        owners, items = np.asarray(owners, np.int64), np.asarray(items, np.int64)
        return cls(np.unique(owners * np.int64(n_items) + items), int(n_owners), int(n_items))

    @property
    def indptr(self) -> np.ndarray:
        """Owner o's keys are keys[indptr[o]:indptr[o + 1]]."""
        return np.searchsorted(self.keys, np.arange(self.n_owners + 1, dtype=np.int64) * np.int64(self.n_items))

    def sizes(self) -> np.ndarray:
        """How many distinct items each owner has."""
        return np.diff(self.indptr)

    def of(self, owner: int) -> np.ndarray:
        """Owner's items, sorted."""
        lo, hi = np.searchsorted(self.keys, [owner * self.n_items, (owner + 1) * self.n_items])
        return self.keys[lo:hi] - np.int64(owner) * np.int64(self.n_items)

    def contains(self, owners: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Elementwise: does owners[j] have items[j]? (broadcast; negative items, top-k padding, never match)"""
        owners, items = np.asarray(owners, np.int64), np.asarray(items, np.int64)
        query = owners * np.int64(self.n_items) + items
        at = np.minimum(np.searchsorted(self.keys, query), max(len(self.keys) - 1, 0))
        if not len(self.keys):
            return np.zeros(np.broadcast(owners, items).shape, bool)
        return (self.keys[at] == query) & (items >= 0)


def gather_rows(indptr: np.ndarray, values: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The CSR blocks of `rows` as (position in `rows`, value) pairs, without a Python loop per row."""
    rows = np.asarray(rows, np.int64)
    starts, lengths = indptr[rows], indptr[rows + 1] - indptr[rows]
    local = np.repeat(np.arange(len(rows), dtype=np.int64), lengths)
    offsets = np.cumsum(lengths) - lengths
    at = np.arange(int(lengths.sum()), dtype=np.int64) - np.repeat(offsets - starts, lengths)
    return local, np.asarray(values)[at].astype(np.int64, copy=False)


# ------------------------------------------------------------------------------------------- sampled negatives
_GOLDEN, _M1, _M2 = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a uint64 counter -> a well-mixed uint64 (uint64 products wrap, as they should)."""
    with np.errstate(over="ignore"):
        x = np.asarray(x, np.uint64) + _GOLDEN
        x = (x ^ (x >> np.uint64(30))) * _M1
        x = (x ^ (x >> np.uint64(27))) * _M2
    return x ^ (x >> np.uint64(31))


def _stream(seed: int, draw: int) -> np.ndarray:
    """The key of one seed's draw number `draw` (0 = first draw, 1.. = redraws, -1 = exact draws)."""
    return _mix(_mix(np.uint64(seed % 2**64)) ^ np.uint64(draw % 2**64))


def hashed_draws(seed: int, draw: int, counters: np.ndarray, n: int) -> np.ndarray:
    """Uniform integers in [0, n), one per counter, the same whatever else is drawn (bias n / 2**64)."""
    with np.errstate(over="ignore"):
        return (_mix(np.asarray(counters, np.uint64) ^ _stream(seed, draw)) % np.uint64(n)).astype(np.int64)


def sampled_negatives(
    owners: np.ndarray,
    taken: ItemSets,
    count: int,
    seed: int,
    rows: np.ndarray | None = None,
    rounds: int = 20,
) -> tuple[np.ndarray, np.ndarray]:
    """`count` items per test row that its owner never had, uniform over those items (with replacement).

    Row j's draws depend only on (seed, rows[j], slot): whole vectors are drawn and the taken ones redrawn, up to
    `rounds` times; an owner who had more than half the catalogue, or a row still unlucky after the rounds, gets an
    exact draw from what is left (a seeded permutation of it, repeated to `count`). An owner who had every item
    has no negatives: `has` is False for its rows and they are -1, so no draw can ever loop forever.
    Returns (len(owners) x count item rows, has)."""
    owners = np.asarray(owners, np.int64)
    rows = np.arange(len(owners), dtype=np.int64) if rows is None else np.asarray(rows, np.int64)
    n = taken.n_items
    sizes = taken.sizes()[owners]
    has = sizes < n
    crowded = sizes * 2 > n
    slots = np.arange(count, dtype=np.uint64)
    counters = rows.astype(np.uint64)[:, None] * np.uint64(count) + slots[None, :]
    neg = hashed_draws(seed, 0, counters, n)
    bad = taken.contains(owners[:, None], neg) & ~crowded[:, None]
    for draw in range(1, rounds + 1):
        at_row, at_slot = np.nonzero(bad)
        if not len(at_row):
            break
        fresh = hashed_draws(seed, draw, counters[at_row, at_slot], n)
        neg[at_row, at_slot] = fresh
        bad[at_row, at_slot] = taken.contains(owners[at_row], fresh)
    exact = (crowded | bad.any(axis=1)) & has
    for owner in np.unique(owners[exact]):  # rare: power users, and rows unlucky `rounds` times over
        free = np.setdiff1d(np.arange(n, dtype=np.int64), taken.of(int(owner)), assume_unique=True)
        for j in np.flatnonzero(exact & (owners == owner)):
            order = np.argsort(
                hashed_draws(seed, -1, np.uint64(rows[j]) * np.uint64(n) + free.astype(np.uint64), 2**62)
            )
            neg[j] = np.resize(free[order], count)
    neg[~has] = -1
    return neg, has
