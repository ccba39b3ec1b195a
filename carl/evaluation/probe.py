"""Linear probes on frozen embeddings (SentEval-style) and the frozen-encoder check.

* :func:`ridge_probe`: ridge per VA dimension, alpha chosen by dev Pearson r.
* :func:`logistic_probe`: logistic regression, C chosen on a dev split.
* :func:`cv_logistic_probe` / :func:`cv_ridge_probe`: k-fold cross-validation (stratified for
  classes, fixed seed) with the regularisation chosen on an inner validation part of each
  outer training part (MR protocol; user corpora without a split).
* :func:`frozen_check`: a context manager proving an encoder's weights did not change.

Features are standardised with the training part's mean and std in every probe.
"""

from __future__ import annotations

import hashlib
import math
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.linalg import LinAlgWarning
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import KFold, StratifiedKFold
from sklearn.preprocessing import StandardScaler

from carl.evaluation.metrics import classification_metrics, pearson, regression_metrics

ALPHAS = (0.01, 0.1, 1.0, 10.0, 100.0, 1e3, 3e3, 1e4, 3e4, 1e5, 3e5, 1e6)
C_GRID = (1e-3, 1e-2, 1e-1, 1.0, 10.0)
DIMENSIONS = ("valence", "arousal")
CV_SEED = 1111  # SentEval's seed for its k-fold splits


class EncoderNotFrozen(RuntimeError):
    """The encoder's weights changed while it was being probed."""


def parameter_fingerprint(module: torch.nn.Module) -> str:
    """SHA-256 over every parameter and buffer, to prove an encoder stayed frozen."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


@contextmanager
def frozen_check(module: torch.nn.Module, what: str = "encoder") -> Iterator[str]:
    """Fingerprint ``module`` before and after the block; raise :class:`EncoderNotFrozen` on change.

    Yields the fingerprint taken before the block.
    """
    before = parameter_fingerprint(module)
    yield before
    if parameter_fingerprint(module) != before:
        raise EncoderNotFrozen(f"{what} weights changed during probing: the probe must leave the encoder frozen")


def _best(candidates: Sequence[float], score) -> float:
    """The candidate with the highest score (NaN counts as -inf; ties keep the first)."""
    scores = [score(c) for c in candidates]
    clean = [-math.inf if not np.isfinite(s) else s for s in scores]
    return candidates[int(np.argmax(clean))]


# --------------------------------------------------------------------------- regression


@dataclass
class ProbeResult:
    """Per-dimension test metrics, the chosen regularisation and the test predictions [N, 2]."""

    metrics: dict[str, float]
    alphas: dict[str, float]
    predictions: np.ndarray | None = field(default=None, repr=False)


def ridge_probe(
    train_x: np.ndarray,
    train_y: np.ndarray,
    dev_x: np.ndarray,
    dev_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    alphas=ALPHAS,
) -> ProbeResult:
    """Fit ridge per VA dimension on standardised features [N, H], alpha chosen by dev Pearson r.

    Labels are [N, 2]; returns Pearson r, Spearman rho and MSE on test for each dimension, as
    ``valence_pearson``, ``valence_spearman``, ``valence_mse``, ``arousal_...``.
    """
    scaler = StandardScaler().fit(train_x)
    tr, dv, te = scaler.transform(train_x), scaler.transform(dev_x), scaler.transform(test_x)
    metrics, chosen = {}, {}
    predictions = np.zeros((len(test_x), len(DIMENSIONS)))
    for d, name in enumerate(DIMENSIONS):
        with warnings.catch_warnings():  # the smallest alphas of the grid meet collinear features
            warnings.simplefilter("ignore", LinAlgWarning)
            best = _best(alphas, lambda a: pearson(Ridge(alpha=a).fit(tr, train_y[:, d]).predict(dv), dev_y[:, d]))
            pred = Ridge(alpha=best).fit(tr, train_y[:, d]).predict(te)
        metrics.update(regression_metrics(pred, test_y[:, d], prefix=f"{name}_"))
        chosen[name] = best
        predictions[:, d] = pred
    return ProbeResult(metrics, chosen, predictions)


# --------------------------------------------------------------------------- folds


def kfold_indices(n: int, k: int = 10, seed: int = CV_SEED, labels: np.ndarray | None = None) -> list[np.ndarray]:
    """Test indices of ``k`` shuffled folds over ``n`` items (stratified when ``labels`` given).

    The folds are disjoint, cover ``0..n-1`` and depend only on (n, k, seed, labels).
    """
    if k < 2 or k > n:
        raise ValueError(f"need 2 <= k <= n for k-fold cross-validation, got k={k}, n={n}")
    placeholder = np.zeros(n)
    if labels is not None:
        splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
        return [np.sort(test) for _, test in splitter.split(placeholder, np.asarray(labels))]
    return [np.sort(test) for _, test in KFold(n_splits=k, shuffle=True, random_state=seed).split(placeholder)]


def _inner_splits(
    n: int, inner_folds: int, seed: int, labels: np.ndarray | None
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, validation) index pairs inside one outer training part.

    ``inner_folds >= 2``: full inner k-fold; ``inner_folds == 1``: one validation fold of a
    10-fold split (the first), i.e. a fixed 10 % hold-out.
    """
    folds = kfold_indices(n, max(inner_folds, 10) if inner_folds == 1 else inner_folds, seed, labels)
    chosen = folds[:1] if inner_folds == 1 else folds
    everything = np.arange(n)
    return [(np.setdiff1d(everything, val), val) for val in chosen]


