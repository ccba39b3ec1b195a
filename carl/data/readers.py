"""Reading labelled text tables (CSV, TSV, JSON Lines) into an :class:`AffectDataset`.

Labels:

* continuous: a valence and an arousal column on a declared :class:`~carl.data.scales.Scale`,
  normalised to [0, 1];
* categorical: an emotion-label column (one label per row, or several: see
  :mod:`carl.data.labels`), read as class targets; the row's VA comes from its VA columns when
  the file has both, else from the labels' coordinates in :mod:`carl.data.emotion_va` (the mean
  of them for several labels).

Every bad cell raises :class:`~carl.data.errors.DataError` with file, line and field; no
record is silently dropped (only completely empty lines are skipped, and rows of other splits
when ``split=`` filtering is asked for).
"""

from __future__ import annotations

import csv
import difflib
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from .emotion_va import get_mapping, lookup
from .errors import DataError
from .labels import encode_labels, label_set, parse_label_cell
from .scales import UNIT, Scale, as_scale

PathArg = str | PathLike[str]

_SUFFIX_FORMATS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl"}
_FORMAT_NAMES = {"csv": "csv", "tsv": "tsv", "jsonl": "jsonl", "json": "jsonl", "ndjson": "jsonl"}


# --------------------------------------------------------------------------- dataset


@dataclass
class AffectDataset:
    """Texts with (valence, arousal) targets and, for labelled data, emotion-class targets.

    Attributes:
        texts: N strings.
        labels: ``[N, 2]`` float32, columns (valence, arousal), normalised to [0, 1].
        scale: the scale the labels were read on (``0-1`` for VA from the emotion mapping).
        source: where the rows came from (the file path as given).
        classes: the C class names, index order (empty without a label column).
        targets: ``[N]`` int64 class indices (single-label), ``[N, C]`` float32 multi-hot
            (multi-label), or None without a label column.
    """

    texts: list[str]
    labels: np.ndarray
    scale: Scale
    source: str
    classes: tuple[str, ...] = ()
    targets: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.texts = list(self.texts)
        self.labels = np.asarray(self.labels, dtype=np.float32)
        if self.labels.size == 0:
            self.labels = self.labels.reshape(0, 2)
        if self.labels.ndim != 2 or self.labels.shape[1] != 2:
            raise ValueError(f"labels must have shape [N, 2], got {self.labels.shape}")
        if self.labels.shape[0] != len(self.texts):
            raise ValueError(f"{len(self.texts)} texts but {self.labels.shape[0]} label rows")
        self.scale = as_scale(self.scale)
        self.source = str(self.source)
        self.classes = tuple(self.classes)
        if self.targets is not None:
            self.targets = _checked_targets(np.asarray(self.targets), len(self.texts), len(self.classes))
        elif self.classes:
            raise ValueError("classes without targets")

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def multi_label(self) -> bool:
        """True when :attr:`targets` is a multi-hot ``[N, C]`` matrix."""
        return self.targets is not None and self.targets.ndim == 2

    def subset(self, indices: Sequence[int] | np.ndarray) -> AffectDataset:
        """Rows at ``indices`` (ints, or a boolean mask of length N), in that order."""
        idx = np.asarray(indices)
        if idx.dtype == bool:
            if idx.shape != (len(self),):
                raise ValueError(f"boolean mask must have shape ({len(self)},), got {idx.shape}")
            idx = np.flatnonzero(idx)
        idx = idx.astype(np.int64).reshape(-1)
        targets = None if self.targets is None else self.targets[idx].copy()
        return AffectDataset(
            [self.texts[i] for i in idx], self.labels[idx].copy(), self.scale, self.source, self.classes, targets
        )

    def original_labels(self) -> np.ndarray:
        """``[N, 2]`` float64 labels back on :attr:`scale`."""
        return self.scale.denormalise(self.labels.astype(np.float64))

    def class_counts(self) -> dict[str, int]:
        """Rows carrying each class (a multi-label row counts once for each of its labels)."""
        if self.targets is None:
            return {}
        counts = self.targets.sum(0) if self.multi_label else np.bincount(self.targets, minlength=len(self.classes))
        return {name: int(n) for name, n in zip(self.classes, counts)}

    def summary(self) -> str:
        """Rows read, file, scale, per-dimension min/mean/max on the original scale, class counts."""
        lines = [
            f"rows read: {len(self)}",
            f"file: {self.source}",
            f"scale: {self.scale} (labels stored normalised to [0, 1])",
        ]
        if len(self) == 0:
            lines.append("no rows: no label statistics")
            return "\n".join(lines)
        original = self.original_labels()
        if np.isnan(original).all():
            lines.append("valence/arousal: none read (the classes alone are trained)")
        for col, name in enumerate(("valence", "arousal") if not np.isnan(original).all() else ()):
            values = original[:, col]
            lines.append(
                f"{name} (on {self.scale}): min {values.min():.3f}  mean {values.mean():.3f}  max {values.max():.3f}"
            )
        if self.targets is not None:
            kind = "multi-label" if self.multi_label else "single-label"
            counts = ", ".join(f"{name} {n}" for name, n in self.class_counts().items())
            lines.append(f"classes ({len(self.classes)}, {kind}): {counts}")
        return "\n".join(lines)


