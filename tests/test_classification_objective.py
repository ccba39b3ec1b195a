"""Tests for carl.objectives.classification and ClassificationHead: the maths, weights, and learning."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from carl.model.heads import ClassificationHead
from carl.objectives import MultiLabelClassificationLoss, SingleLabelClassificationLoss
from carl.objectives.classification import (
    balanced_class_weights,
    positive_class_weights,
)

# --------------------------------------------------------------------------- single-label CE


@pytest.mark.parametrize("num_classes", [2, 7, 28])
def test_uniform_logits_give_log_c_with_or_without_weights(num_classes):
    g = torch.Generator().manual_seed(num_classes)
    logits = torch.full((16, num_classes), 0.3)
    targets = torch.randint(num_classes, (16,), generator=g)
    weights = torch.rand(num_classes, generator=g) + 0.1
    for loss_fn in (SingleLabelClassificationLoss(), SingleLabelClassificationLoss(class_weights=weights)):
        assert loss_fn(logits, targets).loss.item() == pytest.approx(math.log(num_classes), rel=1e-6)


def test_confident_correct_logits_give_zero_and_full_accuracy():
    targets = torch.tensor([0, 2, 1, 2])
    logits = 30.0 * F.one_hot(targets, 3).float()
    out = SingleLabelClassificationLoss()(logits, targets)
    assert out.loss.item() < 1e-10
    assert out.diagnostics["ce_accuracy"].item() == 1.0
    assert out.diagnostics["ce_true_class_prob"].item() == pytest.approx(1.0)


def test_class_weights_reweight_the_per_example_terms():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(10, 4, generator=g)
    targets = torch.tensor([0, 1, 1, 2, 3, 3, 3, 0, 2, 1])
    weights = torch.tensor([1.0, 2.0, 0.5, 3.0])
    per_example = -F.log_softmax(logits, -1)[torch.arange(10), targets]
    w = weights[targets]
    expected = (w * per_example).sum() / w.sum()
    got = SingleLabelClassificationLoss(class_weights=weights)(logits, targets).loss
    torch.testing.assert_close(got, expected)
    # equal weights change nothing; a zero weight removes that class's examples
    torch.testing.assert_close(
        SingleLabelClassificationLoss(class_weights=torch.full((4,), 5.0))(logits, targets).loss, per_example.mean()
    )
    only_3 = SingleLabelClassificationLoss(class_weights=torch.tensor([0.0, 0, 0, 1]))(logits, targets).loss
    torch.testing.assert_close(only_3, per_example[targets == 3].mean())


def test_balanced_weights_equalise_class_mass():
    targets = np.array([0] * 6 + [1] * 3 + [2] * 1)
    w = balanced_class_weights(targets, 3)
    torch.testing.assert_close(w, torch.tensor([10 / 18, 10 / 9, 10 / 3]))
    counts = torch.tensor([6.0, 3.0, 1.0])
    torch.testing.assert_close(counts * w, torch.full((3,), 10 / 3))  # each class weighs N / C
    with pytest.raises(ValueError, match="class 3 has no examples"):
        balanced_class_weights(targets, 4)


def test_gradient_and_bf16_logits():
    logits = torch.randn(5, 3, dtype=torch.bfloat16, requires_grad=True)
    out = SingleLabelClassificationLoss()(logits, torch.tensor([0, 1, 2, 0, 1]))
    assert out.loss.dtype == torch.float32 and not out.diagnostics["ce_accuracy"].requires_grad
    out.loss.backward()
    assert logits.grad is not None and torch.isfinite(logits.grad.float()).all()


def test_bad_weights_are_rejected():
    with pytest.raises(ValueError, match="non-negative"):
        SingleLabelClassificationLoss(class_weights=torch.tensor([1.0, -1.0]))
    with pytest.raises(ValueError, match="not all zero"):
        MultiLabelClassificationLoss(positive_weights=torch.zeros(3))
    with pytest.raises(ValueError, match="3 class weights for 2 classes"):
        SingleLabelClassificationLoss(class_weights=torch.ones(3))(torch.zeros(1, 2), torch.tensor([0]))


def test_weights_follow_the_module_to_another_dtype_or_device():
    loss_fn = SingleLabelClassificationLoss(class_weights=torch.ones(3)).to(torch.float64)
    assert loss_fn.class_weights.dtype == torch.float64
    assert "class_weights" not in loss_fn.state_dict()  # not saved with a model


# --------------------------------------------------------------------------- multi-label BCE


def test_bce_zero_logits_give_log_2_and_confident_correct_give_zero():
    g = torch.Generator().manual_seed(1)
    targets = (torch.rand(8, 28, generator=g) < 0.2).float()
    loss_fn = MultiLabelClassificationLoss()
    assert loss_fn(torch.zeros(8, 28), targets).loss.item() == pytest.approx(math.log(2), rel=1e-6)
    out = loss_fn(40.0 * (2 * targets - 1), targets)
    assert out.loss.item() < 1e-12
    assert out.diagnostics["bce_label_accuracy"].item() == 1.0 and out.diagnostics["bce_exact_match"].item() == 1.0


def test_bce_positive_weights_scale_only_the_positive_terms():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(6, 3, generator=g)
    targets = (torch.rand(6, 3, generator=g) < 0.5).float()
    w = torch.tensor([1.0, 4.0, 0.25])
    positive = -targets * F.logsigmoid(logits)
    negative = -(1 - targets) * F.logsigmoid(-logits)
    expected = (w * positive + negative).mean()
    torch.testing.assert_close(MultiLabelClassificationLoss(positive_weights=w)(logits, targets).loss, expected)


def test_bce_diagnostics_count_rows_and_decisions():
    targets = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    logits = torch.tensor([[2.0, -1.0], [3.0, 1.0]])  # row 0 all right; row 1 wrong on class 0
    d = MultiLabelClassificationLoss()(logits, targets).diagnostics
    assert d["bce_label_accuracy"].item() == 0.75 and d["bce_exact_match"].item() == 0.5


def test_positive_weights_from_multi_hot_targets():
    targets = np.array([[1, 0, 1], [1, 0, 0], [0, 1, 0], [1, 0, 0]], dtype=np.float32)
    torch.testing.assert_close(positive_class_weights(targets), torch.tensor([1 / 3, 3.0, 3.0]))
    with pytest.raises(ValueError, match="class 1 has no positive examples"):
        positive_class_weights(targets[[0, 1, 3]])


# --------------------------------------------------------------------------- the head learns


def _clusters(num_classes: int, n: int, hidden: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Points around C random centres [n, H] and their classes [n]: linearly separable with margin."""
    g = torch.Generator().manual_seed(seed)
    centres = 3.0 * torch.randn(num_classes, hidden, generator=g)
    classes = torch.randint(num_classes, (n,), generator=g)
    return centres[classes] + 0.3 * torch.randn(n, hidden, generator=g), classes


