"""Categorical emotion labels: reading a label cell, the label set, integer and multi-hot targets.

A label cell holds

* one label (``joy``), or
* several labels (multi-label data only) separated by a declared one-character delimiter
  (``joy|love``), or given as a JSON list (a list in JSON Lines, ``["joy", "love"]`` as the
  text of a CSV/TSV cell).

A delimited cell is split like a CSV record with that delimiter, so quotes inside the cell keep
a label that contains the delimiter whole: ``"love|hate"|joy`` is the two labels ``love|hate``
and ``joy``. (The quotes of the file itself are gone by then: in a CSV file whose label delimiter
is also ``,``, the cell ``"joy,love"`` holds two labels.) Labels are stripped of surrounding
whitespace and compared case-sensitively; a label repeated within one cell counts once.

The label set is the sorted distinct labels of the training file; dev and test files are read
against it, and a label they add is an error naming the file, line and field.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from .errors import DataError


def parse_label_cell(
    value: Any,
    *,
    text_table: bool,
    multi_label: bool = False,
    delimiter: str = "",
    path: str | None = None,
    line: int | None = None,
    field: str | None = None,
) -> list[str]:
    """The labels of one raw cell, in cell order without repeats; one label unless ``multi_label``.

    ``text_table``: the cell comes from a CSV/TSV file, where a JSON list is written as text.
    ``path``, ``line`` and ``field`` locate a :class:`DataError`.
    """
    where: dict[str, Any] = {"path": path, "line": line, "field": field}
    if isinstance(value, str) and text_table and value.strip().startswith("["):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as err:
            raise DataError(
                f"{value!r} starts like a JSON list of labels but is not valid JSON ({err.msg})", **where
            ) from None
    if isinstance(value, list):
        if not all(isinstance(v, str) for v in value):
            raise DataError(f"a list of labels must hold only text, got {json.dumps(value)}", **where)
        labels = [v.strip() for v in value]
    elif isinstance(value, str):
        labels = _split(value, delimiter, where) if multi_label and delimiter else [value.strip()]
    elif isinstance(value, int) and not isinstance(value, bool):
        labels = [str(value)]
    else:
        raise DataError(f"expected a label or a list of labels, got {json.dumps(value)}", **where)
    if not labels:
        raise DataError("the list of labels is empty", **where)
    if not all(labels):
        raise DataError("label is empty" if len(labels) == 1 else f"an empty label in {value!r}", **where)
    labels = list(dict.fromkeys(labels))
    if len(labels) > 1 and not multi_label:
        raise DataError(
            f"{len(labels)} labels ({', '.join(labels)}) in a single-label column; "
            "set data.multi_label = true for several labels per text",
            **where,
        )
    return labels


def _split(cell: str, delimiter: str, where: dict[str, Any]) -> list[str]:
    if not cell.strip():
        return [""]
    try:
        pieces = next(csv.reader([cell], delimiter=delimiter, skipinitialspace=True, strict=True))
    except csv.Error as err:
        raise DataError(f"malformed quoting in the labels {cell!r}: {err}", **where) from None
    return [piece.strip() for piece in pieces]


def label_set(label_rows: Sequence[Sequence[str]]) -> tuple[str, ...]:
    """The sorted distinct labels of the rows: the class names, index order."""
    return tuple(sorted({label for labels in label_rows for label in labels}))


def encode_labels(
    label_rows: Sequence[Sequence[str]],
    lines: Sequence[int],
    classes: Sequence[str],
    *,
    multi_label: bool,
    path: str,
    column: str,
    known_from: str,
) -> np.ndarray:
    """Class indices ``[N]`` int64 (single-label) or multi-hot ``[N, C]`` float32 (multi-label).

    A label outside ``classes`` raises :class:`DataError` at its row's ``lines`` entry, naming
    ``known_from`` (where the classes came from) and the known labels.
    """
    index = {name: i for i, name in enumerate(classes)}
    targets = np.zeros((len(label_rows), len(classes)), dtype=np.float32)
    for row, (labels, line) in enumerate(zip(label_rows, lines)):
        for label in labels:
            if label not in index:
                raise DataError(
                    f"label {label!r} is not one of the labels known from {known_from}: {', '.join(classes)}",
                    path=path,
                    line=line,
                    field=column,
                )
            targets[row, index[label]] = 1.0
    return targets if multi_label else targets.argmax(1).astype(np.int64)
