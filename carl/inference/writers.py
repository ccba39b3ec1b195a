"""Streaming writers for ``carl embed``/``predict``/``explain``: ``.npy``, JSONL and CSV.

Each writer takes results chunk by chunk and holds none of them: memory stays bounded by one
chunk whatever the input size. Files are written under a temporary name and renamed into place
by ``close()``, so an interrupted run never leaves a truncated output behind (``abort()`` removes
the temporary file). ``-`` writes JSONL to stdout.

``.npy`` without knowing N in advance: the writer reserves a fixed-size header (128 bytes, room
for any shape), appends float32 rows as they come, and on ``close()`` seeks back and rewrites the
header with the final shape, padded to the same length. One pass, no second copy, and it works
for stdin, whose length is unknown until its end.

:func:`check_output` refuses an unknown extension, a folder or an unwritable place before any
work, so that a run never computes everything and then fails to write it.
"""

from __future__ import annotations

import csv
import json
import os
import sys
from pathlib import Path
from typing import IO

import numpy as np

NPY_HEADER_BYTES = 128  # multiple of 64 (numpy's alignment); fits any 2-D shape


def _npy_header(shape: tuple[int, ...], dtype: np.dtype) -> bytes:
    """A version 1.0 ``.npy`` header of exactly NPY_HEADER_BYTES bytes."""
    text = f"{{'descr': {np.lib.format.dtype_to_descr(dtype)!r}, 'fortran_order': False, 'shape': {shape!r}, }}"
    prefix = b"\x93NUMPY\x01\x00"
    room = NPY_HEADER_BYTES - len(prefix) - 2
    body = text.ljust(room - 1).encode("latin1") + b"\n"
    if len(body) != room:
        raise ValueError(f"shape {shape} does not fit a {NPY_HEADER_BYTES}-byte .npy header")
    return prefix + len(body).to_bytes(2, "little") + body


class _AtomicFile:
    """A file written as ``.NAME.tmp`` beside its target and renamed on ``close()``."""

    def __init__(self, path: str | Path, mode: str):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.path.with_name(f".{self.path.name}.tmp")
        kwargs = {} if "b" in mode else {"encoding": "utf-8", "newline": ""}
        self.file: IO = open(self.tmp, mode, **kwargs)  # noqa: SIM115 - closed by commit() or abort()

    def commit(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        try:
            os.replace(self.tmp, self.path)
        except OSError:
            self.tmp.unlink(missing_ok=True)
            raise

    def abort(self) -> None:
        self.file.close()
        self.tmp.unlink(missing_ok=True)


class NpyStreamWriter:
    """Append float32 rows [n, D] to a ``.npy`` file whose row count is fixed at ``close()``."""

    def __init__(self, path: str | Path, dtype: np.dtype | type = np.float32):
        self.dtype = np.dtype(dtype)
        self.rows = 0
        self.width: int | None = None
        self._out = _AtomicFile(path, "wb")
        self._out.file.write(_npy_header((0, 0), self.dtype))

    def write(self, array: np.ndarray) -> None:
        array = np.ascontiguousarray(array, dtype=self.dtype)
        if array.ndim != 2:
            raise ValueError(f"expected a 2-D array, got shape {array.shape}")
        if self.width is None:
            self.width = array.shape[1]
        elif array.shape[1] != self.width:
            raise ValueError(f"row width changed from {self.width} to {array.shape[1]}")
        self._out.file.write(array.tobytes())
        self.rows += array.shape[0]

    def close(self) -> None:
        self._out.file.seek(0)
        self._out.file.write(_npy_header((self.rows, self.width or 0), self.dtype))
        self._out.commit()

    def abort(self) -> None:
        self._out.abort()


class RowWriter:
    """Dict rows as JSONL (default; ``-`` = stdout) or CSV (``.csv``, header from the first row)."""

    def __init__(self, path: str | Path | None):
        self.csv = path not in (None, "-") and Path(path).suffix.lower() == ".csv"
        self._out = None if path in (None, "-") else _AtomicFile(path, "w")
        self._stream: IO = sys.stdout if self._out is None else self._out.file
        self._csv_writer: csv.DictWriter | None = None

    def write(self, rows: list[dict]) -> None:
        if not self.csv:
            self._stream.write("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
            return
        if rows and self._csv_writer is None:
            self._csv_writer = csv.DictWriter(self._stream, fieldnames=list(rows[0]))
            self._csv_writer.writeheader()
        if rows:
            self._csv_writer.writerows(rows)

    def close(self) -> None:
        if self._out is not None:
            self._out.commit()
        else:
            self._stream.flush()

    def abort(self) -> None:
        if self._out is not None:
            self._out.abort()


EMBED_OUTPUTS = (".npy", ".jsonl", ".csv")  # embed and predict
EXPLAIN_OUTPUTS = (".jsonl", ".csv")
HTML_OUTPUTS = (".html", ".htm")


def check_output(path: str | Path | None, suffixes: tuple[str, ...]) -> None:
    """Refuse, before any work, an output that could not be written: an extension not among
    ``suffixes``, an existing folder, or a parent path that is a file or not writable. ``None``
    and ``-`` (stdout) pass; missing parent folders are created when writing."""
    if path in (None, "-"):
        return
    target = Path(path)
    if target.suffix.lower() not in suffixes:
        raise ValueError(
            f"{path}: unknown output format {target.suffix or '(no extension)'!r}; "
            f"name a {', '.join(suffixes)} file" + (" or '-' for stdout" if ".jsonl" in suffixes else "")
        )
    if target.is_dir():
        raise ValueError(f"{path}: is a folder; name a file to write")
    ancestor = target.absolute().parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ValueError(f"{path}: {ancestor} is a file, not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise ValueError(f"{path}: no permission to write in {ancestor}")


def is_npy(path: str | Path | None) -> bool:
    """Whether ``path`` names a ``.npy`` output."""
    return path not in (None, "-") and Path(path).suffix.lower() == ".npy"
