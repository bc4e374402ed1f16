"""Training loop: MSE (explicit) or BPR / in-batch softmax (implicit), ID dropout, early stopping, seeds.

A step costs what its batch touches: the embedding tables give sparse gradients and a row-wise Adam updates only the
rows looked up (`Optimisers`), negatives are drawn on the training device, and the epoch's loss is summed there and
read once per epoch (no host sync per batch)."""

from __future__ import annotations

import copy
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hybridrec.config import TrainConfig
from hybridrec.errors import ConfigError, TrainingError
from hybridrec.features.pipeline import EntityFeatures
from hybridrec.features.text import resolve_precision
from hybridrec.model import distributed, validation
from hybridrec.model.checkpoint import Checkpointer
from hybridrec.model.history import CausalHistories
from hybridrec.model.network import HybridNet
from hybridrec.model.spec import TrainResult
from hybridrec.model.towers import BAG_SPARSE_SHARE, sparse_table


def resolve_device(name: str) -> torch.device:
    """`auto`: this process's own GPU where it has one (distributed.own_gpu), else the CPU. `cuda` where there is
    none, or where torchrun put more ranks on this node than it has GPUs, is refused in one line."""
    if name == "auto":
        return torch.device("cuda" if distributed.own_gpu() else "cpu")
    if name == "cuda" and not distributed.own_gpu():
        if not torch.cuda.is_available():
            raise ConfigError("train.device=cuda: torch sees no CUDA device here (use train.device=auto or cpu)")
        raise ConfigError(
            f"train.device=cuda: {os.environ.get('LOCAL_WORLD_SIZE')} ranks on this node but "
            f"{torch.cuda.device_count()} GPU(s), and NCCL cannot put two ranks on one GPU: start at most "
            f"{torch.cuda.device_count()} rank(s) per node, or train on the CPU (train.device=cpu or auto)"
        )
    return torch.device(name)


def resolve_loss(loss: str, feedback: str) -> str:
    """`auto` is MSE on ratings and BPR on implicit events."""
    return loss if loss != "auto" else ("mse" if feedback == "explicit" else "bpr")


def text_dtype(setting: str, device: torch.device) -> torch.dtype:
    """The dtype training stores and projects item text in (`train.precision`): auto is bfloat16 where its products
    are native (at 63,000 items x 769 text columns, the projection and its weight gradient ran 3.9x faster than
    float32 on an avx512_bf16 core, and the gather of the rows 2.3x; benchmarks/results/train-step.md), float32
    where torch would emulate it."""
    # the encoder's rule for where bf16 is native (features/text.py); its fp16 for older GPUs stays float32 here
    return torch.bfloat16 if resolve_precision(setting, str(device)) == "bf16" else torch.float32


def hide_reviews(review: torch.Tensor, keep: torch.Tensor) -> None:
    """review *= keep per row, in place. On the CPU only the rows keep changes are touched (ID dropout hides ~1 in
    10: at 47,000 x 385 bfloat16, 13 -> 3 ms); elsewhere one multiply, which needs no host sync."""
    if review.device.type != "cpu":
        review.mul_(keep.unsqueeze(-1).to(review.dtype))
        return
    rows = torch.nonzero(keep != 1).squeeze(1)
    if len(rows):
        review.index_copy_(0, rows, review.index_select(0, rows) * keep[rows].unsqueeze(-1).to(review.dtype))


def training_threads(setting: int) -> int:
    """The torch threads training runs on: `train.threads` when set; 0 (auto) is one thread where this process may
    use at most two cores (there a second thread made steps 5-33x slower, benchmarks/results/train-step.md), and
    torch's default (one per core) on larger machines."""
    if setting > 0:
        return setting
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return 1 if cores <= 2 else torch.get_num_threads()


# A batch's distinct rows are padded up to a multiple of 1/DISTINCT_SIZE_STEPS of the next power of two (at most
# 1/16 more rows, typically under 1%), so a fit's steps allocate the same few tensor sizes again and again. With a
# size that moved by a few rows each step, freed blocks rarely fitted the next request and steps spent their time in
# the kernel mapping fresh memory: at M (batch 65,536, ~47,000 distinct items a step, one thread) 148-155 ms of
# system time a step and 445-467 ms a step, against 42-55 ms and 341-354 ms padded (benchmarks/results/
# train-step.md, "Steady sizes").
DISTINCT_SIZE_STEPS = 32


