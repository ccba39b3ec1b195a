"""Calibrated class probabilities: temperature scaling fitted on dev, expected calibration error (ECE).

Temperature scaling (Guo et al., ICML 2017) divides every logit z [N, C] by one scalar T > 0:

    p_i = softmax(z_i / T)                       (single-label)
    p_ic = sigmoid(z_ic / T)                     (multi-label)

T minimises the dev negative log-likelihood

    NLL(T) = -1/N sum_i log softmax(z_i / T)_{y_i}                                  (single-label)
    NLL(T) = -1/(N C) sum_ic [y_ic log sigmoid(z_ic / T) + (1 - y_ic) log sigmoid(-z_ic / T)]  (multi-label)

found by a bounded Brent search over log T in [log 0.01, log 100] (deterministic; the NLL is
convex in 1/T). T leaves the argmax, hence accuracy, unchanged; T > 1 softens over-confident
probabilities.

ECE with M equal-width confidence bins B_1..B_M of [0, 1] (the first one closed):

    ECE = sum_m |B_m| / n * |accuracy(B_m) - confidence(B_m)|

* single-label (top-label ECE): one prediction per text, confidence max_c p_ic, correct when
  argmax_c p_ic = y_i; n = N.
* multi-label (pooled class-wise ECE): each (text, class) pair is one prediction that the label
  is present, with confidence p_ic; accuracy(B_m) is the share of the bin's pairs whose label is
  present; n = N C. It measures the calibration of the probabilities that the per-class
  thresholds of :mod:`carl.evaluation.thresholds` act on.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import minimize_scalar

LOG_T_BOUNDS = (math.log(0.01), math.log(100.0))
ECE_BINS = 15


def _as_logits_and_targets(logits, targets) -> tuple[torch.Tensor, torch.Tensor]:
    """float64 logits [N, C] and targets [N] (int64) or [N, C] (float64), shapes checked."""
    z = torch.as_tensor(np.asarray(logits), dtype=torch.float64)
    y = torch.as_tensor(np.asarray(targets))
    if z.ndim != 2 or z.shape[0] == 0:
        raise ValueError(f"logits must have shape [N, C] with N > 0, got {tuple(z.shape)}")
    if y.ndim == 1 and y.shape[0] == z.shape[0]:
        return z, y.long()
    if y.shape == z.shape:
        return z, y.double()
    raise ValueError(f"targets must have shape [{z.shape[0]}] or {list(z.shape)}, got {list(y.shape)}")


def _nll(z: torch.Tensor, y: torch.Tensor, temperature: float) -> float:
    if y.ndim == 1:
        return float(F.cross_entropy(z / temperature, y))
    return float(F.binary_cross_entropy_with_logits(z / temperature, y))


def negative_log_likelihood(logits, targets, temperature: float = 1.0) -> float:
    """Mean NLL of logits [N, C] / ``temperature`` against classes [N] or multi-hot targets [N, C]."""
    z, y = _as_logits_and_targets(logits, targets)
    return _nll(z, y, temperature)


def fit_temperature(logits, targets) -> float:
    """The temperature T > 0 that minimises the dev NLL (softmax for classes [N], sigmoid for [N, C])."""
    z, y = _as_logits_and_targets(logits, targets)
    result = minimize_scalar(
        lambda log_t: _nll(z, y, math.exp(log_t)), bounds=LOG_T_BOUNDS, method="bounded", options={"xatol": 1e-6}
    )
    return math.exp(float(result.x))


def probabilities(logits, temperature: float = 1.0, *, multi_label: bool) -> np.ndarray:
    """Class probabilities [N, C] of logits [N, C] at ``temperature``: sigmoid if multi-label, else softmax."""
    z = torch.as_tensor(np.asarray(logits), dtype=torch.float64) / temperature
    return (torch.sigmoid(z) if multi_label else torch.softmax(z, dim=-1)).numpy()


def expected_calibration_error(probs, targets, n_bins: int = ECE_BINS) -> float:
    """ECE of probabilities [N, C] against classes [N] (top-label) or multi-hot targets [N, C] (pooled)."""
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(targets)
    if p.ndim != 2 or p.shape[0] == 0:
        raise ValueError(f"probabilities must have shape [N, C] with N > 0, got {p.shape}")
    if y.shape == (p.shape[0],):
        confidence = p.max(1)
        correct = (p.argmax(1) == y).astype(np.float64)
    elif y.shape == p.shape:
        confidence, correct = p.reshape(-1), (y.reshape(-1) > 0.5).astype(np.float64)
    else:
        raise ValueError(f"targets must have shape [{p.shape[0]}] or {list(p.shape)}, got {list(y.shape)}")
    bins = np.clip(np.ceil(confidence * n_bins).astype(np.int64) - 1, 0, n_bins - 1)  # (k/M, (k+1)/M] -> k
    gap = np.abs(np.bincount(bins, correct, n_bins) - np.bincount(bins, confidence, n_bins))  # |B_m| |acc - conf|
    return float(gap.sum() / len(confidence))
