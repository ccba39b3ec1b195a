"""Model selection on dev: the best step is exported, early stopping, resume keeps the best state.

The runs overfit on purpose: 64 training sentences whose labels carry heavy noise (std 0.3) and a
learning rate high enough to memorise them, scored on 300 clean dev sentences. Dev correlation
first rises (the affect words are learnt) and then falls (the noise is memorised), so the best
step lies strictly inside the run.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file

from carl.config import ConfigError, load_config
from carl.evaluation.metrics import pearson
from carl.inference import AffectEncoder
from carl.testing import synthetic_affect_corpus, write_affect_csv
from carl.training.errors import CheckpointError
from carl.training.selection import Selection, best_folder, class_macro_f1
from carl.training.trainer import CarlTrainer

STEPS, EVERY = 200, 20
TIMING_KEYS = {"step_time", "samples_per_s", "dev_time"}


def records(run: Path) -> tuple[list[dict], list[dict]]:
    """(per-step lines, dev lines) of a run's metrics.jsonl."""
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [r for r in lines if "dev" not in r], [r for r in lines if "dev" in r]


@pytest.fixture(scope="module")
def overfit_data(tmp_path_factory) -> tuple[Path, Path, list[str], np.ndarray]:
    folder = tmp_path_factory.mktemp("overfit-data")
    train_texts, train_labels = synthetic_affect_corpus(64, seed=3, noise=0.3)
    dev_texts, dev_labels = synthetic_affect_corpus(300, seed=4)
    return (
        write_affect_csv(folder / "train.csv", train_texts, train_labels),
        write_affect_csv(folder / "dev.csv", dev_texts, dev_labels),
        dev_texts,
        dev_labels,
    )


@pytest.fixture(scope="module")
def overfit_overrides(tiny_overrides, overfit_data) -> list[str]:
    train, dev, _, _ = overfit_data
    return tiny_overrides + [
        f"data.path={train}",
        f"data.dev_path={dev}",
        "objective.name=mse",
        "train.batch_size=8",
        "train.learning_rate=1e-2",
        "train.head_learning_rate=1e-2",
        "train.warmup_ratio=0",
        f"train.max_steps={STEPS}",
        f"train.eval_every={EVERY}",
    ]


@pytest.fixture(scope="module")
def overfit_run(tmp_path_factory, overfit_overrides) -> Path:
    out = tmp_path_factory.mktemp("overfit-run")
    CarlTrainer(load_config(None, overfit_overrides + ["train.checkpoint_every=100"]), out, show_progress=False).train()
    return out


def test_selection_state_follows_the_metric_and_counts_patience():
    sel = Selection("va_pearson_mean")
    values = [0.1, 0.3, 0.2, float("nan"), 0.3, 0.4, 0.35]
    improved = [sel.update(step, {"va_pearson_mean": v}) for step, v in enumerate(values, start=1)]
    assert improved == [True, True, False, False, False, True, False]  # NaN and ties never improve
    assert (sel.best_step, sel.best_value, sel.evaluations_since_best) == (6, 0.4, 1)
    assert not sel.exhausted(2) and sel.exhausted(1) and not sel.exhausted(0)
    assert Selection.from_dict(json.loads(json.dumps(sel.to_dict())), "va_pearson_mean") == sel
    with pytest.raises(ValueError, match="metric"):
        Selection.from_dict(sel.to_dict(), "va_pearson_valence")


def test_multi_label_dev_metric_scores_at_tuned_thresholds():
    # a rare label ranked perfectly but never above p = 0.5 (logit 0): at 0.5 it would score F1 0
    targets = np.zeros((20, 2))
    targets[:10, 0] = 1.0
    targets[:2, 1] = 1.0
    logits = np.full((20, 2), -3.0)
    logits[:10, 0] = 2.0
    logits[:2, 1] = -1.0
    assert class_macro_f1(logits, targets) == pytest.approx(1.0)
    logits[:2, 1] = -4.0  # ranked below every negative (p 0.018 < 0.047 < the lowest threshold 0.05)
    assert class_macro_f1(logits, targets) == pytest.approx(0.5)