def padded_size(n: int) -> int:
    """`n` rounded up to a multiple of next_power_of_two(n) / DISTINCT_SIZE_STEPS (at least 1)."""
    if n <= 1:
        return n
    step = max(1, (1 << (n - 1).bit_length()) // DISTINCT_SIZE_STEPS)
    return -(-n // step) * step


def distinct_rows(idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """torch.unique(idx, return_inverse=True) with the distinct rows padded to `padded_size` by copies of the
    first: no batch row points at a copy, so copies get zero gradients and change nothing but the tensor size."""
    rows, inverse = torch.unique(idx, return_inverse=True)
    size = padded_size(len(rows))
    if size > len(rows):
        rows = torch.cat([rows, rows[:1].expand(size - len(rows))])
    return rows, inverse


def seed_everything(seed: int) -> None:
    """Same config + seed -> same weights and metrics on CPU."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


class Optimisers:
    """Adam for the whole network, split by gradient kind: `torch.optim.SparseAdam` (lazy, row-wise) on the
    embedding tables whose gradients are sparse (big tables a step looks up a small share of:
    towers.sparse_table, Trainer._choose_sparse_tables), and fused Adam (foreach where fused is not available) on
    everything else, smaller tables included. A step then updates only the big tables' rows its batch looked up,
    where one dense Adam rewrote every row of every table.

    `weight_decay` keeps its meaning of L2 added to the gradient on the dense parameters; on a sparse table it is
    added to the rows the batch touched only (the sparse form of the same penalty: an untouched row is left as it
    is, where the dense optimiser shrinks every row at every step). Which form a table gets follows from the sizes
    and the batch settings, so a run and its resume agree.

    `state_dict` has the layout of one torch optimiser (the tables' parameters numbered after the dense ones, each
    group labelled with its `kind`), so a checkpoint stores it as before."""

    def __init__(self, net: nn.Module, lr: float, weight_decay: float, dense_step: frozenset[int] = frozenset()):
        """`dense_step`: ids of sparse tables' weights that the dense Adam steps whole all the same (a step looks up
        a large share of their rows): their sparse gradients are added into a standing dense buffer first, cheaper
        than the dense gradient a table without sparse=True makes (a fresh zero-filled table every step: at 190,000
        users x 64 a sixth of a hybrid step at batch 65,536), with the same update."""
        modules = [m for m in net.modules() if isinstance(m, (nn.Embedding, nn.EmbeddingBag)) and m.sparse]
        tables = [m.weight for m in modules if id(m.weight) not in dense_step]
        table_ids = {id(p) for p in tables}
        dense = [p for p in net.parameters() if id(p) not in table_ids]
        self.tables, self.weight_decay = tables, weight_decay
        self.densified = [(m.weight, torch.zeros_like(m.weight)) for m in modules if id(m.weight) in dense_step]
        self.dense = _dense_adam(dense, lr, weight_decay) if dense else None
        self.sparse = torch.optim.SparseAdam(tables, lr=lr) if tables else None

    def zero_grad(self) -> None:
        for opt in (self.dense, self.sparse):
            if opt is not None:
                opt.zero_grad(set_to_none=True)

    def step(self) -> None:
        for p, buffer in self.densified:
            if p.grad is not None and p.grad.is_sparse:
                p.grad = buffer.zero_().index_add_(0, p.grad._indices()[0], p.grad._values())
        if self.weight_decay > 0:
            for table in self.tables:
                if table.grad is not None:
                    table.grad = _decayed(table.grad, table.detach(), self.weight_decay)
        for opt in (self.dense, self.sparse):
            if opt is not None:
                opt.step()

    def _parts(self) -> list[tuple[str, torch.optim.Optimizer]]:
        return [(kind, opt) for kind, opt in (("dense", self.dense), ("sparse", self.sparse)) if opt is not None]

    def state_dict(self) -> dict:
        state: dict[int, dict] = {}
        groups: list[dict] = []
        offset = 0
        for kind, opt in self._parts():
            part = opt.state_dict()
            state.update({offset + idx: value for idx, value in part["state"].items()})
            for group in part["param_groups"]:
                groups.append({**group, "params": [offset + idx for idx in group["params"]], "kind": kind})
            offset += sum(len(group["params"]) for group in part["param_groups"])
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, saved: dict) -> None:
        """Restores `state_dict`'s output; a ValueError for one written otherwise (one optimiser for all weights,
        before the tables were split off, or another network)."""
        groups = saved["param_groups"]
        kinds = [group.get("kind") for group in groups]
        if kinds != [kind for kind, _ in self._parts()]:
            raise ValueError(
                "its optimiser state is not this trainer's (written by an older hybridrec, one Adam for all weights,"
                " or for another network)"
            )
        offset = 0
        for (kind, opt), group in zip(self._parts(), groups):
            ids = [int(idx) for idx in group["params"]]
            state = {idx - offset: dict(saved["state"][idx]) for idx in ids if idx in saved["state"]}
            if kind == "sparse":  # SparseAdam counts steps in a Python int; the file holds a tensor
                for entry in state.values():
                    entry["step"] = int(entry["step"])
            local = {k: v for k, v in group.items() if k != "kind"}
            opt.load_state_dict({"state": state, "param_groups": [{**local, "params": [i - offset for i in ids]}]})
            offset += len(ids)


def _dense_adam(params: list[nn.Parameter], lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """Fused Adam (one kernel over all dense parameters; CPU since torch 2.4), else the foreach form."""
    try:
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, ValueError):
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, foreach=True)


def _decayed(grad: torch.Tensor, weight: torch.Tensor, weight_decay: float) -> torch.Tensor:
    """A table's sparse gradient plus `weight_decay` x each touched row (Adam's coupled L2, on those rows only)."""
    grad = grad.coalesce()
    rows = grad.indices()[0]
    values = grad.values() + weight_decay * weight[rows]
    return torch.sparse_coo_tensor(grad.indices(), values, grad.shape, check_invariants=False, is_coalesced=True)


class FeatureTable:
    """An entity's feature arrays as tensors on the training device, sliced by row index. `used` False (a tower
    with no content part: the id-only variant's items): zero-width arrays, so no step gathers features nobody
    reads (with review text, 769 floats per item: half an id-only BPR step at 63,000 items). Text is held in
    `text_dtype` (the tower projects bfloat16 text in bfloat16: ContentEncoder._project_text)."""

    def __init__(
        self, feats: EntityFeatures, device: torch.device, used: bool = True, text_dtype: torch.dtype = torch.float32
    ):
        rows = len(feats.text)
        # float32 text stays where it is (no copy on the CPU) for `exact` reads: vectors a model saves or scores
        # are projected in float32, as serving projects a new item's
        self.text32 = torch.as_tensor(feats.text if used else np.zeros((rows, 0), np.float32))
        self.text = self.text32.to(device=device, dtype=text_dtype)
        self.numeric = torch.as_tensor(feats.numeric if used else np.zeros((rows, 0), np.float32), device=device)
        self.categorical = [torch.as_tensor(c, device=device) for c in feats.categorical] if used else []

    def rows(self, idx: torch.Tensor, exact: bool = False) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """Feature rows of `idx`; `exact`: text in float32 whatever the training dtype."""
        if exact and self.text.dtype != torch.float32:
            text = self.text32.index_select(0, idx.cpu()).to(idx.device)
        else:  # index_select: 1.2x advanced indexing for a wide text block on one thread
            text = self.text.index_select(0, idx)
        return text, self.numeric.index_select(0, idx), [c[idx] for c in self.categorical]


@dataclass
class Interactions:
    """Training or validation pairs as row indices (never raw ids) plus the target and the example weight."""

    users: np.ndarray
    items: np.ndarray
    ratings: np.ndarray
    weights: np.ndarray

    def __len__(self) -> int:
        return len(self.users)


@dataclass(frozen=True)
class Dropouts:
    """Training-time hiding: an item's ID (DropoutNet), a user's ID, and each feature group of an item."""

    item_id: float = 0.0
    user_id: float = 0.0
    feature: float = 0.0


@dataclass(frozen=True)
class HistoryInputs:
    """The user tower's history bag: every user's served bag (users x length tokens, item row + 1, 0 pads) and,
    for `order: causal`, each training row's own history."""

    tokens: np.ndarray
    causal: CausalHistories | None = None


