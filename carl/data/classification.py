"""Bundled classification corpora for the evaluation suite: SST-2, SST-5, MR, GoEmotions-Ekman.

Each loader returns a :class:`ClassificationDataset` (texts, integer labels ``[N]``, class
names). Sources, licences and counts are in the README of each folder under ``carl/data/``:

* ``sst/``: SST-2 (``stsa.binary``, 6,920 / 872 / 1,821) and SST-5 (``stsa.fine``,
  8,544 / 1,101 / 2,210), official splits; :func:`load_sst2`, :func:`load_sst5`.
* ``mr/``: MR (Pang and Lee, 2005), 5,331 positive + 5,331 negative, no official split
  (10-fold cross-validation); :func:`load_mr`. The files are Windows-1252.
* ``goemotions/``: GoEmotions mapped to Ekman's six emotions plus neutral, single-label for
  that task; :func:`load_goemotions_ekman` (filtering and counts in ``goemotions/README.md``);
  and its 28 labels, multi-label, as an :class:`~carl.data.readers.AffectDataset` with
  multi-hot targets; :func:`load_goemotions`.

:func:`load_user_classification` reads a user CSV/TSV/JSONL with a text column and a
categorical label column (e.g. an IEMOCAP export). Malformed input raises
:class:`~carl.data.errors.DataError` with the file and line.
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from os import PathLike
from pathlib import Path

import numpy as np

from .emotion_va import get_mapping, lookup
from .errors import DataError
from .labels import encode_labels, label_set, parse_label_cell
from .readers import AffectDataset, raw_value, read_records, require_columns, text_value
from .scales import UNIT

PathArg = str | PathLike[str]
SPLITS: tuple[str, ...] = ("train", "dev", "test")
SST2_CLASSES: tuple[str, ...] = ("negative", "positive")
SST5_CLASSES: tuple[str, ...] = ("very negative", "negative", "neutral", "positive", "very positive")
MR_CLASSES: tuple[str, ...] = ("negative", "positive")
EKMAN_CLASSES: tuple[str, ...] = ("anger", "disgust", "fear", "joy", "sadness", "surprise", "neutral")
GOEMOTIONS_FILTERINGS: tuple[str, ...] = ("ekman", "original")


@dataclass
class ClassificationDataset:
    """Texts with one class each.

    Attributes:
        texts: N strings.
        labels: ``[N]`` int64 class indices into ``classes``.
        classes: class names, index order.
        source: where the rows came from.
    """

    texts: list[str]
    labels: np.ndarray
    classes: tuple[str, ...]
    source: str

    def __post_init__(self) -> None:
        self.texts = list(self.texts)
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        self.classes = tuple(self.classes)
        if len(self.labels) != len(self.texts):
            raise ValueError(f"{len(self.texts)} texts but {len(self.labels)} labels")
        if len(self.labels) and (self.labels.min() < 0 or self.labels.max() >= len(self.classes)):
            raise ValueError(f"labels must lie in [0, {len(self.classes)})")

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, indices: Sequence[int] | np.ndarray) -> ClassificationDataset:
        """Rows at ``indices``, in that order."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        return ClassificationDataset([self.texts[i] for i in idx], self.labels[idx].copy(), self.classes, self.source)

    def sample(self, limit: int, seed: int = 0) -> ClassificationDataset:
        """A fixed random subset of ``limit`` rows (all rows, in order, when ``limit`` is 0 or >= N)."""
        if not limit or limit >= len(self):
            return self
        order = np.random.default_rng(seed).permutation(len(self))[:limit]
        return self.subset(np.sort(order))

    def counts(self) -> dict[str, int]:
        """Examples per class name."""
        c = Counter(self.labels.tolist())
        return {name: int(c.get(i, 0)) for i, name in enumerate(self.classes)}


