"""Adapters for the peer libraries (installed by the `bench` extra): Surprise, implicit, LightFM."""

from __future__ import annotations

import numpy as np
from scipy import sparse

from benchmarks.adapters.base import SGD_THREADS, THREADS, MatrixModel, Model, cosine_rows


class SurpriseModel(Model):
    """scikit-surprise rating predictors with their library defaults (the settings of Surprise's own table)."""

    tasks = frozenset({"rating"})
    ALGOS = {
        "svd": ("SVD", {}),
        "svdpp": ("SVDpp", {"cache_ratings": True}),
        "baseline": ("BaselineOnly", {}),
        "knnbaseline": ("KNNBaseline", {"k": 40, "sim_options": {"name": "pearson_baseline", "user_based": False}}),
    }

    def __init__(self, algo: str):
        cls, params = self.ALGOS[algo]
        super().__init__(algo=cls, **params)
        self.name = f"surprise-{algo}"

    def fit(self, train, items, ctx):
        import surprise

        cls = getattr(surprise, self.params["algo"])
        kwargs = {k: v for k, v in self.params.items() if k != "algo"}
        if self.params["algo"] in ("SVD", "SVDpp"):
            kwargs["random_state"] = ctx.seed
        if self.params["algo"] in ("BaselineOnly", "KNNBaseline"):
            kwargs["verbose"] = False
        data = surprise.Dataset.load_from_df(
            train[["user_id", "item_id", "rating"]].astype({"rating": float}), surprise.Reader(rating_scale=(1, 5))
        )
        self.algo_ = cls(**kwargs).fit(data.build_full_trainset())
        return self

    def predict(self, user_ids, item_ids):
        est = self.algo_.predict
        return np.fromiter((est(u, i).est for u, i in zip(user_ids, item_ids, strict=True)), np.float64)


class ImplicitALS(MatrixModel):
    """implicit's AlternatingLeastSquares on the binary matrix; (regularization, alpha) chosen on validation."""

    name = "implicit-als"
    tasks = frozenset({"ranking", "similar"})
    GRID = ((0.01, 1.0), (0.01, 10.0), (0.1, 10.0), (0.1, 40.0))

    def __init__(self, factors: int = 64, iterations: int = 15):
        super().__init__(factors=factors, iterations=iterations)

    def _fit_one(self, reg: float, alpha: float, seed: int):
        from implicit.cpu.als import AlternatingLeastSquares
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1, "blas"):  # implicit's advice: its own threads, single-threaded BLAS
            m = AlternatingLeastSquares(
                factors=self.params["factors"],
                regularization=reg,
                alpha=alpha,
                iterations=self.params["iterations"],
                random_state=seed,
                num_threads=THREADS,
            )
            m.fit(self.X_, show_progress=False)
        return m

    def fit(self, train, items, ctx):
        self._index(train, items, ctx)
        grid = ((0.1, 10.0),) if ctx.quick else self.GRID
        best = None
        for reg, alpha in grid:
            m = self._fit_one(reg, alpha, ctx.seed)
            self.U_, self.V_ = np.asarray(m.user_factors), np.asarray(m.item_factors)
            ndcg = self.validation_ndcg(ctx)
            if best is None or np.nan_to_num(ndcg, nan=-1) > np.nan_to_num(best[0], nan=-1):
                best = (ndcg, reg, alpha, self.U_, self.V_)
        self.val_ndcg_, reg, alpha, self.U_, self.V_ = best
        self.params.update(regularization=reg, alpha=alpha)
        self.Vn_ = cosine_rows(self.V_)
        return self

    def _score_rows(self, rows, cols):
        return self.U_[rows] @ self.V_[cols].T

    def similar(self, item_id, k):
        return self._similar_from(self.Vn_ @ self.Vn_[self.item_row_[item_id]], item_id, k)


