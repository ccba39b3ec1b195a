"""Errors raised by the data layer.

Every problem with an input file is reported as a :class:`DataError` naming the file, the
1-based line where the offending record starts (the header of a CSV/TSV file is line 1) and
the field, e.g. ``data.csv, line 17, field 'valence': 'abc' is not a number``.
"""

from __future__ import annotations

from os import PathLike


class DataError(ValueError):
    """Bad input data, with its location.

    Attributes:
        path: the file as given by the caller (``None`` when not tied to a file).
        line: 1-based line number where the record starts (``None`` for whole-file problems).
        field: the column / key concerned (``None`` when not tied to one field).
        reason: the message without the location prefix.
    """

    def __init__(
        self, reason: str, *, path: str | PathLike[str] | None = None, line: int | None = None, field: str | None = None
    ):
        self.path = None if path is None else str(path)
        self.line = line
        self.field = field
        self.reason = reason
        super().__init__(self._format())

    def _format(self) -> str:
        where = []
        if self.path is not None:
            where.append(self.path)
        if self.line is not None:
            where.append(f"line {self.line}")
        if self.field is not None:
            where.append(f"field {self.field!r}")
        return f"{', '.join(where)}: {self.reason}" if where else self.reason

    def __str__(self) -> str:
        return self._format()


class UnknownLabelError(DataError, KeyError):
    """A categorical emotion label absent from the chosen mapping.

    It is both a :class:`DataError` (so file readers report it with a location) and a
    :class:`KeyError` (so ``mapping[label]``-style callers can catch it as a missing key).
    """

    def __str__(self) -> str:  # KeyError would otherwise repr() the message
        return self._format()
