"""Leave-one-dataset-out choice of the similar-items defaults (issue 17): is the shipped default what the other
datasets would have picked, and what does not tuning cost?

    python -m benchmarks.lodo_similar [--datasets ml-100k,ml-1m-half,online-retail,amazon-gift-cards]
                                      [--seeds 42,7,123]

A similar-items default has one job: clear the bar on data nobody tuned on, whatever recipe trained the towers.
The bar (issue 17) is precision@10 above the best peer's with a share of rarely seen items (fewer than 5 training
interactions) no higher than the truth's own. So for every P4 dataset this fits both recipes a user gets
(configs/default.yaml's model, `hybridrec-default`, and the similar task's recipe, `hybridrec fit --task similar`,
`hybridrec-task`) with every model seed of --seeds, on the P4 training rows; then every candidate of GRID (the
co-occurrence term's similar weight, shrink and user_discount, model.similar_evidence_share) answers the P4 queries
from each fit. The candidates change only query-time parts and the co-occurrence term, which is refitted in place
from the term's own user histories: the towers do not depend on them, so no refit is needed.

A candidate's margin on a fit is its precision@10 over the best peer's (from the latest P4 rows of
results/results.jsonl). The rule that picks a candidate from some datasets: among the candidates whose rare share is
no higher than the truth's on every fit of those datasets, the one whose worst margin over those fits is highest
(ties: the best mean margin). Worst, not mean: one small catalogue's seed-to-seed spread (Gift Cards, 145 queries:
a slot is 0.0007) is larger than the candidates' differences, and a default that clears the bar on average but not
on the next seed does not clear it. The shipped default is the rule over every dataset; for each dataset, the rule
over the OTHER datasets is what it would have got (leave-one-dataset-out); the per-dataset best (best mean precision
on that dataset's own test truth: an upper bound, not a result) stands beside it.

Appends the table, with the command, to benchmarks/results/lodo-similar.md.
"""

from __future__ import annotations

import argparse
import itertools
import json
import shlex
import sys
import time
from dataclasses import dataclass

import numpy as np
from scipy import sparse

from benchmarks import data
from benchmarks.adapters.hybrid import HybridRec
from benchmarks.protocols import K, context, rare_share
from hybridrec.evaluation.metrics import precision_at_k
from hybridrec.recipes import default_terms
from hybridrec.scoring.cooccurrence import CooccurrenceParams, cooccurrence_neighbours

OUT = data.ROOT / "benchmarks" / "results" / "lodo-similar.md"
RESULTS = data.ROOT / "benchmarks" / "results" / "results.jsonl"
DATASETS = ("ml-100k", "ml-1m-half", "online-retail", "amazon-gift-cards")
RECIPES = ("hybridrec-default", "hybridrec-task")
SEEDS = (data.SEED, 7, 123)
# shrink 30 and weight 0.5 lost everywhere in the 2026-12-03 runs, evidence share 0.8 on 12-03 19:41
# (lodo-similar.md): not searched again
WEIGHTS, SHRINKS, DISCOUNTS, EVIDENCE = (0.75, 0.9), (100.0,), (0.3, 0.5, 0.7), (0.1, 0.2, 0.3, 0.4)


@dataclass(frozen=True)
class Candidate:
    weight: float  # the co-occurrence term's similar_weight
    shrink: float  # its shrink
    discount: float  # its user_discount
    evidence: float  # model.similar_evidence_share

    def label(self) -> str:
        return (
            f"weight {self.weight:g}, shrink {self.shrink:g}, discount {self.discount:g}, "
            f"evidence share {self.evidence:g}"
        )


GRID = [Candidate(*c) for c in itertools.product(WEIGHTS, SHRINKS, DISCOUNTS, EVIDENCE)]


@dataclass(frozen=True)
class Score:
    precision: float
    rare: float


