"""Sentence pairs with a graded relatedness score: the bundled SICK test split (``sick/``).

:func:`load_sick` reads ``sick/SICK_test_annotated.txt`` (4,927 pairs, relatedness 1-5;
licence CC BY-NC-SA 3.0, non-commercial: see ``sick/README.md``) or a file of the same
columns. Malformed rows raise :class:`~carl.data.errors.DataError` with the file, line and field.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from os import PathLike

import numpy as np

from .classification import _bundled
from .errors import DataError

SICK_COLUMNS: tuple[str, ...] = ("sentence_A", "sentence_B", "relatedness_score")


@dataclass
class SentencePairs:
    """N sentence pairs: ``first`` and ``second`` (N strings each), ``scores`` [N] float64."""

    first: list[str]
    second: list[str]
    scores: np.ndarray
    source: str

    def __post_init__(self) -> None:
        self.scores = np.asarray(self.scores, dtype=np.float64).reshape(-1)
        if not len(self.first) == len(self.second) == len(self.scores):
            raise ValueError(f"{len(self.first)} / {len(self.second)} sentences but {len(self.scores)} scores")

    def __len__(self) -> int:
        return len(self.scores)

    @property
    def texts(self) -> list[str]:
        """Every sentence of both sides (what an encoder embeds), first then second."""
        return self.first + self.second

    def subset(self, indices: Sequence[int] | np.ndarray) -> SentencePairs:
        """Pairs at ``indices``, in that order."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        return SentencePairs(
            [self.first[i] for i in idx], [self.second[i] for i in idx], self.scores[idx].copy(), self.source
        )


def load_sick(path: str | PathLike[str] | None = None) -> SentencePairs:
    """SICK pairs from ``path`` (default: the bundled test split), tab-separated with a header."""
    path = _bundled("sick", "SICK_test_annotated.txt") if path is None else path
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    except OSError as err:
        raise DataError(f"cannot read: {err.strerror}", path=path) from None
    except UnicodeDecodeError as err:
        raise DataError(f"not UTF-8: {err.reason}", path=path) from None
    if not rows:
        raise DataError("empty file", path=path)
    header = rows[0]
    missing = [c for c in SICK_COLUMNS if c not in header]
    if missing:
        raise DataError(f"missing column(s) {missing}; found {header}", path=path, line=1)
    a, b, s = (header.index(c) for c in SICK_COLUMNS)
    first, second, scores = [], [], []
    for line, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) != len(header):
            raise DataError(f"{len(row)} fields, the header has {len(header)}", path=path, line=line)
        try:
            score = float(row[s])
        except ValueError:
            score = math.nan
        if not math.isfinite(score):
            raise DataError(f"{row[s]!r} is not a finite number", path=path, line=line, field=SICK_COLUMNS[2])
        for column, text in ((SICK_COLUMNS[0], row[a]), (SICK_COLUMNS[1], row[b])):
            if not text.strip():
                raise DataError("empty sentence", path=path, line=line, field=column)
        first.append(row[a])
        second.append(row[b])
        scores.append(score)
    if not scores:
        raise DataError("no data rows", path=path)
    return SentencePairs(first, second, np.asarray(scores), str(path))
