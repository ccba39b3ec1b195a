"""Tests for carl.objectives.momentum_contrastive: targets, soft InfoNCE, MCL loss, SupCon bins."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from carl.objectives.momentum_contrastive import (
    MomentumContrastiveLoss,
    hard_label_targets,
    soft_contrastive_loss,
    soft_label_targets,
    va_bins,
)


def unit(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x, dim=-1)


# --------------------------------------------------------------------------- soft targets


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_soft_targets_rows_sum_to_one_and_own_key_is_largest(seed):
    g = torch.Generator().manual_seed(seed)
    batch, extra = 6, 9
    query_labels = torch.randn(batch, 2, generator=g)
    # keys = the batch's own keys (same labels, columns 0..B-1) followed by "queue" keys
    key_labels = torch.cat([query_labels, torch.randn(extra, 2, generator=g)])
    sigma = float(torch.empty(()).uniform_(0.1, 2.0, generator=g))
    targets = soft_label_targets(query_labels, key_labels, sigma)
    assert targets.shape == (batch, batch + extra)
    assert torch.all(targets >= 0)
    torch.testing.assert_close(targets.sum(-1), torch.ones(batch), atol=1e-6, rtol=0)
    own = torch.arange(batch)
    # the own key has distance 0: it gets the row maximum
    assert torch.equal(targets.argmax(-1), own)
    assert torch.all(targets[own, own] >= targets.max(-1).values - 1e-7)


def test_soft_targets_match_hand_computation():
    query = torch.tensor([[0.0, 0.0]])
    keys = torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 2.0]])
    sigma = 0.5
    # squared distances 0, 1, 2, 4 -> logits 0, -2, -4, -8
    logits = torch.tensor([0.0, -2.0, -4.0, -8.0])
    expected = logits.exp() / logits.exp().sum()
    got = soft_label_targets(query, keys, sigma)[0]
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)
    # strictly decreasing with VA distance
    assert torch.all(got[:-1] > got[1:])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_soft_targets_decrease_with_distance(seed):
    g = torch.Generator().manual_seed(seed)
    query = torch.randn(3, 2, generator=g)
    keys = torch.randn(20, 2, generator=g)
    targets = soft_label_targets(query, keys, 0.7)
    dist = ((query[:, None, :] - keys[None, :, :]) ** 2).sum(-1)
    for row in range(3):
        order = dist[row].argsort()
        sorted_targets = targets[row, order]
        assert torch.all(sorted_targets[:-1] >= sorted_targets[1:] - 1e-7)
        # ratio of targets = exp(-(d_a - d_b)/sigma)
        a, b = order[0], order[-1]
        ratio = targets[row, a] / targets[row, b]
        expected = math.exp(-(float(dist[row, a]) - float(dist[row, b])) / 0.7)
        assert ratio.item() == pytest.approx(expected, rel=1e-4)


def test_soft_targets_small_sigma_is_one_hot_on_own_key():
    g = torch.Generator().manual_seed(7)
    labels = torch.randn(5, 2, generator=g)
    others = 10.0 + torch.rand(4, 2, generator=g)  # far from every query label
    keys = torch.cat([others[:2], labels, others[2:]])  # own keys at columns 2..6
    targets = soft_label_targets(labels, keys, 1e-4)
    expected = torch.zeros(5, 9)
    expected[torch.arange(5), torch.arange(5) + 2] = 1.0
    torch.testing.assert_close(targets, expected, atol=1e-6, rtol=0)


# --------------------------------------------------------------------------- soft CE / InfoNCE


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_soft_contrastive_loss_with_one_hot_targets_is_infonce(seed):
    g = torch.Generator().manual_seed(seed)
    batch, keys = 4, 11
    logits = torch.randn(batch, keys, generator=g) * 3
    own = torch.randint(keys, (batch,), generator=g)
    targets = F.one_hot(own, keys).float()
    expected = F.cross_entropy(logits, own)
    assert soft_contrastive_loss(logits, targets).item() == pytest.approx(expected.item(), abs=1e-6)


def test_soft_contrastive_loss_is_kl_plus_entropy():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(5, 8, generator=g)
    targets = torch.softmax(torch.randn(5, 8, generator=g) * 2, dim=-1)
    log_q = logits - torch.logsumexp(logits, dim=-1, keepdim=True)
    kl = (targets * (targets.log() - log_q)).sum(-1)
    entropy = -(targets * targets.log()).sum(-1)
    expected = (kl + entropy).mean()
    # also the plain soft cross-entropy written out
    manual_ce = -(targets * log_q).sum(-1).mean()
    loss = soft_contrastive_loss(logits, targets)
    assert loss.item() == pytest.approx(expected.item(), abs=1e-5)
    assert loss.item() == pytest.approx(manual_ce.item(), abs=1e-6)
    # KL >= 0 so the loss is never below the target entropy
    assert loss.item() >= entropy.mean().item() - 1e-6


def test_soft_contrastive_loss_hand_value():
    # two keys, logits (0, 0): log softmax = log 1/2; targets (0.25, 0.75) -> loss = log 2
    logits = torch.zeros(1, 2)
    targets = torch.tensor([[0.25, 0.75]])
    assert soft_contrastive_loss(logits, targets).item() == pytest.approx(math.log(2), abs=1e-7)


def make_batch(seed: int, batch: int = 4, queue: int = 6, dim: int = 8):
    g = torch.Generator().manual_seed(seed)
    queries = unit(torch.randn(batch, dim, generator=g))
    keys = unit(torch.randn(batch + queue, dim, generator=g))
    # distinct labels: a spread-out grid plus noise
    labels = torch.randn(batch + queue, 2, generator=g) + torch.arange(batch + queue)[:, None] * 3.0
    query_labels = labels[:batch]
    own = torch.arange(batch)
    return queries, keys, query_labels, labels, own


@pytest.mark.parametrize("seed", [0, 1])
def test_mcl_loss_small_label_temperature_is_infonce(seed):
    queries, keys, query_labels, key_labels, own = make_batch(seed)
    tau = 0.07
    loss_fn = MomentumContrastiveLoss(temperature=tau, label_temperature=1e-3)
    out = loss_fn(queries, keys, query_labels, key_labels, own)
    expected = F.cross_entropy(queries @ keys.T / tau, own)
    assert out.loss.item() == pytest.approx(expected.item(), abs=1e-5)


def test_mcl_loss_own_keys_not_first_columns():
    queries, keys, query_labels, key_labels, _ = make_batch(5)
    perm = torch.tensor([7, 2, 9, 0, 1, 3, 4, 5, 6, 8])
    keys, key_labels = keys[perm], key_labels[perm]
    own = torch.tensor([3, 4, 1, 5])  # where perm puts columns 0..3
    assert torch.equal(perm[own], torch.arange(4))
    loss_fn = MomentumContrastiveLoss(temperature=0.2, label_temperature=1e-3)
    out = loss_fn(queries, keys, query_labels, key_labels, own)
    expected = F.cross_entropy(queries @ keys.T / 0.2, own)
    assert out.loss.item() == pytest.approx(expected.item(), abs=1e-5)


def test_mcl_loss_equals_soft_ce_of_manual_targets():
    queries, keys, query_labels, key_labels, own = make_batch(2)
    loss_fn = MomentumContrastiveLoss(temperature=0.1, label_temperature=0.5)
    out = loss_fn(queries, keys, query_labels, key_labels, own)
    dist = ((query_labels[:, None] - key_labels[None]) ** 2).sum(-1)
    targets = torch.softmax(-dist / 0.5, dim=-1)
    log_q = F.log_softmax(queries @ keys.T / 0.1, dim=-1)
    expected = -(targets * log_q).sum(-1).mean()
    assert out.loss.item() == pytest.approx(expected.item(), abs=1e-5)


def test_mcl_diagnostics():
    queries, keys, query_labels, key_labels, own = make_batch(1)
    loss_fn = MomentumContrastiveLoss(temperature=0.1, label_temperature=0.5)
    out = loss_fn(queries, keys, query_labels, key_labels, own)
    for key in ("mcl_kl", "mcl_target_entropy", "mcl_own_key_prob", "mcl_top1_own"):
        assert out.diagnostics[key].ndim == 0  # left on the device for the trainer's one read
    d = {k: float(v) for k, v in out.diagnostics.items()}
    logits = queries @ keys.T / 0.1
    probs = torch.softmax(logits, -1)
    dist = ((query_labels[:, None] - key_labels[None]) ** 2).sum(-1)
    targets = torch.softmax(-dist / 0.5, dim=-1)
    entropy = -(targets * targets.clamp(min=1e-12).log()).sum(-1).mean()
    assert d["mcl_target_entropy"] == pytest.approx(entropy.item(), abs=1e-5)
    assert d["mcl_kl"] == pytest.approx(out.loss.item() - entropy.item(), abs=1e-5)
    assert d["mcl_kl"] >= -1e-5
    assert d["mcl_own_key_prob"] == pytest.approx(probs[own, own].mean().item(), abs=1e-6)
    assert d["mcl_top1_own"] == pytest.approx((logits.argmax(-1) == own).float().mean().item())


def test_mcl_top1_own_is_one_when_queries_equal_own_keys():
    g = torch.Generator().manual_seed(0)
    keys = unit(torch.randn(6, 16, generator=g))
    labels = torch.randn(6, 2, generator=g)
    loss_fn = MomentumContrastiveLoss(temperature=0.05, label_temperature=0.5)
    out = loss_fn(keys[:3].clone(), keys, labels[:3], labels, torch.arange(3))
    assert out.diagnostics["mcl_top1_own"] == 1.0
    assert 0.0 < out.diagnostics["mcl_own_key_prob"] <= 1.0


# --------------------------------------------------------------------------- SupCon hard targets


def test_hard_label_targets_uniform_over_same_class():
    query_classes = torch.tensor([0, 1, 2])
    key_classes = torch.tensor([0, 1, 0, 2, 1, 0])
    targets = hard_label_targets(query_classes, key_classes)
    expected = torch.tensor(
        [
            [1 / 3, 0, 1 / 3, 0, 0, 1 / 3],
            [0, 0.5, 0, 0, 0.5, 0],
            [0, 0, 0, 1.0, 0, 0],
        ]
    )
    torch.testing.assert_close(targets, expected, atol=1e-7, rtol=0)
    torch.testing.assert_close(targets.sum(-1), torch.ones(3))


def test_va_bins_hand_example():
    edges = torch.tensor([[-0.5, 0.5], [-1.0, 1.0]])  # b = 3 bins per dimension
    labels = torch.tensor(
        [
            [-1.0, 0.0],  # v bin 0, a bin 1 -> 1
            [0.6, 2.0],  # v 2, a 2 -> 8
            [0.0, -2.0],  # v 1, a 0 -> 3
            [-3.0, -3.0],  # 0, 0 -> 0
            [0.2, 0.9],  # 1, 1 -> 4
            [5.0, -0.5],  # 2, 1 -> 7
        ]
    )
    assert va_bins(labels, edges).tolist() == [1, 8, 3, 0, 4, 7]


def test_va_bins_covers_b_squared_classes():
    edges = torch.tensor([[0.0], [0.0]])  # b = 2 -> 4 classes
    labels = torch.tensor([[-1.0, -1.0], [-1.0, 1.0], [1.0, -1.0], [1.0, 1.0]])
    assert va_bins(labels, edges).tolist() == [0, 1, 2, 3]


def test_mcl_loss_with_hard_bins_uses_supcon_targets():
    edges = torch.tensor([[0.0], [0.0]])
    queries, keys, _, _, own = make_batch(4, batch=3, queue=3)
    key_labels = torch.tensor([[-1.0, -1.0], [1.0, 1.0], [-1.0, 1.0], [-2.0, -0.5], [1.5, 0.5], [0.3, 0.2]])
    query_labels = key_labels[:3]
    loss_fn = MomentumContrastiveLoss(temperature=0.1, hard_bin_edges=edges)
    out = loss_fn(queries, keys, query_labels, key_labels, own)
    # classes: keys [0, 3, 1, 0, 3, 3]; queries [0, 3, 1]
    targets = torch.tensor(
        [
            [0.5, 0, 0, 0.5, 0, 0],
            [0, 1 / 3, 0, 0, 1 / 3, 1 / 3],
            [0, 0, 1.0, 0, 0, 0],
        ]
    )
    expected = -(targets * F.log_softmax(queries @ keys.T / 0.1, -1)).sum(-1).mean()
    assert out.loss.item() == pytest.approx(expected.item(), abs=1e-5)


# --------------------------------------------------------------------------- gradients


def test_gradient_finite_and_sgd_decreases_loss():
    g = torch.Generator().manual_seed(0)
    dim = 8
    keys = unit(torch.randn(8, dim, generator=g))
    key_labels = torch.randn(8, 2, generator=g) * 2
    query_labels = key_labels[:3].clone()
    raw = torch.randn(3, dim, generator=g).requires_grad_(True)
    loss_fn = MomentumContrastiveLoss(temperature=0.1, label_temperature=0.5)

    def loss_value():
        return loss_fn(unit(raw), keys, query_labels, key_labels, torch.arange(3))

    first = loss_value()
    first.loss.backward()
    assert raw.grad is not None and torch.isfinite(raw.grad).all()
    assert raw.grad.abs().sum() > 0
    start = first.loss.item()
    opt = torch.optim.SGD([raw], lr=0.5)
    for _ in range(20):
        opt.zero_grad()
        out = loss_value()
        out.loss.backward()
        opt.step()
    final = loss_value()
    assert final.loss.item() < start - 0.1
    # queries moved toward their own (same-label) keys
    assert final.diagnostics["mcl_own_key_prob"] > first.diagnostics["mcl_own_key_prob"]


def test_gradient_matches_softmax_minus_targets():
    # dL/dlogits = (softmax(s) - p) / B for soft cross-entropy
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(3, 5, generator=g).requires_grad_(True)
    targets = torch.softmax(torch.randn(3, 5, generator=g), -1)
    soft_contrastive_loss(logits, targets).backward()
    expected = (torch.softmax(logits.detach(), -1) - targets) / 3
    torch.testing.assert_close(logits.grad, expected, atol=1e-6, rtol=0)


def test_soft_targets_own_key_largest_with_many_keys():
    # more than 25 rows makes torch.cdist switch to its matrix-product path
    g = torch.Generator().manual_seed(11)
    query_labels = torch.randn(32, 2, generator=g)
    key_labels = torch.cat([torch.randn(40, 2, generator=g), query_labels])
    targets = soft_label_targets(query_labels, key_labels, 0.5)
    torch.testing.assert_close(targets.sum(-1), torch.ones(32), atol=1e-5, rtol=0)
    own = torch.arange(32) + 40
    assert torch.equal(targets.argmax(-1), own)