class Trainer:
    """Fits a HybridNet; items without training interactions always score through content only."""

    def __init__(
        self,
        net: HybridNet,
        item_feats: EntityFeatures,
        user_feats: EntityFeatures,
        item_has_id: np.ndarray,
        user_has_id: np.ndarray,
        settings: TrainConfig,
        loss: str,
        dropouts: Dropouts,
        seed: int,
        device: torch.device,
        review_slice: slice | None = None,
        history: HistoryInputs | None = None,
    ):
        self.net = net.to(device)
        self.cfg = settings
        self.device = device
        self.loss_kind = loss
        self.dropouts = dropouts
        self.review_slice = review_slice
        self.seed = seed
        dtype = text_dtype(settings.precision, device)
        self.items = FeatureTable(item_feats, device, self.net.items.content is not None, dtype)
        self.users = FeatureTable(user_feats, device, self.net.users.content is not None, dtype)
        self.item_has_id = torch.as_tensor(item_has_id.astype(np.float32), device=device)
        self.user_has_id = torch.as_tensor(user_has_id.astype(np.float32), device=device)
        self.n_items = len(item_has_id)
        # with every row's ID trained and no ID dropout, no row's ID is hidden: no mask to multiply by
        self._every_item_id, self._every_user_id = bool(np.all(item_has_id)), bool(np.all(user_has_id))
        self.positive_items = np.flatnonzero(item_has_id)
        self.pool = torch.as_tensor(self.positive_items, device=device)  # negatives are drawn from it on the device
        # item row -> its column among a batch's shared negatives (-1: not one), reset after each batch
        self._column = torch.full((self.n_items,), -1, dtype=torch.long, device=device)
        self.history = None if history is None else torch.as_tensor(history.tokens, device=device)
        causal = history.causal if history is not None and loss != "mse" else None
        self.causal = None
        if causal is not None:
            self.causal = tuple(torch.as_tensor(a, device=device) for a in (causal.tokens, causal.starts, causal.ends))
            self.causal_length = causal.length
        self._choose_sparse_tables()

    def _choose_sparse_tables(self) -> None:
        """Each ID table takes sparse gradients only where a step looks up a small share of its rows
        (towers.sparse_table): big batches over a mid-sized table step it densely, faster. Such a table keeps its
        sparse gradients, which the optimiser adds into a standing dense one (`Optimisers`, `dense_step`). The
        history bag, whose sparse backward itself is the cost (a gradient row per lookup: at batch 4,096 x 100
        positions over 63,001 items 370 ms a step against 71 dense), turns dense gradients on instead
        (towers.BAG_SPARSE_SHARE), and the dense Adam steps it."""
        self._choose_dense_history()
        batch = self.cfg.batch_size
        negatives = max(1, self.cfg.negatives)
        items = {"bpr": batch * (1 + negatives), "sampled-softmax": batch + negatives}.get(self.loss_kind, batch)
        lookups = [(self.net.items, items), (self.net.users, batch)]
        dense_step = set()
        for tower, count in lookups:
            for table in (tower.id_embedding, tower.id_bias):
                if table is not None and table.sparse and not sparse_table(table.num_embeddings, count):
                    dense_step.add(id(table.weight))
        self.dense_step = frozenset(dense_step)

    def _choose_dense_history(self) -> None:
        """Dense gradients for a sparse history bag that a step looks up batch x bag-width times, when that is more
        than 1 in BAG_SPARSE_SHARE of its rows (the same choice on every run of the same settings, so a resume
        agrees with its checkpoint's optimiser layout)."""
        content = self.net.users.content
        bag = None if content is None else content.history
        if bag is None or not bag.sparse or self.history is None:
            return
        width = self.causal_length if self.causal is not None else self.history.shape[1]
        if not sparse_table(bag.num_embeddings, self.cfg.batch_size * width, share=BAG_SPARSE_SHARE):
            bag.sparse = False

    # -- towers on index batches -------------------------------------------------------------------------
    def item_vectors(self, idx: torch.Tensor, keep: torch.Tensor | None = None):
        """Item tower rows; `keep` (1 keeps, 0 hides each row's ID: ID dropout) joins the rows whose ID was never
        trained (None: every ID shown)."""
        if not self._every_item_id:
            keep = self.item_has_id[idx] if keep is None else keep * self.item_has_id[idx]
        text, numeric, cats = self.items.rows(idx, exact=not self.net.training)
        if self.review_slice is not None and text.shape[1] and keep is not None:
            # Without its ID an item is treated as cold: cold items have no reviews either. (`rows` gathered a fresh
            # copy: no clone; keep in text's dtype: a bfloat16 view times float32 ran 7x slower.)
            hide_reviews(text[:, self.review_slice], keep)
        if self.net.training and self.dropouts.feature > 0:
            # Hide whole feature groups at random so text alone still places an item (free-text queries,
            # new items with sparse metadata).
            p = self.dropouts.feature
            numeric = numeric * (torch.rand(len(idx), 1, device=self.device) >= p).float()
            cats = [c * (torch.rand(len(idx), 1, device=self.device) >= p).long() for c in cats]
        return self.net.items(idx, text, numeric, cats, keep)

    def user_vectors(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None, history_rows: torch.Tensor | None = None
    ):
        """User tower rows; with `targets` (one item row per user row) each target leaves that user's history.
        `history_rows` (one history per user row, `order: causal`) replaces the served bag instead."""
        keep = None if self._every_user_id else self.user_has_id[idx]
        if self.net.training and 0 < self.dropouts.user_id < 1:
            drop = (torch.rand(len(idx), device=self.device) >= self.dropouts.user_id).float()
            keep = drop if keep is None else keep * drop
        bag: tuple[torch.Tensor, torch.Tensor | None] | None = None
        if self.history is not None and history_rows is not None:
            bag = (history_rows, None)
        elif self.history is not None:
            bag = (self.history[idx], None if targets is None else targets + 1)
        text, numeric, cats = self.users.rows(idx, exact=not self.net.training)
        return self.net.users(idx, text, numeric, cats, keep, history=bag)

    def _keep_mask(self, n: int) -> torch.Tensor | None:
        """ID dropout's mask over n item rows (None: no dropout)."""
        if self.dropouts.item_id <= 0 or not self.net.items.use_id:
            return None
        return (torch.rand(n, device=self.device) >= self.dropouts.item_id).float()

    def _causal_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """(len(rows), length) history tokens of those training rows, PAD past the start of the timeline."""
        assert self.causal is not None  # called only under `order: causal`
        tokens, starts, ends = self.causal
        idx = starts[rows].unsqueeze(1) + torch.arange(self.causal_length, device=rows.device)
        return torch.where(idx < ends[rows].unsqueeze(1), tokens[idx], 0)

    # -- losses --------------------------------------------------------------------------------------------
    def _towers(
        self,
        u_idx: torch.Tensor,
        i_idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        history_rows: torch.Tensor | None = None,
        parts: list[int] | None = None,
    ):
        """Tower outputs: items computed once per distinct item of the batch (ID and feature dropout drawn per
        distinct item); users once per distinct user too, unless each row needs its own bag (its target left out,
        or its own causal history). `parts` (lengths that sum to len(i_idx)): the item rows come back as one
        tensor per part, each gathered on its own (BPR's positives and negatives: two half-size gathers, where one
        whole one and a split made a 33 MB block each step at batch 65,536 and ran ~2x slower)."""
        items, i_inv = distinct_rows(i_idx)
        v_item, b_item = self.item_vectors(items, self._keep_mask(len(items)))
        # index_select, not v[i_inv]: its backward adds rows in place, where advanced indexing's sorts (~1.7x)
        if parts is None:
            v, b_i = v_item.index_select(0, i_inv), b_item.index_select(0, i_inv)
        else:
            v = tuple(v_item.index_select(0, inv) for inv in i_inv.split(parts))
            b_i = tuple(b_item.index_select(0, inv) for inv in i_inv.split(parts))
        # a user tower of ID rows only, with nothing drawn per user, is looked up per row: the same rows without
        # the unique and the gather back (at batch 65,536 ~3% of a step)
        plain_users = self.net.users.content is None and not (self.net.training and 0 < self.dropouts.user_id < 1)
        if not plain_users and history_rows is None and (self.history is None or targets is None):
            users, u_inv = distinct_rows(u_idx)
            u, b_u = self.user_vectors(users)
            return u.index_select(0, u_inv), b_u.index_select(0, u_inv), v, b_i
        u, b_u = self.user_vectors(u_idx, targets, history_rows)
        return u, b_u, v, b_i

    def _batch_loss(self, u_idx, i_idx, rating, weight, rows: torch.Tensor | None = None) -> torch.Tensor:
        """The configured loss of one batch. `rows`: the batch's training row numbers, which pick each row's own
        history under `order: causal`."""
        history_rows = self._causal_rows(rows) if self.causal is not None and rows is not None else None
        return LOSSES[self.loss_kind](self, Batch(u_idx, i_idx, rating, weight, history_rows))

    def penalty(self, u: torch.Tensor, b_u: torch.Tensor, v: torch.Tensor, b_i: torch.Tensor) -> torch.Tensor:
        """train.l2 on the embeddings and biases the batch touched (0 without one: no passes over the batch)."""
        if self.cfg.l2 == 0:
            return torch.zeros((), device=u.device)
        return self.cfg.l2 * (u.pow(2).sum(-1) + v.pow(2).sum(-1) + b_u.pow(2) + b_i.pow(2)).mean()

    def draw_negatives(self, n: int, distinct: bool = False) -> torch.Tensor:
        """`n` item rows drawn uniformly from the trained catalogue on the training device (torch's seeded RNG,
        checkpointed with the rest); `distinct`: without replacement (n < catalogue)."""
        if distinct:
            return self.pool[torch.randperm(len(self.pool), device=self.device)[:n]]
        return self.pool[torch.randint(len(self.pool), (n,), device=self.device)]

    def _sampled_softmax(self, u, v, b_i, i_idx, weight) -> torch.Tensor:
        """Softmax over the positive and `negatives` items drawn uniformly (once per batch) from the trained
        catalogue; with negatives >= the catalogue it is the exact full softmax. Uniform draws need no logQ
        correction, unlike in-batch negatives, which over-penalise popular items."""
        n_neg = self.cfg.negatives
        cand = self.pool if n_neg >= len(self.pool) else self.draw_negatives(n_neg, distinct=True)
        v_c, b_c = self.item_vectors(cand, self._keep_mask(len(cand)))
        neg = torch.addmm(b_c.unsqueeze(0), u, v_c.T)  # the bias added in the product's kernel, no second pass
        pos = (u * v).sum(-1) + b_i
        # a row's own positive among the candidates is no negative: mask those entries only (one lookup per row,
        # not a batch x candidates comparison; a row whose positive is no candidate rewrites one entry with its own
        # value, so no data-dependent shape and no host sync), and take -log softmax as
        # logaddexp(pos, logsumexp(neg)) - pos rather than concatenating the positive onto a copy of the logits
        column = self._column
        column[cand] = torch.arange(len(cand), device=self.device)
        hit = column[i_idx]
        column[cand] = -1
        rows, at = torch.arange(len(i_idx), device=self.device), hit.clamp(min=0)
        neg = neg.index_put_((rows, at), torch.where(hit >= 0, -1e9, neg[rows, at]))  # in place: no copy of the logits
        loss = torch.logaddexp(pos, torch.logsumexp(neg, dim=1)) - pos
        return (weight * loss).sum() / weight.sum()

    # -- validation ------------------------------------------------------------------------------------------
    def validation_score(self, val: Interactions) -> float:
        """Lower is better: RMSE for ratings, 1 - sampled AUC (100 fixed negatives per pair) for implicit data;
        chunked, over at most train.validation_max_rows rows (model/validation.py)."""
        self.net.eval()
        try:
            return validation.validation_score(self, val)
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
        """Adam (`Optimisers`) over shuffled mini-batches; keeps the weights of the best validation epoch (with
        `train.early_stopping` off: runs every epoch and keeps the last). Runs on `training_threads` torch threads
        (the caller's setting is restored after).

        With a checkpointer, state is saved after every epoch and a matching checkpoint is resumed from, giving
        the same result as an uninterrupted run.
        """
        before = torch.get_num_threads()
        torch.set_num_threads(training_threads(self.cfg.threads))
        try:
            return self._fit(train, val, progress, checkpoint)
        finally:
            torch.set_num_threads(before)

    def _fit(
        self, train: Interactions, val: Interactions | None, progress, checkpoint: Checkpointer | None
    ) -> TrainResult:
        seed_everything(self.seed)
        rng = np.random.default_rng(self.seed)
        opt = Optimisers(self.net, lr=self.cfg.lr, weight_decay=self.cfg.weight_decay, dense_step=self.dense_step)
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
        ranks = distributed.Ranks(self.net, self.seed)  # several processes (torchrun): model/distributed.py
        ranks.start(first_epoch)
        self.net.train()
        for epoch in range(first_epoch, self.cfg.epochs + 1):
            if result.stopped_early:
                break
            started = time.perf_counter()
            ranks.seed_epoch(epoch)
            order = torch.as_tensor(rng.permutation(len(train)), device=self.device)
            summed = torch.zeros((), dtype=torch.float64, device=self.device)  # read once, after the epoch
            for start in range(0, len(train), self.cfg.batch_size):
                batch = ranks.share(order[start : start + self.cfg.batch_size])  # this rank's rows of it
                if batch is None:  # fewer rows than ranks: every rank skips it
                    continue
                users, items, ratings, weights = (t[batch] for t in tensors)
                loss = self._batch_loss(users, items, ratings, weights, rows=batch)
                opt.zero_grad()
                loss.backward()
                ranks.average_gradients()
                opt.step()
                summed += loss.detach() * len(batch)
            total = ranks.total(float(summed))
            if not np.isfinite(total):  # diverged: nothing from here on may be checkpointed, saved or published
                raise TrainingError(
                    f"training diverged in epoch {epoch}: the training loss is {total / len(train)}; "
                    f"try a lower train.lr (now {self.cfg.lr:g})"
                )
            row = {"epoch": epoch, "train_loss": total / len(train)}
            score = ranks.main_value(self.validation_score, val) if val is not None and len(val) else total / len(train)
            row["val"] = score
            row["seconds"] = round(time.perf_counter() - started, 3)  # training and validation of this epoch
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
            if checkpoint is not None and ranks.is_main:  # rank 0 writes it; every rank reads it on --resume
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
                result.best_score = ranks.main_value(self.validation_score, val)
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
    def bought_with_vectors(self) -> np.ndarray | None:
        """Per item row, the user-tower vector of an anonymous user whose history is only that item (no ID, no
        features): "bought with it". None without a history bag."""
        if self.history is None:
            return None
        self.net.eval()
        n = self.n_items
        tokens = torch.arange(1, n + 1, device=self.device).view(-1, 1)
        cats = [torch.zeros((n, c.shape[1]), dtype=torch.long, device=self.device) for c in self.users.categorical]
        text = torch.zeros((n, self.users.text.shape[1]), device=self.device)
        numeric = torch.zeros((n, self.users.numeric.shape[1]), device=self.device)
        ids = torch.zeros(n, dtype=torch.long, device=self.device)
        q, _ = self.net.users(ids, text, numeric, cats, torch.zeros(n, device=self.device), history=(tokens, None))
        return q.cpu().numpy().astype(np.float32)

    @torch.no_grad()
    def all_user_vectors(self, batch: int = 8192) -> tuple[np.ndarray, np.ndarray]:
        self.net.eval()
        n_users = len(self.user_has_id)
        out_u, out_b = [], []
        for start in range(0, n_users, batch):
            idx = torch.arange(start, min(start + batch, n_users), device=self.device)
            u, b = self.user_vectors(idx)
            out_u.append(u.cpu().numpy())
            out_b.append(b.cpu().numpy())
        return np.concatenate(out_u).astype(np.float32), np.concatenate(out_b).astype(np.float32)


