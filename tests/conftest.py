"""Shared fixtures: a tiny random BERT over a synthetic affect vocabulary and its corpus.

Everything here is CPU-only and offline. Torch runs single-threaded in the tests: the models
are tiny, and extra threads only add contention (a 150-step run takes ~4 s on one thread and
can take ten times longer on two busy cores).
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from carl.testing import make_tiny_encoder, synthetic_affect_corpus, synthetic_vocabulary, write_affect_csv

N_TRAIN = 400
N_HELDOUT = 300
REPO = Path(__file__).resolve().parents[1]
KILL_AT_STEP = Path(__file__).with_name("kill_at_step.py")


@dataclass
class SyntheticData:
    """The synthetic training and held-out sets, as CSV files and in memory (labels 0-1)."""

    train_path: Path
    heldout_path: Path
    train_texts: list[str]
    train_labels: np.ndarray  # [N_TRAIN, 2]
    heldout_texts: list[str]
    heldout_labels: np.ndarray  # [N_HELDOUT, 2]


@pytest.fixture(scope="session", autouse=True)
def _single_threaded_torch():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory) -> str:
    """Folder of a random 2-layer, 32-wide BERT with a word-level fast tokenizer."""
    return make_tiny_encoder(tmp_path_factory.mktemp("tiny-encoder"), synthetic_vocabulary(), seed=0)


@pytest.fixture(scope="session")
def synthetic_csv(tmp_path_factory) -> SyntheticData:
    """``train.csv`` (400 rows) and ``heldout.csv`` (300 rows): text,valence,arousal on 0-1."""
    folder = tmp_path_factory.mktemp("synthetic-data")
    train_texts, train_labels = synthetic_affect_corpus(N_TRAIN, seed=0)
    heldout_texts, heldout_labels = synthetic_affect_corpus(N_HELDOUT, seed=1)
    return SyntheticData(
        train_path=write_affect_csv(folder / "train.csv", train_texts, train_labels),
        heldout_path=write_affect_csv(folder / "heldout.csv", heldout_texts, heldout_labels),
        train_texts=train_texts,
        train_labels=train_labels,
        heldout_texts=heldout_texts,
        heldout_labels=heldout_labels,
    )


@pytest.fixture(scope="session")
def tiny_data_overrides(tiny_encoder, synthetic_csv) -> list[str]:
    """``--set`` overrides for a fast run of the tiny encoder on the synthetic training CSV, objective
    left to the caller (a benchmark's methods pick theirs)."""
    return [
        f"data.path={synthetic_csv.train_path}",
        "data.scale=0-1",
        "data.dev_fraction=0",  # every row trains; tests of model selection give dev data
        f"model.encoder={tiny_encoder}",
        "objective.mcl.queue_size=64",
        "train.batch_size=16",
        "train.learning_rate=1e-3",
        "train.checkpoint_every=100000",
        "train.num_threads=1",
    ]


@pytest.fixture(scope="session")
def tiny_overrides(tiny_data_overrides) -> list[str]:
    """:func:`tiny_data_overrides` of a CARL run (named: the library default is mcl, docs/method.md)."""
    return ["objective.name=carl", *tiny_data_overrides]


def cli_env(**extra: str) -> dict[str, str]:
    """Environment for ``python -m carl.cli`` subprocesses: offline, one thread, this tree's carl."""
    env = dict(os.environ)
    env.update(
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        TOKENIZERS_PARALLELISM="false",
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        PYTHONUNBUFFERED="1",
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    )
    env.update(extra)
    return env


@pytest.fixture(scope="session")
def run_cli():
    """``run_cli(*args, env=None, timeout=300, kill_at_step=None)``: run ``python -m carl.cli`` and
    return the result; with ``kill_at_step=N`` the process SIGKILLs itself after optimizer step N."""

    def run(
        *args: str, env: dict[str, str] | None = None, timeout: float = 300, kill_at_step: int | None = None
    ) -> subprocess.CompletedProcess:
        command = [str(KILL_AT_STEP), str(kill_at_step)] if kill_at_step else ["-m", "carl.cli"]
        return subprocess.run(
            [sys.executable, *command, *map(str, args)],
            capture_output=True,
            text=True,
            env=cli_env(**(env or {})),
            timeout=timeout,
        )

    return run


@pytest.fixture(scope="session")
def affect_model(tmp_path_factory, tiny_overrides) -> Path:
    """Model folder of the tiny encoder after 150 VA-regression steps (~2 s on one thread).

    Its predictions, and so its word attributions, follow the corpus's known affect words.
    """
    from carl.config import load_config
    from carl.training.trainer import CarlTrainer

    out = tmp_path_factory.mktemp("affect-model")
    cfg = load_config(None, tiny_overrides + ["objective.name=mse", "train.max_steps=150", "train.learning_rate=3e-3"])
    CarlTrainer(cfg, out, show_progress=False).train()
    return out / "model"


@dataclass
class EmotionData:
    """Synthetic emotion-class CSVs (``text,label``; multi-label cells joined by ``|``)."""

    train_path: Path
    dev_path: Path
    test_texts: list[str]
    test_labels: list[list[str]]


def _emotion_data(folder: Path, multi_label: bool) -> EmotionData:
    from carl.testing import synthetic_emotion_corpus, write_emotion_csv

    train = write_emotion_csv(folder / "train.csv", *synthetic_emotion_corpus(400, seed=0, multi_label=multi_label))
    dev = write_emotion_csv(folder / "dev.csv", *synthetic_emotion_corpus(200, seed=1, multi_label=multi_label))
    return EmotionData(train, dev, *synthetic_emotion_corpus(200, seed=2, multi_label=multi_label))


@pytest.fixture(scope="session")
def emotion_csv(tmp_path_factory) -> EmotionData:
    """Single-label: one affect word per text, its VA quadrant's class (joy, relief, anger, sadness)."""
    return _emotion_data(tmp_path_factory.mktemp("emotion-data"), multi_label=False)


@pytest.fixture(scope="session")
def multi_emotion_csv(tmp_path_factory) -> EmotionData:
    """Multi-label: affect words of 1 or 2 quadrants per text, one class each."""
    return _emotion_data(tmp_path_factory.mktemp("multi-emotion-data"), multi_label=True)


def emotion_overrides(encoder: str, data: EmotionData, *extra: str) -> list[str]:
    """``--set`` overrides for a fast classification run of the tiny encoder, calibrated on dev."""
    return [
        f"data.path={data.train_path}",
        f"data.dev_path={data.dev_path}",
        "data.label_column=label",
        f"model.encoder={encoder}",
        "objective.mcl.queue_size=64",
        "train.batch_size=16",
        "train.learning_rate=3e-3",
        "train.max_steps=150",
        "train.checkpoint_every=100000",
        "train.num_threads=1",
        *extra,
    ]


@pytest.fixture(scope="session")
def emotion_model(tmp_path_factory, tiny_encoder, emotion_csv) -> Path:
    """Model folder of a single-label classifier with a VA head too (``classify``, ``va_weight = 1``;
    VA from the GoEmotions mapping of each class), 150 steps, calibrated on dev."""
    from carl.config import load_config
    from carl.training.trainer import CarlTrainer

    out = tmp_path_factory.mktemp("emotion-model")
    cfg = load_config(
        None, emotion_overrides(tiny_encoder, emotion_csv, "objective.name=classify", "objective.va_weight=1")
    )
    CarlTrainer(cfg, out, show_progress=False).train()
    return out / "model"


@pytest.fixture(scope="session")
def multi_emotion_model(tmp_path_factory, tiny_encoder, multi_emotion_csv) -> Path:
    """Model folder of a multi-label classifier (``classify``), 150 steps, calibrated on dev."""
    from carl.config import load_config
    from carl.training.trainer import CarlTrainer

    out = tmp_path_factory.mktemp("multi-emotion-model")
    cfg = load_config(
        None,
        emotion_overrides(
            tiny_encoder,
            multi_emotion_csv,
            "objective.name=classify",
            "data.multi_label=true",
            "data.label_delimiter=|",
        ),
    )
    CarlTrainer(cfg, out, show_progress=False).train()
    return out / "model"
