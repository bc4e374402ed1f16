"""A closed-form item-item model (EASE, Steck 2019) beside the network, for similar items.

The fused vectors say which products are alike in content and in who buys them, compressed to `model.dim`
numbers. On co-purchase data the full-rank pairwise evidence ("bought with j, so i") is sharper than any low-rank
vector, and EASE's least-squares weights are the strongest cheap form of it. Similar items blend the two after
standardising each over the catalogue, so neither scale swamps the other. Numpy only: no torch on the serving path.
"""

from __future__ import annotations

import numpy as np

from hybridrec.errors import ConfigError

# items x items float64 Gram matrix and its inverse: past this they no longer fit a laptop
MAX_ITEMS = 20_000
FILE = "closed_form"  # vectors/closed_form.npy in a model folder


def closed_form_weights(gram: np.ndarray, l2: float) -> np.ndarray:
    """B = I - P / diag(P) with P = (G + l2 I)^-1 and a zero diagonal: each item's column is the ridge regression
    of that item on all the others, with the item itself excluded."""
    a = np.array(gram, dtype=np.float64, copy=True)
    a[np.diag_indices_from(a)] += l2
    p = np.linalg.inv(a)
    b = -p / np.diag(p)[None, :]
    np.fill_diagonal(b, 0.0)
    return b.astype(np.float32)


def check_catalogue(n_items: int) -> None:
    """Fail before training, not after it, when the catalogue is too large for a dense closed form."""
    if n_items > MAX_ITEMS:
        raise ConfigError(
            f"model.similar_closed_form_weight: {n_items} items, more than the {MAX_ITEMS} a dense closed form allows"
        )


def fit_closed_form(users: np.ndarray, items: np.ndarray, n_users: int, n_items: int, l2: float) -> np.ndarray:
    """EASE weights from (user row, item row) interactions; repeats count once (the matrix is binary)."""
    from scipy import sparse

    x = sparse.csr_matrix((np.ones(len(users), np.float64), (users, items)), shape=(n_users, n_items))
    x.data[:] = 1.0  # duplicates were summed: back to "bought it at all"
    return closed_form_weights((x.T @ x).toarray(), l2)


def standardised(scores: np.ndarray, skip: int) -> np.ndarray:
    """Scores minus their mean over the catalogue, over their spread, leaving out the query item `skip`; a flat
    row (an item nobody bought) becomes all zeros, so it neither helps nor hurts any candidate."""
    rest = np.delete(scores, skip).astype(np.float64)
    spread = rest.std()
    if not np.isfinite(spread) or spread <= 0:
        return np.zeros(len(scores), np.float64)
    return (scores - rest.mean()) / spread


def blend_similar(model_scores: np.ndarray, closed_row: np.ndarray, row: int, weight: float) -> np.ndarray:
    """(1 - weight) x the model's standardised similar-item scores + weight x the closed form's, for item `row`."""
    return (1.0 - weight) * standardised(model_scores, row) + weight * standardised(closed_row, row)