def _checked_targets(targets: np.ndarray, n: int, n_classes: int) -> np.ndarray:
    if targets.ndim == 1:
        targets = targets.astype(np.int64)
        if len(targets) and (targets.min() < 0 or targets.max() >= n_classes):
            raise ValueError(f"class indices must lie in [0, {n_classes})")
    elif targets.ndim == 2 and targets.shape[1] == n_classes:
        targets = targets.astype(np.float32)
        if not np.isin(targets, (0.0, 1.0)).all():
            raise ValueError("multi-hot targets must be 0 or 1")
    else:
        raise ValueError(f"targets must have shape [N] or [N, {n_classes}], got {targets.shape}")
    if targets.shape[0] != n:
        raise ValueError(f"{n} texts but {targets.shape[0]} target rows")
    return targets


# --------------------------------------------------------------------------- raw records


def affect_csv_text(texts: Sequence[str], va: np.ndarray) -> str:
    """``text,valence,arousal`` CSV of ``va`` [N, 2] on the 0-1 scale (read back with ``data.scale=0-1``)."""
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["text", "valence", "arousal"])
    writer.writerows([text, f"{v:.6f}", f"{a:.6f}"] for text, (v, a) in zip(texts, np.asarray(va).tolist()))
    return buffer.getvalue()


@dataclass
class RawTable:
    """Parsed file before validation: ``records`` are (start line, {column: raw value})."""

    path: str
    file_format: str
    columns: list[str]
    records: list[tuple[int, dict[str, Any]]]
    header_line: int | None  # 1 for CSV/TSV, None for JSON Lines


def infer_format(path: PathArg, file_format: str | None = None) -> str:
    """``"csv"``, ``"tsv"`` or ``"jsonl"`` from ``file_format`` or the file suffix."""
    if file_format is not None:
        fmt = _FORMAT_NAMES.get(file_format.strip().lower().lstrip("."))
        if fmt is None:
            raise ValueError(f"unknown file_format {file_format!r}; use 'csv', 'tsv' or 'jsonl'")
        return fmt
    suffix = Path(path).suffix.lower()
    if suffix not in _SUFFIX_FORMATS:
        raise DataError(
            f"cannot tell the format from the suffix {suffix or '(none)'!r}; "
            "use .csv, .tsv or .jsonl, or pass file_format=",
            path=path,
        )
    return _SUFFIX_FORMATS[suffix]


def _has_surrogate(text: str) -> bool:
    return any("\udc80" <= ch <= "\udcff" for ch in text)


def _bad_bytes(text: str) -> str:
    return " ".join(f"0x{ord(ch) - 0xDC00:02x}" for ch in text if "\udc80" <= ch <= "\udcff")


