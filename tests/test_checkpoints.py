"""Run folders that fail safe: no code runs on resume, bad checkpoints give way, mismatches are refused.

One module-level run (9 steps, a checkpoint every 3, the newest 2 kept: ``step-6`` and ``step-9``)
is copied into each test, damaged there, and resumed in-process.
"""

from __future__ import annotations

import json
import pickle
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from carl.config import ConfigError, load_config
from carl.training.checkpoint import latest_checkpoint
from carl.training.errors import CheckpointError
from carl.training.manifest import verify_manifest, write_manifest
from carl.training.rng_state import load_rng_state, save_rng_state
from carl.training.trainer import CarlTrainer

TIMING_KEYS = {"step_time", "samples_per_s"}
CARL_FILES = (
    "model.safetensors",
    "optimizer.safetensors",
    "optimizer.json",
    "scheduler.json",
    "rng-rank0.json",
    "trainer_state.json",
    "manifest.json",
)
# what accelerate's load_state (and transformers' Trainer) would read from a checkpoint folder
FOREIGN_FILES = (
    "custom_checkpoint_0.pkl",
    "random_states_0.pkl",
    "random_states_1.pkl",
    "optimizer.bin",
    "scheduler.bin",
    "pytorch_model.bin",
    "model.bin",
    "sampler.bin",
    "dl_state_dict.bin",
    "scaler.pt",
    "rng_state.pth",
    "training_args.bin",
    "model.pt",
)


