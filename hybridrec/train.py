"""Training loop: MSE (explicit) or BPR / in-batch softmax (implicit), ID dropout, early stopping, seeds."""

from __future__ import annotations

import copy
import math
import random
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from hybridrec.causal_history import CausalHistories
from hybridrec.checkpoint import Checkpointer
from hybridrec.config import TrainConfig
from hybridrec.features.pipeline import EntityFeatures
from hybridrec.model.network import HybridNet


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    """Same config + seed -> same weights and metrics on CPU."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


class FeatureTable:
    """An entity's feature arrays as tensors on the training device, sliced by row index."""

    def __init__(self, feats: EntityFeatures, device: torch.device):
        self.text = torch.as_tensor(feats.text, device=device)
        self.numeric = torch.as_tensor(feats.numeric, device=device)
        self.categorical = [torch.as_tensor(c, device=device) for c in feats.categorical]

    def rows(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        return self.text[idx], self.numeric[idx], [c[idx] for c in self.categorical]


@dataclass
class Interactions:
    """Training or validation pairs as row indices (never raw ids) plus the target and the example weight."""

    users: np.ndarray
    items: np.ndarray
    ratings: np.ndarray
    weights: np.ndarray

    def __len__(self) -> int:
        return len(self.users)


@dataclass
class TrainResult:
    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    best_score: float = math.inf
    stopped_early: bool = False
    resumed_from: int = 0  # the epoch a resumed run continued after (0: not resumed)


class Trainer:
    """Fits a HybridNet; items without training interactions always score through content only."""

    def __init__(
        self,
        net: HybridNet,
        item_feats: EntityFeatures,
        user_feats: EntityFeatures,
        item_has_id: np.ndarray,
        cfg: TrainConfig,
        feedback: str,
        id_dropout: float,
        review_slice: slice | None,
        seed: int,
        device: torch.device,
        user_has_id: np.ndarray | None = None,
        history: tuple[int, np.ndarray] | None = None,
        user_id_dropout: float = 0.0,
        item_item_l2: float = 0.0,
        causal: CausalHistories | None = None,
    ):
        self.net = net.to(device)
        self.cfg = cfg
        self.device = device
        self.loss_kind = cfg.loss if cfg.loss != "auto" else ("mse" if feedback == "explicit" else "bpr")
        self.id_dropout = id_dropout
        self.feature_dropout = float(getattr(net, "feature_dropout", 0.0))
        self.review_slice = review_slice
        self.seed = seed
        self.items = FeatureTable(item_feats, device)
        self.users = FeatureTable(user_feats, device)
        self.item_has_id = torch.as_tensor(item_has_id.astype(np.float32), device=device)
        self.n_items = len(item_has_id)
        n_users = self.users.numeric.shape[0]
        mask = np.ones(n_users, bool) if user_has_id is None else user_has_id
        self.user_has_id = torch.as_tensor(mask.astype(np.float32), device=device)
        self.user_id_dropout = user_id_dropout
        self.item_item_l2 = item_item_l2
        self.positive_items = np.flatnonzero(item_has_id)
        # (user categorical slot of the history bag, item row -> its token there or -1): ranking losses hide the
        # target item from its own user's history, or the model learns to copy the history instead of predicting.
        self.history = None
        if history is not None:
            self.history = (history[0], torch.as_tensor(history[1], device=device))
        # model.history_causal: each training row's own history (its user's items before it) replaces the bag
        self.causal = causal.to(device) if causal is not None and history is not None else None

    # -- towers on index batches -------------------------------------------------------------------------
    def item_vectors(self, idx: torch.Tensor, keep: torch.Tensor | None = None):
        keep = self.item_has_id[idx] if keep is None else keep * self.item_has_id[idx]
        text, numeric, cats = self.items.rows(idx)
        if self.review_slice is not None and text.shape[1]:
            # Without its ID an item is treated as cold: cold items have no reviews either.
            text = text.clone()
            text[:, self.review_slice] *= keep.unsqueeze(-1)
        if self.net.training and self.feature_dropout > 0:
            # Hide whole feature groups at random so text alone still places an item (free-text queries,
            # new items with sparse metadata).
            p = self.feature_dropout
            numeric = numeric * (torch.rand(len(idx), 1, device=self.device) >= p).float()
            cats = [c * (torch.rand(len(idx), 1, device=self.device) >= p).long() for c in cats]
        return self.net.items(idx, text, numeric, cats, keep)

    def user_vectors(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None, history_rows: torch.Tensor | None = None
    ):
        """User tower rows; with `targets` (one item row per user row) each target leaves that user's history.
        `history_rows` (one history per user row, model.history_causal) replaces the bag instead."""
        keep = self.user_has_id[idx]
        if self.net.training and 0 < self.user_id_dropout < 1:
            keep = keep * (torch.rand(len(idx), device=self.device) >= self.user_id_dropout).float()
        if history_rows is not None:
            text, numeric, cats = self.users.rows(idx)
            cats[self.history[0]] = history_rows
            return self.net.users(idx, text, numeric, cats, keep)
        if targets is None or self.history is None:
            text, numeric, cats = self.users.rows(idx)
            return self.net.users(idx, text, numeric, cats, keep)
        slot, token = self.history
        users, rows = torch.unique(idx, return_inverse=True)
        text, numeric, cats = self.users.rows(users)
        return self.net.users(users, text, numeric, cats, keep, rows=rows, remove=(slot, token[targets]))

    def item_item_scores(
        self, u_idx: torch.Tensor, targets: torch.Tensor | None = None, history_rows: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The item-item term over the whole catalogue. Without `targets`: one row per distinct user of u_idx and
        the map from u_idx to those rows. With them: one row per u_idx row, its target left out of the history
        (as in user_vectors), and None; with `history_rows`, one row per given history, and None."""
        if history_rows is not None:
            return self.net.item_item.normalise(*self.net.item_item.bag(history_rows)), None
        slot, token = self.history
        users, rows = torch.unique(u_idx, return_inverse=True)
        tokens = self.users.categorical[slot][users]
        sums, counts = self.net.item_item.bag(tokens)
        if targets is None:
            return self.net.item_item.normalise(sums, counts), rows
        target_tokens = token[targets]  # -1 outside the history vocabulary: never a hit
        hit = (tokens[rows] == target_tokens.unsqueeze(-1)).float().sum(1)
        sums = sums[rows] - hit.unsqueeze(-1) * self.net.item_item.weight[target_tokens.clamp(min=0)]
        return self.net.item_item.normalise(sums, counts[rows] - hit), None

    def _item_item_penalty(self) -> torch.Tensor:
        return self.net.item_item.weight.pow(2).sum() * self.item_item_l2

    def _keep_mask(self, n: int) -> torch.Tensor:
        if self.id_dropout <= 0 or not self.net.items.use_id:
            return torch.ones(n, device=self.device)
        return (torch.rand(n, device=self.device) >= self.id_dropout).float()

    # -- losses --------------------------------------------------------------------------------------------
    def _towers(
        self,
        u_idx: torch.Tensor,
        i_idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        history_rows: torch.Tensor | None = None,
    ):
        """Tower outputs computed once per distinct user and item of the batch, then gathered per row.

        ID and feature dropout are drawn per distinct item and batch. With `targets` and a history bag, each user
        row is its distinct user's bag minus that row's target item, or its own `history_rows` (see user_vectors).
        """
        items, i_inv = torch.unique(i_idx, return_inverse=True)
        v, b_i = self.item_vectors(items, self._keep_mask(len(items)))
        if targets is not None and self.history is not None:
            u, b_u = self.user_vectors(u_idx, targets, history_rows)
            return u, b_u, v[i_inv], b_i[i_inv]
        users, u_inv = torch.unique(u_idx, return_inverse=True)
        u, b_u = self.user_vectors(users)
        return u[u_inv], b_u[u_inv], v[i_inv], b_i[i_inv]

    def _batch_loss(
        self, u_idx, i_idx, rating, weight, rng: np.random.Generator, rows: torch.Tensor | None = None
    ) -> torch.Tensor:
        """`rows`: the batch's training row numbers, which pick each row's own history under history_causal."""
        n = len(i_idx)
        history_rows = None
        if self.causal is not None and rows is not None and self.loss_kind != "mse":
            history_rows = self.causal.rows(rows)
        if self.loss_kind == "bpr":
            n_neg = max(1, self.cfg.negatives)
            neg = torch.as_tensor(rng.choice(self.positive_items, size=n * n_neg), device=self.device)
            u, b_u, v_all, b_all = self._towers(u_idx, torch.cat([i_idx, neg]), i_idx, history_rows)
            v, b_i = v_all[:n], b_all[:n]
        else:
            u, b_u, v, b_i = self._towers(u_idx, i_idx, None if self.loss_kind == "mse" else i_idx, history_rows)
        reg = (u.pow(2).sum(-1) + v.pow(2).sum(-1) + b_u.pow(2) + b_i.pow(2)).mean()
        if self.loss_kind == "mse":
            pred = self.net.head(u, b_u, v, b_i)
            return (weight * (pred - rating).pow(2)).sum() / weight.sum() + self.cfg.l2 * reg
        if self.loss_kind == "bpr":
            pos = self.net.head(u, b_u, v, b_i)
            u_rep, bu_rep = u.repeat_interleave(n_neg, 0), b_u.repeat_interleave(n_neg, 0)
            negs = self.net.head(u_rep, bu_rep, v_all[n:], b_all[n:]).view(-1, n_neg)
            loss = -F.logsigmoid(pos.unsqueeze(-1) - negs).mean(-1)
            return (weight * loss).sum() / weight.sum() + self.cfg.l2 * reg
        if self.loss_kind == "sampled-softmax":
            pairwise, penalty = None, 0.0
            if self.net.item_item is not None:
                pairwise = self.item_item_scores(u_idx, i_idx, history_rows)[0]
                penalty = self._item_item_penalty()
            loss = self._sampled_softmax(u, v, b_i, i_idx, weight, rng, pairwise)
            return loss + self.cfg.l2 * reg + penalty
        # softmax: every other item in the batch is a negative (sampled softmax with in-batch negatives)
        logits = u @ v.T + b_i.unsqueeze(0)
        same = i_idx.unsqueeze(0) == i_idx.unsqueeze(1)
        logits = logits.masked_fill(same & ~torch.eye(n, dtype=torch.bool, device=self.device), -1e9)
        loss = F.cross_entropy(logits, torch.arange(n, device=self.device), reduction="none")
        return (weight * loss).sum() / weight.sum() + self.cfg.l2 * reg

    def _sampled_softmax(
        self, u, v, b_i, i_idx, weight, rng: np.random.Generator, pairwise: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Softmax over the positive and `negatives` items drawn uniformly (once per batch) from the trained
        catalogue; with negatives >= the catalogue it is the exact full softmax. Uniform draws need no logQ
        correction, unlike in-batch negatives, which over-penalise popular items. `pairwise` (rows x catalogue)
        adds the item-item term."""
        pool = self.positive_items
        cand = pool if self.cfg.negatives >= len(pool) else rng.choice(pool, size=self.cfg.negatives, replace=False)
        cand = torch.as_tensor(cand, device=self.device)
        v_c, b_c = self.item_vectors(cand, self._keep_mask(len(cand)))
        neg = u @ v_c.T + b_c.unsqueeze(0)
        pos = (u * v).sum(-1) + b_i
        if pairwise is not None:
            neg = neg + pairwise[:, cand]
            pos = pos + pairwise.gather(1, i_idx.unsqueeze(1)).squeeze(1)
        neg = neg.masked_fill(cand.unsqueeze(0) == i_idx.unsqueeze(1), -1e9)
        logits = torch.cat([pos.unsqueeze(1), neg], dim=1)
        loss = F.cross_entropy(logits, torch.zeros(len(u), dtype=torch.long, device=self.device), reduction="none")
        return (weight * loss).sum() / weight.sum()

    # -- validation ------------------------------------------------------------------------------------------
    @torch.no_grad()
    def validation_score(self, val: Interactions) -> float:
        """Lower is better: RMSE for ratings, 1 - sampled AUC (100 fixed negatives per pair) for implicit data."""
        self.net.eval()
        try:
            v_all, b_all = (torch.as_tensor(a, device=self.device) for a in self.all_item_vectors())
            u_idx = torch.as_tensor(val.users, device=self.device)
            i_idx = torch.as_tensor(val.items, device=self.device)
            u, b_u = self.user_vectors(u_idx)
            pred = self.net.head(u, b_u, v_all[i_idx], b_all[i_idx])
            pairwise = self.item_item_scores(u_idx) if self.net.item_item is not None else None
            if pairwise is not None:
                pred = pred + pairwise[0][pairwise[1], i_idx]
            if self.loss_kind == "mse":
                target = torch.as_tensor(np.array(val.ratings), device=self.device)
                return float(torch.sqrt(((pred - target) ** 2).mean()))
            rng = np.random.default_rng(self.seed + 1)
            neg = torch.as_tensor(rng.choice(self._validation_pool(val), size=(len(val), 100)), device=self.device)
            negs = self.net.head(
                u.repeat_interleave(100, 0),
                b_u.repeat_interleave(100, 0),
                v_all[neg.reshape(-1)],
                b_all[neg.reshape(-1)],
            ).view(-1, 100)
            if pairwise is not None:
                negs = negs + pairwise[0][pairwise[1].unsqueeze(-1), neg]
            auc = ((pred.unsqueeze(-1) > negs).float() + 0.5 * (pred.unsqueeze(-1) == negs).float()).mean()
            return float(1.0 - auc)
        finally:
            self.net.train()

    def _validation_pool(self, val: Interactions) -> np.ndarray:
        """Items validation negatives are drawn from: the trained catalogue, or, when most validation items are
        cold (a cold-start split), the cold validation items, so early stopping measures ranking among cold items
        rather than cold against warm."""
        cold = ~self.item_has_id.cpu().numpy().astype(bool)[val.items]
        if cold.mean() > 0.5:
            pool = np.unique(val.items[cold])
            if len(pool) >= 2:
                return pool
        return self.positive_items

    # -- loop ---------------------------------------------------------------------------------------------------
    def fit(
        self, train: Interactions, val: Interactions | None, progress=None, checkpoint: Checkpointer | None = None
    ) -> TrainResult:
        """Adam over shuffled mini-batches; keeps the weights of the best validation epoch (with
        `train.early_stopping` off: runs every epoch and keeps the last).

        With a checkpointer, state is saved after every epoch and a matching checkpoint is resumed from, giving
        the same result as an uninterrupted run.
        """
        seed_everything(self.seed)
        rng = np.random.default_rng(self.seed)
        opt = torch.optim.Adam(self.net.parameters(), lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)
        tensors = [
            torch.as_tensor(np.array(a), device=self.device)
            for a in (train.users, train.items, train.ratings.astype(np.float32), train.weights.astype(np.float32))
        ]
        result, best_state, bad_epochs, first_epoch = TrainResult(), None, 0, 1
        restored = checkpoint.load(self.net, opt, rng) if checkpoint is not None else None
        if restored is not None:
            best_state, bad_epochs, first_epoch = restored["best_state"], restored["bad_epochs"], restored["epoch"] + 1
            result.history, result.best_epoch = restored["history"], restored["best_epoch"]
            result.best_score, result.resumed_from = restored["best_score"], restored["epoch"]
            result.stopped_early = restored["stopped_early"]
        self.net.train()
        for epoch in range(first_epoch, self.cfg.epochs + 1):
            if result.stopped_early:
                break
            order = torch.as_tensor(rng.permutation(len(train)), device=self.device)
            total = 0.0
            for start in range(0, len(train), self.cfg.batch_size):
                batch = order[start : start + self.cfg.batch_size]
                loss = self._batch_loss(*(t[batch] for t in tensors), rng, rows=batch)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(batch)
            row = {"epoch": epoch, "train_loss": total / len(train)}
            score = self.validation_score(val) if val is not None and len(val) else total / len(train)
            row["val"] = score
            result.history.append(row)
            if progress is not None:
                progress(row)
            if not self.cfg.early_stopping:  # the last epoch (or the mean of the last few) is the model
                result.best_score, result.best_epoch = score, epoch
                best_state = self._running_average(best_state, epoch)
            elif score < result.best_score - 1e-5:
                result.best_score, result.best_epoch, bad_epochs = score, epoch, 0
                best_state = copy.deepcopy(self.net.state_dict())
            else:
                bad_epochs += 1
                result.stopped_early = bad_epochs >= self.cfg.patience
            if checkpoint is not None:
                checkpoint.save(
                    self.net,
                    opt,
                    best_state,
                    rng,
                    epoch,
                    {
                        "bad_epochs": bad_epochs,
                        "history": result.history,
                        "best_epoch": result.best_epoch,
                        "best_score": result.best_score,
                        "stopped_early": result.stopped_early,
                    },
                )
        if best_state is not None:
            self.net.load_state_dict(best_state)
            if not self.cfg.early_stopping and val is not None and len(val):  # the mean was never scored: score it
                result.best_score = self.validation_score(val)
        self.net.eval()
        return result

    def _running_average(self, mean: dict | None, epoch: int) -> dict | None:
        """The mean of the weights after each epoch of the last `average_last` (None before the window opens);
        it travels in the checkpoint as the kept state, so a resumed run averages the same epochs."""
        window = min(self.cfg.average_last, self.cfg.epochs)  # a capped epoch count (--quick) caps the window
        seen = epoch - (self.cfg.epochs - window)
        if window <= 0 or seen < 1:
            return None
        now = self.net.state_dict()
        if seen == 1:
            return {k: v.detach().clone() for k, v in now.items()}
        if mean is None:  # a resumed run must bring back the mean of the epochs before it
            raise RuntimeError(f"weight average of epoch {epoch}: the earlier epochs' mean is missing")
        for k, v in now.items():
            if v.is_floating_point():  # a resumed mean comes back from the checkpoint on the CPU
                prev = mean[k].to(v.device)
                mean[k] = prev + (v.detach() - prev) / seen
            else:
                mean[k] = v.detach().clone()
        return mean

    @torch.no_grad()
    def all_item_vectors(self, batch: int = 8192) -> tuple[np.ndarray, np.ndarray]:
        self.net.eval()
        out_v, out_b = [], []
        for start in range(0, self.n_items, batch):
            idx = torch.arange(start, min(start + batch, self.n_items), device=self.device)
            v, b = self.item_vectors(idx)
            out_v.append(v.cpu().numpy())
            out_b.append(b.cpu().numpy())
        return np.concatenate(out_v).astype(np.float32), np.concatenate(out_b).astype(np.float32)

    @torch.no_grad()
    def history_query_vectors(self) -> np.ndarray | None:
        """Per item row, the user-tower vector of an anonymous user whose history is only that item (zero rows
        for items outside the history vocabulary); None without a history bag."""
        if self.history is None:
            return None
        self.net.eval()
        slot, token = self.history
        n = self.n_items
        cats = [torch.zeros((n, 1), dtype=torch.long, device=self.device) for _ in self.users.categorical]
        cats[slot] = token.clamp(min=0).view(-1, 1)
        text = torch.zeros((n, self.users.text.shape[1]), device=self.device)
        numeric = torch.zeros((n, self.users.numeric.shape[1]), device=self.device)
        ids = torch.zeros(n, dtype=torch.long, device=self.device)
        q, _ = self.net.users(ids, text, numeric, cats, torch.zeros(n, device=self.device))
        q = q * (token >= 0).float().unsqueeze(-1)
        return q.cpu().numpy().astype(np.float32)

    @torch.no_grad()
    def item_item_export(self) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """The item-item term in item-row space for serving without torch: W as items x items (zero rows for items
        outside the history vocabulary) and every user's history as item rows (CSR indptr, items)."""
        if self.net.item_item is None:
            return None
        slot, token = self.history
        weight = self.net.item_item.weight.detach().cpu().numpy()
        token = token.cpu().numpy()
        in_vocab = np.flatnonzero(token >= 0)
        matrix = np.zeros((self.n_items, weight.shape[1]), np.float32)
        matrix[in_vocab] = weight[token[in_vocab]]
        item_of_token = np.full(weight.shape[0], -1, np.int64)
        item_of_token[token[in_vocab]] = in_vocab
        tokens = self.users.categorical[slot].cpu().numpy()
        rows = item_of_token[tokens]
        rows[tokens <= 0] = -1
        present = rows >= 0
        indptr = np.concatenate([[0], np.cumsum(present.sum(1))]).astype(np.int64)
        return matrix, indptr, rows[present].astype(np.int64)

    @torch.no_grad()
    def all_user_vectors(self, n_users: int, batch: int = 8192) -> tuple[np.ndarray, np.ndarray]:
        self.net.eval()
        out_u, out_b = [], []
        for start in range(0, n_users, batch):
            idx = torch.arange(start, min(start + batch, n_users), device=self.device)
            u, b = self.user_vectors(idx)
            out_u.append(u.cpu().numpy())
            out_b.append(b.cpu().numpy())
        return np.concatenate(out_u).astype(np.float32), np.concatenate(out_b).astype(np.float32)