# ------------------------------------------------------------------------------------------------------- losses
# One function per `train.loss`: (trainer, batch) -> the batch's loss, penalty included. A new loss is one function
# here, its name in LOSSES and in config.CHOICES["train.loss"].


@dataclass
class Batch:
    """One mini-batch of training rows as tensors; `history_rows` (order: causal) replaces each row's bag."""

    users: torch.Tensor
    items: torch.Tensor
    ratings: torch.Tensor
    weights: torch.Tensor
    history_rows: torch.Tensor | None


def weighted_mean(loss: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return (weight * loss).sum() / weight.sum()


def mse_loss(t: Trainer, b: Batch) -> torch.Tensor:
    """Explicit ratings: squared error of the head's prediction (the user's bag keeps the rated item)."""
    u, b_u, v, b_i = t._towers(b.users, b.items, None, b.history_rows)
    pred = t.net.head(u, b_u, v, b_i)
    return weighted_mean((pred - b.ratings).pow(2), b.weights) + t.penalty(u, b_u, v, b_i)


def bpr_loss(t: Trainer, b: Batch) -> torch.Tensor:
    """Each positive against `train.negatives` items drawn uniformly from the trained catalogue."""
    n, n_neg = len(b.items), max(1, t.cfg.negatives)
    neg = t.draw_negatives(n * n_neg)
    u, b_u, (v, v_neg), (b_i, b_neg) = t._towers(
        b.users, torch.cat([b.items, neg]), b.items, b.history_rows, parts=[n, n * n_neg]
    )
    pos = t.net.head(u, b_u, v, b_i)
    u_neg, b_u_neg = (u, b_u) if n_neg == 1 else (u.repeat_interleave(n_neg, 0), b_u.repeat_interleave(n_neg, 0))
    negs = t.net.head(u_neg, b_u_neg, v_neg, b_neg)
    loss = -F.logsigmoid(pos.unsqueeze(-1) - negs.view(-1, n_neg)).mean(-1)
    return weighted_mean(loss, b.weights) + t.penalty(u, b_u, v, b_i)


def in_batch_softmax_loss(t: Trainer, b: Batch) -> torch.Tensor:
    """Softmax where every other item of the batch is a negative."""
    n = len(b.items)
    u, b_u, v, b_i = t._towers(b.users, b.items, b.items, b.history_rows)
    logits = u @ v.T + b_i.unsqueeze(0)
    same = b.items.unsqueeze(0) == b.items.unsqueeze(1)
    logits = logits.masked_fill(same & ~torch.eye(n, dtype=torch.bool, device=t.device), -1e9)
    loss = F.cross_entropy(logits, torch.arange(n, device=t.device), reduction="none")
    return weighted_mean(loss, b.weights) + t.penalty(u, b_u, v, b_i)


def sampled_softmax_loss(t: Trainer, b: Batch) -> torch.Tensor:
    """Softmax over the positive and negatives shared by the batch (Trainer._sampled_softmax)."""
    u, b_u, v, b_i = t._towers(b.users, b.items, b.items, b.history_rows)
    return t._sampled_softmax(u, v, b_i, b.items, b.weights) + t.penalty(u, b_u, v, b_i)


LOSSES: dict[str, Callable[[Trainer, Batch], torch.Tensor]] = {
    "mse": mse_loss,
    "bpr": bpr_loss,
    "softmax": in_batch_softmax_loss,
    "sampled-softmax": sampled_softmax_loss,
}
