"""The co-occurrence term's math on a tiny matrix, checked against a direct computation."""

from __future__ import annotations

import numpy as np
from scipy import sparse

from hybridrec.scoring.cooccurrence import cooccurrence_neighbours


def direct(x: np.ndarray, shrink: float, user_discount: float = 0.0) -> np.ndarray:
    """Shrunk cosine of every pair of columns, each user weighted by 1 / n_u ** user_discount, written out with
    loops."""
    n = x.shape[1]
    weight = np.array([1.0 / max(row.sum(), 1) ** user_discount for row in x])
    out = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            if i == j:
                continue
            both = float((x[:, i] * x[:, j]).sum())
            if both:
                soft = float((weight * x[:, i] * x[:, j]).sum())
                norm = np.sqrt((weight * x[:, i]).sum() * (weight * x[:, j]).sum())
                out[i, j] = soft / norm * both / (both + shrink)
    return out


def test_shrunk_cosine_matches_the_direct_computation_and_keeps_the_strongest():
    rng = np.random.default_rng(0)
    x = (rng.random((40, 9)) < 0.3).astype(np.float32)
    expected = direct(x, shrink=2.0)
    full = cooccurrence_neighbours(sparse.csr_matrix(x), neighbours=100, shrink=2.0).toarray()
    np.testing.assert_allclose(full, expected, rtol=1e-5, atol=1e-7)
    top2 = cooccurrence_neighbours(sparse.csr_matrix(x), neighbours=2, shrink=2.0).toarray()
    for i in range(9):
        kept = np.flatnonzero(top2[i])
        assert len(kept) == min(2, np.count_nonzero(expected[i]))
        best = np.sort(expected[i])[::-1][:2]
        assert all(np.isclose(best, value, rtol=1e-5).any() for value in top2[i, kept])


def test_shrinkage_ranks_a_pair_seen_once_below_a_pair_seen_often():
    # items 0 and 1 each have one user, the same one (cosine 1); items 2 and 3 share 20 of their 25 users (0.8)
    x = np.zeros((40, 4), np.float32)
    x[0, [0, 1]] = 1
    x[1:21, [2, 3]] = 1
    x[21:26, 2] = 1
    x[26:31, 3] = 1
    plain = cooccurrence_neighbours(sparse.csr_matrix(x), neighbours=5, shrink=0.0).toarray()
    shrunk = cooccurrence_neighbours(sparse.csr_matrix(x), neighbours=5, shrink=10.0).toarray()
    assert np.isclose(plain[0, 1], 1.0) and np.isclose(plain[2, 3], 0.8)
    assert shrunk[2, 3] > shrunk[0, 1]  # one shared user no longer beats twenty


def test_user_discount_matches_the_direct_computation():
    rng = np.random.default_rng(1)
    x = (rng.random((50, 8)) < rng.uniform(0.05, 0.9, size=(50, 1))).astype(np.float32)  # light and heavy users
    for discount in (0.3, 1.0):
        got = cooccurrence_neighbours(sparse.csr_matrix(x), neighbours=100, shrink=3.0, user_discount=discount)
        np.testing.assert_allclose(got.toarray(), direct(x, 3.0, discount), rtol=1e-5, atol=1e-7)


def test_a_heavy_user_counts_less_than_light_ones_with_a_discount():
    # items 0 and 1 are bought together by one customer who bought all 30 items; items 2 and 3 by one who bought
    # only those two. Undiscounted the pairs tie (each item has just the one buyer); discounted the light one wins.
    x = np.zeros((2, 30), np.float32)
    x[0, :] = 1
    x[0, [2, 3]] = 0
    x[1, [2, 3]] = 1
    plain = cooccurrence_neighbours(sparse.csr_matrix(x), neighbours=40, shrink=0.0).toarray()
    assert np.isclose(plain[0, 1], plain[2, 3])
    shrunk = cooccurrence_neighbours(sparse.csr_matrix(x), neighbours=40, shrink=1.0, user_discount=1.0).toarray()
    assert np.isclose(shrunk[0, 1], shrunk[2, 3])  # a lone buyer per item: the cosine cancels the weight ...
    x[1, 0] = 1  # ... until the light customer also buys item 0, which now leans towards 2 and 3
    plain = cooccurrence_neighbours(sparse.csr_matrix(x), neighbours=40, shrink=1.0).toarray()
    assert np.isclose(plain[0, 2], plain[0, 1])  # undiscounted, one buyer each way: still a tie
    shrunk = cooccurrence_neighbours(sparse.csr_matrix(x), neighbours=40, shrink=1.0, user_discount=1.0).toarray()
    assert shrunk[0, 2] > shrunk[0, 1]
