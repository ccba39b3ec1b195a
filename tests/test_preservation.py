"""The preservation term: its maths, what it keeps in training, the teacher cache, its settings."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file

import carl.training.teacher as teacher_module
from carl.config import ConfigError, load_config
from carl.data.readers import load_table
from carl.inference import AffectEncoder
from carl.model.encoder import load_backbone
from carl.objectives.preservation import (
    PreservationLoss,
    cosine_matrix,
    distillation_loss,
    l2sp_penalty,
    relational_loss,
)
from carl.testing import rewind_run, run_metrics
from carl.training.teacher import TEACHER_FILE
from carl.training.trainer import CarlTrainer

# --------------------------------------------------------------------------- the maths


def test_distill_is_zero_on_the_teacher_and_ignores_scale():
    g = torch.Generator().manual_seed(0)
    teacher = torch.randn(6, 8, generator=g)
    assert distillation_loss(teacher * 3.0, teacher) < 1e-6
    opposite = distillation_loss(-teacher, teacher)
    torch.testing.assert_close(opposite, torch.tensor(2.0))


def test_relational_ignores_a_rotation_which_distill_does_not():
    g = torch.Generator().manual_seed(1)
    teacher = torch.randn(6, 8, generator=g)
    rotation, _ = torch.linalg.qr(torch.randn(8, 8, generator=g))  # orthogonal [8, 8]
    rotated = teacher @ rotation
    assert relational_loss(rotated, teacher) < 1e-10
    assert distillation_loss(rotated, teacher) > 0.1
    # by hand: the mean over the B(B-1) off-diagonal entries
    student = torch.randn(6, 8, generator=g)
    diff = (cosine_matrix(student) - cosine_matrix(teacher)).pow(2)
    torch.testing.assert_close(relational_loss(student, teacher), (diff.sum() - diff.diag().sum()) / 30)
    assert relational_loss(student[:1], teacher[:1]) == 0  # one sentence: no relation


def test_l2sp_is_the_squared_distance_to_the_start():
    start = {"a": torch.zeros(3), "b": torch.ones(2, 2)}
    moved = [("a", torch.tensor([1.0, 2.0, 0.0])), ("b", torch.full((2, 2), 2.0))]
    torch.testing.assert_close(l2sp_penalty(moved, start), torch.tensor(1.0 + 4.0 + 4.0))
    weights = [(name, w.clone().requires_grad_()) for name, w in moved]
    l2sp_penalty(weights, start).backward()  # the gradient is 2 (w - w0)
    for (name, w), (_, before) in zip(weights, moved):
        torch.testing.assert_close(w.grad, 2 * (before - start[name]))
    out = PreservationLoss("l2sp", start=start)(parameters=moved)
    torch.testing.assert_close(out.diagnostics["preserve_distance"], torch.tensor(3.0))
    with pytest.raises(ValueError, match="l2sp"):
        PreservationLoss("distill", start=start)


# --------------------------------------------------------------------------- in training


@pytest.fixture(scope="module")
def preserve_overrides(tiny_overrides) -> list[str]:
    # VA regression at a high learning rate moves the tiny encoder's embeddings far in 60 steps
    return tiny_overrides + ["objective.name=mse", "train.max_steps=60", "train.learning_rate=3e-3"]


def _teacher_cosine(model_dir, tiny_encoder, texts) -> float:
    """Mean cosine between a trained encoder's and the starting encoder's embeddings of ``texts``."""
    trained = AffectEncoder.load(str(model_dir)).encode(texts)
    start = AffectEncoder.load(tiny_encoder).encode(texts)
    return float(F.cosine_similarity(torch.as_tensor(trained), torch.as_tensor(start), dim=-1).mean())


def test_distillation_keeps_unseen_sentences_near_the_teacher(
    tmp_path_factory, preserve_overrides, tiny_encoder, synthetic_csv
):
    texts = synthetic_csv.heldout_texts[:100]  # never trained on
    cosine = {}
    for kind, weight in (("none", 0), ("distill", 10), ("relational", 10)):
        out = tmp_path_factory.mktemp(f"run-{kind}")
        overrides = preserve_overrides + [f"objective.preserve_weight={weight}"]
        if weight:
            overrides.append(f"objective.preserve.kind={kind}")
        CarlTrainer(load_config(None, overrides), out, show_progress=False).train()
        cosine[kind] = _teacher_cosine(out, tiny_encoder, texts)
        records = run_metrics(out)
        assert ("preserve" in records[-1]) == bool(weight)
    # measured: none 0.79, distill 0.99, relational 0.90 (tiny encoder, one thread)
    assert cosine["distill"] > cosine["none"] + 0.1, cosine
    assert cosine["relational"] > cosine["none"] + 0.05, cosine


def test_l2sp_keeps_the_weights_near_the_start(tmp_path_factory, preserve_overrides, tiny_encoder):
    start = {n: p.detach() for n, p in load_backbone(tiny_encoder)[0].named_parameters()}
    distance = {}
    for weight in (0, 1):
        out = tmp_path_factory.mktemp(f"l2sp-{weight}")
        overrides = preserve_overrides + [f"objective.preserve_weight={weight}", "objective.preserve.kind=l2sp"]
        CarlTrainer(load_config(None, overrides), out, show_progress=False).train()
        trained = load_backbone(str(out / "model"))[0].named_parameters()
        distance[weight] = float(l2sp_penalty(((n, p.detach()) for n, p in trained), start).sqrt())
        assert not (out / TEACHER_FILE).exists()  # l2sp needs no teacher pass
    # measured: ||w - w0|| 3.3 without, 0.35 with the term
    assert distance[1] < 0.5 * distance[0], distance


def test_teacher_cache_is_reused_on_resume_and_recomputed_when_its_key_differs(
    tmp_path, tiny_overrides, tiny_encoder, monkeypatch
):
    passes = []
    real = teacher_module.encode_rows
    monkeypatch.setattr(teacher_module, "encode_rows", lambda *a, **k: passes.append(1) or real(*a, **k))
    overrides = tiny_overrides + [
        "objective.name=carl",
        "objective.preserve_weight=1",
        "train.max_steps=4",
        "train.checkpoint_every=2",
    ]
    CarlTrainer(load_config(None, overrides), tmp_path, show_progress=False).train()
    want = run_metrics(tmp_path)
    assert len(passes) == 1
    cache = tmp_path / TEACHER_FILE
    with safe_open(str(cache), framework="pt") as f:
        key = json.loads(f.metadata()["key"])
        embeddings = f.get_tensor("embeddings")
    assert key["encoder"] == tiny_encoder and key["max_length"] == 128 and key["pooling"] == "mean"
    assert embeddings.shape == (400, 32)
    # the cached rows are the starting encoder's embeddings, in the training file's order
    texts = load_table(load_config(None, overrides).data.path, scale="0-1").texts[:5]
    np.testing.assert_allclose(embeddings[:5].numpy(), AffectEncoder.load(tiny_encoder).encode(texts), atol=1e-5)

    # resume: the cache is read, not recomputed, and the run is the uninterrupted one
    rewind_run(tmp_path, to_step=2, drop_step=4)
    CarlTrainer(load_config(None, overrides), tmp_path, show_progress=False).train()
    assert len(passes) == 1
    got = run_metrics(tmp_path)
    for a, b in zip(got, want):
        assert a["preserve"] == pytest.approx(b["preserve"], rel=1e-6, abs=1e-7)

    # a cache under another key (another encoder, say) is recomputed and overwritten
    save_file({"embeddings": embeddings * 2}, str(cache), {"key": json.dumps({**key, "encoder_sha256": "other"})})
    rewind_run(tmp_path, to_step=2, drop_step=4)
    CarlTrainer(load_config(None, overrides), tmp_path, show_progress=False).train()
    assert len(passes) == 2
    with safe_open(str(cache), framework="pt") as f:
        assert json.loads(f.metadata()["key"]) == key
        torch.testing.assert_close(f.get_tensor("embeddings"), embeddings)
    # an unreadable cache is recomputed too
    cache.write_bytes(b"not safetensors")
    rewind_run(tmp_path, to_step=2, drop_step=4)
    CarlTrainer(load_config(None, overrides), tmp_path, show_progress=False).train()
    assert len(passes) == 3


# --------------------------------------------------------------------------- settings


def test_preservation_settings_are_validated():
    cfg = load_config(None, ["objective.preserve_weight=0.5", "objective.preserve.kind=relational"])
    assert cfg.objective.terms()["preserve"].weight == 0.5
    default = load_config().objective
    assert default.terms()["preserve"].weight == 0.3 and default.preserve.kind == "distill"  # on by default
    assert "preserve" not in load_config(None, ["objective.preserve_weight=0"]).objective.terms()
    with pytest.raises(ConfigError, match="objective.preserve.kind"):
        load_config(None, ["objective.preserve.kind=cosine"])
    with pytest.raises(ConfigError, match="objective.preserve_weight"):
        load_config(None, ["objective.preserve_weight=-1"])
    with pytest.raises(ConfigError, match="objective.mse_weight"):  # preservation alone trains nothing
        load_config(None, ["objective.name=mse", "objective.mse_weight=0", "objective.preserve_weight=1"])