class Plant:
    """Unpickling this creates ``marker``: what a crafted checkpoint file would do with os.system."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


@pytest.fixture(scope="module")
def overrides(tiny_overrides) -> list[str]:
    return tiny_overrides + [
        "train.max_steps=9",
        "train.checkpoint_every=3",
        "train.batch_size=8",
        "objective.mcl.queue_size=32",
        "train.keep_checkpoints=2",
    ]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, overrides) -> Path:
    out = tmp_path_factory.mktemp("run")
    CarlTrainer(load_config(None, overrides), out, show_progress=False).train()
    return out


@pytest.fixture()
def run(finished_run, tmp_path) -> Path:
    """A copy of the finished run, its model export removed as if killed after its last checkpoint."""
    copy = tmp_path / "run"
    shutil.copytree(finished_run, copy)
    shutil.rmtree(copy / "model")
    return copy


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]


def resume(run: Path, overrides: list[str], *extra: str) -> Path:
    return CarlTrainer(load_config(None, overrides + list(extra)), run, show_progress=False).train()


def assert_same_trace(got: list[dict], want: list[dict]) -> None:
    assert [r["step"] for r in got] == [r["step"] for r in want]
    for a, b in zip(got, want):
        for key in set(a) - TIMING_KEYS:
            assert a[key] == pytest.approx(b[key], rel=1e-6, abs=1e-6), (a["step"], key)


def plant(path: Path, marker: Path) -> None:
    path.write_bytes(pickle.dumps(Plant(marker)))


def test_checkpoint_holds_only_safetensors_and_json(finished_run):
    for step in ("step-6", "step-9"):
        folder = finished_run / "checkpoints" / step
        assert sorted(p.name for p in folder.iterdir()) == sorted(CARL_FILES)
        assert sorted(verify_manifest(folder)) == sorted(set(CARL_FILES) - {"manifest.json"})
        for name in CARL_FILES:
            head = (folder / name).read_bytes()[:2]
            assert head[:1] != b"\x80" and head != b"PK", f"{name} looks like a pickle or a torch.save zip"
    assert latest_checkpoint(finished_run).name == "step-9"


def test_rng_state_round_trips_through_json(tmp_path):
    def draw():
        return (
            random.random(),
            random.gauss(0, 1),
            np.random.rand(3).tolist(),
            np.random.randn(),
            torch.rand(3).tolist(),
        )

    random.gauss(0, 1)  # leaves a cached Gaussian in Python's state
    save_rng_state(tmp_path / "rng.json")
    want = draw()
    assert load_rng_state(tmp_path / "rng.json") == []
    assert draw() == want


def test_payload_is_live(tmp_path):
    """The planted bytes do run code when unpickled: the tests below would see it."""
    marker = tmp_path / "marker"
    plant(tmp_path / "x.pkl", marker)
    pickle.loads((tmp_path / "x.pkl").read_bytes())
    assert marker.exists()


def test_planted_pickles_beside_a_good_checkpoint_are_never_read(run, overrides, tmp_path, capsys):
    """Pickles under every name accelerate or transformers would load, even listed in the manifest,
    are ignored: the run resumes from step 9 and no code runs."""
    marker = tmp_path / "marker"
    for step in ("step-6", "step-9"):
        for name in FOREIGN_FILES:
            plant(run / "checkpoints" / step / name, marker)
        write_manifest(run / "checkpoints" / step)
    resume(run, overrides)
    assert not marker.exists()
    assert "resuming from" in capsys.readouterr().out
    assert (run / "model" / "modules.json").is_file()


@pytest.mark.parametrize("name", CARL_FILES)
def test_pickle_in_place_of_a_carl_file_never_runs(run, overrides, tmp_path, capsys, name):
    """Each file carl reads, replaced by a pickle with a matching manifest (an attacker who controls
    the folder): step-9 is refused naming the file and the run falls back to step 6, exactly."""
    marker = tmp_path / "marker"
    want = metrics(run)
    folder = run / "checkpoints" / "step-9"
    plant(folder / name, marker)
    if name != "manifest.json":
        write_manifest(folder)
    resume(run, overrides)
    assert not marker.exists()
    err = capsys.readouterr().err
    assert f"step-9/{name}" in err and "falling back to" in err and "step-6" in err
    assert_same_trace(metrics(run), want)


def test_pickles_everywhere_fail_with_one_clear_error(run, overrides, tmp_path):
    """Old-style (accelerate) checkpoints and pickled carl files in every checkpoint: one error, no code run,
    and nothing deleted."""
    marker = tmp_path / "marker"
    for step in ("step-6", "step-9"):
        for name in FOREIGN_FILES + CARL_FILES:
            plant(run / "checkpoints" / step / name, marker)
    with pytest.raises(CheckpointError, match=r"no usable checkpoint.*step-9: .*manifest\.json.*step-6: "):
        resume(run, overrides)
    assert not marker.exists()
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["latest", "step-6", "step-9"]


@pytest.mark.parametrize(
    "name, damage",
    [
        ("model.safetensors", "truncate"),
        ("optimizer.safetensors", "truncate"),
        ("trainer_state.json", "malformed"),
        ("optimizer.json", "malformed"),
        ("rng-rank0.json", "random"),
    ],
)
def test_damaged_newest_checkpoint_falls_back_to_previous(run, overrides, capsys, name, damage):
    want = metrics(run)
    file = run / "checkpoints" / "step-9" / name
    if damage == "truncate":
        file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])
    elif damage == "malformed":  # with a manifest that matches it, so that parsing is what fails
        file.write_text('{"step": 9, "epoch": ')
        write_manifest(file.parent)
    else:
        file.write_bytes(bytes(range(256)) * 4)
    resume(run, overrides)
    err = capsys.readouterr().err
    assert str(file) in err and f"falling back to {run / 'checkpoints' / 'step-6'}" in err
    assert_same_trace(metrics(run), want)
    for step in ("step-6", "step-9"):  # the good one kept, the bad one rewritten
        verify_manifest(run / "checkpoints" / step)


def test_latest_naming_a_missing_step_falls_back_and_keeps_good_checkpoints(run, overrides, capsys):
    want = metrics(run)
    shutil.rmtree(run / "checkpoints" / "step-9")
    resume(run, overrides)
    err = capsys.readouterr().err
    assert "names 'step-9', which does not exist" in err and "step-6" in err
    assert_same_trace(metrics(run), want)  # steps 7-9 again, not a restart from 0
    assert sorted(p.name for p in (run / "checkpoints").glob("step-*")) == ["step-6", "step-9"]


def test_latest_naming_a_step_when_none_exists_refuses(run, overrides):
    for step in ("step-6", "step-9"):
        shutil.rmtree(run / "checkpoints" / step)
    with pytest.raises(CheckpointError, match="names 'step-9'.*holds no checkpoint folder"):
        resume(run, overrides)
    assert not (run / "checkpoints" / "step-3").exists()


def test_missing_rng_state_refused_by_default_resumed_under_warn(run, overrides, capsys):
    (run / "checkpoints" / "step-9" / "rng-rank0.json").unlink()
    with pytest.raises(ConfigError, match=r"rng-rank0\.json is missing.*train\.resume_mismatch=warn"):
        resume(run, overrides)
    assert not (run / "model").exists()
    assert sorted(p.name for p in (run / "checkpoints").glob("step-*")) == ["step-6", "step-9"]
    resume(run, overrides, "train.resume_mismatch=warn")
    assert "warning: resuming from" in capsys.readouterr().err
    assert (run / "model" / "modules.json").is_file()


@pytest.mark.parametrize("changed", ["data", "encoder"])
def test_changed_data_or_encoder_refused_by_default_resumed_under_warn(
    tiny_encoder, synthetic_csv, tiny_overrides, tmp_path, capsys, changed
):
    data, encoder = tmp_path / "train.csv", tmp_path / "encoder"
    shutil.copy(synthetic_csv.train_path, data)
    shutil.copytree(tiny_encoder, encoder)
    overrides = tiny_overrides + [
        f"data.path={data}",
        f"model.encoder={encoder}",
        "train.max_steps=3",
        "train.checkpoint_every=3",
        "train.batch_size=8",
        "objective.mcl.queue_size=32",
    ]
    run = tmp_path / "run"
    resume(run, overrides)
    shutil.rmtree(run / "model")
    if changed == "data":  # one label of the first row
        lines = data.read_text().splitlines()
        text, valence, arousal = lines[1].rsplit(",", 2)
        lines[1] = f"{text},{1 - float(valence)},{arousal}"
        data.write_text("\n".join(lines) + "\n")
    else:
        config = json.loads((encoder / "config.json").read_text())
        (encoder / "config.json").write_text(json.dumps({**config, "layer_norm_eps": 1e-5}))
    with pytest.raises(ConfigError, match=rf"refusing to resume.*{changed}.*changed"):
        resume(run, overrides)
    resume(run, overrides, "train.resume_mismatch=warn")
    warning = capsys.readouterr().err.split("warning: resuming from", 1)[1]
    assert {"data": "the training data changed", "encoder": "its files' sha256"}[changed] in warning
    assert (run / "model" / "modules.json").is_file()


def test_cli_refusal_is_one_line(run, overrides, run_cli):
    (run / "checkpoints" / "step-9" / "rng-rank0.json").unlink()
    args = ["train", "--output", str(run), "--no-progress"] + [a for o in overrides for a in ("--set", o)]
    done = run_cli(*args)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("carl train: error: refusing to resume")


def test_max_length_beyond_encoder_positions_refused_before_training(tiny_overrides, tmp_path):
    with pytest.raises(ConfigError, match=r"data\.max_length = 129 exceeds the 128 positions"):
        CarlTrainer(load_config(None, tiny_overrides + ["data.max_length=129"]), tmp_path, show_progress=False).train()
    assert not (tmp_path / "metrics.jsonl").exists()