@pytest.mark.parametrize(
    "override, key",
    [
        ("train.select_metric=macro_f2", "train.select_metric"),
        ("train.eval_every=-1", "train.eval_every"),
        ("train.early_stopping_patience=-2", "train.early_stopping_patience"),
    ],
)
def test_bad_selection_settings_name_their_key(override, key):
    with pytest.raises(ConfigError, match=key):
        load_config(None, [override])


def test_selection_needs_a_trained_head(tmp_path, overfit_overrides, capsys):
    without_va = overfit_overrides + ["objective.name=mcl", "objective.mse_weight=0", "objective.mcl.queue_size=16"]
    # the default metric on a run without a VA head (e.g. simcse): no selection, said in the log
    trainer = CarlTrainer(load_config(None, without_va), tmp_path / "default", show_progress=False)
    assert trainer.selection is None and "no model selection" in capsys.readouterr().out
    # a metric asked for explicitly that the run cannot score: refused, naming the key
    cfg = load_config(None, without_va + ["train.select_metric=va_pearson_valence"])
    with pytest.raises(ConfigError, match=r"train\.select_metric"):
        CarlTrainer(cfg, tmp_path / "explicit", show_progress=False)


def test_exported_model_is_the_best_dev_step(overfit_run, overfit_data):
    _, _, dev_texts, dev_labels = overfit_data
    steps, dev = records(overfit_run)
    assert [r["step"] for r in steps] == list(range(1, STEPS + 1))
    assert [r["step"] for r in dev] == list(range(EVERY, STEPS + 1, EVERY))
    means = [r["dev"]["va_pearson_mean"] for r in dev]
    best = dev[int(np.argmax(means))]
    # the run overfits: the best step lies inside it and the last evaluation is clearly worse
    assert EVERY < best["step"] < STEPS and means[-1] < max(means) - 0.01, means
    assert all(r["best_step"] == best["step"] for r in dev[-1:])

    info = json.loads((overfit_run / "model" / "carl" / "carl.json").read_text())
    assert info["selection"] == {
        "metric": "va_pearson_mean",
        "best_step": best["step"],
        "dev": best["dev"],
        "eval_every": EVERY,
        "steps_trained": STEPS,
        "stopped_early": False,
    }
    assert f"step {best['step']} of {STEPS}" in (overfit_run / "model" / "README.md").read_text()

    # the exported heads are the best step's weights, not the last step's
    saved = load_file(str(best_folder(overfit_run, best["step"]) / "model.safetensors"))
    heads = load_file(str(overfit_run / "model" / "carl" / "heads.safetensors"))
    for name, tensor in heads.items():
        assert np.array_equal(tensor.numpy(), saved[name].numpy()), name
    last = load_file(str(overfit_run / "checkpoints" / f"step-{STEPS}" / "model.safetensors"))
    assert any(not np.array_equal(t.numpy(), last[k].numpy()) for k, t in heads.items())
    # and the exported model scores the logged best on dev
    va = np.stack(AffectEncoder.load(str(overfit_run)).predict(dev_texts), axis=1)
    r = (pearson(va[:, 0], dev_labels[:, 0]) + pearson(va[:, 1], dev_labels[:, 1])) / 2
    assert r == pytest.approx(best["dev"]["va_pearson_mean"], abs=1e-4)
    # only the best step's weights are kept
    assert sorted(p.name for p in (overfit_run / "selection").iterdir()) == [f"step-{best['step']}"]


def test_early_stopping_stops_at_the_expected_evaluation(tmp_path, overfit_run, overfit_overrides):
    patience = 2
    full_steps, full_dev = records(overfit_run)
    since, expected = 0, None
    for r in full_dev:
        since = 0 if r["improved"] else since + 1
        if since == patience:
            expected = r
            break
    assert expected is not None and expected["step"] < STEPS
    CarlTrainer(
        load_config(None, overfit_overrides + [f"train.early_stopping_patience={patience}"]),
        tmp_path,
        show_progress=False,
    ).train()
    steps, dev = records(tmp_path)
    assert [r["step"] for r in steps] == list(range(1, expected["step"] + 1))
    untimed = [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in dev + full_dev]
    assert untimed[: len(dev)] == [r for r in untimed[len(dev) :] if r["step"] <= expected["step"]]  # same trajectory
    for a, b in zip(steps, full_steps):
        assert a["loss"] == b["loss"]
    info = json.loads((tmp_path / "model" / "carl" / "carl.json").read_text())
    assert info["selection"]["stopped_early"] and info["selection"]["best_step"] == expected["best_step"]
    assert info["steps"] == expected["step"]
    # a finished, early-stopped run resumed with the same settings trains no further
    CarlTrainer(
        load_config(None, overfit_overrides + [f"train.early_stopping_patience={patience}"]),
        tmp_path,
        show_progress=False,
    ).train()
    assert records(tmp_path)[0] == steps