def _undecodable(path: PathArg, line: int, column: str | None, value: str) -> DataError:
    return DataError(
        f"contains bytes that are not valid UTF-8 ({_bad_bytes(value)}); re-save the file as UTF-8",
        path=path,
        line=line,
        field=column,
    )


def read_records(path: PathArg, file_format: str | None = None) -> RawTable:
    """Read a CSV/TSV/JSONL file into raw records with their starting line numbers."""
    fmt = infer_format(path, file_format)
    p = Path(path)
    if not p.exists():
        raise DataError("file not found", path=path)
    if not p.is_file():
        raise DataError("not a regular file", path=path)
    data = p.read_bytes()
    try:
        text = data.decode("utf-8")
        bad_utf8 = False
    except UnicodeDecodeError:
        text = data.decode("utf-8", errors="surrogateescape")
        bad_utf8 = True
    if text.startswith("\ufeff"):
        text = text[1:]
    table = _read_delimited(path, text, fmt) if fmt in ("csv", "tsv") else _read_jsonl(path, text)
    if bad_utf8:
        _raise_first_undecodable(table, text)
    return table


def _raise_first_undecodable(table: RawTable, text: str) -> None:
    if table.header_line is not None:
        for name in table.columns:
            if _has_surrogate(name):
                raise _undecodable(table.path, table.header_line, None, name)
    for line, record in table.records:
        for column, value in record.items():
            if isinstance(value, str) and _has_surrogate(value):
                raise _undecodable(table.path, line, column, value)
            if _has_surrogate(str(column)):
                raise _undecodable(table.path, line, None, str(column))
    for number, raw_line in enumerate(text.split("\n"), 1):  # not inside a record we kept
        if _has_surrogate(raw_line):
            raise _undecodable(table.path, number, None, raw_line)


def _read_delimited(path: PathArg, text: str, fmt: str) -> RawTable:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter="," if fmt == "csv" else "\t", strict=True)
    kind = fmt.upper()
    try:
        header = next(reader)
    except StopIteration:
        raise DataError("file is empty: no header row", path=path) from None
    except csv.Error as err:
        raise DataError(f"malformed {kind} header: {err}", path=path, line=1) from None
    columns = [name.strip() for name in header]
    seen: set[str] = set()
    for name in columns:
        if name in seen:
            raise DataError("column name appears twice in the header", path=path, line=1, field=name)
        seen.add(name)
    records: list[tuple[int, dict[str, Any]]] = []
    while True:
        start = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as err:
            raise DataError(f"malformed {kind} record: {err}", path=path, line=start) from None
        if not row:
            continue  # an empty line carries no record
        if len(row) != len(columns):
            raise DataError(f"expected {len(columns)} fields as in the header, found {len(row)}", path=path, line=start)
        records.append((start, dict(zip(columns, row))))
    return RawTable(str(path), fmt, columns, records, header_line=1)


def _read_jsonl(path: PathArg, text: str) -> RawTable:
    records: list[tuple[int, dict[str, Any]]] = []
    for number, raw_line in enumerate(text.split("\n"), 1):
        stripped = raw_line.strip()
        if not stripped:
            continue
        try:
            obj = json.loads(stripped)
        except json.JSONDecodeError as err:
            raise DataError(
                f"malformed JSON line: {err.msg} (column {err.colno}); each line must be one JSON object",
                path=path,
                line=number,
            ) from None
        if not isinstance(obj, dict):
            raise DataError(f"expected one JSON object per line, got {type(obj).__name__}", path=path, line=number)
        records.append((number, obj))
    columns = list(records[0][1]) if records else []
    return RawTable(str(path), "jsonl", columns, records, header_line=None)


# --------------------------------------------------------------------------- validation