class ImplicitBPR(MatrixModel):
    """implicit's BayesianPersonalizedRanking (its item factors carry the item bias as an extra column)."""

    name = "implicit-bpr"
    tasks = frozenset({"ranking"})

    def __init__(self, factors: int = 64, learning_rate: float = 0.01, regularization: float = 0.01, iterations=100):
        super().__init__(
            factors=factors, learning_rate=learning_rate, regularization=regularization, iterations=iterations
        )

    def fit(self, train, items, ctx):
        from implicit.cpu.bpr import BayesianPersonalizedRanking

        self._index(train, items, ctx)
        p = self.params
        m = BayesianPersonalizedRanking(
            factors=p["factors"],
            learning_rate=p["learning_rate"],
            regularization=p["regularization"],
            iterations=p["iterations"] // (4 if ctx.quick else 1),
            random_state=ctx.seed,
            num_threads=SGD_THREADS,
        )
        m.fit(self.X_, show_progress=False)
        self.U_, self.V_ = np.asarray(m.user_factors), np.asarray(m.item_factors)
        return self

    def _score_rows(self, rows, cols):
        return self.U_[rows] @ self.V_[cols].T


class LightFMModel(MatrixModel):
    """LightFM (WARP). features: "identity" (pure CF), "hybrid" (identity features for items with training
    interactions + content tokens, as in LightFM's cold-start docs) or "content" (content tokens only). Rows of
    the item feature matrix are normalised to sum to 1, as lightfm.data.Dataset does."""

    tasks = frozenset({"ranking", "cold", "similar"})

    def __init__(
        self,
        features: str = "identity",
        no_components: int = 64,
        epochs: int = 30,
        lr: float = 0.05,
        alpha: float = 1e-6,
    ):
        super().__init__(
            features=features,
            no_components=no_components,
            epochs=epochs,
            learning_rate=lr,
            item_alpha=alpha,
            user_alpha=alpha,
            loss="warp",
        )
        self.name = "lightfm" if features == "identity" else f"lightfm-{features}"

    def _item_features(self, ctx) -> sparse.csr_matrix | None:
        mode = self.params["features"]
        if mode == "identity":
            return None
        warm = np.asarray(self.X_.sum(0)).ravel() > 0
        tokens = [ctx.feature_tokens.get(i, []) for i in self.item_ids_]
        seen_warm, count = set(), {}
        for toks, w in zip(tokens, warm, strict=True):
            for t in toks:
                count[t] = count.get(t, 0) + 1
                if w:
                    seen_warm.add(t)
        vocab = {t: j for j, t in enumerate(sorted(t for t in seen_warm if count[t] >= 2))}  # trainable, shared
        rows, cols = [], []
        n_id = 0
        if mode == "hybrid":
            for r in np.flatnonzero(warm):
                rows.append(r)
                cols.append(n_id)
                n_id += 1
        for r, toks in enumerate(tokens):
            for t in toks:
                if t in vocab:
                    rows.append(r)
                    cols.append(n_id + vocab[t])
        f = sparse.csr_matrix(
            (np.ones(len(rows), np.float32), (rows, cols)), shape=(len(self.item_ids_), n_id + len(vocab))
        )
        norm = np.asarray(f.sum(1)).ravel()
        f = sparse.diags(1.0 / np.where(norm > 0, norm, 1.0)).astype(np.float32) @ f
        self.n_features_ = {"identity": n_id, "content": len(vocab)}
        return f.tocsr()

    def fit(self, train, items, ctx):
        from lightfm import LightFM

        self._index(train, items, ctx)
        p = self.params
        self.F_ = self._item_features(ctx)
        m = LightFM(
            no_components=p["no_components"],
            loss=p["loss"],
            learning_rate=p["learning_rate"],
            item_alpha=p["item_alpha"],
            user_alpha=p["user_alpha"],
            random_state=ctx.seed,
        )
        epochs = max(5, p["epochs"] // 3) if ctx.quick else p["epochs"]
        m.fit(self.X_.tocoo(), item_features=self.F_, epochs=epochs, num_threads=SGD_THREADS)
        self.ib_, self.iv_ = m.get_item_representations(self.F_)
        self.ub_, self.uv_ = m.get_user_representations()
        self.ivn_ = cosine_rows(self.iv_)
        return self

    def _score_rows(self, rows, cols):
        return self.ub_[rows, None] + self.ib_[None, cols] + self.uv_[rows] @ self.iv_[cols].T

    def similar(self, item_id, k):
        return self._similar_from(self.ivn_ @ self.ivn_[self.item_row_[item_id]], item_id, k)
