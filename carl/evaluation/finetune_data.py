"""The fine-tuning protocol's data: its tasks, and the train/dev/test files of each cell.

| task | data | labels | written under ``OUT/data/<task>/`` |
|---|---|---|---|
| ``ekman`` | GoEmotions -> Ekman 6 + neutral | single-label, 7 classes | train, dev (capped), test CSVs |
| ``goemotions28`` | GoEmotions, 28 labels | multi-label (JSON list cells) | train, dev (capped), test CSVs |
| ``sst5`` | SST-5 (stsa.fine) | single-label, 5 classes | train, dev, test CSVs, ``va_mapping.json`` |
| ``emobank`` | EmoBank, official split | valence, arousal | nothing: the trainer reads the bundled split |

Files are ``text,label`` CSVs that carl's trainer reads (``data.path``, ``data.dev_path``). Dev is
capped at :data:`DEV_CAP` texts, a fixed stratified sample (seed :data:`DEV_CAP_SEED`; multi-label:
stratified on each row's rarest label, :mod:`carl.data.splits`); test is always the full split.
The low-resource regimes take ``k`` training examples per class with the cell's seed
(:func:`sample_per_class`): seed s is subset s. SST-5 classes carry no VA, so the MCL term of
``mcl`` and ``carl`` reads them from ``va_mapping.json``: valence 0, 0.25, ..., 1 (very negative
.. very positive), arousal 0.5 for every class (the contrast then acts on valence alone).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from carl.atomic import write_text_atomic
from carl.data.classification import (
    ClassificationDataset,
    goemotions_label_names,
    load_goemotions_ekman,
    load_sst5,
    read_goemotions,
)
from carl.data.emobank import load_emobank
from carl.data.emotion_va import get_mapping, lookup
from carl.data.errors import DataError
from carl.data.labels import encode_labels
from carl.data.readers import AffectDataset, affect_csv_text
from carl.data.scales import UNIT
from carl.data.splits import hold_out_dev

DEV_CAP = 2000
DEV_CAP_SEED = 0
SST5_VA = {
    "very negative": (0.0, 0.5),
    "negative": (0.25, 0.5),
    "neutral": (0.5, 0.5),
    "positive": (0.75, 0.5),
    "very positive": (1.0, 0.5),
}


@dataclass(frozen=True)
class FinetuneTask:
    """One task of the protocol. ``kind``: ``single`` (one class per text), ``multi`` (several),
    ``va`` (valence-arousal regression on the bundled EmoBank)."""

    name: str
    title: str
    kind: str
    max_length: int
    va_mapping: dict[str, tuple[float, float]] | None = None  # class -> VA for MCL; None: carl's goemotions

    @property
    def low_resource(self) -> bool:
        """Whether the k-examples-per-class regimes apply (single-label tasks only)."""
        return self.kind == "single"


TASKS: dict[str, FinetuneTask] = {
    t.name: t
    for t in (
        FinetuneTask("ekman", "GoEmotions Ekman + neutral (single-label, 7 classes)", "single", 64),
        FinetuneTask("goemotions28", "GoEmotions, 28 labels (multi-label)", "multi", 64),
        FinetuneTask("sst5", "SST-5 fine-grained sentiment (5 classes)", "single", 64, SST5_VA),
        FinetuneTask("emobank", "EmoBank valence and arousal (regression)", "va", 128),
    )
}


@dataclass
class LabelledSplit:
    """Texts with their label names (one per text unless ``multi_label``), in file order."""

    texts: list[str]
    labels: list[list[str]]
    classes: tuple[str, ...]
    multi_label: bool
    source: str

    def subset(self, indices: Sequence[int] | np.ndarray) -> LabelledSplit:
        rows = [int(i) for i in indices]
        return LabelledSplit(
            [self.texts[i] for i in rows], [self.labels[i] for i in rows], self.classes, self.multi_label, self.source
        )

    def dataset(self) -> AffectDataset:
        """As an :class:`AffectDataset` with class targets (VA unknown: NaN)."""
        targets = encode_labels(
            self.labels,
            range(1, len(self.texts) + 1),
            self.classes,
            multi_label=self.multi_label,
            path=self.source,
            column="label",
            known_from="the task's classes",
        )
        va = np.full((len(self.texts), 2), np.nan, dtype=np.float32)
        return AffectDataset(self.texts, va, UNIT, self.source, self.classes, targets)

    def csv_text(self) -> str:
        """``text,label`` CSV; a multi-label cell is a JSON list of names."""
        buffer = io.StringIO(newline="")
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["text", "label"])
        for text, names in zip(self.texts, self.labels):
            writer.writerow([text, json.dumps(names) if self.multi_label else names[0]])
        return buffer.getvalue()


def _from_classes(data: ClassificationDataset) -> LabelledSplit:
    return LabelledSplit(data.texts, [[data.classes[y]] for y in data.labels], data.classes, False, data.source)


def _goemotions28(split: str) -> LabelledSplit:
    rows = read_goemotions(split)
    names = tuple(goemotions_label_names())
    return LabelledSplit([t for t, _ in rows], [labels for _, labels in rows], names, True, f"GoEmotions {split}")


# task -> split name -> its rows (tests swap in synthetic data here)
SPLIT_LOADERS: dict[str, Callable[[str], LabelledSplit]] = {
    "ekman": lambda split: _from_classes(load_goemotions_ekman(split)),
    "goemotions28": _goemotions28,
    "sst5": lambda split: _from_classes(load_sst5(split)),
}


def sample_per_class(data: LabelledSplit, k: int, seed: int) -> np.ndarray:
    """Sorted row indices of ``k`` examples of every class, drawn with ``seed`` (single-label).

    Raises :class:`DataError` naming the class when it has fewer than ``k`` examples.
    """
    if data.multi_label:
        raise ValueError("k examples per class are defined for single-label data only")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    first = np.array([names[0] for names in data.labels], dtype=object)
    rng = np.random.default_rng(seed)
    chosen = []
    for name in data.classes:
        rows = np.flatnonzero(first == name)
        if len(rows) < k:
            raise DataError(
                f"class {name!r} has {len(rows)} training examples, fewer than the {k} per class asked for",
                path=data.source,
            )
        chosen.append(rng.choice(rows, size=k, replace=False))
    return np.sort(np.concatenate(chosen))


def cap_dev(data: LabelledSplit, cap: int = DEV_CAP, seed: int = DEV_CAP_SEED) -> LabelledSplit:
    """At most ``cap`` rows, in file order: a fixed stratified sample (all rows when no more than ``cap``)."""
    if len(data.texts) <= cap:
        return data
    _, kept, _ = hold_out_dev(data.dataset(), cap / len(data.texts), seed)
    assert kept.targets is not None
    if data.multi_label:
        labels = [[data.classes[c] for c in np.flatnonzero(row)] for row in kept.targets]
    else:
        labels = [[data.classes[c]] for c in kept.targets]
    return LabelledSplit(kept.texts, labels, data.classes, data.multi_label, data.source)


@dataclass(frozen=True)
class TaskFiles:
    """Where a cell's data lies; ``train`` None means the trainer's bundled EmoBank."""

    train: Path | None
    dev: Path | None
    test: Path | None
    label_mapping: str  # data.label_mapping for the trainer: a name or a JSON file


def _write_once(path: Path, text: Callable[[], str]) -> Path:
    """Write ``text()`` atomically unless ``path`` exists (a file there is complete: atomic writes)."""
    if not path.is_file():
        write_text_atomic(path, text())
    return path


def train_file_name(regime: str, seed: int) -> str:
    """``train-full.csv`` (shared by every seed) or ``train-k8-s1.csv``."""
    return "train-full.csv" if regime == "full" else f"train-{regime}-s{seed}.csv"


def task_files(task: FinetuneTask, regime: str, seed: int, out: Path) -> TaskFiles:
    """Where the files of ``task`` for a regime and seed lie under ``out/data/<task>/`` (nothing written)."""
    if task.kind == "va":
        return TaskFiles(None, None, None, "goemotions")
    folder = Path(out) / "data" / task.name
    mapping = str(folder / "va_mapping.json") if task.va_mapping is not None else "goemotions"
    return TaskFiles(folder / train_file_name(regime, seed), folder / "dev.csv", folder / "test.csv", mapping)


def goemotions_va(split: str) -> tuple[list[str], np.ndarray]:
    """GoEmotions ``split`` with VA [N, 2] on 0-1: the mean Warriner coordinates of each row's labels."""
    data, mapping = SPLIT_LOADERS["goemotions28"](split), get_mapping("goemotions")
    va = np.array([np.mean([lookup(name, mapping) for name in names], axis=0) for names in data.labels])
    return list(data.texts), va.reshape(-1, 2)


