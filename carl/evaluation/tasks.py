"""The evaluation tasks (SentEval-style, on frozen features) and running them all at once.

| task | data | protocol | probe | metrics |
|---|---|---|---|---|
| ``emobank`` | EmoBank, official split | alpha on dev | ridge per dimension | Pearson r, Spearman rho, MSE (V, A) |
| ``sst2`` | SST-2 (stsa.binary), official split | C on dev | logistic regression | accuracy, macro-F1 |
| ``mr`` | MR, 10,662 snippets | 10-fold stratified CV (``cv_folds``), seed 1111, C on an inner fold | logistic regression | accuracy, macro-F1 |
| ``sst5`` | SST-5 (stsa.fine), official split | C on dev | logistic regression | accuracy, macro-F1 |
| ``goemotions`` | GoEmotions -> Ekman 6 + neutral, single-label | C on dev (macro-F1) | logistic regression | accuracy, macro-F1, per-class F1 |
| ``sickr`` | SICK test, 4,927 pairs | none (no training) | cosine of the two embeddings | Spearman rho x 100, Pearson r x 100 |
| user corpora | IEMOCAP, Facebook posts, EmoTales, any VA file | 10-fold CV (``cv_folds``) | ridge / logistic | as above |

Geometry (alignment and uniformity, :mod:`carl.evaluation.geometry`) is measured on EmoBank
test (VA pairs), SST-2 test and GoEmotions test (same-label pairs).

:func:`load_task_data` reads the data once; :func:`evaluate_features` runs every task on a
feature function (embeddings, or a lexicon score); :func:`evaluate_encoder` embeds each
distinct text once, runs everything and checks that the encoder stayed frozen.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from carl.data.classification import (
    ClassificationDataset,
    load_goemotions_ekman,
    load_mr,
    load_sst2,
    load_sst5,
    load_user_classification,
)
from carl.data.emobank import load_emobank
from carl.data.errors import DataError
from carl.data.readers import AffectDataset, load_table, read_records
from carl.data.similarity import SentencePairs, load_sick
from carl.data.user_corpora import USER_CORPORA, _corpus_key, load_user_corpus
from carl.evaluation.features import Features, FeatureTable, embed_table
from carl.evaluation.geometry import VA_PAIR_DISTANCE, geometry_metrics, sample_rows
from carl.evaluation.metrics import pearson, spearman
from carl.evaluation.probe import CV_SEED, cv_logistic_probe, frozen_check, logistic_probe
from carl.evaluation.va_probe import probe_va_cv, probe_va_splits

BUNDLED_TASKS: tuple[str, ...] = ("emobank", "sst2", "mr", "sst5", "goemotions", "sickr")
TASK_TITLES = {
    "emobank": "EmoBank VA regression (test)",
    "sst2": "SST-2 polarity (test)",
    "mr": "MR polarity (cross-validation)",
    "sst5": "SST-5 fine-grained sentiment (test)",
    "goemotions": "GoEmotions Ekman + neutral (test)",
    "sickr": "SICK-R semantic relatedness (test, cosine, no training)",
}


@dataclass
class TaskSettings:
    """Which tasks run, on how much data, with which protocol (all JSON-serialisable).

    ``limit`` caps every split of every bundled task (0 = no cap; for quick runs);
    the GoEmotions training and dev splits have their own caps because the full training
    split (39,555 single-label examples) costs more to embed than all other tasks together.
    Subsets are fixed random samples drawn with ``seed``.
    """

    tasks: tuple[str, ...] = BUNDLED_TASKS
    limit: int = 0
    mr_limit: int = 0
    cv_folds: int = 10  # MR and corpora without an official split
    inner_folds: int = 1
    goemotions_filtering: str = "ekman"
    goemotions_train_limit: int = 3000
    goemotions_dev_limit: int = 1000
    geometry_limit: int = 2000
    va_pair_distance: float = VA_PAIR_DISTANCE
    seed: int = CV_SEED
    user_corpora: dict[str, str] = field(default_factory=dict)  # iemocap|facebookposts|emotales -> path
    user_label_column: str = "label"
    va_files: list[str] = field(default_factory=list)
    va_file_scale: str = "1-5"

    def __post_init__(self) -> None:
        self.tasks = tuple(self.tasks)
        unknown = [t for t in self.tasks if t not in BUNDLED_TASKS]
        if unknown:
            raise ValueError(f"unknown task(s) {unknown}; choose from {list(BUNDLED_TASKS)}")
        self.user_corpora = {_corpus_key(k): str(v) for k, v in dict(self.user_corpora).items()}

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class TaskData:
    """One task's data: ``splits`` holds train/dev/test, or ``all`` for cross-validation."""

    name: str
    kind: str  # "va" | "classification" | "similarity"
    splits: dict[str, AffectDataset | ClassificationDataset | SentencePairs]
    title: str
    select_by: str = "accuracy"
    folds: int = 10

    @property
    def protocol(self) -> str:
        if self.kind == "similarity":
            return "cosine, no training"
        return f"{self.folds}-fold CV" if "all" in self.splits else "official split"

    def texts(self) -> list[list[str]]:
        return [d.texts for d in self.splits.values()]

    def sizes(self) -> dict[str, int]:
        return {name: len(d) for name, d in self.splits.items()}


