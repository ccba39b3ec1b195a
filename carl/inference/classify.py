"""Calibrated emotion classes from the classification head's logits.

With the temperature T stored in the model folder (fitted on dev after training):

    single-label:  p_i = softmax(z_i / T),       label_i = argmax_c p_ic
    multi-label:   p_ic = sigmoid(z_ic / T),     labels_i = {c : p_ic >= t_c}  (dev-tuned thresholds t_c)

>>> enc = AffectEncoder.load("runs/x/model")          # doctest: +SKIP
>>> enc.classify(["What a lovely day!"]).labels       # doctest: +SKIP
['joy']
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from carl.evaluation.calibration import probabilities


@dataclass(frozen=True)
class Classifier:
    """What a model folder's ``carl.json`` says about its classification head."""

    classes: tuple[str, ...]
    multi_label: bool
    temperature: float
    thresholds: np.ndarray | None  # [C], multi-label only

    @classmethod
    def from_info(cls, info: dict) -> Classifier:
        """From a validated ``carl.json`` (:func:`carl.model.folder.load_heads`)."""
        thresholds = np.asarray(info["thresholds"], dtype=np.float64) if info["multi_label"] else None
        return cls(tuple(info["classes"]), info["multi_label"], float(info["temperature"]), thresholds)

    def classify(self, logits: np.ndarray) -> Classification:
        """Logits [N, C] -> :class:`Classification` of N texts."""
        probs = probabilities(logits, self.temperature, multi_label=self.multi_label).astype(np.float32)  # [N, C]
        if self.multi_label:
            chosen = probs >= self.thresholds
            labels: list = [[c for c, on in zip(self.classes, row) if on] for row in chosen]
        else:
            labels = [self.classes[k] for k in probs.argmax(1)]
        return Classification(labels, probs, self.classes)


class Classification(NamedTuple):
    """Calibrated classes of N texts.

    ``labels``: per text, the top class (single-label) or the list of classes at or above their
    thresholds (multi-label, possibly empty); ``probabilities`` [N, C] float32 in ``classes``
    order. For a bare ``str`` input: one label (or list) and probabilities [C].
    """

    labels: list
    probabilities: np.ndarray
    classes: tuple[str, ...]

    def rows(self) -> list[dict]:
        """One JSON-ready dict per text of a list result: ``labels`` (a list, one entry for
        single-label) and ``probabilities`` ``{class: p}`` rounded to 6 digits."""
        return [
            {
                "labels": label if isinstance(label, list) else [label],
                "probabilities": {c: round(float(p), 6) for c, p in zip(self.classes, row)},
            }
            for label, row in zip(self.labels, self.probabilities)
        ]
