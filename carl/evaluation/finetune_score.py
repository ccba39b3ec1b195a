"""Test scores of the fine-tuning protocol: an exported model, the frozen probe, the SetFit peer.

* :func:`score_model`: a fine-tuned model folder through :class:`~carl.inference.AffectEncoder`:
  single-label: macro-F1 and accuracy of the argmax, test ECE at T = 1 and at the dev-fitted
  temperature; multi-label: macro-F1 at the dev-tuned per-class thresholds and at 0.5, ECE; EmoBank:
  the VA head's own test predictions, Pearson r of valence and arousal.
* :func:`score_probe`: the frozen encoder with a linear model on the same training rows (the
  reference for "relative change against the frozen probe"): logistic regression, C chosen on dev
  by macro-F1 (single-label); one-vs-rest logistic regression at C = 1 with per-class thresholds
  tuned on dev (multi-label); ridge per VA dimension, alpha on dev (EmoBank).
* :func:`score_setfit`: the SetFit peer through ``carl.evaluation.setfit_peer.fit_setfit``.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from carl.data.emobank import load_emobank
from carl.data.readers import AffectDataset, load_table
from carl.evaluation.calibration import expected_calibration_error, probabilities
from carl.evaluation.features import embed_table
from carl.evaluation.finetune_data import FinetuneTask, TaskFiles
from carl.evaluation.metrics import classification_metrics, pearson
from carl.evaluation.probe import frozen_check, logistic_probe
from carl.evaluation.thresholds import macro_f1_at_thresholds, tune_thresholds
from carl.evaluation.va_probe import probe_va_splits


class FinetuneError(RuntimeError):
    """A method of the fine-tuning protocol cannot run here (a missing helper, a bad task)."""


def read_split(path: Path, task: FinetuneTask, classes: tuple[str, ...] | None = None) -> AffectDataset:
    """A ``text,label`` file of the protocol, class targets over ``classes`` (default: its own label set)."""
    return load_table(path, label_column="label", multi_label=task.kind == "multi", classes=classes, va=False)


def class_scores(logits: np.ndarray, targets: np.ndarray, *, temperature: float, thresholds=None) -> dict:
    """Test metrics of logits [N, C] against classes [N] or multi-hot targets [N, C]: ECE at T = 1
    and at ``temperature``, decisions from the calibrated probabilities (:func:`decision_scores`)."""
    multi = targets.ndim == 2
    after = probabilities(logits, temperature, multi_label=multi)
    return {
        "temperature": temperature,
        "ece_before": expected_calibration_error(probabilities(logits, multi_label=multi), targets),
        "ece_after": expected_calibration_error(after, targets),
        **decision_scores(after, targets, thresholds),
    }


def decision_scores(p: np.ndarray, targets: np.ndarray, thresholds=None) -> dict:
    """Macro-F1 and accuracy of the argmax of probabilities [N, C] against classes [N]; for multi-hot
    targets [N, C], macro-F1 at ``thresholds`` and at 0.5."""
    if targets.ndim == 2:
        return {
            "macro_f1": macro_f1_at_thresholds(p, targets, thresholds),
            "macro_f1_at_0.5": macro_f1_at_thresholds(p, targets, 0.5),
        }
    return classification_metrics(p.argmax(1), targets, p.shape[1])


def va_scores(valence: np.ndarray, arousal: np.ndarray, test: AffectDataset) -> dict:
    """Pearson r of predicted valence and arousal [N] against the test labels (any affine scale)."""
    r_v, r_a = pearson(valence, test.labels[:, 0]), pearson(arousal, test.labels[:, 1])
    return {"valence_pearson": r_v, "arousal_pearson": r_a, "va_pearson_mean": (r_v + r_a) / 2}


def score_model(task: FinetuneTask, model: Path, files: TaskFiles, *, batch_size: int = 64) -> dict:
    """Test metrics of the exported model folder ``model`` on ``task``."""
    from carl.inference import AffectEncoder

    encoder = AffectEncoder.load(str(model))
    if task.kind == "va":
        test = load_emobank("test")
        prediction = encoder.predict(test.texts, batch_size=batch_size)
        return va_scores(np.asarray(prediction.valence), np.asarray(prediction.arousal), test)
    classifier = encoder.require_classifier("score the test split")
    assert files.test is not None
    test = read_split(files.test, task, classifier.classes)
    logits, _ = encoder.class_logits(test.texts, batch_size=batch_size)
    assert test.targets is not None
    return class_scores(logits, test.targets, temperature=classifier.temperature, thresholds=classifier.thresholds)


def score_probe(task: FinetuneTask, encoder_name: str, files: TaskFiles, *, seed: int, batch_size: int = 64) -> dict:
    """Test metrics of a linear model on the frozen ``encoder_name``, fitted on the cell's train rows."""
    from carl.inference import AffectEncoder

    encoder = AffectEncoder.load(encoder_name)
    if task.kind == "va":
        splits = [load_emobank(split) for split in ("train", "dev", "test")]
    else:
        assert files.train is not None and files.dev is not None and files.test is not None
        train = read_split(files.train, task)
        splits = [train, read_split(files.dev, task, train.classes), read_split(files.test, task, train.classes)]
    with frozen_check(encoder.model):
        table = embed_table(encoder, [s.texts for s in splits], batch_size=batch_size)
    train, dev, test = splits
    if task.kind == "va":
        ridge = probe_va_splits(table, train, dev, test).metrics
        return {**ridge, "va_pearson_mean": (ridge["valence_pearson"] + ridge["arousal_pearson"]) / 2}
    x = [table(s.texts) for s in splits]
    assert train.targets is not None and dev.targets is not None and test.targets is not None
    if task.kind == "single":
        result = logistic_probe(
            x[0],
            train.targets,
            x[1],
            dev.targets,
            x[2],
            test.targets,
            n_classes=len(train.classes),
            seed=seed,
            select_by="macro_f1",
        )
        return {**result.metrics, "C": result.C}
    return _multilabel_probe(x, train.targets, dev.targets, test.targets, seed)


