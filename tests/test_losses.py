"""Training internals on a tiny network: sampled-softmax is the full softmax when its negatives cover the
catalogue and a lower bound of it otherwise; a user's target item leaves its own history bag and nothing else
does; causal histories give each training row its user's earlier items (most recent first) and replace the served
bag; user ID dropout; early stopping and weight averaging; and the MLP residual head trains.

Expected values are computed here by hand (loops over the bags, the logits, the head's terms), never copied from
the code under test."""

from __future__ import annotations

import copy
import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hybridrec.config import TrainConfig
from hybridrec.features.pipeline import EntityFeatures
from hybridrec.model.history import CausalHistories
from hybridrec.model.network import HybridNet, NetShape
from hybridrec.model.spec import TowerSpec
from hybridrec.model.train import Dropouts, HistoryInputs, Interactions, Trainer

N_USERS, N_ITEMS, WIDTH = 5, 7, 4


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def served_bags() -> np.ndarray:
    """(users x WIDTH) history tokens, item row + 1, 0 pads: distinct items per user; user 4 has only two."""
    rng = np.random.default_rng(0)
    bags = np.zeros((N_USERS, WIDTH), np.int64)
    for u in range(N_USERS):
        bags[u] = rng.choice(N_ITEMS, WIDTH, replace=False) + 1
    bags[4, 2:] = 0
    return bags


def empty_features(n: int) -> EntityFeatures:
    return EntityFeatures(np.zeros((n, 0), np.float32), np.zeros((n, 0), np.float32))


def make_trainer(
    negatives: int = 100,
    causal: CausalHistories | None = None,
    user_id_dropout: float = 0.0,
    position_weights: bool = False,
) -> Trainer:
    """An id-only item tower and a user tower of ID + history bag, trained with sampled-softmax."""
    torch.manual_seed(0)
    user_spec = TowerSpec(history_items=N_ITEMS, history_positions=WIDTH if position_weights else 0)
    shape = NetShape(variant="id-only", dim=8, hidden=16, dropout=0.0)
    net = HybridNet(N_USERS, N_ITEMS, TowerSpec(), user_spec, shape, 0.0)
    with torch.no_grad():
        net.items.id_bias.weight.normal_()  # non-zero item biases, so the tests see them too
        net.users.id_bias.weight.normal_()
        if net.users.content.position_logits is not None:  # unequal position weights, so positions count
            net.users.content.position_logits.normal_()
    trainer = Trainer(
        net,
        empty_features(N_ITEMS),
        empty_features(N_USERS),
        np.ones(N_ITEMS, bool),
        np.ones(N_USERS, bool),
        TrainConfig(loss="sampled-softmax", negatives=negatives),
        "sampled-softmax",
        Dropouts(user_id=user_id_dropout),
        0,
        torch.device("cpu"),
        history=HistoryInputs(served_bags(), causal),
    )
    trainer.net.eval()  # no dropout: the values below are deterministic
    return trainer


def hand_user_vector(trainer: Trainer, user: int, tokens, leave_out: int | None = None):
    """ID embedding + content(mean of the history embeddings of `tokens`), the bag summed in a loop: each
    position weighted by softplus(its logit) when the tower has position weights, PADs and `leave_out` skipped."""
    tower = trainer.net.users
    content = tower.content
    table = content.history.weight
    logits = content.position_logits
    total, count = torch.zeros(table.shape[1]), 0.0
    for position, token in enumerate(int(t) for t in tokens):
        if token == 0 or token == leave_out:
            continue
        w = 1.0 if logits is None else math.log1p(math.exp(float(logits[position])))
        total += w * table[token]
        count += w
    hidden = (total / count if count else total).unsqueeze(0)
    vec = tower.id_embedding.weight[user] + content.out(hidden)[0]
    bias = tower.id_bias.weight[user, 0] + content.bias(hidden)[0, 0]
    return vec, bias


# -- sampled softmax -------------------------------------------------------------------------------------------------

USERS = [0, 1, 2, 3, 4, 0]
TARGETS = [3, 0, 6, 2, 5, 1]
WEIGHTS = [1.0, 2.0, 0.5, 1.0, 3.0, 1.5]


def softmax_losses(trainer: Trainer, negatives_rng: int = 0) -> tuple[float, float]:
    """(the trainer's sampled-softmax loss, the weighted full softmax cross-entropy over every item by hand)."""
    users, targets = torch.tensor(USERS), torch.tensor(TARGETS)
    with torch.no_grad():
        u, _ = trainer.user_vectors(users, targets)
        v, b = trainer.item_vectors(targets)
        weight = torch.tensor(WEIGHTS)
        torch.manual_seed(negatives_rng)  # negatives are drawn by torch's RNG on the training device
        sampled = trainer._sampled_softmax(u, v, b, targets, weight)
        v_all, b_all = trainer.item_vectors(torch.arange(N_ITEMS))
    total = 0.0
    for r, target in enumerate(TARGETS):
        logits = [float((u[r] * v_all[j]).sum() + b_all[j]) for j in range(N_ITEMS)]
        log_partition = math.log(sum(math.exp(s) for s in logits))
        total += WEIGHTS[r] * (log_partition - logits[target])
    return float(sampled), total / sum(WEIGHTS)