def _train(head: ClassificationHead, loss_fn, x, y, steps: int = 200) -> list[float]:
    opt = torch.optim.Adam(head.parameters(), lr=0.05)
    losses = []
    for _ in range(steps):
        out = loss_fn(head(x), y)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(out.loss.item())
    return losses


def test_single_label_head_learns_separable_classes():
    torch.manual_seed(0)
    x, y = _clusters(5, 200, 16, seed=3)
    head = ClassificationHead(16, 5)
    assert head(x).shape == (200, 5)
    loss_fn = SingleLabelClassificationLoss(class_weights=balanced_class_weights(y, 5))
    losses = _train(head, loss_fn, x, y)
    assert losses[-1] < 0.05 * losses[0]
    x_new, y_new = _clusters(5, 100, 16, seed=3)  # same centres, fresh points
    assert (head(x_new).argmax(-1) == y_new).float().mean().item() == 1.0


def test_multi_label_head_learns_label_sets():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(4)
    centres = 3.0 * torch.randn(4, 16, generator=g)
    targets = (torch.rand(300, 4, generator=g) < 0.35).float()  # [N, C]
    x = targets @ centres + 0.3 * torch.randn(300, 16, generator=g)  # the sum of the labels' centres
    head = ClassificationHead(16, 4)
    out_before = MultiLabelClassificationLoss()(head(x), targets)
    _train(head, MultiLabelClassificationLoss(positive_weights=positive_class_weights(targets)), x, targets, 300)
    out = MultiLabelClassificationLoss()(head(x), targets)
    assert out.loss.item() < 0.1 * out_before.loss.item()
    assert out.diagnostics["bce_exact_match"].item() > 0.97
