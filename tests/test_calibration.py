"""Temperature scaling, expected calibration error, per-class thresholds and multi-label F1."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from carl.evaluation.calibration import (
    expected_calibration_error,
    fit_temperature,
    negative_log_likelihood,
    probabilities,
)
from carl.evaluation.metrics import multilabel_per_class_f1
from carl.evaluation.thresholds import (
    THRESHOLD_GRID,
    macro_f1_at_thresholds,
    tune_thresholds,
)


def calibrated_single_label(n: int = 20000, classes: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """True logits [N, C] and classes [N] drawn from softmax(true logits): calibrated by construction."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(scale=1.5, size=(n, classes))
    probs = probabilities(logits, multi_label=False)
    y = (rng.uniform(size=(n, 1)) > probs.cumsum(1)).sum(1)
    return logits, np.minimum(y, classes - 1)


def calibrated_multi_label(n: int = 5000, classes: int = 6, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """True logits [N, C] and multi-hot targets [N, C] drawn from sigmoid(true logits)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(loc=-1.0, scale=2.0, size=(n, classes))
    return logits, (rng.uniform(size=(n, classes)) < probabilities(logits, multi_label=True)).astype(np.float32)


# --------------------------------------------------------------------------- temperature scaling


@pytest.mark.parametrize("scale", [3.0, 0.5])
def test_fitted_temperature_recovers_the_known_one_and_lowers_ece(scale):
    true_logits, y = calibrated_single_label()
    logits = true_logits * scale  # over-confident (3) or under-confident (0.5)
    temperature = fit_temperature(logits, y)
    assert temperature == pytest.approx(scale, rel=0.05)
    before = expected_calibration_error(probabilities(logits, multi_label=False), y)
    after = expected_calibration_error(probabilities(logits, temperature, multi_label=False), y)
    assert before > 0.05 and after < 0.015 and after < before / 4
    assert negative_log_likelihood(logits, y, temperature) < negative_log_likelihood(logits, y)


def test_multi_label_temperature_and_pooled_ece():
    true_logits, y = calibrated_multi_label()
    logits = 3.0 * true_logits
    temperature = fit_temperature(logits, y)
    assert temperature == pytest.approx(3.0, rel=0.05)
    before = expected_calibration_error(probabilities(logits, multi_label=True), y)
    after = expected_calibration_error(probabilities(logits, temperature, multi_label=True), y)
    assert before > 0.05 and after < 0.015


def test_temperature_fit_is_deterministic_and_keeps_the_argmax():
    logits, y = calibrated_single_label(n=2000, seed=1)
    logits = 2.0 * logits
    t = fit_temperature(logits, y)
    assert fit_temperature(torch.tensor(logits), torch.tensor(y)) == t
    np.testing.assert_array_equal(probabilities(logits, t, multi_label=False).argmax(1), logits.argmax(1))


def test_temperature_input_shapes():
    with pytest.raises(ValueError, match="targets must have shape"):
        fit_temperature(np.zeros((4, 3)), np.zeros(5, dtype=int))
    with pytest.raises(ValueError, match=r"\[N, C\]"):
        fit_temperature(np.zeros(4), np.zeros(4, dtype=int))


# --------------------------------------------------------------------------- ECE


def test_ece_of_calibrated_probabilities_is_near_zero():
    logits, y = calibrated_single_label(n=50000, seed=2)
    assert expected_calibration_error(probabilities(logits, multi_label=False), y) < 0.01
    logits, y = calibrated_multi_label(n=20000, seed=2)
    assert expected_calibration_error(probabilities(logits, multi_label=True), y) < 0.01


def test_ece_by_hand():
    # top-label confidences 0.95 (right), 0.65 (wrong), 0.85 (right), 0.75 (right): one per bin of 10
    probs = np.array([[0.95, 0.05], [0.65, 0.35], [0.85, 0.15], [0.25, 0.75]])
    assert expected_calibration_error(probs, np.array([0, 1, 0, 1]), n_bins=10) == pytest.approx(
        (0.05 + 0.65 + 0.15 + 0.25) / 4
    )
    # two texts in one bin: accuracy 1/2 against mean confidence 0.85
    probs = np.array([[0.82, 0.18], [0.88, 0.12]])
    assert expected_calibration_error(probs, np.array([0, 1]), n_bins=10) == pytest.approx(0.35)
    # multi-label pools the (text, class) pairs: 0.95 present (gap 0.05), 0.05 absent (gap 0.05)
    assert expected_calibration_error(np.array([[0.95, 0.05]]), np.array([[1, 0]])) == pytest.approx(0.05)


# --------------------------------------------------------------------------- thresholds and F1


def test_thresholds_recover_a_known_optimum():
    rng = np.random.default_rng(0)
    optimum = np.array([0.3, 0.55, 0.8])
    n = 400
    y = np.zeros((n, 3), dtype=np.float32)
    probs = np.zeros((n, 3))
    for c, t in enumerate(optimum):
        y[:, c] = rng.uniform(size=n) < 0.3
        positives, negatives = np.flatnonzero(y[:, c]), np.flatnonzero(y[:, c] == 0)
        probs[positives, c] = rng.uniform(t, 1.0, size=len(positives))
        probs[negatives, c] = rng.uniform(0.0, t - 0.045, size=len(negatives))
        probs[positives[0], c] = t + 0.01  # a positive just above t: t + 0.05 loses it
        probs[negatives[0], c] = t - 0.045  # a negative just above t - 0.05: t - 0.05 admits it
    thresholds = tune_thresholds(probs, y)
    np.testing.assert_allclose(thresholds, optimum)
    assert macro_f1_at_thresholds(probs, y, thresholds) == 1.0
    assert macro_f1_at_thresholds(probs, y) < 1.0  # the common 0.5 is wrong for two classes


def test_thresholds_take_the_middle_of_a_plateau_and_default_without_positives():
    y = np.array([[1, 0], [0, 0], [1, 0], [0, 0]], dtype=np.float32)
    probs = np.array([[0.9, 0.7], [0.1, 0.2], [0.9, 0.1], [0.1, 0.4]])
    thresholds = tune_thresholds(probs, y)
    plateau = THRESHOLD_GRID[(THRESHOLD_GRID > 0.1) & (THRESHOLD_GRID <= 0.9)]  # 0.15 ... 0.9: F1 = 1
    assert thresholds[0] == plateau[len(plateau) // 2] == 0.55
    assert thresholds[1] == 0.5


def test_multilabel_f1_by_hand_and_threshold_shapes():
    pred = np.array([[1, 0, 1], [1, 1, 0], [0, 0, 0]])
    true = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 0]])
    # class 0: TP 1, FP 1 -> 2/3; class 1: TP 1 -> 1; class 2: TP 0 -> 0
    np.testing.assert_allclose(multilabel_per_class_f1(pred, true), [2 / 3, 1.0, 0.0])
    with pytest.raises(ValueError, match="thresholds"):
        macro_f1_at_thresholds(np.zeros((3, 3)), true, np.full(2, 0.5))
    with pytest.raises(ValueError, match="both have shape"):
        tune_thresholds(np.zeros((3, 2)), true)
