"""One hybridrec fit on the P4 Online Retail tuning split, many similar-item scorers: choosing
model.similar_history_weight and model.similar_item_item_weight needs no refit per value.

    python -m benchmarks.p4_scorers [KEY=VALUE ...]   # hybridrec config overrides, e.g. model.item_item_l2=1e-5
    python -m benchmarks.p4_scorers --closed-form [KEY=VALUE ...]   # the config's scorer blended with EASE

The second form fits the config as it is and scans model.closed_form_l2 x model.similar_closed_form_weight, with
the closed form's row (as served) and its row averaged with its column.

Appends a table to benchmarks/results/p4_scorers.md with the command. Tuning split only: never the test truth.
"""

from __future__ import annotations

import shlex
import sys
import time

import numpy as np

from benchmarks import data
from benchmarks.adapters.hybrid import HybridRec
from benchmarks.protocols import context
from hybridrec.evaluate import precision_at_k

OUT = data.ROOT / "benchmarks" / "results" / "p4_scorers.md"
HISTORY_WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)
PAIRWISE_WEIGHTS = (0.0, 1.0, 8.0, 16.0, 32.0, 64.0, 128.0)
CLOSED_FORM_L2 = (1000.0, 2500.0, 5000.0, 10000.0, 20000.0)
CLOSED_FORM_WEIGHTS = (0.25, 0.4, 0.5, 0.6, 0.75, 1.0)


def main(overrides: list[str]) -> None:
    split = data.tuning_split(data.p4_split("online-retail"))
    ctx = context(split, "similar", implicit=True, quick=False)
    fixed = ("model.similar_history_weight=1.0", "model.item_item=true")
    model = HybridRec("hybridrec", (*fixed, *overrides))
    model.fit(split.train, ctx.dataset.items, ctx)
    rec = model.rec_
    truths = {name: {i: set(t) for i, t in truth.items() if t} for name, truth in split.truth.items()}
    queries = sorted(set().union(*truths.values()))
    rows = rec.items_.indices(queries)
    norms = np.linalg.norm(rec.item_vectors_, axis=1)
    norms[norms == 0] = np.inf
    unit = rec.item_vectors_ / norms[:, None]
    terms = rec.item_item_
    own = unit[rows] @ unit.T
    bought = rec.item_queries_[rows] @ unit.T  # weight 1: the unit "bought with it" vectors
    query_norms = np.where(terms.query_norms[rows] > 0, terms.query_norms[rows], np.inf)
    scale = query_norms[:, None] * norms[None, :]
    # W's row (history j -> target i), and the row averaged with its column (i -> j): co-purchase is mutual
    pairwise = {
        "row": terms.matrix[rows],
        "row+column": 0.5 * (terms.matrix[rows] + terms.matrix[:, rows].T),
    }

    def precision(scores: np.ndarray) -> dict[str, float]:
        scores = scores.copy()
        scores[np.arange(len(rows)), rows] = -np.inf
        top = np.argsort(-scores, axis=1, kind="stable")[:, :10]
        neighbours = {q: rec.items_.raws(top[j]) for j, q in enumerate(queries)}
        return {name: precision_at_k(neighbours, truth, 10) for name, truth in truths.items()}

    lines = [
        f"## `python -m benchmarks.p4_scorers {shlex.join(overrides)}` ({time.strftime('%Y-%m-%d %H:%M')})",
        "",
        "| W share | similar_history_weight | similar_item_item_weight | precision@10 | strict |",
        "|---|---|---|---|---|",
    ]
    for name, raw in pairwise.items():
        share = raw / scale
        for w in HISTORY_WEIGHTS:
            for lam in PAIRWISE_WEIGHTS if w > 0 else (0.0,):
                p = precision((1 - w) * own + w * (bought + lam * share))
                lines.append(f"| {name} | {w} | {lam:g} | {_cells(p)} |")
        lines.append(f"| {name} alone | | | {_cells(precision(raw))} |")
    with OUT.open("a") as f:
        f.write("\n".join(lines) + "\n\n")
    print("\n".join(lines))


def closed_form_scan(overrides: list[str]) -> None:
    """One fit of the config as it is; its exact similar-item scores blended with EASE at each penalty and share."""
    from hybridrec import closed_form as cf

    split = data.tuning_split(data.p4_split("online-retail"))
    ctx = context(split, "similar", implicit=True, quick=False)
    model = HybridRec("hybridrec", tuple(overrides))
    model.fit(split.train, ctx.dataset.items, ctx)
    rec = model.rec_
    truths = {name: {i: set(t) for i, t in truth.items() if t} for name, truth in split.truth.items()}
    queries = sorted(set().union(*truths.values()))
    rows = rec.items_.indices(queries)
    own = [rec.exact_similar_scores(row) for row in rows]

    def precision(blended: list[np.ndarray]) -> dict[str, float]:
        neighbours = {}
        for q, row, scores in zip(queries, rows, blended):
            scores[row] = -np.inf
            neighbours[q] = rec.items_.raws(np.argsort(-scores, kind="stable")[:10])
        return {name: precision_at_k(neighbours, truth, 10) for name, truth in truths.items()}

    command = shlex.join(["--closed-form", *overrides])
    lines = [
        f"## `python -m benchmarks.p4_scorers {command}` ({time.strftime('%Y-%m-%d %H:%M')})",
        "",
        "| closed-form row | closed_form_l2 | similar_closed_form_weight | precision@10 | strict |",
        "|---|---|---|---|---|",
        f"| | | 0 | {_cells(precision([s.copy() for s in own]))} |",
    ]
    for l2 in CLOSED_FORM_L2:
        weights = rec._fit_closed_form(l2)
        for name, closed in (("row", weights[rows]), ("row+column", 0.5 * (weights[rows] + weights[:, rows].T))):
            for w in CLOSED_FORM_WEIGHTS:
                blended = [cf.blend_similar(s, c, row, w) for s, c, row in zip(own, closed, rows)]
                lines.append(f"| {name} | {l2:g} | {w} | {_cells(precision(blended))} |")
            print("\n".join(lines[-len(CLOSED_FORM_WEIGHTS) :]), flush=True)
    with OUT.open("a") as f:
        f.write("\n".join(lines) + "\n\n")
    print("\n".join(lines))


def _cells(p: dict[str, float]) -> str:
    return f"{p['precision@10']:.4f} | {p.get('precision@10_strict', float('nan')):.4f}"


if __name__ == "__main__":
    if sys.argv[1:2] == ["--closed-form"]:
        closed_form_scan(sys.argv[2:])
    else:
        main(sys.argv[1:])