def _multilabel_probe(x: list[np.ndarray], train_y, dev_y, test_y, seed: int) -> dict:
    """One-vs-rest logistic regression (C = 1) on standardised features; thresholds tuned on dev."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(x[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = OneVsRestClassifier(LogisticRegression(max_iter=1000, random_state=seed))
        model.fit(scaler.transform(x[0]), (train_y > 0.5).astype(int))
    dev_p, test_p = (model.predict_proba(scaler.transform(v)) for v in x[1:])
    return probability_scores(test_p, test_y, tune_thresholds(dev_p, dev_y))


def probability_scores(test_p: np.ndarray, test_y: np.ndarray, thresholds=None) -> dict:
    """Test metrics of probabilities [N, C] (:func:`decision_scores`) with their ECE."""
    return {"ece_before": expected_calibration_error(test_p, test_y), **decision_scores(test_p, test_y, thresholds)}


def require_setfit():
    """``fit_setfit`` of :mod:`carl.evaluation.setfit_peer`, or a :class:`FinetuneError` when the
    ``setfit`` package (``pip install carl[peers]``) is missing."""
    try:
        from carl.evaluation.setfit_peer import fit_setfit
    except ImportError as err:
        raise FinetuneError(f"method 'setfit' needs the setfit package ({err}): pip install 'carl[peers]'") from None
    return fit_setfit


def score_setfit(
    task: FinetuneTask, encoder_name: str, files: TaskFiles, *, seed: int, max_steps: int, out_dir: Path
) -> dict:
    """Test metrics of SetFit trained for ``max_steps`` on the cell's train rows, saved in ``out_dir``
    (a rerun loads it); multi-label decisions at the thresholds SetFit's fit tuned on dev."""
    fit_setfit = require_setfit()
    assert files.train is not None and files.dev is not None and files.test is not None
    train = read_split(files.train, task)
    dev, test = read_split(files.dev, task, train.classes), read_split(files.test, task, train.classes)
    assert train.targets is not None and dev.targets is not None and test.targets is not None
    multi = task.kind == "multi"
    result = fit_setfit(
        encoder_name,
        train.texts,
        train.targets,
        dev.texts,
        dev.targets,
        classes=train.classes,
        multi_label=multi,
        max_steps=max_steps,
        seed=seed,
        out_dir=out_dir,
        show_progress=False,
    )
    test_p = np.asarray(result.predict_proba(test.texts), dtype=np.float64)
    return {
        **probability_scores(test_p, test.targets, result.thresholds),
        "steps": result.steps,
        "train_seconds": result.train_seconds,
    }