def _cap(data, limit: int, seed: int):
    if not limit or limit >= len(data):
        return data
    return data.subset(sample_rows(len(data), limit, seed))


def _min_cap(*limits: int) -> int:
    nonzero = [x for x in limits if x]
    return min(nonzero) if nonzero else 0


def load_task_data(settings: TaskSettings) -> dict[str, TaskData]:
    """Read every task's data (bundled tasks, then user corpora and VA files)."""
    s = settings
    out: dict[str, TaskData] = {}
    for name in s.tasks:
        if name == "emobank":
            splits = {sp: _cap(load_emobank(sp), s.limit, s.seed) for sp in ("train", "dev", "test")}
            out[name] = TaskData(name, "va", splits, TASK_TITLES[name])
        elif name in ("sst2", "sst5"):
            loader = load_sst2 if name == "sst2" else load_sst5
            splits = {sp: _cap(loader(sp), s.limit, s.seed) for sp in ("train", "dev", "test")}
            out[name] = TaskData(name, "classification", splits, TASK_TITLES[name])
        elif name == "mr":
            out[name] = TaskData(
                name,
                "classification",
                {"all": _cap(load_mr(), s.mr_limit, s.seed)},
                TASK_TITLES[name],
                folds=s.cv_folds,
            )
        elif name == "goemotions":
            caps = {
                "train": _min_cap(s.limit, s.goemotions_train_limit),
                "dev": _min_cap(s.limit, s.goemotions_dev_limit),
                "test": s.limit,
            }
            splits = {
                sp: _cap(load_goemotions_ekman(sp, s.goemotions_filtering), caps[sp], s.seed)
                for sp in ("train", "dev", "test")
            }
            out[name] = TaskData(name, "classification", splits, TASK_TITLES[name], select_by="macro_f1")
        elif name == "sickr":
            out[name] = TaskData(name, "similarity", {"test": _cap(load_sick(), s.limit, s.seed)}, TASK_TITLES[name])
    for corpus, path in s.user_corpora.items():
        title = USER_CORPORA[corpus].title
        out[corpus] = TaskData(corpus, "va", {"all": load_user_corpus(corpus, path)}, f"{title} VA", folds=s.cv_folds)
        if _has_column(path, s.user_label_column):
            text_column = {"facebookposts": "Anonymized Message"}.get(corpus, "text")
            out[f"{corpus}-categories"] = TaskData(
                f"{corpus}-categories",
                "classification",
                {"all": load_user_classification(path, text_column=text_column, label_column=s.user_label_column)},
                f"{title} categories",
                select_by="macro_f1",
                folds=s.cv_folds,
            )
    for path in s.va_files:
        name = f"file:{Path(path).name}"
        out[name] = TaskData(
            name, "va", {"all": load_table(path, scale=s.va_file_scale)}, f"{Path(path).name} VA", folds=s.cv_folds
        )
    return out


def _has_column(path: str, column: str) -> bool:
    try:
        table = read_records(path)
    except DataError:
        return False
    return column in table.columns


def missing_user_corpora(settings: TaskSettings) -> dict[str, str]:
    """Corpus title -> how to obtain it, for every user corpus not given a path."""
    return {
        c.title: f"{c.how_to_obtain} Then pass --corpus {c.name}=PATH (expected: {c.expected})."
        for c in USER_CORPORA.values()
        if c.name not in settings.user_corpora
    }


# --------------------------------------------------------------------------- running


def run_task(task: TaskData, features: Features, settings: TaskSettings, *, keep_predictions: bool = False) -> dict:
    """Probe one task on ``features``; returns metrics, chosen regularisation, sizes, protocol."""
    started = time.perf_counter()
    out: dict = {"kind": task.kind, "title": task.title, "protocol": task.protocol, "n": task.sizes()}
    if task.kind == "similarity":
        out["metrics"] = relatedness_metrics(features, task.splits["test"])
    elif task.kind == "va":
        if "all" in task.splits:
            result = probe_va_cv(
                features, task.splits["all"], k=task.folds, seed=settings.seed, inner_folds=settings.inner_folds
            )
        else:
            result = probe_va_splits(features, task.splits["train"], task.splits["dev"], task.splits["test"])
            if keep_predictions:
                out["test_predictions"] = np.round(result.predictions, 5).tolist()
                out["test_labels"] = np.round(task.splits["test"].labels, 5).tolist()
        out.update(metrics=result.metrics, alphas=result.alphas)
    else:
        data = task.splits["all"] if "all" in task.splits else task.splits["train"]
        n_classes = len(data.classes)
        if "all" in task.splits:
            result = cv_logistic_probe(
                features(data.texts),
                data.labels,
                n_classes=n_classes,
                k=task.folds,
                seed=settings.seed,
                inner_folds=settings.inner_folds,
                select_by=task.select_by,
            )
        else:
            tr, dv, te = (task.splits[s] for s in ("train", "dev", "test"))
            result = logistic_probe(
                features(tr.texts),
                tr.labels,
                features(dv.texts),
                dv.labels,
                features(te.texts),
                te.labels,
                n_classes=n_classes,
                seed=settings.seed,
                select_by=task.select_by,
            )
        out.update(
            metrics=result.metrics,
            C=result.C,
            dev_scores=result.dev_scores,
            classes=list(data.classes),
            select_by=task.select_by,
        )
    out["seconds"] = time.perf_counter() - started
    return out


