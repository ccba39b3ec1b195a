"""The speed benchmarks run end to end on a tiny encoder and report what they measured."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def run_script(name: str, *args: str) -> None:
    done = subprocess.run([sys.executable, name, *args], cwd=BENCHMARKS, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


def test_train_speed_reports_each_objective_relative_to_mse(tmp_path, tiny_encoder):
    run_script(
        "train_speed.py",
        "--steps",
        "3",
        "--warmup",
        "1",
        "--processes",
        "1",
        "--batch-size",
        "8",
        "--objectives",
        "mse",
        "carl",
        "--encoder",
        tiny_encoder,
        "--out",
        str(tmp_path),
    )
    cells = json.loads((tmp_path / "results.json").read_text())["cells"]
    assert [c["objective"] for c in cells] == ["mse", "carl"]
    assert all(c["steps_timed"] == 2 and c["median_step_s"] > 0 for c in cells)
    assert "| carl | 1 |" in (tmp_path / "report.md").read_text()


def test_profile_step_profiles_each_cell_including_another_precision(tmp_path, tiny_encoder):
    # a second precision in the same process needs accelerate's process-wide state reset
    run_script(
        "profile_step.py",
        "--cells",
        "mse",
        "carl@bf16",
        "--steps",
        "2",
        "--warmup",
        "1",
        "--batch-size",
        "8",
        "--encoder",
        tiny_encoder,
        "--out",
        str(tmp_path),
    )
    rows = json.loads((tmp_path / "results.json").read_text())["rows"]
    assert [r["cell"] for r in rows] == ["mse", "carl@bf16"]
    for r in rows:
        assert r["wall_ms"] > 0 and r["top_host"] and r["kernel_launches"] == 0  # no GPU here
    ops = {t["op"] for t in rows[1]["top_host"]}
    assert not any(op.startswith("ProfilerStep") for op in ops)
