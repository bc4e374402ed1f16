"""hybridrec through its public API only: a recipe from benchmarks/configs/ or configs/, HybridRecommender."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from benchmarks.adapters.base import Model
from benchmarks.data import ROOT, SOURCES
from hybridrec.config import load_config

VARIANTS = {
    "hybridrec": "hybrid",
    "hybridrec-id": "id-only",
    "hybridrec-content": "content-only",
    "hybridrec-default": "hybrid",  # configs/default.yaml's model, whatever the dataset: what a new user gets
    "hybridrec-recipe": "hybrid",  # the dataset's configs/ recipe, never a protocol recipe of benchmarks/configs
    "hybridrec-task": "hybrid",  # the protocol's task recipe (hybridrec/recipes.py) on the dataset's data
}
# the task recipe (`hybridrec fit --task`) each protocol's task gets
TASK_RECIPE = {"P1": "rating", "P2": "topn", "P3": "cold", "P4": "similar"}
DEFAULT_RECIPE = ROOT / "configs" / "default.yaml"
# A protocol recipe in benchmarks/configs/ (movielens-100k-cold.yaml for P3) wins over the dataset's configs/ file.
RECIPES = ROOT / "benchmarks" / "configs"
SUFFIX = {"P2": "-topn", "P3": "-cold", "P4": "-similar"}
# score terms a variant leaves out: the content ridge is content; EASE is "bought with it", i.e. behaviour
DROPPED_TERMS = {"hybrid": (), "id-only": ("content_ridge",), "content-only": ("ease", "cooccurrence")}


def config_path(protocol: str, dataset_key: str, name: str = "hybridrec") -> Path:
    if name == "hybridrec-default":
        return DEFAULT_RECIPE
    base = ROOT / SOURCES[dataset_key].config
    if name in ("hybridrec-recipe", "hybridrec-task"):
        return base
    recipe = RECIPES / f"{base.stem}{SUFFIX.get(protocol, '')}.yaml"
    return recipe if protocol in SUFFIX and recipe.is_file() else base


def variant_overrides(path: Path, variant: str, overrides: list[str]) -> list[str]:
    """The overrides that make the recipe at `path` (with the user's `overrides`) a `variant` model: its score
    terms without the ones the variant leaves out, and for content-only no "bought with it" share in similar items.
    They are applied in the same load_config as the variant, so the result is validated as the variant."""
    terms = load_config(path, overrides).model.terms
    kept = [t for t in terms if t["type"] not in DROPPED_TERMS[variant]]
    extra = [f"model.variant={variant}"]
    if len(kept) != len(terms):
        extra.append(f"model.terms={json.dumps(kept)}")  # JSON is YAML: the override parses back to the list
    if variant == "content-only":
        extra.append("model.user_history.similar_weight=0")
    return extra


class HybridRec(Model):
    """`overrides` are config overrides (`train.lr=0.01`) on top of the config from `config_path`; --quick caps the
    epochs at 8."""

    tasks = frozenset({"rating", "ranking", "cold", "similar"})

    def __init__(self, name: str = "hybridrec", overrides: tuple[str, ...] = ()):
        super().__init__(variant=VARIANTS[name], overrides=list(overrides))
        self.name = name

    def fit(self, train, items, ctx):
        from hybridrec.config import dump_config
        from hybridrec.recommender import HybridRecommender

        path = config_path(ctx.protocol, ctx.dataset_key, self.name)
        overrides = [f"seed={ctx.seed}", *self.params["overrides"]]
        task = TASK_RECIPE[ctx.protocol] if self.name == "hybridrec-task" else None
        if task is None:
            overrides += variant_overrides(path, self.params["variant"], overrides)
        cfg = load_config(path, overrides, task=task)  # model/train/features only: the data comes from the splits
        if ctx.quick:
            cfg.train.epochs = min(cfg.train.epochs, 8)
        # cold items are the catalogue's items without training rows: the split files already leave them out
        self.rec_ = HybridRecommender(cfg).fit(ctx.dataset, train=train, validation=ctx.validation)
        full = dump_config(cfg)
        self.params["config_file"] = str(path.relative_to(ROOT)) + (f" --task {task}" if task else "")
        self.params["config"] = {k: full[k] for k in ("model", "train", "features")}
        self.params["best_epoch"] = self.rec_.train_result_.best_epoch
        return self

    def predict(self, user_ids, item_ids):
        return np.asarray(self.rec_.predict(list(user_ids), list(item_ids)), dtype=np.float64)

    def score(self, user_ids, item_ids):
        rec = self.rec_
        return rec.score_matrix(rec.users_.indices(list(user_ids)), rec.items_.indices(list(item_ids)))

    def similar(self, item_id, k):
        return list(self.rec_.similar_items(item_id, k)[0])
