"""Read texts for ``embed``/``predict``/``explain`` as a stream.

Streaming writers for results are in :mod:`carl.inference.writers`.
"""

from __future__ import annotations

import codecs
import csv
import json
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

from carl.data.errors import DataError

DECODE_ERRORS = ("strict", "replace")


class TextSource:
    """Texts streamed one at a time from plain text, CSV/TSV (``column``) or JSONL (``column``).

    ``path`` None or ``-`` reads stdin (plain text, one per line). Every line of plain text is one
    text, blank and whitespace-only lines included (the model embeds them as it embeds ``""``), so
    output row i is input line i; a blank line of JSONL holds no record and is skipped. Input is
    UTF-8 (a leading BOM is dropped): ``errors="strict"`` stops at the first invalid byte naming
    the line, ``"replace"`` reads it as U+FFFD. Nothing is read before iteration, and only one
    line is held at a time, so a file of any size streams in constant memory.
    ``bytes_read()``/``total_bytes`` drive a progress bar (``total_bytes`` is None for stdin).

    >>> sum(1 for _ in TextSource("texts.txt"))   # doctest: +SKIP
    """

    def __init__(self, path: str | None, column: str = "text", errors: str = "strict"):
        self.path = None if not path or path == "-" else Path(path)
        self.column = column
        if errors not in DECODE_ERRORS:
            raise ValueError(f"unknown decoding policy {errors!r}; choose {' or '.join(DECODE_ERRORS)}")
        self.errors = errors
        if self.path is not None and not self.path.is_file():
            raise DataError("file not found", path=self.path)
        self.total_bytes: int | None = self.path.stat().st_size if self.path is not None else None
        self._raw = None

    @property
    def name(self) -> str:
        """The input as error messages name it."""
        return "<stdin>" if self.path is None else str(self.path)

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
            stdin = getattr(sys.stdin, "buffer", None)  # None: a text stream put in place of stdin
            yield from _plain(self._decoded(stdin) if stdin is not None else sys.stdin)
            return
        suffix = self.path.suffix.lower()
        with open(self.path, "rb") as raw:
            self._raw = raw
            lines = self._decoded(raw)
            if suffix in (".csv", ".tsv"):
                yield from self._csv(lines, "\t" if suffix == ".tsv" else ",")
            elif suffix in (".jsonl", ".json"):
                yield from self._jsonl(lines)
            else:
                yield from _plain(lines)

    def _decoded(self, raw: Iterable[bytes]) -> Iterator[str]:
        """UTF-8 lines of a binary stream (line endings kept). A line is decoded on its own, which
        is exact for UTF-8: no multi-byte character contains the newline byte 0x0a."""
        for number, line in enumerate(raw, 1):
            if number == 1 and line.startswith(codecs.BOM_UTF8):
                line = line[len(codecs.BOM_UTF8) :]
            try:
                yield line.decode("utf-8", self.errors)
            except UnicodeDecodeError as err:
                raise DataError(
                    f"invalid UTF-8 (byte 0x{line[err.start]:02x} at byte {err.start + 1} of the "
                    "line); convert the input to UTF-8 or pass --errors replace",
                    path=self.name,
                    line=number,
                ) from None

    def _csv(self, lines: Iterable[str], delimiter: str) -> Iterator[str]:
        reader = csv.DictReader(lines, delimiter=delimiter)
        if self.column not in (reader.fieldnames or []):
            raise DataError(
                f"no column {self.column!r} (found {reader.fieldnames})", path=self.path, line=1, field=self.column
            )
        for row in reader:
            value = row[self.column]
            if value is None:
                raise DataError("missing value", path=self.path, line=reader.line_num, field=self.column)
            yield value

    def _jsonl(self, lines: Iterable[str]) -> Iterator[str]:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)[self.column]
            except (json.JSONDecodeError, KeyError, TypeError) as err:
                raise DataError(
                    f"cannot read {self.column!r}: {err}", path=self.path, line=number, field=self.column
                ) from err
            if not isinstance(value, str):
                raise DataError(
                    f"expected a string, got {type(value).__name__}", path=self.path, line=number, field=self.column
                )
            yield value


def _plain(lines: Iterable[str]) -> Iterator[str]:
    """One text per line, without its line ending; blank lines are texts too."""
    return (line.rstrip("\r\n") for line in lines)


def read_texts(path: str | None, column: str = "text", errors: str = "strict") -> list[str]:
    """All texts of :class:`TextSource` as a list (for small inputs; stream large ones)."""
    return list(TextSource(path, column, errors))


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
