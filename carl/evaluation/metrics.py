"""Evaluation metrics: correlation and error for VA regression, accuracy and F1 for classes.

All functions take 1-D arrays (multi-hot ``[N, C]`` ones for ``multilabel_per_class_f1``) and
return Python floats (lists for per-class values), so that results serialise to JSON as they are.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import pearsonr, spearmanr


def pearson(pred: np.ndarray, true: np.ndarray) -> float:
    """Pearson correlation r; NaN when either side is constant."""
    pred, true = np.asarray(pred, dtype=np.float64), np.asarray(true, dtype=np.float64)
    if pred.std() == 0 or true.std() == 0:
        return float("nan")
    return float(pearsonr(pred, true)[0])


def spearman(pred: np.ndarray, true: np.ndarray) -> float:
    """Spearman rank correlation rho (ties get average ranks); NaN when either side is constant."""
    pred, true = np.asarray(pred, dtype=np.float64), np.asarray(true, dtype=np.float64)
    if pred.std() == 0 or true.std() == 0:
        return float("nan")
    return float(spearmanr(pred, true)[0])


def mse(pred: np.ndarray, true: np.ndarray) -> float:
    """Mean squared error."""
    diff = np.asarray(pred, dtype=np.float64) - np.asarray(true, dtype=np.float64)
    return float(np.mean(diff**2))


def accuracy(pred: np.ndarray, true: np.ndarray) -> float:
    """Fraction of exact matches."""
    pred, true = np.asarray(pred), np.asarray(true)
    return float(np.mean(pred == true))


def per_class_f1(pred: np.ndarray, true: np.ndarray, n_classes: int) -> list[float]:
    """F1 of each class 0..n_classes-1 (0 when the class is neither predicted nor present)."""
    pred, true = np.asarray(pred), np.asarray(true)
    scores = []
    for c in range(n_classes):
        tp = float(np.sum((pred == c) & (true == c)))
        fp = float(np.sum((pred == c) & (true != c)))
        fn = float(np.sum((pred != c) & (true == c)))
        scores.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return scores


def multilabel_per_class_f1(pred: np.ndarray, true: np.ndarray) -> list[float]:
    """F1 of each column of multi-hot predictions and targets [N, C] (0 when the class has no true positive)."""
    pred, true = np.asarray(pred) > 0.5, np.asarray(true) > 0.5
    tp = (pred & true).sum(0).astype(np.float64)
    denominator = pred.sum(0) + true.sum(0)  # 2 TP + FP + FN
    return np.where(tp > 0, 2 * tp / np.maximum(denominator, 1), 0.0).tolist()


def macro_f1(pred: np.ndarray, true: np.ndarray, n_classes: int) -> float:
    """Unweighted mean of :func:`per_class_f1` over all ``n_classes`` classes."""
    return float(np.mean(per_class_f1(pred, true, n_classes)))


def regression_metrics(pred: np.ndarray, true: np.ndarray, prefix: str = "") -> dict[str, float]:
    """``{prefix}pearson``, ``{prefix}spearman``, ``{prefix}mse``."""
    return {
        f"{prefix}pearson": pearson(pred, true),
        f"{prefix}spearman": spearman(pred, true),
        f"{prefix}mse": mse(pred, true),
    }


def classification_metrics(pred: np.ndarray, true: np.ndarray, n_classes: int) -> dict:
    """``accuracy``, ``macro_f1`` and ``per_class_f1`` (list, class order)."""
    f1 = per_class_f1(pred, true, n_classes)
    return {"accuracy": accuracy(pred, true), "macro_f1": float(np.mean(f1)), "per_class_f1": f1}
