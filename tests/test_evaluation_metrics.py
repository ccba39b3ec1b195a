"""Metrics, geometry, probes and fold logic against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from carl.data.classification import load_mr
from carl.evaluation.geometry import alignment, geometry_metrics, label_pairs, pair_alignment, uniformity, va_pairs
from carl.evaluation.metrics import (
    accuracy,
    classification_metrics,
    macro_f1,
    mse,
    pearson,
    per_class_f1,
    regression_metrics,
    spearman,
)
from carl.evaluation.probe import (
    EncoderNotFrozen,
    _inner_splits,
    cv_logistic_probe,
    cv_ridge_probe,
    frozen_check,
    kfold_indices,
    logistic_probe,
    parameter_fingerprint,
    ridge_probe,
)

# ----------------------------------------------------------------------------- metrics


def test_pearson_by_hand():
    # x - mean = (-1, 0, 1); y - mean = (-4/3, -1/3, 5/3); cov sum 3; r = 3 / sqrt(2 * 14/3)
    assert pearson([1, 2, 3], [1, 2, 4]) == pytest.approx(3 / math.sqrt(28 / 3), abs=1e-12)
    assert pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert math.isnan(pearson([1, 1, 1], [1, 2, 3]))  # constant side: undefined, not an exception


def test_spearman_by_hand():
    # ranks (1,2,3,4) vs (1,3,2,4): sum d^2 = 2, rho = 1 - 6*2 / (4*15) = 0.8
    assert spearman([10, 20, 30, 40], [1, 3, 2, 4]) == pytest.approx(0.8)
    # monotone but non-linear: rho = 1 while r < 1
    x = np.array([1.0, 2.0, 3.0, 4.0])
    assert spearman(x, x**3) == pytest.approx(1.0)
    assert pearson(x, x**3) < 0.99


def test_mse_and_regression_metrics():
    assert mse([1, 2], [2, 4]) == pytest.approx(2.5)  # (1 + 4) / 2
    m = regression_metrics(np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 4.0]), prefix="valence_")
    assert set(m) == {"valence_pearson", "valence_spearman", "valence_mse"}
    assert m["valence_mse"] == pytest.approx(1 / 3)
    assert m["valence_spearman"] == pytest.approx(1.0)


def test_accuracy_and_f1_by_hand():
    pred, true = np.array([0, 1, 1, 2]), np.array([0, 1, 2, 2])
    assert accuracy(pred, true) == pytest.approx(0.75)
    # class 0: tp 1 -> 1; class 1: tp 1, fp 1 -> 2/3; class 2: tp 1, fn 1 -> 2/3
    assert per_class_f1(pred, true, 3) == pytest.approx([1.0, 2 / 3, 2 / 3])
    assert macro_f1(pred, true, 3) == pytest.approx((1 + 4 / 3) / 3)
    # a class neither present nor predicted counts as 0 in the macro average over all classes
    assert per_class_f1(pred, true, 4)[3] == 0.0
    assert macro_f1(pred, true, 4) == pytest.approx((1 + 4 / 3) / 4)
    m = classification_metrics(pred, true, 3)
    assert m["accuracy"] == 0.75 and m["macro_f1"] == pytest.approx(7 / 9)


def test_f1_matches_sklearn_on_random_labels():
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(0)
    pred, true = rng.integers(0, 5, 200), rng.integers(0, 5, 200)
    assert macro_f1(pred, true, 5) == pytest.approx(f1_score(true, pred, average="macro", labels=range(5)))


# ----------------------------------------------------------------------------- geometry


def test_alignment_by_hand():
    x = np.array([[1.0, 0.0], [0.0, 1.0]])
    y = np.array([[1.0, 0.0], [1.0, 0.0]])
    assert alignment(x, y) == pytest.approx(1.0)  # squared distances 0 and 2
    assert alignment(x, y, alpha=1) == pytest.approx(math.sqrt(2) / 2)
    assert alignment(np.array([[2.0, 0.0]]), np.array([[0.0, 3.0]])) == pytest.approx(2.0)  # normalised first


def test_uniformity_by_hand():
    square = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    # 4 adjacent pairs at squared distance 2, 2 opposite pairs at 4
    expected = math.log((4 * math.exp(-2 * 2) + 2 * math.exp(-2 * 4)) / 6)
    assert uniformity(square) == pytest.approx(expected)
    assert uniformity(3 * square) == pytest.approx(expected)  # scale-free: rows are normalised
    assert uniformity(np.ones((5, 3))) == pytest.approx(0.0)  # collapsed: log 1


def test_positive_pairs():
    va = np.array([[0.0, 0.0], [0.02, 0.0], [0.5, 0.5], [0.51, 0.5], [0.9, 0.1]])
    i, j = va_pairs(va, 0.025)
    assert list(zip(i, j)) == [(0, 1), (2, 3)]
    i, j = label_pairs(np.array([0, 1, 0, 1, 1]))
    assert list(zip(i, j)) == [(0, 2), (1, 3), (1, 4), (3, 4)]
    emb = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    assert pair_alignment(emb, va_pairs(va, 0.025)) == pytest.approx((0 + 2) / 2)
    g = geometry_metrics(emb, va=va, classes=np.array([0, 0, 1, 1, 1]), max_distance=0.025)
    assert g["pairs_va"] == 2 and g["pairs_label"] == 4 and g["n"] == 5
    assert g["alignment_label"] == pytest.approx((0 + 0 + 2 + 2) / 4)  # (0,1) (2,3) (2,4) (3,4)


# ----------------------------------------------------------------------------- folds


def test_kfold_disjoint_cover_reproducible():
    folds = kfold_indices(103, 10, seed=7)
    assert len(folds) == 10
    joined = np.concatenate(folds)
    assert sorted(joined.tolist()) == list(range(103))  # cover all, each once (so disjoint)
    assert {len(f) for f in folds} <= {10, 11}
    again = kfold_indices(103, 10, seed=7)
    assert all(np.array_equal(a, b) for a, b in zip(folds, again))
    other = kfold_indices(103, 10, seed=8)
    assert not all(np.array_equal(a, b) for a, b in zip(folds, other))
    with pytest.raises(ValueError):
        kfold_indices(5, 10)


def test_mr_folds_are_stratified():
    mr = load_mr()
    folds = kfold_indices(len(mr), 10, labels=mr.labels)
    assert len(folds) == 10 and sum(len(f) for f in folds) == 10662
    assert len(set(np.concatenate(folds).tolist())) == 10662
    for fold in folds:
        assert len(fold) in (1066, 1067)
        assert abs(int(mr.labels[fold].sum()) - len(fold) / 2) <= 1  # 5,331 per class over 10 folds


def test_inner_splits_stay_inside_training_part():
    for inner_folds, expected in ((1, 1), (3, 3)):
        splits = _inner_splits(50, inner_folds, seed=0, labels=np.arange(50) % 2)
        assert len(splits) == expected
        for train, val in splits:
            assert not set(train) & set(val) and set(train) | set(val) == set(range(50))


# ----------------------------------------------------------------------------- probes


def _blobs(n: int, seed: int, shift: float = 3.0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.normal(size=(n, 8)) + shift * np.eye(8)[y]
    return x, y


def test_logistic_probe_separable_data():
    (tx, ty), (dx, dy), (ex, ey) = _blobs(150, 0), _blobs(60, 1), _blobs(60, 2)
    result = logistic_probe(tx, ty, dx, dy, ex, ey, n_classes=3, Cs=(0.01, 1.0))
    assert result.metrics["accuracy"] > 0.9
    assert result.C in (0.01, 1.0) and set(result.dev_scores) == {"0.01", "1"}
    assert len(result.metrics["per_class_f1"]) == 3 and len(result.predictions) == 60


def test_cv_logistic_probe_reports_every_fold():
    x, y = _blobs(120, 3)
    result = cv_logistic_probe(x, y, n_classes=3, k=4, Cs=(0.1, 1.0))
    assert len(result.metrics["fold_accuracy"]) == 4 and len(result.C) == 4
    assert result.metrics["accuracy"] == pytest.approx(np.mean(result.metrics["fold_accuracy"]))
    assert result.metrics["accuracy"] > 0.9 and result.predictions.shape == (120,)


def test_ridge_probes_recover_linear_signal():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 6))
    y = np.stack([x[:, 0] + 0.1 * rng.normal(size=300), x[:, 1] - x[:, 2]], axis=1)
    split = ridge_probe(x[:200], y[:200], x[200:250], y[200:250], x[250:], y[250:])
    assert split.metrics["valence_pearson"] > 0.95 and split.metrics["arousal_pearson"] > 0.95
    assert split.predictions.shape == (50, 2)
    cv = cv_ridge_probe(x, y, k=5)
    assert cv.metrics["valence_pearson"] > 0.95 and len(cv.alphas["valence"]) == 5


# ----------------------------------------------------------------------------- frozen check


def test_frozen_check_detects_a_mutating_probe():
    layer = torch.nn.Linear(3, 2)
    with frozen_check(layer) as before:
        layer(torch.ones(1, 3))  # reading the weights is fine
    assert before == parameter_fingerprint(layer)
    with pytest.raises(EncoderNotFrozen), frozen_check(layer), torch.no_grad():
        layer.weight[0, 0] += 1e-4
    with pytest.raises(EncoderNotFrozen), frozen_check(layer):
        layer.bias.data.zero_()