def test_resume_between_evaluations_keeps_the_best_state(tmp_path, overfit_overrides):
    overrides = overfit_overrides + ["train.max_steps=100", "train.checkpoint_every=30", "train.keep_checkpoints=10"]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    CarlTrainer(load_config(None, overrides), straight, show_progress=False).train()
    # a run killed after step 70 (between the evaluations of steps 60 and 80): its newest checkpoint is
    # step 60's; the best weights it wrote after that checkpoint are garbage that must not be used
    shutil.copytree(straight, resumed)
    shutil.rmtree(resumed / "model")
    for step in (90, 100):
        shutil.rmtree(resumed / "checkpoints" / f"step-{step}", ignore_errors=True)
    (resumed / "checkpoints" / "latest").write_text("step-60\n")
    at_60 = json.loads((resumed / "checkpoints" / "step-60" / "trainer_state.json").read_text())["selection"]
    for folder in (resumed / "selection").iterdir():
        if int(folder.name.split("-")[1]) > 60:
            (folder / "model.safetensors").write_bytes(b"garbage")
    lines = (resumed / "metrics.jsonl").read_text().splitlines()
    (resumed / "metrics.jsonl").write_text("".join(l + "\n" for l in lines if json.loads(l)["step"] <= 70))

    assert at_60["best_step"] is not None
    CarlTrainer(load_config(None, overrides), resumed, show_progress=False).train()

    untimed = [
        [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in part]
        for run in (resumed, straight)
        for part in records(run)
    ]
    assert untimed[:2] == untimed[2:]  # per-step and dev lines, bit for bit
    final = [
        json.loads((run / "checkpoints" / "step-100" / "trainer_state.json").read_text())["selection"]
        for run in (straight, resumed)
    ]
    assert final[0] == final[1]
    for name in ("carl/heads.safetensors", "model.safetensors", "carl/carl.json"):
        assert (resumed / "model" / name).read_bytes() == (straight / "model" / name).read_bytes(), name


def test_resume_refuses_a_changed_best_weights_file(tmp_path, overfit_overrides):
    overrides = overfit_overrides + ["train.max_steps=40", "train.checkpoint_every=40"]
    CarlTrainer(load_config(None, overrides), tmp_path, show_progress=False).train()
    best = json.loads((tmp_path / "checkpoints" / "step-40" / "trainer_state.json").read_text())["selection"]
    weights = best_folder(tmp_path, best["best_step"]) / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=str(weights)):
        CarlTrainer(load_config(None, overrides), tmp_path, show_progress=False).train()


def test_without_a_dev_file_a_tenth_of_train_is_held_out_and_selected_on(tmp_path, tiny_overrides, capsys):
    overrides = tiny_overrides + ["train.max_steps=3", "data.dev_fraction=0.1"]
    trainer = CarlTrainer(load_config(None, overrides), tmp_path, show_progress=False)
    rows = len(trainer.dev_data) + len(trainer.train_data)
    assert len(trainer.dev_data) == round(0.1 * rows)
    trainer.train()
    out = capsys.readouterr().out
    assert f"dev: held out {len(trainer.dev_data)} of {rows} training rows (10%" in out and "dev: exporting step" in out


def test_without_dev_data_nothing_is_selected(tmp_path, tiny_overrides, capsys):
    overrides = tiny_overrides + ["train.max_steps=3", "data.dev_fraction=0"]
    CarlTrainer(load_config(None, overrides), tmp_path, show_progress=False).train()
    assert "no model selection" in capsys.readouterr().out
    steps, dev = records(tmp_path)
    assert [r["step"] for r in steps] == [1, 2, 3] and dev == []
    assert "selection" not in json.loads((tmp_path / "model" / "carl" / "carl.json").read_text())
    assert not (tmp_path / "selection").exists() and math.isfinite(steps[-1]["loss"])
