"""Reading labelled text tables (CSV, TSV, JSON Lines) into an :class:`AffectDataset`.

Two labelling modes:

* continuous: a valence and an arousal column on a declared :class:`~carl.data.scales.Scale`,
  normalised to [0, 1];
* categorical: one emotion-label column mapped to VA coordinates with
  :mod:`carl.data.emotion_va`.

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
from .scales import UNIT, Scale, as_scale

PathArg = str | PathLike[str]

_SUFFIX_FORMATS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv",
                   ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl"}
_FORMAT_NAMES = {"csv": "csv", "tsv": "tsv", "jsonl": "jsonl", "json": "jsonl", "ndjson": "jsonl"}


# --------------------------------------------------------------------------- dataset


@dataclass
class AffectDataset:
    """Texts with (valence, arousal) targets.

    Attributes:
        texts: N strings.
        labels: ``[N, 2]`` float32, columns (valence, arousal), normalised to [0, 1].
        scale: the scale the labels were read on (``0-1`` for categorical labels).
        source: where the rows came from (the file path as given).
    """

    texts: list[str]
    labels: np.ndarray
    scale: Scale
    source: str

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

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, indices: Sequence[int] | np.ndarray) -> AffectDataset:
        """Rows at ``indices`` (ints, or a boolean mask of length N), in that order."""
        idx = np.asarray(indices)
        if idx.dtype == bool:
            if idx.shape != (len(self),):
                raise ValueError(f"boolean mask must have shape ({len(self)},), got {idx.shape}")
            idx = np.flatnonzero(idx)
        idx = idx.astype(np.int64).reshape(-1)
        return AffectDataset([self.texts[i] for i in idx], self.labels[idx].copy(), self.scale,
                             self.source)

    def original_labels(self) -> np.ndarray:
        """``[N, 2]`` float64 labels back on :attr:`scale`."""
        return self.scale.denormalise(self.labels.astype(np.float64))

    def summary(self) -> str:
        """Rows read, file, scale and per-dimension min/mean/max on the original scale."""
        lines = [f"rows read: {len(self)}", f"file: {self.source}",
                 f"scale: {self.scale} (labels stored normalised to [0, 1])"]
        if len(self) == 0:
            lines.append("no rows: no label statistics")
            return "\n".join(lines)
        original = self.original_labels()
        for col, name in enumerate(("valence", "arousal")):
            values = original[:, col]
            lines.append(f"{name} (on {self.scale}): min {values.min():.3f}  "
                         f"mean {values.mean():.3f}  max {values.max():.3f}")
        return "\n".join(lines)


# --------------------------------------------------------------------------- raw records


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
        raise DataError(f"cannot tell the format from the suffix {suffix or '(none)'!r}; "
                        "use .csv, .tsv or .jsonl, or pass file_format=", path=path)
    return _SUFFIX_FORMATS[suffix]


def _has_surrogate(text: str) -> bool:
    return any("\udc80" <= ch <= "\udcff" for ch in text)


def _bad_bytes(text: str) -> str:
    return " ".join(f"0x{ord(ch) - 0xDC00:02x}" for ch in text if "\udc80" <= ch <= "\udcff")


def _undecodable(path: PathArg, line: int, column: str | None, value: str) -> DataError:
    return DataError(f"contains bytes that are not valid UTF-8 ({_bad_bytes(value)}); "
                     "re-save the file as UTF-8", path=path, line=line, field=column)


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
    reader = csv.reader(io.StringIO(text, newline=""), delimiter="," if fmt == "csv" else "\t",
                        strict=True)
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
            raise DataError(f"expected {len(columns)} fields as in the header, found {len(row)}",
                            path=path, line=start)
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
            raise DataError(f"malformed JSON line: {err.msg} (column {err.colno}); "
                            "each line must be one JSON object", path=path, line=number) from None
        if not isinstance(obj, dict):
            raise DataError(f"expected one JSON object per line, got {type(obj).__name__}",
                            path=path, line=number)
        records.append((number, obj))
    columns = list(records[0][1]) if records else []
    return RawTable(str(path), "jsonl", columns, records, header_line=None)


# --------------------------------------------------------------------------- validation


def _missing_column(table: RawTable, column: str, found: Sequence[str], line: int | None,
                    what: str = "column") -> DataError:
    lowered = {name.lower(): name for name in found}
    close = difflib.get_close_matches(column.lower(), list(lowered), n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(repr(lowered[c]) for c in close)}?" if close else ""
    listing = ", ".join(repr(name) for name in found) or "(none)"
    return DataError(f"{what} {column!r} not found; {what}s found: {listing}{hint}",
                     path=table.path, line=line, field=column)


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
        raise DataError(f"expected text, got {type(value).__name__} {value!r}",
                        path=table.path, line=line, field=column)
    if not value.strip():
        raise DataError("text is empty" if not value else "text is only whitespace",
                        path=table.path, line=line, field=column)
    return value


def number_value(table: RawTable, line: int, record: dict[str, Any], column: str,
                 scale: Scale | None = None) -> float:
    """A finite number cell, optionally checked to lie on ``scale``."""
    value = raw_value(table, line, record, column)
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise DataError(f"expected a number, got {json.dumps(value)}",
                        path=table.path, line=line, field=column)
    if isinstance(value, str):
        if not value.strip():
            raise DataError("value is empty, expected a number", path=table.path, line=line,
                            field=column)
        try:
            number = float(value.strip())
        except ValueError:
            raise DataError(f"{value!r} is not a number", path=table.path, line=line,
                            field=column) from None
    else:
        number = float(value)
    if not math.isfinite(number):
        raise DataError(f"{value!r} is not a finite number (NaN/inf)", path=table.path, line=line,
                        field=column)
    if scale is not None and not scale.contains(number):
        raise DataError(f"value {number:g} is outside the declared scale {scale}",
                        path=table.path, line=line, field=column)
    return number


def select_split(table: RawTable, split_column: str,
                 split: str | None) -> list[tuple[int, dict[str, Any]]]:
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
        raise DataError(f"no rows with {split_column} == {split!r}; values found: "
                        f"{', '.join(repr(v) for v in sorted(seen))}",
                        path=table.path, field=split_column)
    return chosen


# --------------------------------------------------------------------------- public loader


def load_table(path: PathArg, *, text_column: str = "text", valence_column: str = "valence",
               arousal_column: str = "arousal", scale: Scale | str = "1-5",
               file_format: str | None = None, label_column: str | None = None,
               label_mapping: str | PathArg | None = None, split_column: str | None = None,
               split: str | None = None) -> AffectDataset:
    """Read a CSV (.csv), TSV (.tsv) or JSON Lines (.jsonl/.json) file of labelled texts.

    Continuous mode (default): ``valence_column``/``arousal_column`` hold numbers on ``scale``
    (``"1-5"``, ``"1-9"``, ``"-1:1"``, ...); labels are normalised to [0, 1].
    Categorical mode (``label_column`` given): each row's single emotion label is mapped by
    ``label_mapping`` (``"goemotions"`` (default), ``"ekman"`` or a JSON file path); ``scale``
    is then ignored and the dataset scale is 0-1.
    ``split_column`` + ``split`` keep only rows whose split value equals ``split``.

    Returns an :class:`AffectDataset` with labels ``[N, 2]`` float32 (valence, arousal).
    Raises :class:`DataError` (file, line, field) for any bad input; see the module docstring.
    """
    if split is not None and split_column is None:
        raise ValueError("split= needs split_column= (the column holding the split names)")
    categorical = label_column is not None
    target_scale = UNIT if categorical else as_scale(scale)
    mapping = get_mapping(label_mapping or "goemotions") if categorical else None
    mapping_name = f"mapping {str(label_mapping or 'goemotions')!r}"

    table = read_records(path, file_format)
    needed = [text_column] + ([label_column] if categorical else [valence_column, arousal_column])
    if split_column is not None:
        needed.append(split_column)
    require_columns(table, needed)
    if not table.records:
        raise DataError("no data rows" + (" (the file has only a header)"
                                          if table.header_line is not None else ""), path=path)
    records = select_split(table, split_column, split) if split_column is not None else table.records

    texts: list[str] = []
    labels = np.empty((len(records), 2), dtype=np.float64)
    for i, (line, record) in enumerate(records):
        texts.append(text_value(table, line, record, text_column))
        if categorical:
            label = text_value(table, line, record, label_column)
            labels[i] = lookup(label, mapping, mapping_name=mapping_name, path=table.path,
                               line=line, field=label_column)
        else:
            labels[i, 0] = number_value(table, line, record, valence_column, target_scale)
            labels[i, 1] = number_value(table, line, record, arousal_column, target_scale)
    if not categorical:
        labels = target_scale.normalise(labels)
    return AffectDataset(texts, labels.astype(np.float32), target_scale, str(path))
