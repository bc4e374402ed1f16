"""The ranking losses on a tiny network: sampled-softmax is the full softmax when its negatives cover the
catalogue, a lower bound of it otherwise, and a user's history never contains the item it is trained to predict."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hybridrec.causal_history import causal_histories
from hybridrec.config import ModelConfig, TrainConfig
from hybridrec.features.pipeline import EntityFeatures
from hybridrec.model.network import HybridNet
from hybridrec.train import Interactions, Trainer

N_USERS, N_ITEMS, WIDTH = 5, 7, 4


def make_trainer(
    negatives: int, history_tokens: np.ndarray | None = None, user_id_dropout: float = 0.0, item_item: bool = False
) -> Trainer:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    # users' history bags: item row r has token r + 2 (0 pads, 1 is out-of-vocabulary)
    bags = np.zeros((N_USERS, WIDTH), np.int64)
    for u in range(N_USERS):
        bags[u] = rng.choice(N_ITEMS, WIDTH, replace=False) + 2
    no_text = np.zeros((N_ITEMS, 0), np.float32)
    items = EntityFeatures(no_text, no_text)
    users = EntityFeatures(np.zeros((N_USERS, 0), np.float32), np.zeros((N_USERS, 0), np.float32), [bags])
    item_spec = {"text_dim": 0, "numeric_dim": 0, "vocab_sizes": []}
    user_spec = {"text_dim": 0, "numeric_dim": 0, "vocab_sizes": [N_ITEMS + 2], "history_slot": 0}
    cfg = ModelConfig(variant="id-only", dim=8, hidden=16, dropout=0.0, feature_dropout=0.0, item_item=item_item)
    net = HybridNet(N_USERS, N_ITEMS, item_spec, user_spec, cfg, 0.0)
    with torch.no_grad():
        net.items.id_bias.weight.normal_()  # non-zero item biases, so the test sees them too
        if item_item:
            net.item_item.weight.normal_()  # W starts at zero in training; random here so every entry counts
    train_cfg = TrainConfig(loss="sampled-softmax", negatives=negatives)
    history = None if history_tokens is None else (0, history_tokens)
    trainer = Trainer(
        net,
        items,
        users,
        np.ones(N_ITEMS, bool),
        train_cfg,
        "implicit",
        0.0,
        None,
        0,
        torch.device("cpu"),
        history=history,
        user_id_dropout=user_id_dropout,
    )
    trainer.net.eval()  # no dropout: the losses below are deterministic
    return trainer


def softmax_losses(trainer: Trainer, negatives_rng: int = 0) -> tuple[float, float]:
    """(the trainer's sampled-softmax loss, the full softmax cross-entropy over every item) on one batch."""
    with torch.no_grad():
        return _softmax_losses(trainer, negatives_rng)


def _softmax_losses(trainer: Trainer, negatives_rng: int) -> tuple[float, float]:
    users = torch.tensor([0, 1, 2, 3, 4, 0])
    targets = torch.tensor([3, 0, 6, 2, 5, 1])
    u, _ = trainer.user_vectors(users)
    v, b = trainer.item_vectors(targets)
    weight = torch.ones(len(users))
    sampled = trainer._sampled_softmax(u, v, b, targets, weight, np.random.default_rng(negatives_rng))
    v_all, b_all = trainer.item_vectors(torch.arange(N_ITEMS))
    full = F.cross_entropy(u @ v_all.T + b_all, targets)
    return float(sampled), float(full)


def test_sampled_softmax_with_negatives_covering_the_catalogue_is_the_full_softmax():
    sampled, full = softmax_losses(make_trainer(negatives=N_ITEMS + 10))
    assert sampled == pytest.approx(full, rel=1e-5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sampled_softmax_with_fewer_negatives_is_below_the_full_softmax(seed):
    sampled, full = softmax_losses(make_trainer(negatives=3), seed)
    # a partition function over a subset of the items is smaller: the sampled loss is a strict lower bound here
    assert 0 < sampled < full


def test_a_users_target_item_is_hidden_from_its_history_and_nothing_else_is():
    tokens = np.arange(N_ITEMS) + 2
    trainer = make_trainer(negatives=100, history_tokens=tokens)
    bags = trainer.users.categorical[0]
    user = 0
    present = int(bags[user, 1]) - 2  # an item row in user 0's history
    absent = next(i for i in range(N_ITEMS) if i + 2 not in bags[user].tolist())
    idx = torch.tensor([user, user, user])
    with torch.no_grad():
        masked, _ = trainer.user_vectors(idx, torch.tensor([present, absent, present]))
        plain, _ = trainer.user_vectors(idx[:1])
        # the same user with that one item removed from the bag by hand
        by_hand = bags.clone()
        by_hand[user, 1] = 0
        trainer.users.categorical[0] = by_hand
        expected, _ = trainer.user_vectors(idx[:1])
    assert torch.allclose(masked[0], expected[0], atol=1e-6)
    assert not torch.allclose(masked[0], plain[0], atol=1e-4)  # the mask did change the user vector
    assert torch.allclose(masked[1], plain[0], atol=1e-6)  # a target outside the history changes nothing
    assert torch.allclose(masked[0], masked[2])


def test_user_id_dropout_hides_user_ids_only_while_training():
    trainer = make_trainer(negatives=100, user_id_dropout=0.999)
    idx = torch.arange(N_USERS)
    with torch.no_grad():
        trainer.net.eval()
        with_ids, _ = trainer.user_vectors(idx)
        trainer.net.train()
        torch.manual_seed(1)
        dropped, _ = trainer.user_vectors(idx)
        trainer.net.items.id_embedding.weight.zero_()
        trainer.net.users.id_embedding.weight.zero_()
        trainer.net.users.id_bias.weight.zero_()
        no_ids, _ = trainer.user_vectors(idx)
    assert torch.allclose(dropped, no_ids, atol=1e-6)  # in training, the ID part is (almost surely) hidden
    assert not torch.allclose(with_ids, dropped, atol=1e-4)  # at inference it is used


def hand_item_item(trainer: Trainer, user: int, drop: int | None = None) -> torch.Tensor:
    """sum of W[token, :] over the user's history (without item row `drop`), divided by sqrt(len), in a loop."""
    weight = trainer.net.item_item.weight
    tokens = [int(t) for t in trainer.users.categorical[0][user] if t > 0 and (drop is None or t != drop + 2)]
    total = torch.zeros(N_ITEMS)
    for t in tokens:
        total += weight[t]
    return total / max(len(tokens), 1) ** 0.5


def test_item_item_term_is_the_history_sum_of_w_scaled_by_sqrt_length_with_the_target_left_out():
    trainer = make_trainer(negatives=100, history_tokens=np.arange(N_ITEMS) + 2, item_item=True)
    bags = trainer.users.categorical[0]
    present = int(bags[2, 0]) - 2
    absent = next(i for i in range(N_ITEMS) if i + 2 not in bags[2].tolist())
    users = torch.tensor([2, 0, 2, 4])
    with torch.no_grad():
        per_user, rows = trainer.item_item_scores(users)
        masked, _ = trainer.item_item_scores(users, torch.tensor([present, 5, absent, 1]))
    assert per_user.shape == (3, N_ITEMS) and rows.tolist() == [1, 0, 1, 2]
    for r, u in enumerate([2, 0, 2, 4]):
        assert torch.allclose(per_user[rows[r]], hand_item_item(trainer, u), atol=1e-5)
    assert torch.allclose(masked[0], hand_item_item(trainer, 2, drop=present), atol=1e-5)
    assert torch.allclose(masked[2], per_user[rows[2]], atol=1e-6)  # a target outside the history changes nothing
    assert not torch.allclose(masked[0], masked[2], atol=1e-4)


def test_sampled_softmax_with_the_item_item_term_is_the_full_softmax_over_towers_plus_w():
    trainer = make_trainer(negatives=N_ITEMS + 10, history_tokens=np.arange(N_ITEMS) + 2, item_item=True)
    users = torch.tensor([0, 1, 2, 3, 4, 0])
    targets = torch.tensor([3, 0, 6, 2, 5, 1])
    with torch.no_grad():
        u, _ = trainer.user_vectors(users, targets)
        v, b = trainer.item_vectors(targets)
        pairwise, _ = trainer.item_item_scores(users, targets)
        loss = trainer._sampled_softmax(u, v, b, targets, torch.ones(6), np.random.default_rng(0), pairwise)
        v_all, b_all = trainer.item_vectors(torch.arange(N_ITEMS))
        hand = torch.stack([hand_item_item(trainer, int(x), int(t)) for x, t in zip(users, targets)])
        full = F.cross_entropy(u @ v_all.T + b_all + hand, targets)
    assert float(loss) == pytest.approx(float(full), rel=1e-5)


def test_causal_histories_give_each_row_its_users_earlier_items_most_recent_first():
    users = np.array([0, 0, 1, 0, 1, 0])
    stamps = np.array([10, 30, 5, 20, 7, 20])  # rows 3 and 5 tie: as in the served bag's stable sort, 3 is "later"
    tokens = np.array([11, 12, 13, 14, 15, 16])
    hist = causal_histories(users, stamps, tokens, length=2)
    rows = hist.rows(torch.arange(6)).tolist()
    # user 0 latest first: row 1 (30), row 3 (20), row 5 (20), row 0 (10); user 1: row 4 (7), row 2 (5)
    assert rows == [[0, 0], [14, 16], [0, 0], [16, 11], [13, 0], [11, 0]]


def test_a_causal_history_replaces_the_bag_in_the_user_tower_and_the_item_item_term():
    trainer = make_trainer(negatives=100, history_tokens=np.arange(N_ITEMS) + 2, item_item=True)
    users = torch.tensor([1, 1, 3])
    own = torch.tensor([[4, 2, 0, 0], [0, 0, 0, 0], [8, 5, 3, 0]])  # per-row histories (tokens; 0 pads)
    with torch.no_grad():
        causal, _ = trainer.user_vectors(users, torch.tensor([0, 1, 2]), own)
        pairwise, _ = trainer.item_item_scores(users, torch.tensor([0, 1, 2]), own)
        trainer.users.categorical[0] = torch.zeros(N_USERS, WIDTH, dtype=torch.long)
        for r, u in enumerate(users.tolist()):
            trainer.users.categorical[0][u] = own[r]  # the same history as the user's whole bag, by hand
            expected, _ = trainer.user_vectors(users[r : r + 1])
            assert torch.allclose(causal[r], expected[0], atol=1e-6)
            assert torch.allclose(pairwise[r], hand_item_item(trainer, u), atol=1e-5)
    assert not torch.allclose(causal[0], causal[1], atol=1e-4)  # the history did change the same user's vector


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
    weights = "items.id_embedding.weight"
    assert not any(torch.allclose(kept[weights], snapshots[e][weights]) for e in (3, 4, 5))
