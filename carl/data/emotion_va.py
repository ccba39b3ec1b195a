"""Categorical emotion labels -> (valence, arousal) in [0, 1].

Lets corpora annotated with emotion *categories* (GoEmotions, Ekman-style) be used as
continuous VA targets. Each label is placed at the valence and arousal ratings of the label
word itself in the Warriner, Kuperman & Brysbaert (2013) norms.

Source of every number
----------------------
Warriner, A. B., Kuperman, V., & Brysbaert, M. (2013). Norms of valence, arousal, and
dominance for 13,915 English lemmas. *Behavior Research Methods*, 45(4), 1191-1207.
doi:10.3758/s13428-012-0314-x. Ratings were collected on 1-9 scales (valence 1 = unhappy,
9 = happy; arousal 1 = calm, 9 = excited); we use the whole-sample means ``V.Mean.Sum`` and
``A.Mean.Sum`` of the article's supplementary data file.

The numbers were transcribed by hand from the public copy
``Ratings_Warriner_et_al.csv`` in the GitHub repository JULIELab/XANEW (commit
8b6e40a1fc17ab5d9f7ad9a1aa817be3075f7a20; the file is the supplementary CSV, rows numbered
in the unnamed first column, which is :attr:`WarrinerEntry.row` below). ``joy`` (8.21, 5.55)
and ``love`` (8.00, 5.36) were cross-checked against a second public copy,
``BRM-emot-submit.csv`` in nharp189/Words, and agree.

Rescaling: ``x01 = (x - 1) / 8`` for both dimensions (1-9 -> 0-1).

Fallbacks
---------
* ``caring`` is not a Warriner lemma (the list goes ``cargo``, ``carjack``); the lemma
  ``care`` (row 1780) is used instead.
* ``neutral``: valence is set to exactly 0.5 (the scale midpoint) by definition of the
  category; arousal is Warriner's rating of the word ``neutral`` (3.45 -> 0.30625). Warriner's
  own valence for the word is 5.50 (-> 0.5625), which we deliberately do not use.

Every other label is its own Warriner lemma.

Licence status
--------------
The norms were published as supplementary material of the article for research use; we know
of no explicit open licence for the data file. This module does not redistribute the data
set: it quotes 28 individual numeric ratings (factual values) with full citation. Users who
need the full norms should obtain them from the publisher's supplementary material.

Mappings
--------
``"goemotions"``: the 27 GoEmotions categories + neutral (Demszky et al., 2020).
``"ekman"``: anger, disgust, fear, joy, sadness, surprise + neutral (same coordinates).
A user JSON file ``{"label": [valence01, arousal01], ...}`` may be passed instead of a name.
"""

from __future__ import annotations

import difflib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

from .errors import DataError, UnknownLabelError

WARRINER_CITATION = (
    "Warriner, A. B., Kuperman, V., & Brysbaert, M. (2013). Norms of valence, arousal, and "
    "dominance for 13,915 English lemmas. Behavior Research Methods, 45(4), 1191-1207. "
    "doi:10.3758/s13428-012-0314-x"
)
WARRINER_SOURCE = (
    "github.com/JULIELab/XANEW, Ratings_Warriner_et_al.csv, commit 8b6e40a1fc17ab5d9f7ad9a1aa817be3075f7a20"
)


@dataclass(frozen=True)
class WarrinerEntry:
    """One transcribed Warriner row: lemma, row id in the CSV, V.Mean.Sum and A.Mean.Sum (1-9)."""

    word: str
    row: int
    valence: float
    arousal: float

    @property
    def va01(self) -> tuple[float, float]:
        """(valence, arousal) rescaled to [0, 1] by ``(x - 1) / 8``."""
        return ((self.valence - 1.0) / 8.0, (self.arousal - 1.0) / 8.0)


# label -> Warriner lemma used for it (values on the original 1-9 scale).
WARRINER_NORMS: dict[str, WarrinerEntry] = {
    "admiration": WarrinerEntry("admiration", 152, 7.58, 5.52),
    "amusement": WarrinerEntry("amusement", 387, 7.00, 4.82),
    "anger": WarrinerEntry("anger", 418, 2.50, 5.93),
    "annoyance": WarrinerEntry("annoyance", 442, 2.95, 4.10),
    "approval": WarrinerEntry("approval", 541, 6.75, 3.52),
    "caring": WarrinerEntry("care", 1780, 7.64, 2.67),  # fallback: 'caring' not in the norms
    "confusion": WarrinerEntry("confusion", 2552, 3.32, 4.64),
    "curiosity": WarrinerEntry("curiosity", 3008, 6.37, 5.90),
    "desire": WarrinerEntry("desire", 3341, 7.05, 6.20),
    "disappointment": WarrinerEntry("disappointment", 3516, 2.79, 4.90),
    "disapproval": WarrinerEntry("disapproval", 3517, 3.40, 4.23),
    "disgust": WarrinerEntry("disgust", 3569, 3.32, 5.00),
    "embarrassment": WarrinerEntry("embarrassment", 4031, 2.72, 5.45),
    "excitement": WarrinerEntry("excitement", 4293, 7.62, 6.21),
    "fear": WarrinerEntry("fear", 4524, 2.93, 6.14),
    "gratitude": WarrinerEntry("gratitude", 5362, 6.67, 5.09),
    "grief": WarrinerEntry("grief", 5395, 2.33, 4.95),
    "joy": WarrinerEntry("joy", 6722, 8.21, 5.55),
    "love": WarrinerEntry("love", 7246, 8.00, 5.36),
    "nervousness": WarrinerEntry("nervousness", 8140, 3.10, 4.45),
    "neutral": WarrinerEntry("neutral", 8155, 5.50, 3.45),  # valence overridden to 0.5 below
    "optimism": WarrinerEntry("optimism", 8458, 7.21, 4.95),
    "pride": WarrinerEntry("pride", 9438, 6.50, 5.54),
    "realization": WarrinerEntry("realization", 9911, 6.42, 3.67),
    "relief": WarrinerEntry("relief", 10124, 6.63, 4.42),
    "remorse": WarrinerEntry("remorse", 10156, 3.63, 4.29),
    "sadness": WarrinerEntry("sadness", 10587, 2.40, 2.81),
    "surprise": WarrinerEntry("surprise", 12138, 7.44, 6.57),
}

