"""The co-occurrence term's math on a tiny matrix, checked against a direct computation."""

from __future__ import annotations

import numpy as np
from scipy import sparse

from hybridrec.scoring.cooccurrence import cooccurrence_neighbours


def direct(x: np.ndarray, shrink: float) -> np.ndarray:
    """Shrunk cosine of every pair of columns, written out with loops."""
    n = x.shape[1]
    out = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            if i == j:
                continue
            both = float((x[:, i] * x[:, j]).sum())
            if both:
                out[i, j] = both / np.sqrt(x[:, i].sum() * x[:, j].sum()) * both / (both + shrink)
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
