"""Model registry: name -> factory. Every factory returns a fresh, unfitted adapter."""

from __future__ import annotations

from collections.abc import Callable

from benchmarks.adapters.base import Context, Model
from benchmarks.adapters.baselines import EASE, ItemKNN, Popularity, TfidfKNN
from benchmarks.adapters.hybrid import VARIANTS, HybridRec
from benchmarks.adapters.peers import ImplicitALS, ImplicitBPR, LightFMModel, SurpriseModel

EASE_SIMILAR_L2 = 10000.0


def registry(hybridrec_overrides: tuple[str, ...] = ()) -> dict[str, Callable[[], Model]]:
    models: dict[str, Callable[[], Model]] = {
        name: (lambda n=name: HybridRec(n, hybridrec_overrides)) for name in VARIANTS
    }
    models.update({f"surprise-{algo}": (lambda a=algo: SurpriseModel(a)) for algo in SurpriseModel.ALGOS})
    models.update(
        {
            "popularity": Popularity,
            "itemknn": ItemKNN,
            "ease": EASE,
            # EASE with the penalty that gives it the best similar-item precision on the Online Retail P4 tuning
            # split (benchmarks/results/p4_scorers.md, share 1.0 rows): the peer tuned for P4 as hybridrec's
            # closed-form blend is, not for ranking
            "ease-similar": lambda: EASE(lambdas=(EASE_SIMILAR_L2,)),
            "tfidf-knn": TfidfKNN,
            "implicit-als": ImplicitALS,
            "implicit-bpr": ImplicitBPR,
            "lightfm": lambda: LightFMModel("identity"),
            "lightfm-hybrid": lambda: LightFMModel("hybrid"),
            "lightfm-content": lambda: LightFMModel("content"),
        }
    )
    return models


__all__ = ["Context", "Model", "registry"]
