"""Per-class decision thresholds of a multi-label classifier, tuned on dev, and macro-F1 at thresholds.

A multi-label model predicts class c for text i when p_ic >= t_c. Each t_c maximises the class's
dev F1 over a grid of candidates (default 0.05, 0.10, ..., 0.95):

    F1_c(t) = 2 TP_c(t) / (2 TP_c(t) + FP_c(t) + FN_c(t))      (0 when TP_c(t) = 0)

Among equally good candidates the middle maximiser in grid order is taken, i.e. the centre of a
plateau between the scores of two groups of texts, not its edge. A class with no positive dev
example keeps 0.5 (nothing on dev can tell). Macro-F1 is the unweighted mean of F1_c over all
classes at the thresholds.
"""

from __future__ import annotations

import numpy as np

from carl.evaluation.metrics import multilabel_per_class_f1

THRESHOLD_GRID = np.round(np.arange(1, 20) * 0.05, 2)  # 0.05 ... 0.95
DEFAULT_THRESHOLD = 0.5


def _check(probs, targets) -> tuple[np.ndarray, np.ndarray]:
    p, y = np.asarray(probs, dtype=np.float64), np.asarray(targets) > 0.5
    if p.ndim != 2 or p.shape != y.shape:
        raise ValueError(
            f"probabilities and multi-hot targets must both have shape [N, C], got {p.shape} and {y.shape}"
        )
    return p, y


def tune_thresholds(probs, targets, grid: np.ndarray = THRESHOLD_GRID) -> np.ndarray:
    """Per-class thresholds [C] maximising dev F1, from probabilities and multi-hot targets [N, C]."""
    p, y = _check(probs, targets)
    grid = np.asarray(grid, dtype=np.float64)
    decisions = p[:, :, None] >= grid[None, None, :]  # [N, C, G]
    tp = (decisions & y[:, :, None]).sum(0)  # [C, G]
    denominator = decisions.sum(0) + y.sum(0)[:, None]  # 2 TP + FP + FN
    f1 = np.where(tp > 0, 2 * tp / np.maximum(denominator, 1), 0.0)  # [C, G]
    thresholds = np.full(p.shape[1], DEFAULT_THRESHOLD)
    for c in np.flatnonzero(y.any(0)):
        best = np.flatnonzero(f1[c] == f1[c].max())
        thresholds[c] = grid[best[len(best) // 2]]
    return thresholds


def macro_f1_at_thresholds(probs, targets, thresholds: np.ndarray | float = DEFAULT_THRESHOLD) -> float:
    """Mean per-class F1 of the decisions ``p_ic >= t_c`` against multi-hot targets [N, C]."""
    p, y = _check(probs, targets)
    t = np.asarray(thresholds, dtype=np.float64)
    if t.ndim > 1 or (t.ndim == 1 and t.shape[0] != p.shape[1]):
        raise ValueError(f"thresholds must be one number or [{p.shape[1]}], got shape {t.shape}")
    return float(np.mean(multilabel_per_class_f1(p >= t, y)))
