"""The benchmark runner on a tiny run: cells, cache and resume, results.json, report and plots;
the ``carl benchmark`` arguments. (SimCSE, a trainer objective: tests/test_simcse_objective.py.)"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import carl.evaluation.benchmark as bench
from carl.evaluation.benchmark import BenchmarkSettings, plan_cells, run_benchmark
from carl.evaluation.cells import BenchmarkMismatch
from carl.evaluation.report import README_END, README_START, update_readme
from carl.evaluation.tasks import TaskSettings

TINY_TASKS = dict(
    limit=40, mr_limit=60, cv_folds=3, goemotions_train_limit=40, goemotions_dev_limit=40, geometry_limit=40
)
METHODS = ("frozen", "mse", "carl", "simcse", "vader")
PNGS = ("va_scatter.png", "embeddings_2d.png", "per_class_f1.png", "alignment_uniformity.png", "loss_curves.png")


class Counter:
    def __init__(self):
        self.trained: list[str] = []  # objective of each trainer construction


@pytest.fixture
def counted(monkeypatch) -> Counter:
    """Record trainer constructions through the benchmark module (every trained cell, SimCSE too)."""
    count = Counter()
    real_trainer = bench.CarlTrainer

    def trainer(config, *args, **kwargs):
        count.trained.append(config.objective.name)
        return real_trainer(config, *args, **kwargs)

    monkeypatch.setattr(bench, "CarlTrainer", trainer)
    return count


@pytest.fixture(scope="module")
def settings(tiny_encoder, tiny_data_overrides) -> BenchmarkSettings:
    pytest.importorskip("vaderSentiment")
    return BenchmarkSettings(
        methods=METHODS,
        seeds=(1, 2),
        encoder=tiny_encoder,
        overrides=(*tiny_data_overrides, "train.max_steps=3"),
        tasks=TaskSettings(**TINY_TASKS),
    )


def _run(out: Path, settings: BenchmarkSettings):
    logs = []
    results = run_benchmark(out, settings, show_progress=False, command="carl benchmark --tiny", log=logs.append)
    return results, logs


def test_plan_has_references_then_seeds_outermost(settings):
    names = [c.name for c in plan_cells(settings)]
    assert names == ["frozen", "vader", "mse-s1", "carl-s1", "simcse-s1", "mse-s2", "carl-s2", "simcse-s2"]
    carl = next(c for c in plan_cells(settings) if c.name == "carl-s2")
    assert "objective.name=carl" in carl.overrides and "train.seed=2" in carl.overrides


def test_benchmark_caches_resumes_and_reports(tmp_path, settings, counted):
    out = tmp_path / "bench"
    results, logs = _run(out, settings)
    assert sorted(counted.trained) == ["carl", "carl", "mse", "mse", "simcse", "simcse"]  # x 2 seeds
    assert sorted(results["computed_this_run"]) == sorted(c.name for c in plan_cells(settings))

    # --- results.json: every number, seed, configuration, versions, hardware
    saved = json.loads((out / "results.json").read_text())
    assert set(saved["cells"]) == {c.name for c in plan_cells(settings)}
    carl = saved["cells"]["carl-s1"]
    assert carl["seed"] == 1 and carl["config"]["objective"]["name"] == "carl"
    assert carl["config"]["train"]["seed"] == 1 and carl["training"]["steps"] == 3
    assert {"mcl", "mse", "ptd", "loss"} <= set(carl["training"]["curves"])
    simcse = saved["cells"]["simcse-s2"]
    assert simcse["config"]["objective"]["name"] == "simcse" and simcse["config"]["train"]["seed"] == 2
    assert set(simcse["training"]["curves"]) == {"simcse", "loss"} and simcse["training"]["steps"] == 3
    assert saved["environment"]["versions"]["torch"] and saved["environment"]["cpu_count"]
    assert saved["settings"]["seeds"] == [1, 2] and saved["task_sizes"]["sst2"] == {"train": 40, "dev": 40, "test": 40}
    assert "sst2" in carl["results"]["tasks"] and "emobank_test" in carl["results"]["geometry"]

    # --- report: tables with mean ± std and best-per-column marks; non-empty PNGs
    report = (out / "report.md").read_text()
    assert "carl benchmark --tiny" in report
    for title in ("## VA regression", "## Polarity", "## Emotion", "## Geometry", "## Cost"):
        assert title in report
    for section in report.split("\n## ")[1:5]:  # the four metric tables
        table = [line for line in section.splitlines() if line.startswith("| ")]
        assert len(table) >= 4 and any("**" in line for line in table[1:]), section[:80]
    assert "| carl | 2 |" in report and " ± " in report
    assert "IEMOCAP" in report and "sail.usc.edu" in report  # absent user corpora: how to obtain
    for name in PNGS:
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000, name
        assert f"]({name})" in report

    # --- second invocation: nothing recomputed, same numbers
    counted.trained.clear()
    again, logs = _run(out, settings)
    assert counted.trained == [] and again["computed_this_run"] == []
    assert all(line.endswith("cached") for line in logs if ": " in line and "wrote" not in line)
    assert json.dumps(again["cells"], sort_keys=True) == json.dumps(saved["cells"], sort_keys=True)

    # --- an interrupted cell (no cell file) is recomputed alone; its training resumes, adding no steps
    metrics = out / "runs" / "carl-s1" / "metrics.jsonl"
    steps_before = metrics.read_text().count("\n")
    (out / "cells" / "carl-s1.json").unlink()
    third, _ = _run(out, settings)
    assert counted.trained == ["carl"] and third["computed_this_run"] == ["carl-s1"]
    assert metrics.read_text().count("\n") == steps_before
    assert (
        third["cells"]["carl-s1"]["results"]["tasks"]["sst2"]["metrics"]
        == results["cells"]["carl-s1"]["results"]["tasks"]["sst2"]["metrics"]
    )

    # --- a cached cell under other settings is refused, not silently mixed in
    changed = BenchmarkSettings(
        methods=METHODS,
        seeds=(1, 2),
        encoder=settings.encoder,
        overrides=settings.overrides,
        tasks=TaskSettings(**{**TINY_TASKS, "limit": 30}),
    )
    with pytest.raises(BenchmarkMismatch, match="new --out"):
        _run(out, changed)

    # --- README section generated from the results
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n## Results\n\n{README_START}\nold\n{README_END}\n\nafter\n", encoding="utf-8")
    assert update_readme(readme, again, "bench/report.md")
    text = readme.read_text()
    assert "\nold\n" not in text and "carl benchmark --tiny" in text and "| carl | 2 |" in text
    assert text.endswith("after\n")


def test_cli_arguments_give_the_presets():
    from carl.cli import build_parser
    from carl.evaluation.benchmark_cli import settings_from_args

    quick = settings_from_args(build_parser().parse_args(["benchmark", "--quick", "--set", "train.batch_size=16"]))
    assert quick.quick and quick.seeds == (1,) and quick.tasks.limit == 500
    assert quick.overrides == ("train.max_steps=40", "train.batch_size=16")
    full = settings_from_args(
        build_parser().parse_args(
            ["benchmark", "--seeds", "1", "2", "3", "4", "--methods", "frozen", "carl", "--corpus", "fb=/x.csv"]
        )
    )
    assert full.seeds == (1, 2, 3, 4) and full.methods == ("frozen", "carl") and full.overrides == ("train.epochs=1",)
    assert full.tasks.limit == 0 and full.tasks.user_corpora == {"facebookposts": "/x.csv"}
    with pytest.raises(ValueError, match="unknown method"):
        BenchmarkSettings(methods=("carl", "bert"))
    with pytest.raises(ValueError, match="--set objective.name =carl would train every method"):
        BenchmarkSettings.preset(overrides=("objective.name =carl",))  # each method names its objective


def test_cells_cached_before_a_new_task_are_completed_not_retrained(
    tmp_path, tiny_encoder, tiny_data_overrides, counted
):
    """A cell cached without ``sickr`` gets only that task evaluated on its saved model and merged;
    without its model folder it is retrained; any other difference is still refused."""
    pytest.importorskip("vaderSentiment")
    old_tasks = tuple(t for t in TaskSettings().tasks if t != "sickr")
    make = lambda tasks, **changes: BenchmarkSettings(  # noqa: E731
        methods=("frozen", "mse", "vader"),
        seeds=(1, 2),
        encoder=tiny_encoder,
        overrides=(*tiny_data_overrides, "train.max_steps=3"),
        tasks=TaskSettings(**{**TINY_TASKS, "tasks": tasks, **changes}),
    )
    out = tmp_path / "bench"
    before, _ = _run(out, make(old_tasks))
    assert counted.trained == ["mse", "mse"] and "sickr" not in before["cells"]["mse-s1"]["results"]["tasks"]

    counted.trained.clear()
    shutil.rmtree(out / "runs" / "mse-s2" / "model")  # as after a fresh clone: runs/ is not committed
    after, logs = _run(out, make(TaskSettings().tasks))
    assert counted.trained == ["mse"]  # mse-s2 alone, which had lost its model
    assert sorted(after["computed_this_run"]) == ["frozen", "mse-s1", "mse-s2", "vader"]
    for name in ("frozen", "mse-s1", "mse-s2"):
        cell = after["cells"][name]
        assert -100 <= cell["results"]["tasks"]["sickr"]["metrics"]["spearman"] <= 100
        for task in old_tasks:  # the cached numbers are kept as they were
            assert (
                cell["results"]["tasks"][task]["metrics"] == before["cells"][name]["results"]["tasks"][task]["metrics"]
            )
        assert cell["spec"]["tasks"]["tasks"] == list(TaskSettings().tasks)
    assert [c["model"] for c in after["cells"]["mse-s1"]["completions"]] == ["saved model"]
    assert [c["model"] for c in after["cells"]["mse-s2"]["completions"]] == ["retrained"]
    assert "sickr" not in after["cells"]["vader"]["results"]["tasks"]  # a polarity score has no sentence meaning
    assert any("cached without sickr" in line for line in logs)

    counted.trained.clear()
    again, _ = _run(out, make(TaskSettings().tasks))  # complete now: plain cache hits
    assert counted.trained == [] and again["computed_this_run"] == []
    with pytest.raises(BenchmarkMismatch, match="new --out"):  # fewer tasks than cached: refused
        _run(out, make(old_tasks))
    with pytest.raises(BenchmarkMismatch, match="new --out"):  # another task setting: refused
        _run(out, make(TaskSettings().tasks, limit=30))


def test_a_metrics_only_record_drops_points_and_curves_at_any_depth():
    from carl.evaluation.cells import POINT_AND_CURVE_KEYS, without_points

    record = {
        "training": {"curves": {"loss": [[1.0, 0.5]]}, "median_step_seconds": 0.4},
        "results": {"tasks": {"emobank": {"test_predictions": [[0.1, 0.2]], "metrics": {"valence_pearson": 0.7}}}},
    }
    slim = without_points(record, POINT_AND_CURVE_KEYS)
    assert slim == {
        "training": {"median_step_seconds": 0.4},
        "results": {"tasks": {"emobank": {"metrics": {"valence_pearson": 0.7}}}},
    }
    assert without_points(record)["training"]["curves"] == {"loss": [[1.0, 0.5]]}  # the default keeps curves
