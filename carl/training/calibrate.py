"""The classifier's calibration, fitted on dev after training and stored with the exported model.

On the dev logits z [N, C] of the trained classification head (:mod:`carl.evaluation.calibration`):

* temperature T minimising the dev NLL of softmax(z / T) (sigmoid(z / T) for multi-label);
* multi-label: per-class thresholds t_c on the calibrated probabilities, tuned for dev F1
  (:mod:`carl.evaluation.thresholds`);
* ECE before (T = 1) and after, and dev macro-F1 (argmax, or p_ic >= t_c for multi-label).

All dev numbers are in-sample for T and the thresholds (they are fitted on the same rows).
Without dev data T = 1 and the thresholds are 0.5; the run's log says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from carl.data.batching import length_sorted_batches
from carl.data.readers import AffectDataset
from carl.evaluation.calibration import expected_calibration_error, fit_temperature, probabilities
from carl.evaluation.metrics import per_class_f1
from carl.evaluation.thresholds import DEFAULT_THRESHOLD, macro_f1_at_thresholds, tune_thresholds
from carl.model.carl_model import CarlModel


@torch.no_grad()
def class_logits(
    model: CarlModel, tokenizer, texts: Sequence[str], *, max_length: int, batch_size: int = 64
) -> np.ndarray:
    """Class logits [N, C] float32 of ``texts`` (input order), the model in eval mode for the pass."""
    device = next(model.parameters()).device
    ids = tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]
    logits = np.empty((len(texts), model.classifier.linear.out_features), dtype=np.float32)
    was_training = model.training
    model.eval()
    try:
        for rows, batch_ids, mask in length_sorted_batches(ids, batch_size, tokenizer.pad_token_id or 0):
            out = model(batch_ids.to(device), mask.to(device), heads=("class_logits",))
            logits[rows] = out.class_logits.float().cpu().numpy()
    finally:
        model.train(was_training)
    return logits


def fit_calibration(logits: np.ndarray, targets: np.ndarray, *, multi_label: bool) -> dict[str, Any]:
    """Temperature, thresholds (multi-label; else None), ECE before/after and macro-F1 on dev.

    ``logits`` [N, C]; ``targets`` classes [N] or multi-hot [N, C].
    """
    temperature = fit_temperature(logits, targets)
    before = probabilities(logits, multi_label=multi_label)
    after = probabilities(logits, temperature, multi_label=multi_label)
    thresholds = None
    if multi_label:
        thresholds = tune_thresholds(after, targets)
        macro_f1 = macro_f1_at_thresholds(after, targets, thresholds)
    else:
        macro_f1 = float(np.mean(per_class_f1(after.argmax(1), np.asarray(targets), logits.shape[1])))
    return {
        "temperature": temperature,
        "thresholds": None if thresholds is None else thresholds.tolist(),
        "ece_before": expected_calibration_error(before, targets),
        "ece_after": expected_calibration_error(after, targets),
        "macro_f1": macro_f1,
    }


def classifier_metadata(
    model: CarlModel, tokenizer, train: AffectDataset, dev: AffectDataset | None, *, max_length: int
) -> tuple[dict[str, Any], str]:
    """carl.json entries of the trained classifier (classes, multi_label, temperature, thresholds,
    calibration, dev metrics) and one line for the log."""
    classes, multi = list(train.classes), train.multi_label
    if dev is None or len(dev) == 0:
        thresholds = [DEFAULT_THRESHOLD] * len(classes) if multi else None
        note = "calibration: no dev data (data.dev_path or data.dev_fraction), so temperature = 1.0" + (
            " and thresholds = 0.5" if multi else ""
        )
        return {
            "classes": classes,
            "multi_label": multi,
            "temperature": 1.0,
            "thresholds": thresholds,
            "calibration": {"fitted_on": None},
        }, note
    fit = fit_calibration(
        class_logits(model, tokenizer, dev.texts, max_length=max_length), dev.targets, multi_label=multi
    )
    note = (
        f"calibration on {len(dev)} dev rows: temperature {fit['temperature']:.3f}, ECE {fit['ece_before']:.4f} "
        f"-> {fit['ece_after']:.4f}, dev macro-F1 {fit['macro_f1']:.4f}"
        + (" at the dev-tuned thresholds" if multi else "")
    )
    metadata = {
        "classes": classes,
        "multi_label": multi,
        "temperature": fit["temperature"],
        "thresholds": fit["thresholds"],
        "calibration": {
            "fitted_on": "dev",
            "dev_rows": len(dev),
            "ece_before": fit["ece_before"],
            "ece_after": fit["ece_after"],
        },
        "metrics": {
            "dev_macro_f1": fit["macro_f1"],
            "dev_ece_before": fit["ece_before"],
            "dev_ece_after": fit["ece_after"],
        },
    }
    return metadata, note
