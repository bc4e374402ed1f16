"""What a user gets without tuning: the score terms of a config that names none (`default_terms`), and one recipe
per task (`hybridrec fit --task rating|topn|similar|cold`), the model and training sections for that task whatever
the dataset.

A recipe replaces the config's `model` and `train` sections (keeping where training runs: `train.threads` and
`train.device`); `--set` overrides apply on top. The settings are the ones the per-dataset recipes agreed on, and
each recipe's scores on every benchmark dataset, beside the per-dataset recipes and the best peer, are in
benchmarks/RESULTS.md ("Defaults against per-dataset recipes"); the similar-items defaults were chosen
leave-one-dataset-out (benchmarks/results/lodo-similar.md).
"""

from __future__ import annotations

import copy
from typing import Any

from hybridrec.errors import ConfigError

# where training runs, not what it learns: a task recipe keeps the config's own
MACHINE_KEYS = ("threads", "device")

# explicit ratings: predict the rating (MSE on explicit data, BPR on implicit), the user's recent items in the
# user tower (SVD++-like), the ID half hidden 10% of the time so content carries rarely rated items
RATING: dict[str, dict[str, Any]] = {
    "model": {"variant": "hybrid", "dim": 32, "id_dropout": 0.1, "user_history": {"length": 100}},
    "train": {"loss": "auto", "l2": 0.05, "epochs": 30, "batch_size": 2048},
}

RECIPES: dict[str, dict[str, dict[str, Any]]] = {
    "rating": RATING,
    # top-N: a softmax over the catalogue (shared uniform negatives, all of them on catalogues up to 4,096 items),
    # users as their history (no user IDs), each training interaction seeing only what came before it when the
    # data has times (order auto: goodbooks has none, and a causal bag over file order cost it 0.25 recall@10)
    "topn": {
        "model": {
            "variant": "hybrid",
            "dim": 64,
            "id_dropout": 0.1,
            "user_id_dropout": 1.0,
            "user_history": {"length": 100, "order": "auto", "position_weights": True},
        },
        "train": {
            "loss": "sampled-softmax",
            "negatives": 4096,
            "l2": 0.01,
            "lr": 0.01,
            "epochs": 30,
            "patience": 2,
            "batch_size": 4096,
        },
    },
    # similar items: the rating recipe's towers (trained on whatever the data holds) with the default co-occurrence
    # share and evidence weighting (README: model.terms, model.similar_evidence_share); with_task copies it
    "similar": RATING,
    # cold-start items: items scored from content; IDs hidden half the time in training so the content path
    # learns to stand alone, and a ridge from users' items to content tokens beside the towers
    "cold": {
        "model": {
            "variant": "hybrid",
            "dim": 32,
            "id_dropout": 0.5,
            "terms": [
                {"type": "content_ridge", "l2": 100, "recommend_weight": 0.5},
                {"type": "cooccurrence", "similar_weight": 0.9},
            ],
        },
        "train": {
            "loss": "sampled-softmax",
            "negatives": 8192,
            "batch_size": 1024,
            "epochs": 20,
            "early_stopping": False,
        },
    },
}
TASKS = tuple(RECIPES)


def default_terms(variant: str) -> list[dict[str, Any]]:
    """The score terms a config that names none gets: co-occurrence for similar items ("had together", shrunk for
    rare pairs), so that similar items carry co-consumption whatever the towers were trained on. A content-only
    model learns nothing from behaviour, so it gets none. Weight, shrink, user_discount and similar_evidence_share
    were chosen together over the four P4 datasets, as the setting whose worst margin over the best peer (both
    recipes a user gets, three model seeds) is highest among those that keep rarely seen items within the truth's
    share; leave-one-dataset-out says what that choice costs on data it did not see (benchmarks/lodo_similar.py,
    benchmarks/results/lodo-similar.md)."""
    return [] if variant == "content-only" else [{"type": "cooccurrence", "similar_weight": 0.9}]


def with_task(payload: dict, task: str) -> dict:
    """The config `payload` with its model and train sections replaced by `task`'s recipe (machine keys kept)."""
    if task not in RECIPES:
        raise ConfigError(f"--task {task!r}: choose from {', '.join(TASKS)}")
    out = dict(payload)
    recipe = copy.deepcopy(RECIPES[task])
    given = payload.get("train")
    train: dict = given if isinstance(given, dict) else {}
    recipe["train"].update({k: train[k] for k in MACHINE_KEYS if k in train})
    out.update(recipe)
    return out
