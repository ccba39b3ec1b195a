"""SimCSE as an objective of carl's trainer: the loss maths, then training, resume and export."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from carl.config import ConfigError, load_config
from carl.inference import AffectEncoder
from carl.objectives.momentum_contrastive import soft_contrastive_loss
from carl.objectives.simcse import SimCSELoss, simcse_loss
from carl.testing import rewind_run, run_metrics
from carl.training.trainer import CarlTrainer

TIMING_KEYS = {"step_time", "samples_per_s"}


# --------------------------------------------------------------------------- the loss


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_simcse_is_soft_contrast_with_one_hot_targets_on_the_other_view(seed):
    g = torch.Generator().manual_seed(seed)
    first, second = torch.randn(7, 5, generator=g), torch.randn(7, 5, generator=g)
    tau = 0.05
    logits = F.normalize(first, dim=-1) @ F.normalize(second, dim=-1).T / tau
    out = simcse_loss(first, second, tau)
    torch.testing.assert_close(out.loss, soft_contrastive_loss(logits, torch.eye(7)))
    torch.testing.assert_close(out.loss, F.cross_entropy(logits, torch.arange(7)))


def test_identical_distinct_views_give_near_zero_loss_and_scale_is_ignored():
    views = torch.eye(4) * 3.0  # four orthogonal sentences; cosine ignores the norm
    out = SimCSELoss(temperature=0.05)(views, views / 7.0)
    assert out.loss < 1e-6
    assert out.diagnostics["simcse_top1"] == 1.0
    torch.testing.assert_close(out.diagnostics["simcse_positive_cosine"], torch.tensor(1.0))
    swapped = SimCSELoss(temperature=0.05)(views, views.flip(0))  # every positive is the wrong sentence
    assert swapped.loss > 10 and swapped.diagnostics["simcse_top1"] == 0.0


# --------------------------------------------------------------------------- in the trainer


@pytest.fixture(scope="module")
def simcse_overrides(tiny_overrides) -> list[str]:
    return tiny_overrides + ["objective.name=simcse", "train.max_steps=4", "train.checkpoint_every=2", "train.seed=3"]


def test_simcse_trains_without_key_encoder_and_exports_no_va_head(
    tmp_path, simcse_overrides, tiny_encoder, synthetic_csv
):
    trainer = CarlTrainer(load_config(None, simcse_overrides), tmp_path, show_progress=False)
    core = trainer.accelerator.unwrap_model(trainer.model)
    assert core.key_encoder is None and core.queue.size == 0
    assert core.backbone.training  # dropout on: the two views must differ
    trainer.train()
    records = run_metrics(tmp_path)
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    assert {"simcse", "loss"} <= set(records[0]) and not {"mcl", "mse", "ptd"} & set(records[0])
    # two dropout views of one sentence are close but not identical
    assert all(0.5 < r["simcse_positive_cosine"] < 1.0 for r in records)

    info = json.loads((tmp_path / "model" / "carl" / "carl.json").read_text())
    assert info["objective"] == "simcse" and info["heads"] == []
    encoder = AffectEncoder.load(str(tmp_path))
    texts = synthetic_csv.train_texts[:8]
    assert not encoder.has_heads and encoder.encode(texts).shape == (8, 32)
    with pytest.raises(RuntimeError):
        encoder.predict(texts)
    start = AffectEncoder.load(tiny_encoder)
    assert not np.allclose(encoder.encode(texts), start.encode(texts), atol=1e-4)  # it trained


def test_simcse_resume_is_exact(tmp_path, simcse_overrides, synthetic_csv):
    CarlTrainer(load_config(None, simcse_overrides), tmp_path, show_progress=False).train()
    want = run_metrics(tmp_path)
    texts = synthetic_csv.heldout_texts[:16]
    straight = AffectEncoder.load(str(tmp_path)).encode(texts)
    # rewind to the step-2 checkpoint, as if the run had been killed after step 3
    rewind_run(tmp_path, to_step=2, drop_step=4)
    CarlTrainer(load_config(None, simcse_overrides), tmp_path, show_progress=False).train()
    got = run_metrics(tmp_path)
    assert [r["step"] for r in got] == [1, 2, 3, 4]
    for a, b in zip(got, want):
        for key in set(a) - TIMING_KEYS:
            assert a[key] == pytest.approx(b[key], rel=1e-6, abs=1e-6), (a["step"], key)
    np.testing.assert_allclose(AffectEncoder.load(str(tmp_path)).encode(texts), straight, rtol=0, atol=1e-6)
    with pytest.raises(ConfigError):  # the same folder under other settings is refused
        CarlTrainer(
            load_config(None, simcse_overrides + ["objective.simcse.temperature=0.1"]), tmp_path, show_progress=False
        ).train()


def test_simcse_loss_falls(tmp_path, tiny_overrides):
    """Learning happens: the in-batch contrast gets easier (measured: loss 1.8 over steps 1-5, 0.01 over 36-40)."""
    overrides = tiny_overrides + ["objective.name=simcse", "train.max_steps=40", "train.checkpoint_every=0"]
    CarlTrainer(load_config(None, overrides), tmp_path, show_progress=False).train()
    losses = [r["simcse"] for r in run_metrics(tmp_path)]
    assert np.mean(losses[-5:]) < 0.25 * np.mean(losses[:5]), losses