def _missing_column(
    table: RawTable, column: str, found: Sequence[str], line: int | None, what: str = "column"
) -> DataError:
    lowered = {name.lower(): name for name in found}
    close = difflib.get_close_matches(column.lower(), list(lowered), n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(repr(lowered[c]) for c in close)}?" if close else ""
    listing = ", ".join(repr(name) for name in found) or "(none)"
    return DataError(
        f"{what} {column!r} not found; {what}s found: {listing}{hint}", path=table.path, line=line, field=column
    )


def require_columns(table: RawTable, columns: Sequence[str]) -> None:
    """Check the header (CSV/TSV) or the first record (JSONL) has every column."""
    if not table.columns and not table.records:
        return
    what = "key" if table.file_format == "jsonl" else "column"
    line = table.header_line if table.header_line is not None else table.records[0][0]
    for column in columns:
        if column not in table.columns:
            raise _missing_column(table, column, table.columns, line, what)


def raw_value(table: RawTable, line: int, record: dict[str, Any], column: str) -> Any:
    """The raw cell; a JSONL record lacking the key raises :class:`DataError`."""
    if column not in record:
        raise _missing_column(table, column, list(record), line, "key")
    return record[column]


def text_value(table: RawTable, line: int, record: dict[str, Any], column: str) -> str:
    """A non-empty text cell (returned unchanged)."""
    value = raw_value(table, line, record, column)
    if not isinstance(value, str):
        raise DataError(
            f"expected text, got {type(value).__name__} {value!r}", path=table.path, line=line, field=column
        )
    if not value.strip():
        raise DataError(
            "text is empty" if not value else "text is only whitespace", path=table.path, line=line, field=column
        )
    return value


def number_value(table: RawTable, line: int, record: dict[str, Any], column: str, scale: Scale | None = None) -> float:
    """A finite number cell, optionally checked to lie on ``scale``."""
    value = raw_value(table, line, record, column)
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise DataError(f"expected a number, got {json.dumps(value)}", path=table.path, line=line, field=column)
    if isinstance(value, str):
        if not value.strip():
            raise DataError("value is empty, expected a number", path=table.path, line=line, field=column)
        try:
            number = float(value.strip())
        except ValueError:
            raise DataError(f"{value!r} is not a number", path=table.path, line=line, field=column) from None
    else:
        number = float(value)
    if not math.isfinite(number):
        raise DataError(f"{value!r} is not a finite number (NaN/inf)", path=table.path, line=line, field=column)
    if scale is not None and not scale.contains(number):
        raise DataError(
            f"value {number:g} is outside the declared scale {scale}", path=table.path, line=line, field=column
        )
    return number


def select_split(table: RawTable, split_column: str, split: str | None) -> list[tuple[int, dict[str, Any]]]:
    """Records whose ``split_column`` equals ``split`` (all records when ``split`` is None)."""
    if split is None:
        return list(table.records)
    chosen, seen = [], set()
    for line, record in table.records:
        value = str(raw_value(table, line, record, split_column)).strip()
        seen.add(value)
        if value == split:
            chosen.append((line, record))
    if not chosen:
        raise DataError(
            f"no rows with {split_column} == {split!r}; values found: {', '.join(repr(v) for v in sorted(seen))}",
            path=table.path,
            field=split_column,
        )
    return chosen


# --------------------------------------------------------------------------- public loader