def data_file(*parts: str) -> Path:
    """Path of a file bundled under ``carl/data/``."""
    try:
        path = Path(str(resources.files("carl.data").joinpath(*parts)))
        if path.exists():
            return path
    except (ModuleNotFoundError, TypeError):  # pragma: no cover - unusual import setups
        pass
    return Path(__file__).resolve().parent.joinpath(*parts)


def _bundled(*parts: str) -> Path:
    path = data_file(*parts)
    if not path.is_file():
        raise DataError(
            "bundled data file missing: reinstall carl (pip install -e .) or restore it from git", path=path
        )
    return path


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(map(repr, SPLITS))}")


# --------------------------------------------------------------------------- SST


def read_labelled_lines(path: PathArg, n_classes: int, *, encoding: str = "utf-8") -> tuple[list[str], list[int]]:
    """``<label> <sentence>`` lines (split on the first space); empty lines are skipped."""
    try:
        text = Path(path).read_bytes().decode(encoding)
    except UnicodeDecodeError as err:
        raise DataError(f"not {encoding} text ({err.reason} at byte {err.start})", path=path) from err
    texts, labels = [], []
    for number, line in enumerate(text.split("\n"), 1):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        head, _, sentence = line.partition(" ")
        if not head.isdigit() or int(head) >= n_classes:
            raise DataError(
                f"expected '<label 0-{n_classes - 1}> <sentence>', got {line[:40]!r}", path=path, line=number
            )
        if not sentence.strip():
            raise DataError("empty sentence", path=path, line=number)
        texts.append(sentence.strip())
        labels.append(int(head))
    return texts, labels


def load_sst2(split: str) -> ClassificationDataset:
    """SST-2 sentences (``stsa.binary``), official split: 0 negative, 1 positive."""
    _check_split(split)
    path = _bundled("sst", f"stsa.binary.{split}")
    return ClassificationDataset(*read_labelled_lines(path, 2), SST2_CLASSES, str(path))


def load_sst5(split: str) -> ClassificationDataset:
    """SST-5 sentences (``stsa.fine``), official split: 0 very negative ... 4 very positive."""
    _check_split(split)
    path = _bundled("sst", f"stsa.fine.{split}")
    return ClassificationDataset(*read_labelled_lines(path, 5), SST5_CLASSES, str(path))


# --------------------------------------------------------------------------- MR


def _read_lines(path: Path, encoding: str) -> list[str]:
    # split on "\n" only: cp1252 byte 0x85 is an ellipsis, and str.splitlines() would also
    # break on U+0085 (NEL) had the file been read as Latin-1
    return [line.strip() for line in path.read_bytes().decode(encoding).split("\n") if line.strip()]


def load_mr() -> ClassificationDataset:
    """MR (Pang and Lee, 2005): 5,331 negative (0) then 5,331 positive (1) snippets."""
    neg, pos = _bundled("mr", "rt-polarity.neg"), _bundled("mr", "rt-polarity.pos")
    negatives, positives = _read_lines(neg, "cp1252"), _read_lines(pos, "cp1252")
    return ClassificationDataset(
        negatives + positives, [0] * len(negatives) + [1] * len(positives), MR_CLASSES, str(neg.parent)
    )


# --------------------------------------------------------------------------- GoEmotions


def goemotions_label_names() -> list[str]:
    """The 28 GoEmotions labels in id order (27 = neutral)."""
    return _bundled("goemotions", "emotions.txt").read_text(encoding="utf-8").split()


def goemotions_to_ekman() -> dict[str, str]:
    """GoEmotions label -> Ekman class (``neutral`` -> ``neutral``), from ``ekman_mapping.json``."""
    mapping = json.loads(_bundled("goemotions", "ekman_mapping.json").read_text(encoding="utf-8"))
    inverse = {label: ekman for ekman, labels in mapping.items() for label in labels}
    inverse["neutral"] = "neutral"
    return inverse


