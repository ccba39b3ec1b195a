"""Checkpoints: resume after SIGKILL reproduces an uninterrupted run; divergence stops cleanly."""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from carl.config import load_config
from carl.inference import AffectEncoder
from carl.objectives.base import ObjectiveOutput
from carl.testing import rewind_run, run_metrics
from carl.training.checkpoint import latest_checkpoint
from carl.training.trainer import CarlTrainer, TrainingDiverged

TIMING_KEYS = {"step_time", "samples_per_s"}


def assert_checkpoints_complete(run: Path) -> list[str]:
    """Every ``step-*`` folder holds ``trainer_state.json``; ``latest`` names one of them."""
    root = run / "checkpoints"
    folders = sorted(p.name for p in root.glob("step-*"))
    for name in folders:
        assert (root / name / "trainer_state.json").is_file(), f"half-written checkpoint {name}"
    assert (root / "latest").read_text().strip() in folders
    return folders


@pytest.fixture(scope="module")
def resume_overrides(tiny_overrides) -> list[str]:
    return tiny_overrides + [
        "train.max_steps=8",
        "train.checkpoint_every=3",
        "train.batch_size=8",
        "objective.mcl.queue_size=32",
        "train.keep_checkpoints=2",
    ]


def train_args(out: Path, overrides: list[str]) -> list[str]:
    args = ["train", "--output", str(out), "--no-progress"]
    for item in overrides:
        args += ["--set", item]
    return args


def test_resume_after_sigkill_matches_uninterrupted_run(tmp_path, run_cli, resume_overrides, synthetic_csv):
    resumed, straight = tmp_path / "resumed", tmp_path / "straight"

    killed = run_cli(*train_args(resumed, resume_overrides), kill_at_step=5)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert [r["step"] for r in run_metrics(resumed)] == [1, 2, 3, 4, 5]
    assert assert_checkpoints_complete(resumed) == ["step-3"]
    assert not (resumed / "model").exists()

    again = run_cli(*train_args(resumed, resume_overrides))
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming from" in again.stdout + again.stderr
    full = run_cli(*train_args(straight, resume_overrides))
    assert full.returncode == 0, full.stderr[-3000:]

    got, want = run_metrics(resumed), run_metrics(straight)
    assert [r["step"] for r in got] == [r["step"] for r in want] == list(range(1, 9))
    for a, b in zip(got, want):
        assert set(a) == set(b)
        assert {"loss", "mcl", "mse", "ptd"} <= set(a)
        for key in set(a) - TIMING_KEYS:
            assert a[key] == pytest.approx(b[key], rel=1e-6, abs=1e-6), (a["step"], key, a[key], b[key])
    assert_checkpoints_complete(resumed)

    texts = synthetic_csv.heldout_texts[:20]
    np.testing.assert_allclose(
        AffectEncoder.load(str(resumed)).encode(texts),
        AffectEncoder.load(str(straight)).encode(texts),
        rtol=0,
        atol=1e-6,
    )
    va_resumed = np.stack(AffectEncoder.load(str(resumed)).predict(texts))
    va_straight = np.stack(AffectEncoder.load(str(straight)).predict(texts))
    np.testing.assert_allclose(va_resumed, va_straight, rtol=0, atol=1e-6)


class NaNAfter:
    """Wraps an objective; from call ``start`` on its loss is NaN (with the same graph)."""

    def __init__(self, objective, start: int):
        self.objective, self.start, self.calls = objective, start, 0

    def __call__(self, *args, **kwargs) -> ObjectiveOutput:
        self.calls += 1
        out = self.objective(*args, **kwargs)
        if self.calls >= self.start:
            out = ObjectiveOutput(out.loss * float("nan"), out.diagnostics)
        return out


def test_nan_loss_stops_and_keeps_last_checkpoint(tmp_path, resume_overrides):
    overrides = resume_overrides + ["train.checkpoint_every=2", "train.max_steps=6"]
    trainer = CarlTrainer(load_config(None, overrides), tmp_path, show_progress=False)
    trainer.losses["mse"] = NaNAfter(trainer.losses["mse"], start=5)  # one clean pass per step: step 5 is NaN
    with pytest.raises(TrainingDiverged, match=r"step 5.*step-4"):
        trainer.train()
    assert assert_checkpoints_complete(tmp_path) == ["step-2", "step-4"]
    assert latest_checkpoint(tmp_path).name == "step-4"
    assert json.loads((tmp_path / "checkpoints" / "step-4" / "trainer_state.json").read_text())["step"] == 4
    assert [r["step"] for r in run_metrics(tmp_path)] == [1, 2, 3, 4]
    assert not (tmp_path / "model").exists()

    # the checkpoint loads: the same command resumes from step 4 and finishes
    CarlTrainer(load_config(None, overrides), tmp_path, show_progress=False).train()
    assert [r["step"] for r in run_metrics(tmp_path)] == [1, 2, 3, 4, 5, 6]
    assert all(np.isfinite(r["loss"]) for r in run_metrics(tmp_path))
    assert_checkpoints_complete(tmp_path)
    assert (tmp_path / "model" / "modules.json").is_file()


def test_exploding_learning_rate_raises_training_diverged(tmp_path, tiny_overrides):
    overrides = tiny_overrides + [
        "train.learning_rate=1e6",
        "train.head_learning_rate=1e6",
        "train.warmup_ratio=0",
        "train.max_steps=30",
        "train.checkpoint_every=1",
        "train.keep_checkpoints=1",
        "train.max_grad_norm=1e9",
    ]
    with pytest.raises(TrainingDiverged, match="non-finite loss") as caught:
        CarlTrainer(load_config(None, overrides), tmp_path, show_progress=False).train()
    bad_step = int(re.search(r"non-finite loss at step (\d+)", str(caught.value)).group(1))
    assert 1 < bad_step < 30  # measured: step 2
    folders = assert_checkpoints_complete(tmp_path)
    last = latest_checkpoint(tmp_path)
    assert last is not None and last.name == folders[-1] == f"step-{bad_step - 1}"  # checkpoint_every=1
    assert str(last) in str(caught.value)
    assert not any(p.name.startswith(".step-") for p in (tmp_path / "checkpoints").iterdir())
    # the last good checkpoint holds finite weights
    weights = load_file(str(last / "model.safetensors"))
    assert weights and all(torch.isfinite(t).all() for t in weights.values())


@pytest.mark.parametrize(
    "objective",
    [["objective.name=mse"], ["objective.name=mcl", "objective.mcl.queue_size=0"]],
    ids=["mse", "mcl-no-queue"],
)
def test_runs_with_an_empty_queue_resume(tmp_path, resume_overrides, objective):
    """Without a queue (mse; mcl with in-batch keys) a checkpoint loads and the resumed trace matches."""
    overrides = resume_overrides + objective + ["train.max_steps=4", "train.checkpoint_every=2"]
    CarlTrainer(load_config(None, overrides), tmp_path, show_progress=False).train()
    want = run_metrics(tmp_path)
    # rewind to the step-2 checkpoint, as if the run had been killed before its step-4 checkpoint
    rewind_run(tmp_path, to_step=2, drop_step=4)
    CarlTrainer(load_config(None, overrides), tmp_path, show_progress=False).train()
    got = run_metrics(tmp_path)
    assert [r["step"] for r in got] == [1, 2, 3, 4]
    for a, b in zip(got, want):
        for key in set(a) - TIMING_KEYS:
            assert a[key] == pytest.approx(b[key], rel=1e-6, abs=1e-6), (a["step"], key)
