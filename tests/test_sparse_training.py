"""Training that costs what the batch touches: the bags summed by EmbeddingBag give the numbers of the dense
weighted sum they replace; the tables' sparse gradients are stepped row-wise (only looked-up rows move, padding rows
stay zero, weight decay keeps its meaning on the rows a batch touches); both optimisers' states survive a checkpoint
and the next step after a resume is the step an unbroken run takes; negatives are drawn from the trained items.
Tables below towers.SPARSE_MIN_ROWS rows stay dense (stepped by Adam) and give the same numbers.

Reference values come from the dense formulas and torch.optim.Adam written out here, never from the code under
test."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hybridrec.config import TrainConfig
from hybridrec.errors import ModelFileError
from hybridrec.features.pipeline import EntityFeatures
from hybridrec.model import towers
from hybridrec.model import train as train_module
from hybridrec.model.checkpoint import Checkpointer
from hybridrec.model.network import HybridNet, NetShape
from hybridrec.model.spec import TowerSpec
from hybridrec.model.towers import ContentEncoder
from hybridrec.model.train import Dropouts, HistoryInputs, Interactions, Optimisers, Trainer, hide_reviews

N_USERS, N_ITEMS, HISTORY = 12, 30, 5
VOCABS = (9, 6)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(autouse=True)
def sparse_tables(monkeypatch):
    """Every table sparse, however small (real ones are from towers.SPARSE_MIN_ROWS rows)."""
    monkeypatch.setattr(towers, "SPARSE_MIN_ROWS", 1)


def make_net(seed: int = 0) -> HybridNet:
    """A hybrid net with two categorical bags on items and a position-weighted history bag on users."""
    torch.manual_seed(seed)
    item_spec = TowerSpec(text_dim=6, numeric_dim=2, vocab_sizes=VOCABS)
    user_spec = TowerSpec(history_items=N_ITEMS, history_positions=HISTORY)
    shape = NetShape(variant="hybrid", dim=8, hidden=16, dropout=0.0)
    net = HybridNet(N_USERS, N_ITEMS, item_spec, user_spec, shape, 0.0)
    with torch.no_grad():
        net.users.content.position_logits.normal_()  # unequal position weights
    return net


def random_cells(rng: np.random.Generator, n: int, vocab: int, width: int) -> torch.Tensor:
    """(n, width) value indices with pads (0) mixed in, some rows all pads."""
    cells = rng.integers(0, vocab, size=(n, width))
    cells[rng.random((n, width)) < 0.3] = 0
    cells[: n // 5] = 0
    return torch.as_tensor(cells)


def dense_forward(enc: ContentEncoder, text, numeric, cats, tokens, leave_out) -> tuple[torch.Tensor, torch.Tensor]:
    """ContentEncoder.forward as written before EmbeddingBag: each bag a dense lookup, weighted and summed."""
    parts = [enc.text(text), enc.numeric(numeric)]
    for bag, idx in zip(enc.bags, cats):
        weight = (idx > 0).float()
        total = (F.embedding(idx, bag.weight) * weight.unsqueeze(-1)).sum(1)
        count = weight.sum(1, keepdim=True)
        parts.append(torch.where(count > 0, total / count.clamp(min=1e-6), 0.0))
    weight = (tokens > 0).float() * F.softplus(enc.position_logits[: tokens.shape[1]])
    weight = weight * (tokens != leave_out.unsqueeze(-1)).float()
    total = (F.embedding(tokens, enc.history.weight) * weight.unsqueeze(-1)).sum(1)
    count = weight.sum(1, keepdim=True)
    parts.append(torch.where(count > 1e-6, total / count.clamp(min=1e-6), 0.0))
    hidden = torch.stack(parts).sum(0)
    return enc.out(hidden), enc.bias(hidden).squeeze(-1)


@pytest.mark.parametrize("widths", [(3, 4), (1, 1)])  # (1, 1): single-valued columns, a plain lookup
@pytest.mark.parametrize("sparse", [True, False])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_embedding_bags_give_the_dense_weighted_sums_and_their_gradients(seed, sparse, widths, monkeypatch):
    if not sparse:
        monkeypatch.setattr(towers, "SPARSE_MIN_ROWS", 10**9)
    rng = np.random.default_rng(seed)
    item_enc = make_net(seed).items.content
    user_enc = make_net(seed).users.content
    n = 40
    text = torch.as_tensor(rng.normal(size=(n, 6)), dtype=torch.float32)
    numeric = torch.as_tensor(rng.normal(size=(n, 2)), dtype=torch.float32)
    cats = [random_cells(rng, n, VOCABS[0], widths[0]), random_cells(rng, n, VOCABS[1], widths[1])]
    tokens = random_cells(rng, n, N_ITEMS + 1, HISTORY)
    leave_out = torch.as_tensor(rng.integers(0, N_ITEMS + 1, size=n))
    # one encoder holding both kinds of input, so one comparison covers the categorical and the history bags
    enc = item_enc
    enc.history, enc.position_logits = user_enc.history, user_enc.position_logits
    enc.eval()
    vec, bias = enc(text, numeric, cats, None, (tokens, leave_out))
    ref_vec, ref_bias = dense_forward(enc, text, numeric, cats, tokens, leave_out)
    torch.testing.assert_close(vec, ref_vec, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(bias, ref_bias, atol=1e-5, rtol=1e-5)

    probe = torch.as_tensor(rng.normal(size=vec.shape), dtype=torch.float32)
    tables = [*(bag.weight for bag in enc.bags), enc.history.weight, enc.position_logits]
    got = torch.autograd.grad((vec * probe).sum() + bias.sum(), tables)
    ref_vec, ref_bias = dense_forward(enc, text, numeric, cats, tokens, leave_out)
    want = torch.autograd.grad((ref_vec * probe).sum() + ref_bias.sum(), tables)
    for g, w in zip(got, want):
        assert g.is_sparse == (sparse and g.shape != enc.position_logits.shape)
        torch.testing.assert_close(g.to_dense(), w, atol=1e-5, rtol=1e-5)


def bag_step_loss(net: HybridNet, rng: np.random.Generator, items: torch.Tensor) -> torch.Tensor:
    """A loss through every table of `net` for the given item rows (and users 0..3)."""
    n = len(items)
    text = torch.as_tensor(rng.normal(size=(n, 6)), dtype=torch.float32)
    numeric = torch.as_tensor(rng.normal(size=(n, 2)), dtype=torch.float32)
    cats = [random_cells(rng, n, VOCABS[0], 3), random_cells(rng, n, VOCABS[1], 4)]
    v, b_i = net.items(items, text, numeric, cats)
    users = torch.arange(4)
    tokens = random_cells(rng, 4, N_ITEMS + 1, HISTORY)
    u, b_u = net.users(users, torch.zeros(4, 0), torch.zeros(4, 0), [], history=(tokens, None))
    return ((u.sum(0) * v).sum(-1) + b_i).pow(2).mean() + b_u.pow(2).mean()


def test_only_rows_a_batch_looked_up_move_and_padding_rows_stay_zero():
    net = make_net()
    opt = Optimisers(net, lr=0.05, weight_decay=1e-2)
    rng = np.random.default_rng(3)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    touched = torch.tensor([2, 5, 5, 11])
    opt.zero_grad()
    bag_step_loss(net, rng, touched).backward()
    opt.step()
    table = net.items.id_embedding.weight.detach()
    moved = (table != before["items.id_embedding.weight"]).any(1)
    assert moved.nonzero().flatten().tolist() == [2, 5, 11]
    assert net.items.id_bias.weight.grad.is_sparse
    for _ in range(5):  # more steps, every table touched, weight decay on: the pads never move
        opt.zero_grad()
        bag_step_loss(net, rng, torch.as_tensor(rng.integers(0, N_ITEMS, 8))).backward()
        opt.step()
    for bag in net.items.content.bags:
        assert torch.count_nonzero(bag.weight[0]) == 0
    assert torch.count_nonzero(net.users.content.history.weight[0]) == 0
    assert not torch.equal(net.users.content.history.weight, before["users.content.history.weight"])


def test_small_tables_are_dense_and_their_padding_rows_stay_zero(monkeypatch):
    monkeypatch.setattr(towers, "SPARSE_MIN_ROWS", 20)  # the ID and history tables are sparse, the bags dense
    net = make_net()
    assert net.items.id_embedding.sparse and net.users.content.history.sparse
    assert not any(bag.sparse for bag in net.items.content.bags)
    opt = Optimisers(net, lr=0.05, weight_decay=1e-2)
    rng = np.random.default_rng(4)
    before = net.items.content.bags[0].weight.detach().clone()
    for _ in range(5):
        opt.zero_grad()
        bag_step_loss(net, rng, torch.as_tensor(rng.integers(0, N_ITEMS, 8))).backward()
        opt.step()
    assert not net.items.content.bags[0].weight.grad.is_sparse
    for bag in net.items.content.bags:
        assert torch.count_nonzero(bag.weight[0]) == 0
    assert not torch.equal(net.items.content.bags[0].weight, before)


@pytest.mark.parametrize("weight_decay", [0.0, 0.05])
def test_rows_touched_every_step_follow_adam_with_weight_decay(weight_decay):
    """Where every row is in every batch, the row-wise optimiser is torch's Adam with the same weight decay: the
    sparse form changes where it is applied (touched rows only), not what it means."""
    torch.manual_seed(0)
    sparse = nn.Embedding(6, 3, sparse=True)
    dense = nn.Embedding(6, 3)
    with torch.no_grad():
        dense.weight.copy_(sparse.weight)
    holder = nn.ModuleList([sparse])
    opt = Optimisers(holder, lr=0.01, weight_decay=weight_decay)
    reference = torch.optim.Adam(dense.parameters(), lr=0.01, weight_decay=weight_decay)
    rows = torch.tensor([0, 1, 2, 3, 4, 5, 2])
    for _ in range(20):
        target = torch.randn(len(rows), 3)
        opt.zero_grad()
        (sparse(rows) - target).pow(2).sum().backward()
        opt.step()
        reference.zero_grad()
        (dense(rows) - target).pow(2).sum().backward()
        reference.step()
    torch.testing.assert_close(sparse.weight, dense.weight, atol=1e-5, rtol=1e-4)


def test_weight_decay_shrinks_only_the_touched_rows():
    torch.manual_seed(0)
    table = nn.Embedding(5, 4, sparse=True)
    opt = Optimisers(nn.ModuleList([table]), lr=0.01, weight_decay=0.1)
    before = table.weight.detach().clone()
    opt.zero_grad()
    (0.0 * table(torch.tensor([1, 3]))).sum().backward()  # a zero loss gradient: only the decay acts
    opt.step()
    after = table.weight.detach()
    assert torch.all(after[[1, 3]].abs() < before[[1, 3]].abs())
    torch.testing.assert_close(after[[0, 2, 4]], before[[0, 2, 4]], atol=0, rtol=0)


def test_dense_layers_are_stepped_by_adam_with_the_configured_weight_decay():
    net = make_net()
    opt = Optimisers(net, lr=0.01, weight_decay=0.02)
    assert opt.dense is not None and (opt.dense.defaults["fused"] or opt.dense.defaults["foreach"])
    layer = net.items.content.text
    reference = nn.Linear(6, 16)
    with torch.no_grad():
        reference.weight.copy_(layer.weight)
        reference.bias.copy_(layer.bias)
    ref_opt = torch.optim.Adam(reference.parameters(), lr=0.01, weight_decay=0.02)
    x = torch.randn(10, 6)
    for _ in range(3):
        opt.zero_grad()
        layer(x).pow(2).sum().backward()
        opt.step()
        ref_opt.zero_grad()
        reference(x).pow(2).sum().backward()
        ref_opt.step()
    torch.testing.assert_close(layer.weight, reference.weight, atol=1e-6, rtol=1e-5)


def trained(seed: int = 0, steps: int = 3) -> tuple[HybridNet, Optimisers]:
    net = make_net(seed)
    opt = Optimisers(net, lr=0.02, weight_decay=1e-3)
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        opt.zero_grad()
        bag_step_loss(net, rng, torch.as_tensor(rng.integers(0, N_ITEMS, 8))).backward()
        opt.step()
    return net, opt


def next_step(net: HybridNet, opt: Optimisers) -> dict[str, torch.Tensor]:
    opt.zero_grad()
    bag_step_loss(net, np.random.default_rng(99), torch.tensor([1, 4, 4, 7, 20])).backward()
    opt.step()
    return {k: v.clone() for k, v in net.state_dict().items()}


def test_a_resumed_checkpoint_takes_the_same_next_step_with_both_optimisers(tmp_path):
    net, opt = trained()
    ckpt = Checkpointer(tmp_path / "run.safetensors", "run")
    ckpt.save(net, opt, None, np.random.default_rng(0), 3, {})
    assert {g["kind"] for g in opt.state_dict()["param_groups"]} == {"dense", "sparse"}
    unbroken = next_step(net, opt)

    fresh = make_net(seed=5)  # other weights, empty optimiser state: all of it must come from the file
    fresh_opt = Optimisers(fresh, lr=0.02, weight_decay=1e-3)
    meta = ckpt.load(fresh, fresh_opt, np.random.default_rng(0))
    assert meta is not None and meta["epoch"] == 3
    resumed = next_step(fresh, fresh_opt)
    for key, value in unbroken.items():
        torch.testing.assert_close(resumed[key], value, atol=0, rtol=0)


def test_a_checkpoint_with_one_optimiser_for_all_weights_is_refused_clearly(tmp_path):
    net = make_net()
    old = torch.optim.Adam(net.parameters(), lr=0.01)  # how checkpoints were written before the split
    for p in net.parameters():
        p.grad = torch.zeros_like(p)
    old.step()
    ckpt = Checkpointer(tmp_path / "old.safetensors", "run")
    ckpt.save(net, old, None, np.random.default_rng(0), 1, {})
    with pytest.raises(ModelFileError, match=r"old\.safetensors: .*older hybridrec.*delete it to start over"):
        ckpt.load(make_net(), Optimisers(make_net(), lr=0.01, weight_decay=0.0), np.random.default_rng(0))


def test_negatives_come_from_the_trained_items_and_shared_ones_are_distinct():
    has_id = np.zeros(N_ITEMS, bool)
    has_id[::3] = True
    empty = EntityFeatures(np.zeros((N_ITEMS, 0), np.float32), np.zeros((N_ITEMS, 0), np.float32))
    users = EntityFeatures(np.zeros((N_USERS, 0), np.float32), np.zeros((N_USERS, 0), np.float32))
    net = HybridNet(N_USERS, N_ITEMS, TowerSpec(), TowerSpec(), NetShape(variant="id-only", dim=4), 0.0)
    trainer = Trainer(
        net,
        empty,
        users,
        has_id,
        np.ones(N_USERS, bool),
        TrainConfig(),
        "bpr",
        Dropouts(),
        0,
        torch.device("cpu"),
    )
    torch.manual_seed(0)
    drawn = trainer.draw_negatives(2000)
    assert set(drawn.tolist()) == set(np.flatnonzero(has_id).tolist())  # every trained item, nothing else
    shared = trainer.draw_negatives(7, distinct=True)
    assert len(set(shared.tolist())) == 7 and set(shared.tolist()) <= set(np.flatnonzero(has_id).tolist())


def test_auto_threads_are_one_on_two_cores_and_a_setting_wins(monkeypatch):
    import hybridrec.model.train as train_module

    monkeypatch.setattr(train_module.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert train_module.training_threads(0) == 1
    assert train_module.training_threads(3) == 3
    monkeypatch.setattr(train_module.os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    assert train_module.training_threads(0) == torch.get_num_threads()


def test_fit_trains_on_its_threads_and_gives_the_callers_back(monkeypatch):
    import hybridrec.model.train as train_module

    seen = []
    monkeypatch.setattr(train_module.Trainer, "_fit", lambda self, *args: seen.append(torch.get_num_threads()))
    net = HybridNet(N_USERS, N_ITEMS, TowerSpec(), TowerSpec(), NetShape(variant="id-only", dim=4), 0.0)
    empty = EntityFeatures(np.zeros((N_ITEMS, 0), np.float32), np.zeros((N_ITEMS, 0), np.float32))
    users = EntityFeatures(np.zeros((N_USERS, 0), np.float32), np.zeros((N_USERS, 0), np.float32))
    args = (np.ones(N_ITEMS, bool), np.ones(N_USERS, bool))
    trainer = Trainer(net, empty, users, *args, TrainConfig(threads=2), "bpr", Dropouts(), 0, torch.device("cpu"))
    trainer.fit(None, None)  # type: ignore[arg-type]
    assert seen == [2] and torch.get_num_threads() == 1  # the autouse fixture's one thread is back


@pytest.mark.parametrize(
    "loss, batch, negatives, item_sparse",
    [
        ("bpr", 1, 1, True),  # 2 item lookups a step: 8 x 2 <= 30 rows
        ("bpr", 2, 1, False),  # 4 lookups: 8 x 4 > 30, the table steps densely
        ("sampled-softmax", 1, 2, True),  # batch + shared negatives = 3 lookups: 8 x 3 <= 30
        ("sampled-softmax", 2, 2, False),  # 4 lookups: 32 > 30
        ("mse", 3, 4, True),  # 3 lookups (negatives unused): 24 <= 30
        ("mse", 4, 1, False),  # 4 lookups: 32 > 30
    ],
)
def test_a_table_a_step_looks_up_a_large_share_of_steps_densely(monkeypatch, loss, batch, negatives, item_sparse):
    """towers.sparse_table: sparse from SPARSE_MIN_ROWS rows, and only while a step looks up fewer than 1 in
    SPARSE_SHARE of them (a dense step costs the table, a sparse one its lookups); the optimisers follow."""
    monkeypatch.setattr(towers, "SPARSE_MIN_ROWS", 20)  # the item table (30 rows) by size; the users' (12) never
    empty = EntityFeatures(np.zeros((N_ITEMS, 0), np.float32), np.zeros((N_ITEMS, 0), np.float32))
    users = EntityFeatures(np.zeros((N_USERS, 0), np.float32), np.zeros((N_USERS, 0), np.float32))
    net = HybridNet(N_USERS, N_ITEMS, TowerSpec(), TowerSpec(), NetShape(variant="id-only", dim=4), 0.0)
    assert net.items.id_embedding.sparse and not net.users.id_embedding.sparse
    cfg = TrainConfig(loss=loss, batch_size=batch, negatives=negatives)
    args = (net, empty, users, np.ones(N_ITEMS, bool), np.ones(N_USERS, bool), cfg, loss, Dropouts(), 0)
    trainer = Trainer(*args, torch.device("cpu"))
    stepped_densely = {id(net.items.id_embedding.weight), id(net.items.id_bias.weight)}
    assert trainer.dense_step == (frozenset() if item_sparse else stepped_densely)
    assert net.items.id_embedding.sparse and not net.users.id_embedding.sparse  # the gradients stay sparse
    opt = Optimisers(net, lr=0.01, weight_decay=0.0, dense_step=trainer.dense_step)
    assert (opt.sparse is not None) is item_sparse


def test_a_sparse_table_stepped_densely_updates_as_a_dense_one():
    """Optimisers(dense_step=...): a table whose gradients come sparse but which the dense Adam steps whole
    (a step looks up a large share of it) must move exactly as the same table with dense gradients: every row,
    untouched ones included (Adam's moments and the weight decay move them), by the same amounts."""
    torch.manual_seed(3)
    start = torch.randn(30, 4)
    nets = []
    for sparse in (False, True):
        table = nn.Embedding(30, 4, sparse=sparse)
        with torch.no_grad():
            table.weight.copy_(start)
        nets.append(nn.ModuleList([table]))
    dense_opt = Optimisers(nets[0], lr=0.05, weight_decay=0.01)
    stepped_opt = Optimisers(nets[1], lr=0.05, weight_decay=0.01, dense_step=frozenset({id(nets[1][0].weight)}))
    assert dense_opt.sparse is None and stepped_opt.sparse is None  # both on the dense Adam
    lookups = [torch.tensor([0, 3, 3, 7]), torch.tensor([1, 2, 3, 29]), torch.tensor([5, 5, 5, 0])]
    for idx in lookups:
        for net, opt in ((nets[0], dense_opt), (nets[1], stepped_opt)):
            opt.zero_grad()
            (net[0](idx).pow(2).sum() * torch.arange(1.0, 5.0).sum()).backward()
            opt.step()
    assert nets[1][0].weight.grad is not None and not nets[1][0].weight.grad.is_sparse
    assert not torch.equal(nets[0][0].weight, start)
    untouched = [r for r in range(30) if r not in {0, 1, 2, 3, 5, 7, 29}]
    assert not torch.equal(nets[0][0].weight[untouched], start[untouched])  # decay moved the untouched rows
    torch.testing.assert_close(nets[1][0].weight, nets[0][0].weight, rtol=1e-6, atol=1e-7)


def feature_arrays(rng: np.random.Generator, n: int) -> EntityFeatures:
    text = rng.normal(size=(n, 6)).astype(np.float32)
    numeric = rng.normal(size=(n, 2)).astype(np.float32)
    cats = [rng.integers(0, vocab, size=(n, 2)) for vocab in VOCABS]
    return EntityFeatures(text, numeric, cats)


def test_bf16_text_projects_near_float32_and_saved_vectors_project_in_float32(monkeypatch):
    """train.precision bf16: training holds item text in bfloat16 and projects it there (close to float32, not
    equal); the vectors a fit saves are projected from the float32 text, as serving projects a new item's. auto is
    float32 where the CPU has no native bf16."""
    rng = np.random.default_rng(4)
    net = make_net(2)
    enc = net.items.content
    enc.eval()
    text = torch.as_tensor(rng.normal(size=(40, 6)), dtype=torch.float32)
    numeric, cats = torch.zeros(40, 2), [torch.zeros(40, 1, dtype=torch.long)] * 2
    v32, b32 = enc(text, numeric, cats)
    v16, b16 = enc(text.bfloat16(), numeric, cats)
    assert v16.dtype == torch.float32 and not torch.equal(v16, v32)
    torch.testing.assert_close(v16, v32, atol=0.03, rtol=0.03)
    torch.testing.assert_close(b16, b32, atol=0.03, rtol=0.03)

    items = feature_arrays(rng, N_ITEMS)
    users = EntityFeatures(np.zeros((N_USERS, 0), np.float32), np.zeros((N_USERS, 0), np.float32))
    args = (items, users, np.ones(N_ITEMS, bool), np.ones(N_USERS, bool))
    trainer = Trainer(net, *args, TrainConfig(precision="bf16"), "bpr", Dropouts(), 0, torch.device("cpu"))
    assert trainer.items.text.dtype == torch.bfloat16
    saved, _ = trainer.all_item_vectors()
    idx = torch.arange(N_ITEMS)
    cats = [torch.as_tensor(c) for c in items.categorical]
    with torch.no_grad():
        want, _ = net.items(idx, torch.as_tensor(items.text), torch.as_tensor(items.numeric), cats)
    np.testing.assert_array_equal(saved, want.numpy())

    monkeypatch.setattr("hybridrec.features.text.cpu_supports_bf16", lambda: False)
    trainer = Trainer(net, *args, TrainConfig(precision="auto"), "bpr", Dropouts(), 0, torch.device("cpu"))
    assert trainer.items.text.dtype == torch.float32


def test_uniform_dropout_hides_its_share_and_rescales_only_in_training():
    torch.manual_seed(0)
    drop = towers.UniformDropout(0.25)
    x = torch.ones(400, 250)
    out = drop(x)
    hidden = (out == 0).float().mean().item()
    assert abs(hidden - 0.25) < 0.01
    torch.testing.assert_close(out[out != 0], torch.full_like(out[out != 0], 1 / 0.75))
    assert not torch.equal(drop(x), out)  # a fresh mask each call
    drop.eval()
    assert torch.equal(drop(x), x)
    assert torch.equal(towers.UniformDropout(0.0)(x), x)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_hidden_ids_hide_their_items_reviews_and_nothing_else(dtype):
    """hide_reviews: the review columns of the rows whose ID is hidden (keep 0) become zeros in place, a partial
    keep scales them, the other rows and the metadata columns are untouched."""
    torch.manual_seed(1)
    text = torch.randn(50, 9).to(dtype)
    keep = (torch.rand(50) > 0.3).float()
    keep[4] = 0.5
    want = text.clone()
    want[:, 5:] = (want[:, 5:].float() * keep.unsqueeze(-1)).to(dtype)
    hide_reviews(text[:, 5:], keep)
    assert torch.equal(text, want)
    assert (text[keep == 0, 5:] == 0).all() and (text[keep == 0, :5] != 0).all()
    hide_reviews(text[:, 5:], torch.ones(50))  # nothing hidden: nothing changes
    assert torch.equal(text, want)


def test_padded_sizes_stay_close_and_take_few_values():
    """train.padded_size: never fewer rows, under 1/16 more, and the ~1,000 counts a big batch's distinct items
    wander over collapse to one or two sizes (what keeps a fit's allocations reusable)."""
    for n in range(0, 70_000, 7):
        size = train_module.padded_size(n)
        assert n <= size and size - n < max(1, n / 16)
    assert {train_module.padded_size(n) for n in range(46_300, 47_000)} == {47_104}
    assert train_module.padded_size(32) == 32 and train_module.padded_size(33) == 34  # 64 / 32 = 2


@pytest.mark.parametrize("loss", ["mse", "bpr", "softmax", "sampled-softmax"])
def test_padding_a_batchs_distinct_rows_changes_no_weight(monkeypatch, loss):
    """distinct_rows pads with copies of the first row, which no batch row points at: a seeded fit without
    dropout ends with the same weights padded (DISTINCT_SIZE_STEPS 4: 13 distinct rows become 16) as unpadded."""
    monkeypatch.setattr(train_module, "DISTINCT_SIZE_STEPS", 4)
    rows, inverse = train_module.distinct_rows(torch.tensor([5, 3, 5, 9, 3, 1]))
    assert rows.tolist() == [1, 3, 5, 9] and inverse.tolist() == [2, 1, 2, 3, 1, 0]
    rows, inverse = train_module.distinct_rows(torch.tensor([5, 3, 9, 1, 7]))  # 8 / 4: steps of 2
    assert rows.tolist() == [1, 3, 5, 7, 9, 1] and torch.equal(rows[inverse], torch.tensor([5, 3, 9, 1, 7]))

    rng = np.random.default_rng(6)
    items, users = feature_arrays(rng, N_ITEMS), feature_arrays(rng, N_USERS)
    users = EntityFeatures(users.text[:, :0], users.numeric[:, :0])
    tokens = rng.integers(0, N_ITEMS + 1, size=(N_USERS, HISTORY))
    pairs = Interactions(rng.integers(0, N_USERS, 90), rng.integers(0, N_ITEMS, 90), np.ones(90), np.ones(90))
    weights = {}
    for steps in (4, 2**62):  # 2**62: a step of one row, no padding
        monkeypatch.setattr(train_module, "DISTINCT_SIZE_STEPS", steps)
        net = make_net(5)
        cfg = TrainConfig(loss=loss, batch_size=16, negatives=3, epochs=2, early_stopping=False)
        args = (items, users, np.ones(N_ITEMS, bool), np.ones(N_USERS, bool), cfg, loss, Dropouts(), 0)
        trainer = Trainer(net, *args, torch.device("cpu"), history=HistoryInputs(tokens))
        trainer.fit(pairs, None)
        weights[steps] = {k: v.clone() for k, v in net.state_dict().items()}
    start = make_net(5).state_dict()["items.id_embedding.weight"]
    assert not torch.equal(weights[4]["items.id_embedding.weight"], start)  # it did train
    for name, value in weights[2**62].items():
        torch.testing.assert_close(weights[4][name], value, rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize("batch, sparse", [(1, True), (2, False)])
def test_a_history_bag_a_step_looks_up_often_takes_dense_gradients(batch, sparse):
    """towers.BAG_SPARSE_SHARE: the history bag (31 rows, 5 positions a user) keeps sparse gradients while it has
    4 rows a lookup (batch 1: 5 lookups) and turns dense beyond (batch 2: 10 lookups), where its sparse backward
    costs more than the whole table; the dense Adam then steps it and its padding row stays zero."""
    rng = np.random.default_rng(8)
    net = make_net(1)
    items, users = feature_arrays(rng, N_ITEMS), EntityFeatures(np.zeros((N_USERS, 0)), np.zeros((N_USERS, 0)))
    tokens = rng.integers(0, N_ITEMS + 1, size=(N_USERS, HISTORY))
    cfg = TrainConfig(loss="bpr", batch_size=batch, negatives=1, epochs=1, early_stopping=False)
    args = (items, users, np.ones(N_ITEMS, bool), np.ones(N_USERS, bool), cfg, "bpr", Dropouts(), 0)
    trainer = Trainer(net, *args, torch.device("cpu"), history=HistoryInputs(tokens))
    bag = net.users.content.history
    assert bag.sparse is sparse
    opt = Optimisers(net, lr=0.01, weight_decay=0.0, dense_step=trainer.dense_step)
    assert any(p is bag.weight for p in opt.tables) is sparse
    u, i = torch.tensor([0, 1, 2]), torch.tensor([3, 4, 5])
    trainer._batch_loss(u, i, torch.ones(3), torch.ones(3)).backward()
    assert bag.weight.grad.is_sparse is sparse
    before = bag.weight.detach().clone()
    pairs = Interactions(rng.integers(0, N_USERS, 20), rng.integers(0, N_ITEMS, 20), np.ones(20), np.ones(20))
    trainer.fit(pairs, None)
    assert not torch.equal(bag.weight.detach(), before) and (bag.weight[0] == 0).all()