@dataclass
class DatasetScores:
    """Every candidate's scores on one dataset, one entry per fit (recipe x seed), and the truth's rare share."""

    fits: dict[Candidate, list[Score]]
    truth_rare: float

    def margins(self, c: Candidate, peer: float) -> list[float]:
        return [s.precision / peer for s in self.fits[c]]

    def rare_ok(self, c: Candidate) -> bool:
        return all(s.rare <= self.truth_rare for s in self.fits[c])

    def cell(self, c: Candidate) -> str:
        """mean precision (worst fit's) [highest rare share]"""
        p = [s.precision for s in self.fits[c]]
        return f"{np.mean(p):.4f} ({min(p):.4f}) [{max(s.rare for s in self.fits[c]):.4f}]"


def shipped() -> Candidate:
    """The defaults as the library ships them (a config that names no terms)."""
    from hybridrec.config import ModelConfig

    (term,) = default_terms("hybrid")
    params = CooccurrenceParams()
    return Candidate(term["similar_weight"], params.shrink, params.user_discount, ModelConfig().similar_evidence_share)


def best_peers() -> dict[str, tuple[str, float]]:
    """dataset -> (model, precision@10) of the best non-hybridrec model in the latest full P4 rows."""
    latest: dict[tuple[str, str], float] = {}
    for line in RESULTS.read_text().splitlines():
        row = json.loads(line)
        if row.get("protocol") != "P4" or row.get("quick") or row["model"].startswith("hybridrec"):
            continue
        if "," in row["dataset"]:  # seed or draw variants
            continue
        latest[(row["dataset"], row["model"])] = row["metrics"]["precision@10"]
    out: dict[str, tuple[str, float]] = {}
    for (dataset, model), value in latest.items():
        if dataset not in out or value > out[dataset][1]:
            out[dataset] = (model, value)
    return out


def scores(dataset: str, seeds: list[int]) -> DatasetScores:
    """precision@10 and the rare-item share of every candidate on one dataset, from each recipe and seed's fit."""
    split = data.p4_split(dataset)
    truth = {i: set(t) for i, t in split.truth["precision@10"].items() if t}
    counts = split.train["item_id"].value_counts()
    fits: dict[Candidate, list[Score]] = {c: [] for c in GRID}
    # the co-occurrence rows depend on the training rows only, the same in every fit: made once per setting
    neighbours: dict[tuple[float, float], sparse.csr_matrix] = {}
    for recipe, seed in itertools.product(RECIPES, seeds):
        ctx = context(split, "similar", implicit=dataset == "online-retail", quick=False, seed=seed)
        rec = HybridRec(recipe).fit(split.train, ctx.dataset.items, ctx).rec_
        term = rec.term("cooccurrence")
        if term is None:
            sys.exit(f"{recipe} names score terms without co-occurrence: nothing to choose")
        history = term.history
        x = sparse.csr_matrix(
            (np.ones(len(history.items), np.float32), history.items, history.indptr),
            shape=(len(rec.users_), len(rec.items_)),
        )
        for shrink, discount in itertools.product(SHRINKS, DISCOUNTS):
            if (shrink, discount) not in neighbours:
                neighbours[shrink, discount] = cooccurrence_neighbours(x, term.params.neighbours, shrink, discount)
            term.neighbours = neighbours[shrink, discount]
            for c in (c for c in GRID if (c.shrink, c.discount) == (shrink, discount)):
                term.params.similar_weight = c.weight
                rec.config.model.similar_evidence, rec.config.model.similar_evidence_share = None, c.evidence
                lists = {q: rec.similar_items(q, K)[0] for q in truth}
                fits[c].append(Score(precision_at_k(lists, truth, K), rare_share(lists, counts)))
        print(f"  {dataset}: {recipe}, seed {seed} done", file=sys.stderr, flush=True)
    return DatasetScores(fits, rare_share(truth, counts))


Table = dict[str, DatasetScores]
Peers = dict[str, tuple[str, float]]


def margins(table: Table, peers: Peers, c: Candidate, datasets: list[str]) -> list[float]:
    """`c`'s precision over the best peer's on every fit of `datasets`."""
    return [m for d in datasets for m in table[d].margins(c, peers[d][1])]