# --------------------------------------------------------------------------- classification


@dataclass
class ClassificationResult:
    """Test metrics (accuracy, macro_f1, per_class_f1), chosen C, dev scores, test predictions."""

    metrics: dict
    C: float | list[float]
    dev_scores: dict[str, float] = field(default_factory=dict)
    predictions: np.ndarray | None = field(default=None, repr=False)


def _fit_logistic(x: np.ndarray, y: np.ndarray, C: float, seed: int) -> LogisticRegression:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return LogisticRegression(C=C, max_iter=1000, random_state=seed).fit(x, y)


def _score(pred: np.ndarray, true: np.ndarray, n_classes: int, select_by: str) -> float:
    return classification_metrics(pred, true, n_classes)[select_by]


def logistic_probe(
    train_x: np.ndarray,
    train_y: np.ndarray,
    dev_x: np.ndarray,
    dev_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    *,
    n_classes: int | None = None,
    Cs: Sequence[float] = C_GRID,
    seed: int = 0,
    select_by: str = "accuracy",
) -> ClassificationResult:
    """Logistic regression on standardised features, C chosen by dev ``select_by``.

    ``select_by`` is ``"accuracy"`` or ``"macro_f1"``; the model is refitted on train only
    (the dev split chooses C, as in SentEval).
    """
    n_classes = n_classes or int(max(train_y.max(), dev_y.max(), test_y.max()) + 1)
    scaler = StandardScaler().fit(train_x)
    tr, dv, te = scaler.transform(train_x), scaler.transform(dev_x), scaler.transform(test_x)
    models, dev_scores = {}, {}
    for C in Cs:
        models[C] = _fit_logistic(tr, train_y, C, seed)
        dev_scores[f"{C:g}"] = _score(models[C].predict(dv), dev_y, n_classes, select_by)
    best = _best(list(Cs), lambda C: dev_scores[f"{C:g}"])
    pred = models[best].predict(te)
    return ClassificationResult(classification_metrics(pred, test_y, n_classes), best, dev_scores, pred)


