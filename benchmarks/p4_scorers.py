"""One hybridrec fit on the P4 Online Retail tuning split, the similar-item blend scored at many shares: choosing
the EASE term's `similar_weight` needs no refit per value.

    python -m benchmarks.p4_scorers [KEY=VALUE ...]   # overrides on benchmarks/configs/online-retail-similar.yaml

The fit's towers (`rec.towers_.similar_scores`: the cosine of the item's query vector, "bought with it" blended in
at model.user_history.similar_weight) and its EASE term's row (`rec.term("ease").similar`) are each standardised per
query and blended as `similar_items` blends them, at every share in SHARES (0: the towers alone; 1: EASE's row
alone). The EASE penalty is the config's: scan it with one run per value, e.g.
`'model.terms=[{type: ease, l2: 10000, similar_weight: 0.5}]'`. model.user_history.similar_weight is part of the
fitted towers: scan it with `python -m benchmarks.run --protocol P4 --tune --set model.user_history.similar_weight=W`.

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
from hybridrec.evaluation.metrics import precision_at_k
from hybridrec.scoring.base import standardised

OUT = data.ROOT / "benchmarks" / "results" / "p4_scorers.md"
SHARES = (0.0, 0.25, 0.4, 0.5, 0.6, 0.75, 1.0)


def main(overrides: list[str]) -> None:
    split = data.tuning_split(data.p4_split("online-retail"))
    ctx = context(split, "similar", implicit=True, quick=False)
    model = HybridRec("hybridrec", tuple(overrides))
    model.fit(split.train, ctx.dataset.items, ctx)
    rec = model.rec_
    ease = rec.term("ease")
    if ease is None:
        sys.exit("the config has no ease term in model.terms: there is nothing to blend the towers with")
    truths = {name: {i: set(t) for i, t in truth.items() if t} for name, truth in split.truth.items()}
    queries = sorted(set().union(*truths.values()))
    rows = rec.items_.indices(queries)
    towers = [standardised(rec.towers_.similar_scores(row), row) for row in rows]
    closed = [standardised(ease.similar(row), row) for row in rows]

    def precision(share: float) -> dict[str, float]:
        neighbours = {}
        for q, row, own, row_scores in zip(queries, rows, towers, closed):
            scores = (1.0 - share) * own + share * row_scores
            scores[row] = -np.inf
            neighbours[q] = rec.items_.raws(np.argsort(-scores, kind="stable")[:10])
        return {name: precision_at_k(neighbours, truth, 10) for name, truth in truths.items()}

    served = ease.params.similar_weight
    lines = [
        f"## `python -m benchmarks.p4_scorers {shlex.join(overrides)}` ({time.strftime('%Y-%m-%d %H:%M')})",
        "",
        "| ease l2 | ease similar_weight | precision@10 | strict |",
        "|---|---|---|---|",
    ]
    for share in SHARES:
        label = f"{share:g}" + (" (the config's)" if share == served else "")
        lines.append(f"| {ease.params.l2:g} | {label} | {_cells(precision(share))} |")
        print(lines[-1], flush=True)
    with OUT.open("a") as f:
        f.write("\n".join(lines) + "\n\n")
    print("\n".join(lines))


def _cells(p: dict[str, float]) -> str:
    return f"{p['precision@10']:.4f} | {p.get('precision@10_strict', float('nan')):.4f}"


if __name__ == "__main__":
    main(sys.argv[1:])
