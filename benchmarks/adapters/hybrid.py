"""hybridrec through its public API only: the dataset's config from configs/, a given Split, HybridRecommender."""

from __future__ import annotations

import numpy as np

from benchmarks.adapters.base import Model
from benchmarks.data import source_config

VARIANTS = {"hybridrec": "hybrid", "hybridrec-id": "id-only", "hybridrec-content": "content-only"}
KIND = {"P1": "random", "P2": "leave-last-out", "P3": "cold-items", "P4": "time"}


class HybridRec(Model):
    """`overrides` are config overrides (`train.lr=0.01`) on top of the dataset's config in configs/; --quick caps
    the epochs at 8."""

    tasks = frozenset({"rating", "ranking", "cold", "similar"})

    def __init__(self, name: str = "hybridrec", overrides: tuple[str, ...] = ()):
        super().__init__(variant=VARIANTS[name], overrides=list(overrides))
        self.name = name

    def fit(self, train, items, ctx):
        from hybridrec.config import dump_config
        from hybridrec.data.splits import Split
        from hybridrec.recommender import HybridRecommender

        overrides = [f"model.variant={self.params['variant']}", f"seed={ctx.seed}", *self.params["overrides"]]
        cfg = source_config(ctx.dataset_key, overrides)
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