@dataclass(frozen=True)
class StageCorpus:
    """The corpus of a first carl stage (carl-stage, carl-stage-goemotions)."""

    title: str  # as the report names it
    tasks: tuple[str, ...]  # the tasks whose whole training split (labels mapped to VA) it holds


STAGE_CORPUS_SPECS: dict[str, StageCorpus] = {
    "emobank": StageCorpus("bundled EmoBank", ("emobank",)),
    "emobank-goemotions": StageCorpus("EmoBank plus GoEmotions mapped to VA", ("emobank", "ekman", "goemotions28")),
}


def stage_files(out: Path) -> tuple[Path, Path]:
    """Where the (train, dev) CSVs of the first stage on EmoBank plus GoEmotions lie (nothing written)."""
    folder = Path(out) / "data" / "stage-emobank-goemotions"
    return folder / "train.csv", folder / "dev.csv"


def prepare_stage_files(out: Path) -> tuple[Path, Path]:
    """Write (once) the :func:`stage_files` of ``carl-stage-goemotions``: EmoBank train and GoEmotions
    train (labels mapped to VA, :func:`goemotions_va`) on the 0-1 scale, and EmoBank dev for selection."""
    train, dev = stage_files(out)

    def train_text() -> str:
        emobank = load_emobank("train")
        texts, va = goemotions_va("train")
        return affect_csv_text(list(emobank.texts) + texts, np.concatenate([emobank.labels, va]))

    def dev_text() -> str:
        emobank = load_emobank("dev")
        return affect_csv_text(emobank.texts, emobank.labels)

    return _write_once(train, train_text), _write_once(dev, dev_text)


def prepare_task_files(task: FinetuneTask, k: int | None, regime: str, seed: int, out: Path) -> TaskFiles:
    """Write (once) the :func:`task_files` of ``task`` for a regime (``k`` examples per class, or None
    for the full train split) and seed."""
    files = task_files(task, regime, seed, out)
    if files.train is None or files.dev is None or files.test is None:
        return files
    load = SPLIT_LOADERS[task.name]

    def train_text() -> str:
        train = load("train")
        return (train if k is None else train.subset(sample_per_class(train, k, seed))).csv_text()

    _write_once(files.train, train_text)
    _write_once(files.dev, lambda: cap_dev(load("dev")).csv_text())
    _write_once(files.test, lambda: load("test").csv_text())
    if task.va_mapping is not None:
        values = {name: list(va) for name, va in task.va_mapping.items()}
        _write_once(Path(files.label_mapping), lambda: json.dumps(values, indent=1) + "\n")
    return files
