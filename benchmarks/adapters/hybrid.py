"""hybridrec through its public API only: the dataset's config from configs/, a given Split, HybridRecommender."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmarks.adapters.base import Model
from benchmarks.data import ROOT, SOURCES
from hybridrec.config import load_config

VARIANTS = {"hybridrec": "hybrid", "hybridrec-id": "id-only", "hybridrec-content": "content-only"}
KIND = {"P1": "random", "P2": "leave-last-out", "P3": "cold-items", "P4": "time"}
# A protocol-specific config beside the dataset's (configs/movielens-100k-cold.yaml for P3) wins when it exists.
SUFFIX = {"P2": "-topn", "P3": "-cold", "P4": "-similar"}


def config_path(protocol: str, dataset_key: str) -> Path:
    base = ROOT / SOURCES[dataset_key].config
    special = base.with_name(base.stem + SUFFIX.get(protocol, "") + base.suffix)
    return special if protocol in SUFFIX and special.is_file() else base


class HybridRec(Model):
    """`overrides` are config overrides (`train.lr=0.01`) on top of the config from `config_path`; --quick caps the
    epochs at 8."""

    tasks = frozenset({"rating", "ranking", "cold", "similar"})

    def __init__(self, name: str = "hybridrec", overrides: tuple[str, ...] = ()):
        super().__init__(variant=VARIANTS[name], overrides=list(overrides))
        self.name = name

    def fit(self, train, items, ctx):
        from hybridrec.config import dump_config
        from hybridrec.data.splits import Split
        from hybridrec.recommender import HybridRecommender

        overrides = [f"model.variant={self.params['variant']}", f"seed={ctx.seed}", *self.params["overrides"]]
        if self.params["variant"] == "id-only":  # the content ridge is content: not part of the id-only variant
            overrides.append("model.content_ridge_weight=0")
        if self.params["variant"] == "content-only":  # and "bought with it" is behaviour: not part of content-only
            overrides += ["model.similar_history_weight=0", "model.similar_closed_form_weight=0"]
        path = config_path(ctx.protocol, ctx.dataset_key)
        cfg = load_config(path, overrides)  # model/train/features only: the data comes from the split files
        if ctx.quick:
            cfg.train.epochs = min(cfg.train.epochs, 8)
        dataset = ctx.dataset
        split = Split(
            train=train,
            validation=ctx.validation,
            test=dataset.interactions.iloc[:0],
            cold_items=list(ctx.cold_items),
            kind=KIND[ctx.protocol],
        )
        self.rec_ = HybridRecommender(cfg).fit(dataset, split=split)
        full = dump_config(cfg)
        self.params["config_file"] = str(path.relative_to(ROOT))
        self.params["config"] = {k: full[k] for k in ("model", "train", "features")}
        self.params["best_epoch"] = self.rec_.train_result_.best_epoch
        return self

    def predict(self, user_ids, item_ids):
        return np.asarray(self.rec_.predict(list(user_ids), list(item_ids)), dtype=np.float64)

    def score(self, user_ids, item_ids):
        from hybridrec.protocols import score_matrix

        rec = self.rec_
        return score_matrix(rec, rec.users_.indices(list(user_ids)), rec.items_.indices(list(item_ids)))

    def similar(self, item_id, k):
        return list(self.rec_.similar_items(item_id, k)[0])
