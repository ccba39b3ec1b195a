"""Read texts for ``embed``/``predict`` and write their results."""

from __future__ import annotations

import csv
import json
import os
import sys
from pathlib import Path

import numpy as np

from carl.data.errors import DataError


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and ``os.replace``."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_texts(path: str | None, column: str = "text") -> list[str]:
    """Texts from plain text (one per line), CSV/TSV or JSONL (``column``); ``-``/None is stdin."""
    if not path or path == "-":
        return [line.rstrip("\n") for line in sys.stdin if line.strip()]
    file = Path(path)
    if not file.is_file():
        raise DataError("file not found", path=file)
    suffix = file.suffix.lower()
    with open(file, encoding="utf-8", newline="") as f:
        if suffix in (".csv", ".tsv"):
            reader = csv.DictReader(f, delimiter="\t" if suffix == ".tsv" else ",")
            if column not in (reader.fieldnames or []):
                raise DataError(f"no column {column!r} (found {reader.fieldnames})", path=file, line=1, field=column)
            return [row[column] for row in reader]
        if suffix in (".jsonl", ".json"):
            texts = []
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    texts.append(json.loads(line)[column])
                except (json.JSONDecodeError, KeyError, TypeError) as err:
                    raise DataError(f"cannot read {column!r}: {err}", path=file, line=number, field=column) from err
            return texts
        return [line.rstrip("\n") for line in f if line.strip()]


def write_rows(path: str | None, rows: list[dict]) -> None:
    """Write dict rows as JSONL (default, also stdout) or CSV (``.csv``)."""
    if path and Path(path).suffix.lower() == ".csv":
        with open(path, "w", encoding="utf-8", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        return
    out = open(path, "w", encoding="utf-8") if path and path != "-" else sys.stdout
    try:
        for row in rows:
            out.write(json.dumps(row) + "\n")
    finally:
        if out is not sys.stdout:
            out.close()


def write_embeddings(path: str | None, texts: list[str], embeddings: np.ndarray) -> None:
    """``.npy`` array [N, H], or JSONL rows ``{"text", "embedding"}``."""
    if path and Path(path).suffix.lower() == ".npy":
        np.save(path, embeddings)
        return
    write_rows(path, [{"text": t, "embedding": [round(float(x), 6) for x in e]}
                      for t, e in zip(texts, embeddings)])