def read_goemotions(split: str) -> list[tuple[str, list[str]]]:
    """(text, [GoEmotions label names]) for every example of an official split."""
    _check_split(split)
    path = _bundled("goemotions", f"{split}.tsv")
    names = goemotions_label_names()
    rows = []
    reader = csv.reader(io.StringIO(path.read_text(encoding="utf-8"), newline=""), delimiter="\t")
    for row in reader:
        if not row:
            continue
        if len(row) != 3:
            raise DataError(f"expected 3 tab-separated fields, found {len(row)}", path=path, line=reader.line_num)
        try:
            labels = [names[int(x)] for x in row[1].split(",")]
        except (ValueError, IndexError):
            raise DataError(f"bad label ids {row[1]!r}", path=path, line=reader.line_num) from None
        rows.append((row[0], labels))
    return rows


def load_goemotions_ekman(split: str, filtering: str = "ekman") -> ClassificationDataset:
    """GoEmotions mapped to anger, disgust, fear, joy, sadness, surprise, neutral.

    ``filtering="ekman"`` keeps an example when all its labels map to one class;
    ``"original"`` keeps only examples with exactly one of the 28 original labels.
    """
    if filtering not in GOEMOTIONS_FILTERINGS:
        raise ValueError(f"filtering must be one of {GOEMOTIONS_FILTERINGS}, got {filtering!r}")
    to_ekman = goemotions_to_ekman()
    texts, labels = [], []
    for text, names in read_goemotions(split):
        if filtering == "original" and len(names) != 1:
            continue
        classes = {to_ekman[n] for n in names}
        if len(classes) != 1:
            continue
        texts.append(text)
        labels.append(EKMAN_CLASSES.index(classes.pop()))
    return ClassificationDataset(texts, labels, EKMAN_CLASSES, str(_bundled("goemotions", f"{split}.tsv")))


def load_goemotions(split: str) -> AffectDataset:
    """GoEmotions with its 28 labels (id order) as multi-hot targets ``[N, 28]``.

    Each example's VA is the mean of its labels' coordinates in the ``goemotions`` mapping.
    """
    rows = read_goemotions(split)
    path = str(_bundled("goemotions", f"{split}.tsv"))
    names = goemotions_label_names()
    mapping = get_mapping("goemotions")
    label_rows = [labels for _, labels in rows]
    va = np.array([np.mean([lookup(label, mapping) for label in labels], axis=0) for labels in label_rows])
    # lines are only for error messages; read_goemotions has checked every label id already
    targets = encode_labels(
        label_rows,
        range(1, len(rows) + 1),
        names,
        multi_label=True,
        path=path,
        column="labels",
        known_from="emotions.txt",
    )
    return AffectDataset([text for text, _ in rows], va.astype(np.float32), UNIT, path, tuple(names), targets)


# --------------------------------------------------------------------------- user data


def load_user_classification(
    path: PathArg,
    *,
    text_column: str = "text",
    label_column: str = "label",
    file_format: str | None = None,
    classes: Sequence[str] | None = None,
) -> ClassificationDataset:
    """A CSV/TSV/JSONL file with a text column and a categorical label column.

    Class names are the sorted distinct labels (or ``classes``, in which case an unknown label
    is an error). Labels are compared after stripping whitespace.
    """
    table = read_records(path, file_format)
    require_columns(table, [text_column, label_column])
    if not table.records:
        raise DataError("no data rows (the file has only a header)", path=path)
    texts, label_rows = [], []
    for line, record in table.records:
        texts.append(text_value(table, line, record, text_column))
        label_rows.append(
            parse_label_cell(
                raw_value(table, line, record, label_column),
                text_table=table.file_format != "jsonl",
                path=table.path,
                line=line,
                field=label_column,
            )
        )
    names = tuple(classes) if classes is not None else label_set(label_rows)
    targets = encode_labels(
        label_rows,
        [line for line, _ in table.records],
        names,
        multi_label=False,
        path=table.path,
        column=label_column,
        known_from="the given classes",
    )
    return ClassificationDataset(texts, targets, names, str(path))