def test_sampled_softmax_with_negatives_covering_the_catalogue_is_the_full_softmax():
    sampled, full = softmax_losses(make_trainer(negatives=N_ITEMS + 10))
    assert sampled == pytest.approx(full, rel=1e-5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sampled_softmax_with_fewer_negatives_is_below_the_full_softmax(seed):
    sampled, full = softmax_losses(make_trainer(negatives=3), seed)
    # a partition function over a subset of the items is smaller: the sampled loss is a strict lower bound here
    assert 0 < sampled < full - 1e-4


# -- the history bag -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("position_weights", [False, True])
def test_a_users_target_item_is_hidden_from_its_history_and_nothing_else_is(position_weights):
    trainer = make_trainer(position_weights=position_weights)
    bags = served_bags()
    absent = [next(i for i in range(N_ITEMS) if i + 1 not in bags[u]) for u in range(N_USERS)]
    # (user, target): targets in the bag at each position, targets outside it, the same target for another user
    rows = [(0, int(bags[0, 0]) - 1), (0, int(bags[0, 2]) - 1), (0, absent[0]), (1, int(bags[0, 0]) - 1)]
    rows += [(4, int(bags[4, 1]) - 1), (4, absent[4]), (2, int(bags[2, 3]) - 1)]
    users = torch.tensor([u for u, _ in rows])
    targets = torch.tensor([t for _, t in rows])
    with torch.no_grad():
        masked, masked_bias = trainer.user_vectors(users, targets)
        plain, plain_bias = trainer.user_vectors(users)
        for r, (u, t) in enumerate(rows):
            expected, expected_bias = hand_user_vector(trainer, u, bags[u], leave_out=t + 1)
            torch.testing.assert_close(masked[r], expected, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(masked_bias[r], expected_bias, atol=1e-5, rtol=1e-5)
            whole, whole_bias = hand_user_vector(trainer, u, bags[u])
            torch.testing.assert_close(plain[r], whole, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(plain_bias[r], whole_bias, atol=1e-5, rtol=1e-5)
            if t + 1 in bags[u]:  # leaving the target out did change the user vector
                assert not torch.allclose(masked[r], plain[r], atol=1e-4)
            else:  # a target outside the user's bag changes nothing
                torch.testing.assert_close(masked[r], plain[r], atol=1e-6, rtol=1e-6)


def test_user_id_dropout_hides_user_ids_only_while_training():
    trainer = make_trainer(user_id_dropout=0.999)
    idx = torch.arange(N_USERS)
    with torch.no_grad():
        trainer.net.eval()
        with_ids, _ = trainer.user_vectors(idx)
        trainer.net.train()
        torch.manual_seed(1)
        dropped, dropped_bias = trainer.user_vectors(idx)
        trainer.net.users.id_embedding.weight.zero_()
        trainer.net.users.id_bias.weight.zero_()
        no_ids, no_ids_bias = trainer.user_vectors(idx)
    # in training the ID part is (almost surely) hidden: only the history bag is left
    torch.testing.assert_close(dropped, no_ids, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(dropped_bias, no_ids_bias, atol=1e-6, rtol=1e-6)
    assert not torch.allclose(with_ids, dropped, atol=1e-4)  # at inference it is used


# -- causal histories ------------------------------------------------------------------------------------------------

C_USERS = np.array([0, 0, 1, 0, 1, 0])
C_STAMPS = np.array([10, 30, 5, 20, 7, 20])  # rows 3 and 5 tie: as in the served bag's stable sort, 3 is "later"
C_ITEMS = np.array([0, 1, 2, 3, 4, 5])


def hand_causal_rows(length: int) -> list[list[int]]:
    """Per row: the tokens of the rows of its user that come after it in (time descending, row ascending) order."""
    out = []
    for r in range(len(C_USERS)):
        same = [s for s in range(len(C_USERS)) if C_USERS[s] == C_USERS[r]]
        timeline = sorted(same, key=lambda s: (-C_STAMPS[s], s))
        earlier = [int(C_ITEMS[s]) + 1 for s in timeline[timeline.index(r) + 1 :]][:length]
        out.append(earlier + [0] * (length - len(earlier)))
    return out


@pytest.mark.parametrize("length", [1, 2, 5])
def test_causal_histories_give_each_row_its_users_earlier_items_most_recent_first(length):
    trainer = make_trainer(causal=CausalHistories.build(C_USERS, C_ITEMS, C_STAMPS, length))
    rows = trainer._causal_rows(torch.arange(len(C_USERS))).tolist()
    assert rows == hand_causal_rows(length)
    if length == 2:
        # user 0 latest first: row 1 (30), row 3 (20), row 5 (20), row 0 (10); user 1: row 4 (7), row 2 (5)
        assert rows == [[0, 0], [4, 6], [0, 0], [6, 1], [3, 0], [1, 0]]
    shuffled = torch.tensor([5, 1, 1, 2])  # any batch of rows, in any order, repeated
    assert trainer._causal_rows(shuffled).tolist() == [hand_causal_rows(length)[r] for r in shuffled.tolist()]


def test_causal_histories_are_only_used_by_ranking_losses():
    causal = CausalHistories.build(C_USERS, C_ITEMS, C_STAMPS, 2)
    trainer = make_trainer(causal=causal)
    mse = Trainer(
        trainer.net,
        empty_features(N_ITEMS),
        empty_features(N_USERS),
        np.ones(N_ITEMS, bool),
        np.ones(N_USERS, bool),
        TrainConfig(loss="mse"),
        "mse",
        Dropouts(),
        0,
        torch.device("cpu"),
        history=HistoryInputs(served_bags(), causal),
    )
    assert trainer.causal is not None and mse.causal is None


@pytest.mark.parametrize("position_weights", [False, True])
def test_a_causal_history_replaces_the_bag_in_the_user_tower(position_weights):
    trainer = make_trainer(position_weights=position_weights)
    users = torch.tensor([1, 1, 3])
    targets = torch.tensor([0, 1, 2])
    own = torch.tensor([[4, 2, 0, 0], [0, 0, 0, 0], [7, 5, 4, 0]])  # per-row histories (tokens; 0 pads)
    with torch.no_grad():
        causal, causal_bias = trainer.user_vectors(users, targets, own)
        served, _ = trainer.user_vectors(users, targets)
        for r, u in enumerate(users.tolist()):
            expected, expected_bias = hand_user_vector(trainer, u, own[r].tolist())
            torch.testing.assert_close(causal[r], expected, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(causal_bias[r], expected_bias, atol=1e-5, rtol=1e-5)
            assert not torch.allclose(causal[r], served[r], atol=1e-4)  # the served bag is not used
    assert not torch.allclose(causal[0], causal[1], atol=1e-4)  # the history did change the same user's vector


# -- early stopping and weight averaging -----------------------------------------------------------------------------


def _pairs(rng: np.random.Generator, n: int) -> Interactions:
    return Interactions(
        rng.integers(0, N_USERS, n), rng.integers(0, N_ITEMS, n), np.ones(n, np.float32), np.ones(n, np.float32)
    )


@pytest.mark.parametrize("early_stopping", [True, False])
def test_early_stopping_off_trains_every_epoch_and_keeps_the_last_weights(early_stopping):
    rng = np.random.default_rng(3)
    train, val = _pairs(rng, 60), _pairs(rng, 12)
    snapshots = []
    trainer = make_trainer(negatives=N_ITEMS)
    trainer.cfg = dataclasses.replace(trainer.cfg, epochs=6, patience=1, early_stopping=early_stopping, batch_size=8)
    result = trainer.fit(train, val, progress=lambda row: snapshots.append(copy.deepcopy(trainer.net.state_dict())))
    scores = [row["val"] for row in result.history]
    kept = trainer.net.state_dict()
    if early_stopping:  # stops after the first epoch without a gain and restores the best one
        best = int(np.argmin(scores))
        assert len(scores) == min(6, best + 2) and result.best_epoch == best + 1
        assert len(set(scores)) > 1  # the validation score moves, so the check below means something
    else:  # every epoch runs and is scored, and the weights are the last epoch's
        assert len(scores) == 6 and result.best_epoch == 6 and not result.stopped_early
        best = len(snapshots) - 1
    assert all(torch.equal(kept[k], snapshots[best][k]) for k in kept)


def test_average_last_keeps_the_mean_of_the_last_epochs_weights():
    rng = np.random.default_rng(3)
    train, val = _pairs(rng, 60), _pairs(rng, 12)
    snapshots = []
    trainer = make_trainer(negatives=N_ITEMS)
    trainer.cfg = dataclasses.replace(trainer.cfg, epochs=6, early_stopping=False, average_last=3, batch_size=8)
    result = trainer.fit(train, val, progress=lambda row: snapshots.append(copy.deepcopy(trainer.net.state_dict())))
    kept = trainer.net.state_dict()
    assert len(snapshots) == 6
    # the reported validation score is the kept (averaged) model's, not the last epoch's
    assert result.best_score == pytest.approx(trainer.validation_score(val))
    assert result.best_score != pytest.approx(result.history[-1]["val"])
    for k in kept:
        expected = sum(snapshots[e][k] for e in (3, 4, 5)) / 3
        torch.testing.assert_close(kept[k], expected)
    # the weights move between those epochs, so the mean is not any one of them
    for weights in ("items.id_embedding.weight", "users.content.history.weight"):
        assert not any(torch.allclose(kept[weights], snapshots[e][weights]) for e in (3, 4, 5))


# -- the MLP residual head -------------------------------------------------------------------------------------------


def hand_head(net: HybridNet, u: torch.Tensor, b_u: torch.Tensor, v: torch.Tensor, b_i: torch.Tensor) -> list[float]:
    """mu + b_u + b_i + sum_k u_k v_k + W2 gelu(W1 [u, v, u*v] + c1) + c2, row by row."""
    first, last = net.residual[0], net.residual[-1]
    out = []
    for r in range(len(u)):
        dot = sum(float(u[r, k] * v[r, k]) for k in range(u.shape[1]))
        x = torch.cat([u[r], v[r], u[r] * v[r]])
        residual = float(last.weight[0] @ F.gelu(first.weight @ x + first.bias) + last.bias[0])
        out.append(float(net.global_mean) + float(b_u[r]) + float(b_i[r]) + dot + residual)
    return out


def test_the_mlp_residual_head_trains_on_a_non_linear_interaction():
    rng = np.random.default_rng(7)
    n_users, n_items = 24, 16
    a, c = rng.normal(size=n_users), rng.normal(size=n_items)
    users, items = (m.ravel() for m in np.meshgrid(np.arange(n_users), np.arange(n_items), indexing="ij"))
    # a non-linear interaction of one user and one item factor: a saturating product plus a corner bonus
    ratings = 3 + 1.5 * np.tanh(2 * a[users] * c[items]) + 1.0 * ((a[users] > 0) & (c[items] > 0))
    ratings = ratings.astype(np.float32)
    train = Interactions(users, items, ratings, np.ones(len(users), np.float32))
    val_rows = rng.choice(len(users), 40, replace=False)
    val = Interactions(users[val_rows], items[val_rows], ratings[val_rows], np.ones(40, np.float32))

    torch.manual_seed(0)
    shape = NetShape(variant="id-only", dim=4, hidden=16, dropout=0.0, mlp_residual=True)
    net = HybridNet(n_users, n_items, TowerSpec(), TowerSpec(), shape, float(ratings.mean()))
    assert net.residual is not None
    first_before = net.residual[0].weight.detach().clone()
    # starts as the plain dot product: the last layer of the residual is zero
    assert not net.residual[-1].weight.any() and not net.residual[-1].bias.any()
    settings = TrainConfig(loss="mse", epochs=12, batch_size=32, lr=0.02, early_stopping=False, l2=0.0)
    trainer = Trainer(
        net,
        empty_features(n_items),
        empty_features(n_users),
        np.ones(n_items, bool),
        np.ones(n_users, bool),
        settings,
        "mse",
        Dropouts(),
        0,
        torch.device("cpu"),
    )
    result = trainer.fit(train, val)
    losses = [row["train_loss"] for row in result.history]

    assert len(losses) == 12
    assert losses[-1] < 0.2 * losses[0]  # the training loss falls over the epochs
    assert np.mean(losses[-3:]) < np.mean(losses[:3])
    # the residual's weights moved away from their init (the last layer from zero)
    assert float(net.residual[-1].weight.detach().abs().max()) > 1e-2
    assert not torch.allclose(net.residual[0].weight, first_before)

    with torch.no_grad():
        u, b_u = trainer.user_vectors(torch.as_tensor(users))
        v, b_i = trainer.item_vectors(torch.as_tensor(items))
        residual = net.residual_score(u, v)
        head = net.head(u, b_u, v, b_i)
        hand = hand_head(net, u[val_rows], b_u[val_rows], v[val_rows], b_i[val_rows])
    # the trained residual is part of the score, and the score is the head formula plus the residual
    assert float(residual.std()) > 0.02
    np.testing.assert_allclose(head[val_rows].numpy(), hand, atol=1e-4, rtol=1e-5)
    # validation (RMSE for ratings) scores with the residual too: the last epoch's kept model, by hand
    rmse = math.sqrt(sum((h - float(t)) ** 2 for h, t in zip(hand, val.ratings)) / len(hand))
    assert result.best_score == pytest.approx(rmse, rel=1e-4)
