"""The ``carl`` command end to end with the real all-MiniLM-L6-v2 (alias ``minilm-l6``).

One short training run (48 EmoBank sentences, 3 steps) is shared by the module; the commands
run as subprocesses (``python -m carl.cli``) exactly as a user would call them.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from carl.cli import build_parser, main
from carl.data.emobank import load_emobank
from carl.inference import AffectEncoder

pytestmark = pytest.mark.real_model

SUBCOMMANDS = ("train", "evaluate", "embed", "predict")
HIDDEN = 384


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return load_emobank("test").texts[:24]


@pytest.fixture(scope="module")
def real_run(tmp_path_factory, run_cli) -> Path:
    out = tmp_path_factory.mktemp("minilm-run") / "run"
    result = run_cli(
        "train",
        "--output",
        out,
        "--no-progress",
        "--set",
        "objective.name=carl",  # what make demo trains
        "--set",
        "model.encoder=minilm-l6",
        "--set",
        "data.limit=48",
        "--set",
        "train.max_steps=3",
        "--set",
        "train.batch_size=16",
        "--set",
        "objective.mcl.queue_size=16",
        "--set",
        "train.num_threads=1",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "trained carl" in result.stdout
    return out


def test_train_writes_run_folder(real_run):
    lines = [json.loads(line) for line in (real_run / "metrics.jsonl").read_text().splitlines()]
    records = [r for r in lines if "dev" not in r]
    assert [r["step"] for r in records] == [1, 2, 3]
    # EmoBank's official dev split is scored at the last step
    assert [(r["step"], sorted(r["dev"])) for r in lines if "dev" in r] == [
        (3, ["va_pearson_arousal", "va_pearson_mean", "va_pearson_valence"])
    ]
    assert all(math.isfinite(r[k]) for r in records for k in ("loss", "mcl", "mse", "ptd"))
    info = json.loads((real_run / "model" / "carl" / "carl.json").read_text())
    assert info["objective"] == "carl" and info["scale"] == [1.0, 5.0] and info["steps"] == 3
    assert (real_run / "config.toml").is_file() and (real_run / "environment.json").is_file()


def test_sentence_transformers_loads_the_export(real_run, texts):
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(real_run / "model"), device="cpu")
    ours = AffectEncoder.load(str(real_run)).encode(texts, batch_size=8)
    theirs = st.encode(texts, batch_size=8, convert_to_numpy=True)
    assert ours.shape == theirs.shape == (len(texts), HIDDEN)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-5)
    # and training changed the encoder: the base MiniLM gives different embeddings
    base = AffectEncoder.load("minilm-l6").encode(texts[:4])
    assert np.abs(base - ours[:4]).max() > 1e-4


def test_embed_writes_npy(real_run, run_cli, texts, tmp_path):
    src = tmp_path / "texts.txt"
    src.write_text("\n".join(texts) + "\n", encoding="utf-8")
    out = tmp_path / "emb.npy"
    result = run_cli("embed", real_run, "--input", src, "--output", out, "--batch-size", "8")
    assert result.returncode == 0, result.stderr[-3000:]
    emb = np.load(out)
    assert emb.shape == (len(texts), HIDDEN) and emb.dtype == np.float32
    np.testing.assert_allclose(emb, AffectEncoder.load(str(real_run)).encode(texts), rtol=0, atol=1e-5)


def test_predict_writes_jsonl_on_the_training_scale(real_run, run_cli, texts, tmp_path):
    src = tmp_path / "texts.txt"
    src.write_text("\n".join(texts) + "\n", encoding="utf-8")
    out = tmp_path / "pred.jsonl"
    result = run_cli("predict", real_run, "--input", src, "--output", out)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["text"] for r in rows] == texts
    for r in rows:
        assert 1.0 <= r["valence"] <= 5.0 and 1.0 <= r["arousal"] <= 5.0, r


def test_evaluate_prints_pearson_table(real_run, run_cli, tmp_path):
    out = tmp_path / "eval.json"
    result = run_cli("evaluate", real_run, "--limit", "100", "--no-progress", "--output", out)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Pearson r" in result.stdout
    for dim in ("valence", "arousal"):
        match = re.search(rf"^\| {dim} \| (-?\d\.\d+) \|", result.stdout, re.M)
        assert match, result.stdout
        r = float(match.group(1))
        assert -1.0 <= r <= 1.0
        assert json.loads(out.read_text())["metrics"][f"{dim}_pearson"] == pytest.approx(r, abs=1e-4)


def test_unknown_config_key_exits_2_with_suggestion(tmp_path, capsys):
    code = main(["train", "--output", str(tmp_path / "run"), "--set", "objective.nmae=x"])
    err = capsys.readouterr().err
    assert code == 2
    assert "objective.nmae" in err and "objective.name" in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_subcommand_help_lists_options(command):
    result = subprocess.run(
        [sys.executable, "-m", "carl.cli", command, "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: carl {command}")
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    for action in sub._actions:
        for flag in action.option_strings:
            assert flag in result.stdout, f"{command} --help does not list {flag}"
    if command == "train":
        assert "objective.name" in result.stdout and "train.learning_rate" in result.stdout


def test_top_level_help_lists_subcommands():
    result = subprocess.run([sys.executable, "-m", "carl.cli", "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    for command in SUBCOMMANDS:
        assert command in result.stdout