def choose(table: Table, peers: Peers, datasets: list[str], candidates=GRID) -> Candidate:
    """The module docstring's rule over `datasets`: rare share within the truth's on every fit, then the best worst
    margin, then the best mean margin (no candidate within the truth's share everywhere: every candidate competes)."""
    pool = [c for c in candidates if all(table[d].rare_ok(c) for d in datasets)] or list(candidates)

    def rank(c: Candidate) -> tuple[float, float]:
        fits = margins(table, peers, c, datasets)
        return min(fits), float(np.mean(fits))

    return max(pool, key=rank)


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.lodo_similar", description=__doc__)
    p.add_argument("--datasets", default=",".join(DATASETS))
    p.add_argument("--seeds", default=",".join(map(str, SEEDS)), help="model seeds each recipe is fitted with")
    args = p.parse_args(argv)
    datasets = args.datasets.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    peers = best_peers()
    missing = [d for d in datasets if d not in peers]
    if missing:
        sys.exit(f"no peer rows in results.jsonl for {missing}: run `python -m benchmarks.run --protocol P4` first")
    t0 = time.perf_counter()
    table = {d: scores(d, seeds) for d in datasets}

    def worst(c: Candidate, ds: list[str]) -> float:
        return min(margins(table, peers, c, ds))

    def mean(c: Candidate, ds: list[str]) -> float:
        return float(np.mean(margins(table, peers, c, ds)))

    default = shipped()
    fits = f"{len(RECIPES)} recipes ({', '.join(RECIPES)}) x {len(seeds)} model seeds ({', '.join(map(str, seeds))})"
    lines = [
        f"## `python -m benchmarks.lodo_similar {shlex.join(argv)}` ({time.strftime('%Y-%m-%d %H:%M')}, "
        f"{time.perf_counter() - t0:.0f} s)",
        "",
        f"precision@10 on each dataset's P4 truth over {fits}: the mean over those fits, in brackets the worst fit's, "
        "in square brackets the highest share of the lists taken by items with fewer than 5 training interactions "
        "(the truth's own share in the last column). The rule (module docstring): within the truth's rare share on "
        "every fit, the best worst margin over the best peer. LODO: the rule over the other datasets. Per-dataset "
        "best: the best mean precision on that dataset's own test truth (an upper bound, what tuning per dataset "
        "would buy).",
        "",
        "| dataset | best peer | shipped default | LODO choice | LODO | per-dataset best | truth rare share |",
        "|---|---|---|---|---|---|---|",
    ]
    for d in datasets:
        lodo = choose(table, peers, [o for o in datasets if o != d]) if len(datasets) > 1 else default
        best = max(GRID, key=lambda c: mean(c, [d]))
        lines.append(
            f"| {d} | {peers[d][0]} {peers[d][1]:.4f} | {table[d].cell(default)} | {lodo.label()} | "
            f"{table[d].cell(lodo)} | {table[d].cell(best)} ({best.label()}) | {table[d].truth_rare:.4f} |"
        )
    overall = choose(table, peers, datasets)
    lines += [
        "",
        f"Shipped default: {default.label()}. The rule over every dataset: {overall.label()} (worst margin "
        f"{worst(overall, datasets):.4f}, mean {mean(overall, datasets):.4f}; shipped: worst "
        f"{worst(default, datasets):.4f}, mean {mean(default, datasets):.4f}). Every candidate, best first by the "
        "rule:",
        "",
        "| candidate | " + " | ".join(datasets) + " | rare share within the truth's | worst margin | mean margin |",
        "|---|" + "---|" * (len(datasets) + 3),
    ]

    def rank(c: Candidate) -> tuple[bool, float, float]:
        return (all(table[d].rare_ok(c) for d in datasets), worst(c, datasets), mean(c, datasets))

    for c in sorted(GRID, key=rank, reverse=True):
        cells = " | ".join(table[d].cell(c) for d in datasets)
        within = "yes" if rank(c)[0] else "no"
        lines.append(f"| {c.label()} | {cells} | {within} | {worst(c, datasets):.4f} | {mean(c, datasets):.4f} |")
    lines.append("")
    with OUT.open("a") as fh:
        fh.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main(sys.argv[1:])
