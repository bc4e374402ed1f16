"""UserHistory: every user's training items as item rows, one CSR, each user's block latest first.

Built once from the training rows and read by the user tower (the history bag), the score terms and "bought
with it". Numpy only: the query path never imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PAD = 0  # history tokens are item row + 1; 0 pads


def latest_first(users: np.ndarray, timestamps: np.ndarray) -> np.ndarray:
    """Row order that groups each user's rows, most recent first; ties keep row order (a stable sort of the
    timestamp descending). The served bag and the causal training histories both read this one order."""
    import pandas as pd  # here, not at the top: loading a model for a query needs no pandas (0.3 s of start-up)

    frame = pd.DataFrame({"user": users, "ts": timestamps})
    return frame.sort_values(["user", "ts"], ascending=[True, False], kind="stable").index.to_numpy()


@dataclass
class UserHistory:
    """indptr (n_users + 1) and items (item rows): user u's items are items[indptr[u]:indptr[u + 1]]."""

    indptr: np.ndarray
    items: np.ndarray

    @classmethod
    def from_rows(
        cls, users: np.ndarray, items: np.ndarray, n_users: int, timestamps: np.ndarray | None = None
    ) -> UserHistory:
        """From (user row, item row) interactions: latest first by `timestamps` (ties and no timestamps keep the
        rows' order); an item had twice appears twice."""
        users, items = np.asarray(users, np.int64), np.asarray(items, np.int64)
        stamps = np.zeros(len(users)) if timestamps is None else np.asarray(timestamps)
        order = latest_first(users, stamps)
        indptr = np.searchsorted(users[order], np.arange(n_users + 1)).astype(np.int64)
        return cls(indptr, items[order])

    @classmethod
    def distinct(cls, users: np.ndarray, items: np.ndarray, n_users: int) -> UserHistory:
        """Each (user, item) pair once, items in row order: what closed-form terms regress on."""
        pairs = np.unique(np.stack([np.asarray(users, np.int64), np.asarray(items, np.int64)]), axis=1)
        indptr = np.searchsorted(pairs[0], np.arange(n_users + 1)).astype(np.int64)
        return cls(indptr, pairs[1])

    @property
    def n_users(self) -> int:
        return len(self.indptr) - 1

    def of(self, user_row: int) -> np.ndarray:
        return self.items[self.indptr[user_row] : self.indptr[user_row + 1]]

    def tokens(self, length: int, user_rows: np.ndarray | None = None) -> np.ndarray:
        """(users, length) item row + 1 of each user's `length` latest items, PAD after the end."""
        rows = np.arange(self.n_users) if user_rows is None else np.asarray(user_rows, np.int64)
        starts, ends = self.indptr[rows], self.indptr[rows + 1]
        lengths = np.minimum(ends - starts, length)
        out = np.full((len(rows), length), PAD, np.int64)
        mask = np.arange(length)[None, :] < lengths[:, None]
        idx = (starts[:, None] + np.arange(length)[None, :])[mask]
        out[mask] = self.items[idx] + 1
        return out

    def sparse(self, user_rows: np.ndarray, n_items: int, per_sqrt_length: bool = False):
        """The users' histories as a sparse (users x items) matrix: 1 per item had, or 1/sqrt(history length)."""
        from scipy import sparse

        user_rows = np.asarray(user_rows, dtype=np.int64)
        starts, ends = self.indptr[user_rows], self.indptr[user_rows + 1]
        lengths = ends - starts
        columns: np.ndarray | list[int] = (
            np.concatenate([self.items[s:e] for s, e in zip(starts, ends)]) if len(user_rows) else []
        )
        per_user = 1.0 / np.sqrt(np.maximum(lengths, 1)) if per_sqrt_length else np.ones(len(lengths))
        weights = np.repeat(per_user, lengths).astype(np.float32)
        row_starts = np.concatenate([[0], np.cumsum(lengths)])
        return sparse.csr_matrix((weights, np.asarray(columns, np.int64), row_starts), shape=(len(user_rows), n_items))

    def check(self, n_users: int, n_items: int, scan: bool = True) -> str | None:
        """Why these arrays do not fit a model of this size (None when they do). `scan` False: the shapes only,
        not the passes over every entry (arrays a load already checked, unchanged since: ModelDir.known)."""
        if self.indptr.ndim != 1 or self.items.ndim != 1:
            return "user histories are not flat arrays"
        if len(self.indptr) != n_users + 1 or self.indptr[0] != 0 or self.indptr[-1] != len(self.items):
            return "user histories do not match the users"
        if not scan:
            return None
        if np.any(np.diff(self.indptr) < 0):
            return "user histories are not in order"
        if len(self.items) and (self.items.min() < 0 or self.items.max() >= n_items):
            return "user histories name items outside the catalogue"
        return None


@dataclass(frozen=True)
class CausalHistories:
    """Per training row, the user's items before it in time (most recent first), for `order: causal`.

    `tokens` holds every user's items (item row + 1) in one flat array, each user's block latest first, then
    `length` PADs; `starts[r]` is where row r's history begins (the user's item just before it) and `ends[r]` where
    its user's block ends."""

    tokens: np.ndarray
    starts: np.ndarray
    ends: np.ndarray
    length: int

    @classmethod
    def build(cls, users: np.ndarray, items: np.ndarray, timestamps: np.ndarray, length: int) -> CausalHistories:
        n = len(users)
        order = latest_first(users, timestamps)
        sorted_users = np.asarray(users)[order]
        block_end = np.empty(n, np.int64)
        if n:
            boundaries = np.flatnonzero(np.diff(sorted_users)) + 1
            ends_of_blocks = np.append(boundaries, n)
            block_end = np.repeat(ends_of_blocks, np.diff(np.concatenate([[0], ends_of_blocks])))
        starts, ends = np.empty(n, np.int64), np.empty(n, np.int64)
        starts[order] = np.arange(n) + 1
        ends[order] = block_end
        tokens = np.concatenate([np.asarray(items, np.int64)[order] + 1, np.full(length, PAD, np.int64)])
        return cls(tokens, starts, ends, length)


def resolve_order(order: str, loss: str, stamps: np.ndarray) -> str:
    """`model.user_history.order` as training uses it: `auto` is causal when the rows carry more than one distinct
    time and the loss ranks (a rating loss keeps the rated item in the bag), latest otherwise."""
    if order != "auto":
        return order
    timed = len(stamps) > 0 and np.unique(stamps).size > 1
    return "causal" if timed and loss != "mse" else "latest"