def load_table(
    path: PathArg,
    *,
    text_column: str = "text",
    valence_column: str = "valence",
    arousal_column: str = "arousal",
    scale: Scale | str = "1-5",
    file_format: str | None = None,
    label_column: str | None = None,
    label_mapping: str | PathArg | None = None,
    split_column: str | None = None,
    split: str | None = None,
    multi_label: bool = False,
    label_delimiter: str = "",
    classes: Sequence[str] | None = None,
    va: bool = True,
) -> AffectDataset:
    """Read a CSV (.csv), TSV (.tsv) or JSON Lines (.jsonl/.json) file of labelled texts.

    Continuous mode (default): ``valence_column``/``arousal_column`` hold numbers on ``scale``
    (``"1-5"``, ``"1-9"``, ``"-1:1"``, ...); labels are normalised to [0, 1].
    Categorical mode (``label_column`` given): each row's emotion label(s) (several only with
    ``multi_label``, split at ``label_delimiter`` or given as a JSON list) become class targets
    over ``classes`` (default: the sorted labels of this file; give the training file's for
    dev and test). The row's VA comes from the VA columns when the file has both (on ``scale``),
    else from ``label_mapping`` (``"goemotions"`` (default), ``"ekman"`` or a JSON file path;
    the mean coordinates of several labels; the dataset scale is then 0-1). ``va=False``: a labelled
    file without VA columns gets NaN VA instead (for training on the classes alone, whatever the
    label names).
    ``split_column`` + ``split`` keep only rows whose split value equals ``split``.

    Returns an :class:`AffectDataset` with labels ``[N, 2]`` float32 (valence, arousal) and, in
    categorical mode, ``classes`` and ``targets`` (``[N]`` int64 or multi-hot ``[N, C]``).
    Raises :class:`DataError` (file, line, field) for any bad input; see the module docstring.
    """
    if split is not None and split_column is None:
        raise ValueError("split= needs split_column= (the column holding the split names)")
    categorical = label_column is not None
    table = read_records(path, file_format)
    va_columns = not categorical or _has_va_columns(table, valence_column, arousal_column)
    target_scale = as_scale(scale) if va_columns else UNIT
    mapping = {} if va_columns or not va else get_mapping(label_mapping or "goemotions")
    mapping_name = f"mapping {str(label_mapping or 'goemotions')!r}"

    needed = [text_column] + ([valence_column, arousal_column] if va_columns else [])
    needed += [label_column] if label_column is not None else []
    needed += [split_column] if split_column is not None else []
    require_columns(table, needed)
    if not table.records:
        raise DataError(
            "no data rows" + (" (the file has only a header)" if table.header_line is not None else ""), path=path
        )
    records = select_split(table, split_column, split) if split_column is not None else table.records

    texts: list[str] = []
    labels = np.empty((len(records), 2), dtype=np.float64)
    label_rows: list[list[str]] = []
    for i, (line, record) in enumerate(records):
        texts.append(text_value(table, line, record, text_column))
        if label_column is not None:
            label_rows.append(
                parse_label_cell(
                    raw_value(table, line, record, label_column),
                    text_table=table.file_format != "jsonl",
                    multi_label=multi_label,
                    delimiter=label_delimiter,
                    path=table.path,
                    line=line,
                    field=label_column,
                )
            )
        if va_columns:
            labels[i, 0] = number_value(table, line, record, valence_column, target_scale)
            labels[i, 1] = number_value(table, line, record, arousal_column, target_scale)
        elif not va:
            labels[i] = np.nan
        else:
            labels[i] = np.mean(
                [
                    lookup(label, mapping, mapping_name=mapping_name, path=table.path, line=line, field=label_column)
                    for label in label_rows[-1]
                ],
                axis=0,
            )
    if va_columns:
        labels = target_scale.normalise(labels)
    if label_column is None:
        return AffectDataset(texts, labels.astype(np.float32), target_scale, str(path))
    names = label_set(label_rows) if classes is None else tuple(classes)
    targets = encode_labels(
        label_rows,
        [line for line, _ in records],
        names,
        multi_label=multi_label,
        path=table.path,
        column=label_column,
        known_from="the training data",
    )
    return AffectDataset(texts, labels.astype(np.float32), target_scale, str(path), names, targets)


def _has_va_columns(table: RawTable, valence_column: str, arousal_column: str) -> bool:
    """Whether a labelled file also has VA columns: both (True), neither (False), or one (error)."""
    present = [c for c in (valence_column, arousal_column) if c in table.columns]
    if len(present) == 1:
        missing = arousal_column if present[0] == valence_column else valence_column
        line = table.header_line if table.header_line is not None else table.records[0][0]
        raise _missing_column(table, missing, table.columns, line, "key" if table.file_format == "jsonl" else "column")
    return len(present) == 2