def relatedness_metrics(features: Features, pairs: SentencePairs) -> dict[str, float]:
    """Spearman rho and Pearson r (both x 100) of the pairs' embedding cosines [N] against their scores [N]."""
    first, second = features(pairs.first), features(pairs.second)  # [N, D] each
    norms = np.linalg.norm(first, axis=1) * np.linalg.norm(second, axis=1)
    cosine = (first * second).sum(1) / np.clip(norms, 1e-12, None)
    return {"spearman": 100 * spearman(cosine, pairs.scores), "pearson": 100 * pearson(cosine, pairs.scores)}


def geometry_sets(data: dict[str, TaskData], settings: TaskSettings) -> dict[str, dict]:
    """The test sets for alignment/uniformity: texts and VA or class labels (sampled rows)."""
    sets = {}
    for name, key in (("emobank", "va"), ("sst2", "classes"), ("goemotions", "classes")):
        if name in data and "test" in data[name].splits:
            test = data[name].splits["test"]
            rows = sample_rows(len(test), settings.geometry_limit, settings.seed)
            sets[f"{name}_test"] = {"texts": [test.texts[i] for i in rows], key: test.labels[rows]}
    return sets


def evaluate_features(
    features: Features,
    data: dict[str, TaskData],
    settings: TaskSettings,
    *,
    geometry: bool = True,
    keep_predictions: bool = True,
) -> dict:
    """Run every task (and geometry) on ``features``; returns ``{"tasks": ..., "geometry": ...}``."""
    results: dict = {"tasks": {}, "geometry": {}}
    # one BLAS thread: the probes are small, and several BLAS threads on cores shared with a
    # training run spin-wait (a logistic-regression fit went from 0.05 s to 3 s that way)
    with threadpool_limits(limits=1, user_api="blas"):
        for name, task in data.items():
            results["tasks"][name] = run_task(task, features, settings, keep_predictions=keep_predictions)
        if geometry:
            for name, g in geometry_sets(data, settings).items():
                results["geometry"][name] = geometry_metrics(
                    features(g["texts"]),
                    va=g.get("va"),
                    classes=g.get("classes"),
                    max_distance=settings.va_pair_distance,
                )
    return results


def project_2d(emb: np.ndarray) -> np.ndarray:
    """PCA of L2-normalised embeddings to 2-D [N, 2] (deterministic, sign-fixed)."""
    from sklearn.decomposition import PCA

    x = emb / np.linalg.norm(emb, axis=1, keepdims=True).clip(min=1e-12)
    return PCA(n_components=2, svd_solver="full").fit_transform(x)


def evaluate_encoder(
    encoder,
    settings: TaskSettings | None = None,
    *,
    data: dict[str, TaskData] | None = None,
    batch_size: int = 64,
    show_progress: bool = False,
) -> dict:
    """Every task on the frozen ``encoder`` (an :class:`~carl.inference.AffectEncoder`).

    Each distinct text is embedded once. Adds ``emobank_test_2d`` (PCA of the EmoBank test
    embeddings) and timings. Raises :class:`~carl.evaluation.probe.EncoderNotFrozen` if the
    encoder's weights differ after probing.
    """
    settings = settings or TaskSettings()
    data = data if data is not None else load_task_data(settings)
    groups = [texts for task in data.values() for texts in task.texts()]
    with frozen_check(encoder.model) as fingerprint:
        started = time.perf_counter()
        table = embed_table(encoder, groups, batch_size=batch_size, show_progress=show_progress)
        embed_seconds = time.perf_counter() - started
        results = evaluate_features(table, data, settings)
    results.update(
        encoder_fingerprint=fingerprint,
        embed_seconds=embed_seconds,
        texts_embedded=len(table.index),
        embedding_dim=table.dim,
    )
    if "emobank" in data:
        results["emobank_test_2d"] = np.round(project_2d(table(data["emobank"].splits["test"].texts)), 5).tolist()
    return results


def evaluate_table(table: FeatureTable, settings: TaskSettings, data: dict[str, TaskData]) -> dict:
    """:func:`evaluate_features` on a precomputed :class:`FeatureTable` (no geometry for 1-D features)."""
    return evaluate_features(table, data, settings, geometry=table.dim > 1)