def cv_logistic_probe(
    x: np.ndarray,
    y: np.ndarray,
    *,
    n_classes: int | None = None,
    k: int = 10,
    seed: int = CV_SEED,
    inner_folds: int = 1,
    Cs: Sequence[float] = C_GRID,
    select_by: str = "accuracy",
) -> ClassificationResult:
    """Stratified ``k``-fold cross-validation of :func:`logistic_probe`.

    In each outer fold C is chosen on the inner validation part(s) of the outer training part
    (see :func:`_inner_splits`), the probe is refitted on the whole outer training part and
    scored on the held-out fold. Metrics are means over the ``k`` folds (``per_class_f1`` too);
    ``metrics["fold_accuracy"]`` lists each fold's accuracy. ``predictions`` are out-of-fold.
    """
    y = np.asarray(y)
    n_classes = n_classes or int(y.max() + 1)
    folds = kfold_indices(len(y), k, seed, y)
    everything = np.arange(len(y))
    fold_metrics, chosen = [], []
    predictions = np.zeros(len(y), dtype=np.int64)
    for f, test in enumerate(folds):
        train = np.setdiff1d(everything, test)
        inner = _inner_splits(len(train), inner_folds, seed + f, y[train])

        def inner_score(C: float) -> float:
            scores = []
            for itr, ival in inner:
                scaler = StandardScaler().fit(x[train[itr]])
                model = _fit_logistic(scaler.transform(x[train[itr]]), y[train[itr]], C, seed)
                scores.append(
                    _score(model.predict(scaler.transform(x[train[ival]])), y[train[ival]], n_classes, select_by)
                )
            return float(np.mean(scores))

        best = _best(list(Cs), inner_score)
        scaler = StandardScaler().fit(x[train])
        model = _fit_logistic(scaler.transform(x[train]), y[train], best, seed)
        pred = model.predict(scaler.transform(x[test]))
        predictions[test] = pred
        fold_metrics.append(classification_metrics(pred, y[test], n_classes))
        chosen.append(best)
    metrics = {
        "accuracy": float(np.mean([m["accuracy"] for m in fold_metrics])),
        "macro_f1": float(np.mean([m["macro_f1"] for m in fold_metrics])),
        "per_class_f1": np.mean([m["per_class_f1"] for m in fold_metrics], axis=0).tolist(),
        "fold_accuracy": [m["accuracy"] for m in fold_metrics],
    }
    return ClassificationResult(metrics, chosen, {}, predictions)


def cv_ridge_probe(
    x: np.ndarray, y: np.ndarray, *, k: int = 10, seed: int = CV_SEED, inner_folds: int = 1, alphas=ALPHAS
) -> ProbeResult:
    """``k``-fold cross-validated :func:`ridge_probe` for VA data without an official split.

    Alpha is chosen per fold on the inner validation part of the outer training part; metrics
    are means over folds; ``alphas`` lists the alpha of each fold per dimension;
    ``predictions`` are the out-of-fold predictions [N, 2].
    """
    folds = kfold_indices(len(y), k, seed)
    everything = np.arange(len(y))
    per_fold, predictions = [], np.zeros((len(y), len(DIMENSIONS)))
    alphas_chosen: dict[str, list[float]] = {name: [] for name in DIMENSIONS}
    for f, test in enumerate(folds):
        train = np.setdiff1d(everything, test)
        itr, ival = _inner_splits(len(train), inner_folds, seed + f, None)[0]
        # choose alpha on the inner split, then refit on the whole outer training part
        inner = ridge_probe(
            x[train[itr]], y[train[itr]], x[train[ival]], y[train[ival]], x[train[ival]], y[train[ival]], alphas
        )  # the test fold is not touched
        scaler = StandardScaler().fit(x[train])
        fold = {}
        for d, name in enumerate(DIMENSIONS):
            alpha = inner.alphas[name]
            pred = Ridge(alpha=alpha).fit(scaler.transform(x[train]), y[train, d]).predict(scaler.transform(x[test]))
            predictions[test, d] = pred
            fold.update(regression_metrics(pred, y[test, d], prefix=f"{name}_"))
            alphas_chosen[name].append(alpha)
        per_fold.append(fold)
    metrics = {key: float(np.mean([m[key] for m in per_fold])) for key in per_fold[0]}
    return ProbeResult(metrics, alphas_chosen, predictions)
