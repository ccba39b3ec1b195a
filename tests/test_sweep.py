"""benchmarks/emobank_sweep.py: grid expansion and the report (no training)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from emobank_sweep import expand_grid, report

ENV = {"processor": "x86_64", "cpu_count": 2, "versions": {"torch": "2.x"}}


def test_grid_expands_seeds_and_groups_tables_by_name(tmp_path):
    grid = tmp_path / "g.toml"
    grid.write_text(
        '[[run]]\nname = "a"\nset = ["train.epochs=1"]\nseeds = [1, 2]\n'
        '[[run]]\nname = "b"\nset = []\n'
        '[[run]]\nname = "a"\nset = ["train.epochs=1"]\nseeds = [3]\n'
    )
    assert expand_grid(grid) == [
        ("a-s1", "a", ["train.epochs=1", "train.seed=1"]),
        ("a-s2", "a", ["train.epochs=1", "train.seed=2"]),
        ("b", "b", []),
        ("a-s3", "a", ["train.epochs=1", "train.seed=3"]),
    ]


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "no \\[\\[run\\]\\] tables"),
        ("[[run]]\nset = []\n", "number 1 has no name"),
        ('[[run]]\nname = "a"\nseeds = [1]\n[[run]]\nname = "a"\nseeds = [1]\n', "run names repeat: \\['a-s1'\\]"),
    ],
)
def test_bad_grids_are_refused_with_the_reason(tmp_path, text, message):
    grid = tmp_path / "g.toml"
    grid.write_text(text)
    with pytest.raises(SystemExit, match=message):
        expand_grid(grid)


def test_report_tables_runs_and_seed_mean_std():
    def row(name, config, v, a):
        return {
            "name": name,
            "config": config,
            "set": ["objective.name=carl", "train.seed=1"],
            "steps": 10,
            "median_step_s": 0.5,
            "metrics": {"valence_pearson": v, "arousal_pearson": a},
        }

    rows = [
        row("c-s1", "c", 0.70, 0.50),
        row("c-s2", "c", 0.74, 0.54),
        {"name": "d", "config": "d", "set": ["x=1"], "error": "train: boom"},
    ]
    text = report(rows, "cmd", ENV)
    assert "| c-s1 | 0.7000 | 0.5000 | 10 | 0.500 | objective.name=carl |" in text
    assert "| d | failed | | | | x=1 |" in text
    assert "| c | 2 | 0.7200 ± 0.0283 | 0.5200 ± 0.0283 |" in text
