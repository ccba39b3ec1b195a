"""Emotion classification: softmax cross-entropy (single-label) and sigmoid BCE (multi-label).

On class logits z [B, C] from the classification head:

Single-label, classes y_i in {0, ..., C-1}, optional class weights w [C]:

    L_CE  = sum_i w_{y_i} (-log softmax(z_i)_{y_i}) / sum_i w_{y_i}        (w = 1: the batch mean)

Multi-label, multi-hot targets y_ic in {0, 1}, optional positive weights w [C]:

    L_BCE = 1/(B C) sum_i sum_c -[w_c y_ic log sigmoid(z_ic) + (1 - y_ic) log(1 - sigmoid(z_ic))]

Weights from the training targets (N rows, n_c of them carrying class c):

    balanced_class_weights:  w_c = N / (C n_c)       (sum_c n_c w_c = N: a balanced class mix)
    positive_class_weights:  w_c = (N - n_c) / n_c   (a class's positives weigh as much as its negatives)

Uniform logits give L_CE = log C whatever the class weights (a weighted mean of log C terms) and,
without positive weights, L_BCE = log 2; confident correct logits give ~0.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from carl.objectives.base import ObjectiveOutput


def _counts(targets: np.ndarray | torch.Tensor, num_classes: int | None = None) -> tuple[torch.Tensor, int]:
    """Rows per class [C] (float64) and N, from class indices [N] or multi-hot targets [N, C]."""
    t = torch.as_tensor(targets)
    if t.ndim == 1:
        if num_classes is None:
            raise ValueError("class indices need num_classes")
        return torch.bincount(t.long(), minlength=num_classes).double(), len(t)
    return (t.double() > 0).sum(0).double(), t.shape[0]


def _check_present(counts: torch.Tensor, what: str) -> None:
    absent = torch.nonzero(counts == 0).flatten().tolist()
    if absent:
        raise ValueError(f"class {', '.join(map(str, absent))} has no {what} in the training targets")


def balanced_class_weights(targets: np.ndarray | torch.Tensor, num_classes: int) -> torch.Tensor:
    """Inverse-frequency weights ``N / (C n_c)`` [C] from training classes [N]; every class must occur."""
    counts, n = _counts(targets, num_classes)
    _check_present(counts, "examples")
    return (n / (num_classes * counts)).float()


def positive_class_weights(targets: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Positive weights ``(N - n_c) / n_c`` [C] from multi-hot training targets [N, C]."""
    counts, n = _counts(targets)
    _check_present(counts, "positive examples")
    return ((n - counts) / counts).float()


def _checked_weights(weights: torch.Tensor | None) -> torch.Tensor | None:
    if weights is None:
        return None
    w = torch.as_tensor(weights, dtype=torch.float32)
    if w.ndim != 1 or not torch.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise ValueError("class weights must be a 1-D tensor of finite non-negative numbers, not all zero")
    return w


def _check_classes(logits: torch.Tensor, weights: torch.Tensor | None) -> None:
    if weights is not None and weights.shape[0] != logits.shape[-1]:
        raise ValueError(f"{weights.shape[0]} class weights for {logits.shape[-1]} classes")


class SingleLabelClassificationLoss(nn.Module):
    """Softmax cross-entropy of logits [B, C] against class indices [B] (one label per text).

    Args:
        class_weights: optional [C] weights (e.g. :func:`balanced_class_weights`); the loss is
            then the weight-normalised mean above.

    Diagnostics: ``ce_accuracy`` (argmax = class) and ``ce_true_class_prob`` (mean p(y_i)).
    """

    class_weights: torch.Tensor | None

    def __init__(self, *, class_weights: torch.Tensor | None = None):
        super().__init__()
        self.register_buffer("class_weights", _checked_weights(class_weights), persistent=False)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> ObjectiveOutput:
        _check_classes(logits, self.class_weights)
        logits = logits.float()
        loss = F.cross_entropy(logits, targets, weight=self.class_weights)
        with torch.no_grad():
            probs = logits.softmax(-1)  # [B, C]
            diagnostics: dict[str, torch.Tensor | float] = {
                "ce_accuracy": (logits.argmax(-1) == targets).float().mean(),
                "ce_true_class_prob": probs.gather(1, targets[:, None]).mean(),
            }
        return ObjectiveOutput(loss, diagnostics)


class MultiLabelClassificationLoss(nn.Module):
    """One sigmoid BCE per class: logits [B, C] against multi-hot targets [B, C] (several labels per text).

    Args:
        positive_weights: optional [C] weights on each class's positive term (e.g.
            :func:`positive_class_weights`), as ``pos_weight`` in ``BCEWithLogitsLoss``.

    Diagnostics at the 0.5 decision threshold (logit 0): ``bce_label_accuracy`` (share of
    (text, class) decisions right) and ``bce_exact_match`` (share of texts with every class right).
    """

    positive_weights: torch.Tensor | None

    def __init__(self, *, positive_weights: torch.Tensor | None = None):
        super().__init__()
        self.register_buffer("positive_weights", _checked_weights(positive_weights), persistent=False)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> ObjectiveOutput:
        _check_classes(logits, self.positive_weights)
        logits, targets = logits.float(), targets.float()
        loss = F.binary_cross_entropy_with_logits(logits, targets, pos_weight=self.positive_weights)
        with torch.no_grad():
            right = (logits > 0) == (targets > 0.5)  # [B, C]
            diagnostics: dict[str, torch.Tensor | float] = {
                "bce_label_accuracy": right.float().mean(),
                "bce_exact_match": right.all(-1).float().mean(),
            }
        return ObjectiveOutput(loss, diagnostics)