GOEMOTIONS_LABELS: tuple[str, ...] = (
    "admiration",
    "amusement",
    "anger",
    "annoyance",
    "approval",
    "caring",
    "confusion",
    "curiosity",
    "desire",
    "disappointment",
    "disapproval",
    "disgust",
    "embarrassment",
    "excitement",
    "fear",
    "gratitude",
    "grief",
    "joy",
    "love",
    "nervousness",
    "optimism",
    "pride",
    "realization",
    "relief",
    "remorse",
    "sadness",
    "surprise",
    "neutral",
)
EKMAN_LABELS: tuple[str, ...] = ("anger", "disgust", "fear", "joy", "sadness", "surprise", "neutral")


def _coordinates(label: str) -> tuple[float, float]:
    valence, arousal = WARRINER_NORMS[label].va01
    if label == "neutral":
        valence = 0.5  # the category's definition; see module docstring
    return (valence, arousal)


_MAPPINGS: dict[str, dict[str, tuple[float, float]]] = {
    "goemotions": {label: _coordinates(label) for label in GOEMOTIONS_LABELS},
    "ekman": {label: _coordinates(label) for label in EKMAN_LABELS},
}


def available_mappings() -> list[str]:
    """Names accepted by :func:`get_mapping` / :func:`emotion_to_va` (a JSON path also works)."""
    return sorted(_MAPPINGS)


def _normalise_label(label: str) -> str:
    return label.strip().lower()


def load_mapping_file(path: str | PathLike[str]) -> dict[str, tuple[float, float]]:
    """Read a user mapping ``{"label": [valence01, arousal01], ...}`` (values in [0, 1]).

    Labels are matched case-insensitively. Problems raise :class:`DataError` naming the file
    and the label (as ``field``).
    """
    p = Path(path)
    if not p.is_file():
        raise DataError("mapping file not found", path=path)
    try:
        raw = json.loads(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise DataError(f"not UTF-8 text ({err.reason})", path=path) from err
    except json.JSONDecodeError as err:
        raise DataError(f"malformed JSON: {err.msg} (column {err.colno})", path=path, line=err.lineno) from err
    if not isinstance(raw, dict) or not raw:
        raise DataError('expected a non-empty JSON object {"label": [valence01, arousal01], ...}', path=path)
    mapping: dict[str, tuple[float, float]] = {}
    for label, value in raw.items():
        if (
            not isinstance(value, list)
            or len(value) != 2
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
        ):
            raise DataError(f"expected [valence01, arousal01], got {value!r}", path=path, field=label)
        v, a = float(value[0]), float(value[1])
        if not all(math.isfinite(x) and 0.0 <= x <= 1.0 for x in (v, a)):
            raise DataError(f"values must lie in [0, 1], got {value!r}", path=path, field=label)
        key = _normalise_label(label)
        if not key:
            raise DataError("empty label name", path=path, field=label)
        if key in mapping:
            raise DataError(f"label {label!r} given twice (labels are case-insensitive)", path=path, field=label)
        mapping[key] = (v, a)
    return mapping


def get_mapping(mapping: str | PathLike[str] = "goemotions") -> dict[str, tuple[float, float]]:
    """A named mapping (see :func:`available_mappings`) or a JSON file; returns a fresh dict."""
    if isinstance(mapping, str) and mapping.strip().lower() in _MAPPINGS:
        return dict(_MAPPINGS[mapping.strip().lower()])
    if isinstance(mapping, PathLike) or (
        isinstance(mapping, str) and (mapping.lower().endswith(".json") or Path(mapping).exists())
    ):
        return load_mapping_file(mapping)
    raise ValueError(
        f"unknown label mapping {mapping!r}; use one of {available_mappings()} "
        'or a path to a JSON file {"label": [valence01, arousal01]}'
    )


def lookup(
    label: str,
    mapping: Mapping[str, tuple[float, float]],
    *,
    mapping_name: str = "mapping",
    path: str | PathLike[str] | None = None,
    line: int | None = None,
    field: str | None = None,
) -> tuple[float, float]:
    """``mapping[label]`` (case-insensitive) or :class:`UnknownLabelError` with close matches."""
    key = _normalise_label(label)
    if key in mapping:
        return mapping[key]
    close = difflib.get_close_matches(key, list(mapping), n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    known = ", ".join(sorted(mapping))
    raise UnknownLabelError(
        f"unknown emotion label {label!r} for {mapping_name}{hint} (known labels: {known})",
        path=path,
        line=line,
        field=field,
    )


def emotion_to_va(label: str, mapping: str | PathLike[str] = "goemotions") -> tuple[float, float]:
    """(valence, arousal) in [0, 1] for an emotion label, e.g. ``emotion_to_va("joy")``.

    Raises :class:`UnknownLabelError` (a ``KeyError`` and a ``DataError``) for unknown labels.
    """
    return lookup(label, get_mapping(mapping), mapping_name=f"mapping {str(mapping)!r}")
