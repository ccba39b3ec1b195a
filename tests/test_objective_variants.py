"""The variants under study (docs/method.md) as switches of carl's trainer: each changes what it says."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from carl.config import ConfigError, load_config
from carl.inference import AffectEncoder
from carl.objectives.perturbed_token_detection import schedule_factor
from carl.objectives.rank_n_contrast import RankNContrastLoss
from carl.testing import rewind_run, run_metrics
from carl.training.trainer import CarlTrainer

TIMING_KEYS = {"step_time", "samples_per_s"}


def first_step_views(overrides: list[str], tmp_path) -> tuple[CarlTrainer, list]:
    """A trainer and the (saliency, view) of each of its ``_perturbed_view`` calls over 2 steps."""
    trainer = CarlTrainer(
        load_config(None, overrides + ["train.max_steps=2", "train.checkpoint_every=0"]), tmp_path, show_progress=False
    )
    calls = []
    original = trainer._perturbed_view

    def spy(batch, out, labels, saliency):
        view = original(batch, out, labels, saliency)
        calls.append((saliency.detach().clone(), view))
        return view

    trainer._perturbed_view = spy
    trainer.train()
    return trainer, calls


# --------------------------------------------------------------------------- saliency source


@pytest.mark.parametrize("mcl_weight, differs", [("1", True), ("0", False)])
def test_affect_saliency_differs_from_total_only_with_the_contrastive_term(
    tmp_path, tiny_overrides, mcl_weight, differs
):
    """Same seed, same first batch and weights: the first saliency is of L_MSE or of L_MCL + L_MSE."""
    base = tiny_overrides + [f"objective.mcl_weight={mcl_weight}"]
    _, total = first_step_views(base, tmp_path / "total")
    _, affect = first_step_views(base + ["objective.ptd.saliency_source=affect"], tmp_path / "affect")
    a, b = total[0][0], affect[0][0]
    assert a.shape == b.shape and a.abs().sum() > 0
    if differs:
        assert not torch.allclose(a, b, rtol=1e-3, atol=1e-8)
    else:
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-9)


# --------------------------------------------------------------------------- embedding perturbation


@pytest.mark.parametrize("steps", [1, 2])
def test_embedding_perturbation_stays_within_epsilon_and_raises_the_affect_loss(tmp_path, tiny_overrides, steps):
    overrides = tiny_overrides + [
        "objective.ptd.replacement=embedding",
        "objective.ptd.epsilon=0.5",
        f"objective.ptd.ascent_steps={steps}",
        "objective.ptd.consistency_weight=1",
    ]
    _, calls = first_step_views(overrides, tmp_path)
    for _, view in calls:
        norms = view.delta.norm(dim=-1)  # [B', T']
        assert (norms <= 0.5 + 1e-5).all()
        assert (norms[~view.positions] == 0).all() and (norms[view.positions] > 0).all()
        assert view.positions.any()
    records = run_metrics(tmp_path)
    assert all(r["ptd_affect_increase"] > 0 for r in records), [r["ptd_affect_increase"] for r in records]
    assert all(r["ptd_consistency"] > 0 for r in records)
    assert all(r["loss"] > r["mcl"] + r["mse"] + r["ptd"] for r in records)  # the consistency term is in it


def test_embedding_perturbation_leaves_the_tokens_alone(tmp_path, tiny_overrides):
    _, calls = first_step_views(tiny_overrides + ["objective.ptd.replacement=embedding"], tmp_path)
    _, hotflip = first_step_views(tiny_overrides, tmp_path / "hotflip")
    emb_view, flip_view = calls[0][1], hotflip[0][1]
    torch.testing.assert_close(emb_view.positions, flip_view.positions)  # the same salient words
    assert (flip_view.input_ids[flip_view.positions] != emb_view.input_ids[emb_view.positions]).all()
    assert "ptd_consistency" not in run_metrics(tmp_path)[0]  # consistency_weight 0: no term


# --------------------------------------------------------------------------- perturbed keys as negatives


@pytest.mark.parametrize("objective", ["carl", "carl-rank"])
def test_perturbed_keys_join_the_contrast_as_extra_keys(tmp_path, tiny_overrides, objective):
    base = tiny_overrides + [f"objective.name={objective}", "objective.ptd.sentence_fraction=0.5"]
    first_step_views(base, tmp_path / "plain")
    first_step_views(base + ["objective.ptd.as_negative=true"], tmp_path / "negative")
    plain, negative = run_metrics(tmp_path / "plain"), run_metrics(tmp_path / "negative")
    for a, b in zip(plain, negative):
        assert b["mcl_num_keys"] == a["mcl_num_keys"] + b["ptd_sentences"] == a["mcl_num_keys"] + 8
    # step 1 starts from the same weights and keys: the extra negatives only raise the loss
    assert negative[0]["mcl"] > plain[0]["mcl"]
    assert negative[0]["mse"] == pytest.approx(plain[0]["mse"], rel=1e-6)


# --------------------------------------------------------------------------- rank targets


def test_rank_objectives_train_with_rank_n_contrast(tmp_path, tiny_overrides):
    cfg = load_config(None, tiny_overrides + ["objective.name=carl-rank", "train.max_steps=3"])
    assert cfg.objective.terms()["mcl"].targets == "rank"
    trainer = CarlTrainer(cfg, tmp_path, show_progress=False)
    assert isinstance(trainer.losses["mcl"], RankNContrastLoss)
    trainer.train()
    records = run_metrics(tmp_path)
    assert {"mcl", "mse", "ptd"} <= set(records[0]) and "mcl_kl" not in records[0]
    assert all(np.isfinite(r["mcl"]) for r in records)


# --------------------------------------------------------------------------- PTD weight schedule


def test_schedule_values_at_given_steps():
    assert [schedule_factor("constant", s, 10, 0.5) for s in (0, 5, 9)] == [1.0, 1.0, 1.0]
    assert [schedule_factor("warmup", s, 10, 0.5) for s in (0, 1, 4, 5, 9)] == [0.0, 0.2, 0.8, 1.0, 1.0]
    assert [schedule_factor("decay", s, 10, 0.5) for s in (0, 5, 6, 9)] == [1.0, 1.0, 0.8, 0.2]
    assert schedule_factor("warmup", 3, 10, 1.0) == pytest.approx(0.3)
    assert schedule_factor("decay", 3, 10, 1.0) == pytest.approx(0.7)


@pytest.mark.parametrize("schedule, expected", [("warmup", [0.0, 0.5, 1.0, 1.0]), ("decay", [1.0, 1.0, 1.0, 0.5])])
def test_the_trainer_weighs_ptd_by_its_schedule(tmp_path, tiny_overrides, schedule, expected):
    overrides = tiny_overrides + [
        f"objective.ptd_schedule={schedule}",
        "objective.ptd_schedule_fraction=0.5",
        "objective.ptd_weight=2",
        "train.max_steps=4",
    ]
    CarlTrainer(load_config(None, overrides), tmp_path, show_progress=False).train()
    records = run_metrics(tmp_path)
    assert [r["ptd_weight"] for r in records] == [2 * f for f in expected]
    for r in records:
        expected_loss = r["mcl"] + r["mse"] + r["ptd_weight"] * r["ptd"] + 0.3 * r["preserve"]  # default preserve
        assert r["loss"] == pytest.approx(expected_loss, rel=1e-5)


# --------------------------------------------------------------------------- dropout


@pytest.mark.parametrize("dropout", [False, True])
def test_train_dropout_puts_the_trained_modules_in_train_mode(tmp_path, tiny_overrides, dropout):
    cfg = load_config(None, tiny_overrides + [f"train.dropout={str(dropout).lower()}", "train.max_steps=1"])
    trainer = CarlTrainer(cfg, tmp_path, show_progress=False)
    core = trainer.accelerator.unwrap_model(trainer.model)
    dropouts = [m for m in core.modules() if isinstance(m, torch.nn.Dropout)]
    assert dropouts and all(m.training == dropout for m in dropouts)  # the key encoder's too
    batch = next(iter(trainer.loader))
    with torch.no_grad():
        first, second = (core(batch["input_ids"], batch["attention_mask"], heads=()).embedding for _ in range(2))
    assert torch.equal(first, second) != dropout  # dropout on: two passes differ
    trainer.train()
    assert all(m.training == dropout for m in dropouts)  # the dev evaluation restores the mode


# --------------------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["objective.ptd.saliency_source=loss"], "objective.ptd.saliency_source"),
        (["objective.ptd.replacement=noise"], "objective.ptd.replacement"),
        (["objective.ptd_schedule=cosine"], "objective.ptd_schedule"),
        (["objective.ptd_schedule_fraction=0"], "objective.ptd_schedule_fraction"),
        (["objective.ptd.epsilon=0"], "objective.ptd.epsilon"),
        (["objective.ptd.ascent_steps=0"], "objective.ptd.ascent_steps"),
        (["objective.ptd.consistency_weight=-1"], "objective.ptd.consistency_weight"),
        (["objective.ptd.consistency_weight=1"], "objective.ptd.consistency_weight"),  # hotflip
        (["objective.name=mcl", "objective.ptd.as_negative=true"], "objective.ptd.as_negative"),
        (["objective.name=mcl", "objective.ptd_schedule=warmup"], "objective.ptd_schedule"),
        (["objective.mse_weight=0", "objective.ptd.saliency_source=affect"], "objective.ptd.saliency_source"),
        (["objective.mse_weight=0", "objective.ptd.replacement=embedding"], "objective.ptd.replacement"),
        (["objective.mcl_weight=0", "objective.ptd.as_negative=true"], "objective.ptd.as_negative"),
        (["train.dropout=maybe"], "train.dropout"),
    ],
)
def test_bad_variant_settings_name_their_key(overrides, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(None, overrides)


@pytest.mark.parametrize("multi_label", [False, True])
def test_the_classification_objectives_train_with_every_ptd_switch(
    tmp_path, tiny_encoder, emotion_csv, multi_emotion_csv, multi_label
):
    """The affect loss is the classification loss: saliency, ascent and consistency (symmetric KL)."""
    from tests.conftest import emotion_overrides

    data = multi_emotion_csv if multi_label else emotion_csv
    extra = ["data.multi_label=true", "data.label_delimiter=|"] if multi_label else []
    overrides = emotion_overrides(
        tiny_encoder,
        data,
        "objective.name=carl-rank-classify",
        "objective.ptd.saliency_source=affect",
        "objective.ptd.replacement=embedding",
        "objective.ptd.consistency_weight=0.5",
        "objective.ptd.as_negative=true",
        "train.max_steps=3",
        "train.select_metric=",
        *extra,
    )
    cfg = load_config(None, overrides)
    assert set(cfg.objective.terms()) == {"classify", "mcl", "ptd", "preserve"}
    CarlTrainer(cfg, tmp_path, show_progress=False).train()
    records = run_metrics(tmp_path)
    assert all(r["ptd_affect_increase"] > 0 and r["ptd_consistency"] > 0 for r in records)
    assert all(r["mcl_num_keys"] == 16 + min(16 * i, 64) + 8 for i, r in enumerate(records))


# --------------------------------------------------------------------------- resume


@pytest.mark.parametrize(
    "switch",
    [
        ["objective.ptd.saliency_source=affect"],
        ["objective.ptd.replacement=embedding", "objective.ptd.ascent_steps=2", "objective.ptd.consistency_weight=1"],
        ["objective.ptd.as_negative=true"],
        ["objective.name=carl-rank"],
        ["objective.ptd_schedule=warmup"],
        ["train.dropout=true"],
    ],
    ids=["affect-saliency", "embedding", "negative", "rank", "warmup", "dropout"],
)
def test_resume_with_each_switch_is_exact(tmp_path, tiny_overrides, synthetic_csv, switch):
    overrides = tiny_overrides + switch + ["train.max_steps=4", "train.checkpoint_every=2", "train.batch_size=8"]
    CarlTrainer(load_config(None, overrides), tmp_path, show_progress=False).train()
    want = run_metrics(tmp_path)
    texts = synthetic_csv.heldout_texts[:16]
    straight = AffectEncoder.load(str(tmp_path)).encode(texts)
    rewind_run(tmp_path, to_step=2, drop_step=4)  # as if killed after step 3
    CarlTrainer(load_config(None, overrides), tmp_path, show_progress=False).train()
    got = run_metrics(tmp_path)
    assert [r["step"] for r in got] == [r["step"] for r in want] == [1, 2, 3, 4]
    for a, b in zip(got, want):
        assert set(a) == set(b)
        for key in set(a) - TIMING_KEYS:
            assert a[key] == pytest.approx(b[key], rel=1e-6, abs=1e-6), (a["step"], key)
    np.testing.assert_allclose(AffectEncoder.load(str(tmp_path)).encode(texts), straight, rtol=0, atol=1e-6)


# --------------------------------------------------------------------------- benchmark methods


def test_each_variant_is_a_benchmark_method_run_by_name_only():
    from carl.evaluation.benchmark import DEFAULT_METHODS, METHODS, VARIANT_METHODS, BenchmarkSettings

    assert {"carl-affect-saliency", "carl-embedding", "carl-negative", "carl-rank", "carl-ptd-warmup"} <= set(
        VARIANT_METHODS
    )
    default = load_config(None, ["objective.name=carl"]).to_dict()
    for name, method in VARIANT_METHODS.items():
        assert METHODS[name] is method and name not in DEFAULT_METHODS
        cfg = load_config(None, list(method.overrides)).to_dict()  # valid settings ...
        assert cfg != default  # ... that change something
    assert BenchmarkSettings(methods=("carl-rank",)).methods == ("carl-rank",)


# --------------------------------------------------------------------------- several processes


def test_two_processes_with_the_ptd_switches_match_one_process(tiny_encoder, synthetic_csv, tmp_path):
    """Saliency before the backward (autograd.grad under DDP), the ascent on the unwrapped model and
    the gathered perturbed keys: 2 ranks x 8 sentences follow the 1-process batch-16 trace."""
    import json
    import shutil
    import subprocess
    import sys

    from tests.test_distributed import _env, _torchrun

    encoder = tmp_path / "enc"  # dropout off, so that rank count cannot change the maths
    shutil.copytree(tiny_encoder, encoder)
    config = json.loads((encoder / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (encoder / "config.json").write_text(json.dumps(config))
    overrides = [
        f"data.path={synthetic_csv.train_path}",
        "data.scale=0-1",
        "data.dev_fraction=0",
        f"model.encoder={encoder}",
        "objective.name=carl",
        "objective.mcl.queue_size=48",
        "train.max_steps=4",
        "train.learning_rate=1e-3",
        "train.batch_size=16",
        "train.num_threads=1",
        "objective.ptd.sentence_fraction=1.0",  # each rank would draw its own share otherwise
        "objective.ptd.saliency_source=affect",
        "objective.ptd.replacement=embedding",
        "objective.ptd.consistency_weight=1",
        "objective.ptd.as_negative=true",
    ]
    sets = [arg for o in overrides for arg in ("--set", o)]
    train = ["-m", "carl.cli", "train", "--no-progress", *sets]
    one = subprocess.run(
        [sys.executable, *train, "--output", str(tmp_path / "one")], env=_env(), capture_output=True, text=True
    )
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run(
        _torchrun(*train, "--output", str(tmp_path / "two"), "--set", "train.split_batches=true"),
        env=_env(),
        capture_output=True,
        text=True,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = run_metrics(tmp_path / "one"), run_metrics(tmp_path / "two")
    assert [r["step"] for r in a] == [r["step"] for r in b] == [1, 2, 3, 4]
    for x, y in zip(a, b):
        assert x["mcl_num_keys"] == y["mcl_num_keys"]  # the negatives of both ranks, gathered
        for key in ("loss", "mcl", "mse", "ptd", "ptd_consistency", "ptd_affect_increase"):
            assert x[key] == pytest.approx(y[key], abs=5e-4), (x["step"], key)
