"""WiSE-FT interpolation of a trained backbone with its starting encoder (benchmarks/wise_ft.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from wise_ft import interpolate  # noqa: E402


def model_folder(path: Path, tensors: dict) -> Path:
    path.mkdir()
    save_file(tensors, str(path / "model.safetensors"))
    (path / "config.json").write_text("{}")
    return path


def test_interpolate_mixes_float_weights_and_keeps_the_rest(tmp_path):
    start = model_folder(tmp_path / "start", {"w": torch.zeros(2, 3), "ids": torch.arange(3), "extra": torch.ones(1)})
    tuned = model_folder(tmp_path / "tuned", {"w": torch.full((2, 3), 4.0), "ids": torch.arange(3) + 7})
    for alpha, expected in ((0.0, 0.0), (0.25, 1.0), (1.0, 4.0)):
        into = tmp_path / f"a{alpha}"
        interpolate(tuned, start, alpha, into)
        mixed = load_file(str(into / "model.safetensors"))
        assert set(mixed) == {"w", "ids"} and torch.equal(mixed["w"], torch.full((2, 3), expected))
        assert torch.equal(mixed["ids"], torch.arange(3) + 7)  # integer buffers are the tuned model's
        assert (into / "config.json").read_text() == "{}"  # the rest of the folder is copied


def test_interpolate_refuses_a_weight_the_start_does_not_have(tmp_path):
    start = model_folder(tmp_path / "start", {"w": torch.zeros(2, 3)})
    tuned = model_folder(tmp_path / "tuned", {"w": torch.zeros(3, 2)})
    with pytest.raises(SystemExit, match="w has no counterpart"):
        interpolate(tuned, start, 0.5, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_alpha_one_is_the_sweep_point_itself_and_the_report_keeps_the_gains(tmp_path):
    done = subprocess.run(
        [sys.executable, "benchmarks/wise_ft.py", "--points", "carl-w0-s1", "--alphas", "1", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    sweep = json.loads((ROOT / "benchmarks/results/preserve_sweep/cells/carl-w0-s1.json").read_text())
    results = json.loads((tmp_path / "results.json").read_text())
    (row,) = results["rows"]
    assert row["sickr/spearman"] == sweep["results"]["tasks"]["sickr"]["metrics"]["spearman"]
    assert row["alpha"] == 1 and row["objective"] == "carl"
    assert results["command"] == f"python benchmarks/wise_ft.py --points carl-w0-s1 --alphas 1 --out {tmp_path}"
    assert "| carl-w0-s1 | 1 |" in (tmp_path / "report.md").read_text()
    assert (tmp_path / "front.png").stat().st_size > 0
