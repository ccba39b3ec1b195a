"""Read texts for ``embed``/``predict``/``explain`` as a stream.

Streaming writers for results are in :mod:`carl.inference.writers`.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

from carl.data.errors import DataError


class TextSource:
    """Texts streamed one at a time from plain text, CSV/TSV (``column``) or JSONL (``column``).

    ``path`` None or ``-`` reads stdin (plain text, one per line). Blank lines of plain text and
    JSONL are skipped. Nothing is read before iteration, and only one line is held at a time, so a
    file of any size streams in constant memory. ``bytes_read()``/``total_bytes`` drive a progress
    bar (``total_bytes`` is None for stdin).

    >>> sum(1 for _ in TextSource("texts.txt"))   # doctest: +SKIP
    """

    def __init__(self, path: str | None, column: str = "text"):
        self.path = None if not path or path == "-" else Path(path)
        self.column = column
        if self.path is not None and not self.path.is_file():
            raise DataError("file not found", path=self.path)
        self.total_bytes: int | None = self.path.stat().st_size if self.path is not None else None
        self._raw = None

    def bytes_read(self) -> int:
        """Bytes consumed so far (read-ahead granularity); 0 for stdin."""
        if self._raw is None:
            return 0
        if self._raw.closed:  # iteration finished
            return self.total_bytes or 0
        try:
            return self._raw.tell()
        except (OSError, ValueError):
            return 0

    def __iter__(self) -> Iterator[str]:
        if self.path is None:
            yield from (line.rstrip("\r\n") for line in sys.stdin if line.strip())
            return
        suffix = self.path.suffix.lower()
        with open(self.path, "rb") as raw:
            self._raw = raw
            f = io.TextIOWrapper(raw, encoding="utf-8-sig", newline="")
            if suffix in (".csv", ".tsv"):
                yield from self._csv(f, "\t" if suffix == ".tsv" else ",")
            elif suffix in (".jsonl", ".json"):
                yield from self._jsonl(f)
            else:
                yield from (line.rstrip("\r\n") for line in f if line.strip())

    def _csv(self, f, delimiter: str) -> Iterator[str]:
        reader = csv.DictReader(f, delimiter=delimiter)
        if self.column not in (reader.fieldnames or []):
            raise DataError(f"no column {self.column!r} (found {reader.fieldnames})", path=self.path,
                            line=1, field=self.column)
        for row in reader:
            value = row[self.column]
            if value is None:
                raise DataError("missing value", path=self.path, line=reader.line_num, field=self.column)
            yield value

    def _jsonl(self, f) -> Iterator[str]:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)[self.column]
            except (json.JSONDecodeError, KeyError, TypeError) as err:
                raise DataError(f"cannot read {self.column!r}: {err}", path=self.path, line=number,
                                field=self.column) from err
            if not isinstance(value, str):
                raise DataError(f"expected a string, got {type(value).__name__}", path=self.path,
                                line=number, field=self.column)
            yield value


def read_texts(path: str | None, column: str = "text") -> list[str]:
    """All texts of :class:`TextSource` as a list (for small inputs; stream large ones)."""
    return list(TextSource(path, column))


def chunked(items: Iterable[str], size: int) -> Iterator[list[str]]:
    """Consecutive lists of at most ``size`` items."""
    if size < 1:
        raise ValueError(f"chunk size must be >= 1, got {size}")
    chunk: list[str] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
