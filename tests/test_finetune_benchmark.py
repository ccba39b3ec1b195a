"""The fine-tuning protocol (``carl benchmark --protocol finetune``) on a tiny encoder and synthetic
tasks: plan order, k-per-class sampling, a tiny grid with cache, resume and spec check, the report."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import carl.evaluation.finetune as ft
from carl.cli import build_parser, main
from carl.data.emobank import load_emobank
from carl.data.emotion_va import emotion_to_va
from carl.data.errors import DataError
from carl.evaluation.benchmark_cli import finetune_settings_from_args
from carl.evaluation.cells import BenchmarkMismatch
from carl.evaluation.finetune import FinetuneSettings, plan_cells, run_finetune
from carl.evaluation.finetune_data import SPLIT_LOADERS, LabelledSplit, cap_dev, sample_per_class
from carl.evaluation.finetune_report import report_text
from carl.testing import QUADRANT_CLASSES, synthetic_emotion_corpus

CLASSES = tuple(sorted(QUADRANT_CLASSES))  # joy, relief, anger, sadness: all in carl's goemotions VA table
SPLIT_SEEDS = {"train": 0, "dev": 1, "test": 2}
SPLIT_SIZES = {"train": 96, "dev": 48, "test": 48}


def synthetic_split(split: str, multi_label: bool = False) -> LabelledSplit:
    texts, labels = synthetic_emotion_corpus(SPLIT_SIZES[split], SPLIT_SEEDS[split], multi_label=multi_label)
    return LabelledSplit(texts, labels, CLASSES, multi_label, f"synthetic {split}")


@pytest.fixture
def synthetic_tasks(monkeypatch):
    """``ekman`` and ``goemotions28`` read the synthetic emotion corpus instead of GoEmotions."""
    monkeypatch.setitem(SPLIT_LOADERS, "ekman", synthetic_split)
    monkeypatch.setitem(SPLIT_LOADERS, "goemotions28", lambda split: synthetic_split(split, multi_label=True))


@pytest.fixture
def counted(monkeypatch) -> list[str]:
    """The objective of every trainer the protocol constructs."""
    trained: list[str] = []
    real = ft.CarlTrainer

    def trainer(config, *args, **kwargs):
        trained.append(config.objective.name)
        return real(config, *args, **kwargs)

    monkeypatch.setattr(ft, "CarlTrainer", trainer)
    return trained


def tiny_settings(tiny_encoder: str, **changes) -> FinetuneSettings:
    overrides = (
        "train.max_steps=4",
        "train.eval_every=2",
        "train.checkpoint_every=2",
        "train.learning_rate=1e-3",
        "train.num_threads=1",
    )
    base = dict(tasks=("ekman",), methods=("ft", "probe"), regimes=("full",), seeds=(1,), encoder=tiny_encoder)
    base["overrides"] = overrides + tuple(changes.pop("extra", ()))
    return FinetuneSettings(**{**base, **changes})


def _run(out: Path, settings: FinetuneSettings) -> tuple[dict, list[str]]:
    logs: list[str] = []
    return run_finetune(out, settings, show_progress=False, command="carl benchmark --tiny", log=logs.append), logs


# --------------------------------------------------------------------------- plan and data


def test_plan_runs_task_then_seed_then_regime_then_method():
    settings = FinetuneSettings(
        tasks=("ekman", "emobank"), methods=("ft", "carl", "setfit"), regimes=("full", "k8"), seeds=(1, 2)
    )
    cells, skipped = plan_cells(settings)
    names = [c.name for c in cells]
    assert names[:6] == [
        "ekman-full-ft-s1",
        "ekman-full-carl-s1",
        "ekman-full-setfit-s1",
        "ekman-k8-ft-s1",
        "ekman-k8-carl-s1",
        "ekman-k8-setfit-s1",
    ]
    assert names[6] == "ekman-full-ft-s2" and len(names) == 12 + 4  # emobank: full only, no setfit
    assert names[12:] == ["emobank-full-ft-s1", "emobank-full-carl-s1", "emobank-full-ft-s2", "emobank-full-carl-s2"]
    assert [s["cell"] for s in skipped] == ["emobank-full-setfit-s1", "emobank-full-setfit-s2"]
    assert "regression" in skipped[0]["reason"]


def test_plan_skips_a_first_stage_holding_the_task_labels_in_low_resource_regimes():
    settings = FinetuneSettings(
        tasks=("ekman", "sst5"), methods=("carl-stage", "carl-stage-goemotions"), regimes=("full", "k8"), seeds=(1,)
    )
    cells, skipped = plan_cells(settings)
    assert [c.name for c in cells] == [
        "ekman-full-carl-stage-s1",
        "ekman-full-carl-stage-goemotions-s1",
        "ekman-k8-carl-stage-s1",
        "sst5-full-carl-stage-s1",
        "sst5-full-carl-stage-goemotions-s1",
        "sst5-k8-carl-stage-s1",
        "sst5-k8-carl-stage-goemotions-s1",
    ]
    assert [s["cell"] for s in skipped] == ["ekman-k8-carl-stage-goemotions-s1"]
    assert "all of ekman's training texts" in skipped[0]["reason"] and "8 examples per class" in skipped[0]["reason"]


def test_the_budget_counts_a_resumed_run_by_all_its_steps_not_its_last_process():
    fresh = {"wall_seconds": 120.0, "training": {"wall_seconds": 100.0, "train_seconds": 90.0}}
    resumed = {"wall_seconds": 50.0, "training": {"wall_seconds": 40.0, "train_seconds": 300.0}}
    stage = {"training": {"wall_seconds": 40.0, "train_seconds": 30.0}}  # a first stage: no scoring
    assert [ft.spent_seconds(r) for r in (fresh, resumed, stage)] == [120.0, 300.0, 40.0]
    assert ft.spent_seconds({"wall_seconds": 7.0}) == 7.0  # the probe and SetFit record no steps


def test_plan_probes_all_the_data_once_and_each_subset_per_seed():
    settings = FinetuneSettings(tasks=("ekman",), methods=("probe",), regimes=("full", "k8"), seeds=(2, 3))
    cells, skipped = plan_cells(settings)
    assert [c.name for c in cells] == ["ekman-full-probe-s2", "ekman-k8-probe-s2", "ekman-k8-probe-s3"]
    assert skipped == []


def test_settings_refuse_unknown_names():
    with pytest.raises(ValueError, match="unknown regime"):
        FinetuneSettings(regimes=("k16",))
    with pytest.raises(ValueError, match="unknown method"):
        FinetuneSettings(methods=("bert",))
    with pytest.raises(ValueError, match="--set objective.name=mse would train every method with one objective"):
        FinetuneSettings(overrides=("train.seed=2", "objective.name=mse"))


def test_sample_per_class_is_seeded_and_names_a_short_class():
    train = synthetic_split("train")
    first = sample_per_class(train, 5, seed=1)
    assert np.array_equal(first, sample_per_class(train, 5, seed=1))
    assert not np.array_equal(first, sample_per_class(train, 5, seed=2))
    counts = {c: sum(train.labels[i][0] == c for i in first) for c in CLASSES}
    assert counts == dict.fromkeys(CLASSES, 5)
    short = train.subset([i for i, names in enumerate(train.labels) if names[0] != "relief" or i < 10])
    n_relief = sum(names[0] == "relief" for names in short.labels)
    with pytest.raises(DataError, match=f"class 'relief' has {n_relief} training examples"):
        sample_per_class(short, n_relief + 1, seed=1)


def test_cap_dev_keeps_class_shares():
    dev = synthetic_split("train")  # 96 rows
    capped = cap_dev(dev, cap=48, seed=0)
    assert len(capped.texts) == 48 and set(capped.texts) <= set(dev.texts)
    for c in CLASSES:
        share = sum(n[0] == c for n in dev.labels) / 96
        assert abs(sum(n[0] == c for n in capped.labels) / 48 - share) <= 1 / 48 + 1e-9
    assert cap_dev(dev, cap=200) is dev


# --------------------------------------------------------------------------- a tiny grid


def test_tiny_grid_caches_resumes_refuses_and_reports(tmp_path, tiny_encoder, synthetic_tasks, counted):
    out = tmp_path / "ft"
    settings = tiny_settings(tiny_encoder, methods=("ft", "carl-stage", "probe"))
    results, logs = _run(out, settings)
    assert counted == ["classify", "carl", "classify"]  # ft, the first stage, ft from it
    assert set(results["cells"]) == {"ekman-full-ft-s1", "ekman-full-carl-stage-s1", "ekman-full-probe-s1"}
    for name in results["cells"]:
        assert (out / "cells" / f"{name}.json").is_file()
    assert (out / "cells" / "stage-carl-s1.json").is_file() and (out / "data" / "ekman" / "train-full.csv").is_file()

    cell = json.loads((out / "cells" / "ekman-full-ft-s1.json").read_text())
    assert cell["training"]["steps"] == 4 and cell["training"]["best_step"] in (2, 4)
    run = out / "runs" / "ekman-full-ft-s1"  # a finished run keeps its model, not its checkpoints
    assert (run / "model").is_dir() and not (run / "checkpoints").exists() and not (run / "selection").exists()
    assert not (out / "runs" / "stage-carl-s1" / "checkpoints").exists()
    assert cell["training"]["median_step_seconds"] > 0 and cell["wall_seconds"] > 0
    assert cell["training"]["config"]["data"]["max_length"] == 64  # the pinned budget, --set on top
    assert results["budget"]["regimes"] == {"full": {"steps": 4, "eval_every": 2}}  # what this grid's cells ran
    assert results["budget"]["tasks"] == {} and results["budget"]["mcl_queue_size"] == {}
    assert {"macro_f1", "accuracy", "ece_before", "ece_after", "temperature"} <= set(cell["metrics"])
    stage = results["cells"]["ekman-full-carl-stage-s1"]
    assert stage["training"]["config"]["model"]["encoder"].endswith("runs/stage-carl-s1/model")
    assert 0 <= results["cells"]["ekman-full-probe-s1"]["metrics"]["macro_f1"] <= 1

    report = (out / "report.md").read_text()
    assert "## GoEmotions Ekman + neutral (single-label, 7 classes), full" in report
    assert "full: 4 steps, dev every 2" in report  # the --set overrides, not the pinned 1000 steps
    assert "| carl-stage |" in report and "none: the grid is complete" in report
    assert "First stage `stage-carl-s1`" in report and results["runtime"]["stage_seconds"] > 0
    assert json.loads((out / "results.json").read_text())["planned"] == list(results["cells"])

    # a rerun computes nothing
    counted.clear()
    _, logs = _run(out, settings)
    assert counted == [] and sum("cached" in line for line in logs) == 3

    # a clone keeps cells/, not runs/: a carl-stage cell still to run trains its first stage again
    shutil.rmtree(out / "runs" / "stage-carl-s1")
    (out / "cells" / "ekman-full-carl-stage-s1.json").unlink()
    _, logs = _run(out, settings)
    assert counted == ["carl", "classify"] and any("again: its model folder is gone" in line for line in logs)
    counted.clear()

    # --report-only: a larger grid trains nothing and reports its other cells missing
    results = run_finetune(
        out,
        tiny_settings(tiny_encoder, methods=("ft", "mcl", "probe")),
        show_progress=False,
        report_only=True,
        log=lambda line: None,
    )
    assert counted == [] and set(results["cells"]) == {"ekman-full-ft-s1", "ekman-full-probe-s1"}
    assert (
        "ekman-full-mcl-s1" in results["planned"] and "- ekman-full: mcl (seed 1)\n" in (out / "report.md").read_text()
    )

    # other settings: refused, naming the way out
    with pytest.raises(BenchmarkMismatch, match="new --out"):
        _run(out, tiny_settings(tiny_encoder, methods=("ft",), extra=("train.learning_rate=5e-4",)))


def test_the_goemotions_stage_trains_carl_on_emobank_plus_goemotions_mapped_to_va(
    tmp_path, tiny_encoder, synthetic_tasks, counted
):
    out = tmp_path / "ft"
    results, _ = _run(out, tiny_settings(tiny_encoder, methods=("carl-stage-goemotions",)))
    assert counted == ["carl", "classify"]  # the first stage, ft from it
    rows = list(csv.DictReader((out / "data" / "stage-emobank-goemotions" / "train.csv").open(encoding="utf-8")))
    emobank = load_emobank("train")
    texts, labels = synthetic_emotion_corpus(SPLIT_SIZES["train"], SPLIT_SEEDS["train"], multi_label=True)
    assert len(rows) == len(emobank.texts) + len(texts)
    va = np.array([[float(r["valence"]), float(r["arousal"])] for r in rows])
    assert [r["text"] for r in rows] == list(emobank.texts) + texts
    assert np.allclose(va[: len(emobank.texts)], emobank.labels, atol=1e-5)  # EmoBank's own VA, on 0-1
    mapped = [np.mean([emotion_to_va(name) for name in names], axis=0) for names in labels]
    assert np.allclose(va[len(emobank.texts) :], mapped, atol=1e-5)  # a row's labels' mean coordinates
    assert any(len(names) > 1 for names in labels)  # the mean is over several labels somewhere

    stage = json.loads((out / "cells" / "stage-carl-emobank-goemotions-s1.json").read_text())
    data = stage["training"]["config"]["data"]
    assert stage["corpus"] == "emobank-goemotions" and data["scale"] == "0-1"
    assert data["path"].endswith("train.csv") and data["dev_path"].endswith("stage-emobank-goemotions/dev.csv")
    cell = results["cells"]["ekman-full-carl-stage-goemotions-s1"]
    assert cell["training"]["config"]["model"]["encoder"].endswith("runs/stage-carl-emobank-goemotions-s1/model")
    report = (out / "report.md").read_text()
    assert "First stage `stage-carl-emobank-goemotions-s1` (carl on EmoBank plus GoEmotions mapped to VA" in report


def test_variant_cells_train_their_switches_and_report_the_study(tmp_path, tiny_encoder, synthetic_tasks, counted):
    out = tmp_path / "ft"
    settings = tiny_settings(
        tiny_encoder, methods=("ft", "carl", "ft-dropout", "mcl-rank"), extra=("objective.mcl.queue_size=32",)
    )
    results, _ = _run(out, settings)
    assert counted == ["classify", "carl-classify", "classify", "mcl-rank-classify"]
    config = results["cells"]["ekman-full-ft-dropout-s1"]["training"]["config"]
    assert config["train"]["dropout"] is True and results["methods"]["mcl-rank"].startswith("task head")
    assert "Variant study: dev only" in (out / "report.md").read_text()


def test_a_killed_cell_resumes_from_its_checkpoint(tmp_path, tiny_encoder, run_cli):
    """``carl benchmark --protocol finetune`` SIGKILLed after step 3 (checkpoint at 2) continues on rerun and
    ends with the numbers of an uninterrupted run."""
    settings = tiny_settings(tiny_encoder, tasks=("emobank",), methods=("ft",))
    reference, _ = _run(tmp_path / "uninterrupted", settings)
    out = tmp_path / "killed"
    args = ["benchmark", "--protocol", "finetune", "--tasks", "emobank", "--methods", "ft", "--seeds", "1"]
    args += ["--encoder", tiny_encoder, "--out", str(out), "--no-progress"]
    args += [f"--set={o}" for o in settings.overrides]
    killed = run_cli(*args, kill_at_step=3)
    assert killed.returncode == -9 and not (out / "cells" / "emobank-full-ft-s1.json").exists()
    resumed = run_cli(*args)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from" in resumed.stdout and "step-2" in resumed.stdout
    cell = json.loads((out / "cells" / "emobank-full-ft-s1.json").read_text())
    assert cell["training"]["steps"] == 4
    expected = reference["cells"]["emobank-full-ft-s1"]["metrics"]
    assert cell["metrics"] == pytest.approx(expected, abs=1e-6)


def test_multilabel_cell_scores_at_dev_thresholds(tmp_path, tiny_encoder, synthetic_tasks):
    results, _ = _run(tmp_path / "ft", tiny_settings(tiny_encoder, tasks=("goemotions28",), methods=("ft", "probe")))
    for method in ("ft", "probe"):
        metrics = results["cells"][f"goemotions28-full-{method}-s1"]["metrics"]
        assert 0 <= metrics["macro_f1"] <= 1 and 0 <= metrics["macro_f1_at_0.5"] <= 1
    card = json.loads(
        (tmp_path / "ft" / "runs" / "goemotions28-full-ft-s1" / "model" / "carl" / "carl.json").read_text()
    )
    assert card["multi_label"] and len(card["thresholds"]) == len(CLASSES)


SST5_NAMES = {"joy": "very positive", "relief": "positive", "anger": "very negative", "sadness": "negative"}


def test_low_resource_mcl_cell_reads_the_sst5_va_table(tmp_path, tiny_encoder, monkeypatch):
    def sst5_like(split: str) -> LabelledSplit:
        data = synthetic_split(split)
        names = tuple(SST5_NAMES[c] for c in CLASSES)
        return LabelledSplit(data.texts, [[SST5_NAMES[n[0]]] for n in data.labels], names, False, data.source)

    monkeypatch.setitem(SPLIT_LOADERS, "sst5", sst5_like)
    settings = tiny_settings(tiny_encoder, tasks=("sst5",), methods=("mcl",), regimes=("k8",))
    results, _ = _run(tmp_path / "ft", settings)
    cell = results["cells"]["sst5-k8-mcl-s1"]
    config = cell["training"]["config"]
    assert config["objective"]["name"] == "mcl-classify" and config["data"]["label_mapping"].endswith("va_mapping.json")
    train = (tmp_path / "ft" / "data" / "sst5" / "train-k8-s1.csv").read_text().splitlines()
    assert len(train) == 1 + 8 * len(CLASSES)
    assert "mcl" in cell["training"]["final"] and 0 <= cell["metrics"]["macro_f1"] <= 1


def test_emobank_cells_score_the_va_head_and_the_ridge_probe(tmp_path, tiny_encoder):
    settings = tiny_settings(tiny_encoder, tasks=("emobank",), methods=("ft", "probe"), regimes=("full", "k8"))
    results, _ = _run(tmp_path / "ft", settings)
    assert set(results["cells"]) == {"emobank-full-ft-s1", "emobank-full-probe-s1"}  # no k8 for regression
    for cell in results["cells"].values():
        assert -1 <= cell["metrics"]["valence_pearson"] <= 1 and -1 <= cell["metrics"]["arousal_pearson"] <= 1
    config = results["cells"]["emobank-full-ft-s1"]["training"]["config"]
    assert config["objective"]["name"] == "mse" and config["data"]["max_length"] == 128
    assert config["train"]["select_metric"] == "va_pearson_mean"


def test_a_setfit_cell_trains_the_shared_budget_and_is_reused(tmp_path, tiny_encoder, synthetic_tasks):
    settings = tiny_settings(tiny_encoder, methods=("setfit",))
    results, _ = _run(tmp_path / "ft", settings)
    metrics = results["cells"]["ekman-full-setfit-s1"]["metrics"]
    assert metrics["steps"] == 4 and 0 <= metrics["macro_f1"] <= 1 and metrics["train_seconds"] > 0
    assert (tmp_path / "ft" / "runs" / "ekman-full-setfit-s1" / "setfit.json").is_file()
    (tmp_path / "ft" / "cells" / "ekman-full-setfit-s1.json").unlink()  # re-scored from the saved fit
    again, _ = _run(tmp_path / "ft", settings)
    assert again["cells"]["ekman-full-setfit-s1"]["metrics"]["macro_f1"] == metrics["macro_f1"]


def test_setfit_without_its_package_is_a_clear_error(tmp_path, tiny_encoder, synthetic_tasks, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "carl.evaluation.setfit_peer", None)  # import fails
    with pytest.raises(RuntimeError, match="needs the setfit package"):
        _run(tmp_path / "ft", tiny_settings(tiny_encoder, methods=("setfit",)))
    assert not (tmp_path / "ft" / "cells").exists()
    # reporting a grid trains nothing, so it does not need the package: the cell is reported missing
    settings = tiny_settings(tiny_encoder, methods=("setfit",))
    results = run_finetune(tmp_path / "ft", settings, show_progress=False, report_only=True, log=lambda line: None)
    assert results["cells"] == {} and "- ekman-full: setfit (seed 1)\n" in (tmp_path / "ft" / "report.md").read_text()


# --------------------------------------------------------------------------- report and CLI


def _cell(task, regime, method, seed, value, step_seconds=None):
    record = {
        "name": f"{task}-{regime}-{method}-s{seed}",
        "task": task,
        "regime": regime,
        "method": method,
        "seed": seed,
        "metrics": {"macro_f1": value, "accuracy": value},
    }
    if step_seconds:
        record["training"] = {"median_step_seconds": step_seconds}
    return record


def test_report_of_a_partial_grid():
    cells = [
        _cell("ekman", "full", "ft", 1, 0.50, 0.2),
        _cell("ekman", "full", "ft", 2, 0.50, 0.2),
        _cell("ekman", "full", "carl", 1, 0.55, 0.4),
        _cell("ekman", "full", "probe", 1, 0.44),
    ]
    results = {
        "command": "carl benchmark --protocol finetune",
        "settings": {
            "encoder": "minilm-l6",
            "tasks": ["ekman"],
            "regimes": ["full"],
            "seeds": [1, 2],
            "overrides": [],
            "methods": ["ft", "carl", "probe"],
        },
        "budget": {"batch_size": 32, "regimes": {"full": {"steps": 1000, "eval_every": 200}}, "tasks": {}},
        "planned": [c["name"] for c in cells] + ["ekman-full-carl-s2", "ekman-full-probe-s2"],
        "cells": {c["name"]: c for c in cells},
        "runtime": {"all_cells_seconds": 60.0},
    }
    results["budget"].update(mcl_queue_size={}, dev_cap=2000)
    report = report_text(results)
    assert "| carl | 0.5500 (1) |" in report and "| ft | 0.5000 ± 0.0000 (2) |" in report
    assert "+10.0% against ft" in report and "+25.0% against probe" in report
    assert "seed spreads" not in report  # one carl seed: no spread to compare with
    cells.append(_cell("ekman", "full", "carl", 2, 0.53, 0.4))
    results["cells"] = {c["name"]: c for c in cells}
    assert "is more than both seed spreads (0.0141, 0.0000)" in report_text(results)
    assert "Paired" not in report  # one common seed: nothing to pair
    assert "carl - ft = +0.0400 ± 0.0141, positive in 2 of 2 seeds" in report_text(results)
    assert "| ekman | full | 0.200 | – | 0.400 | – | 2.00x |" in report
    assert "## Missing cells\n\n- ekman-full: carl, probe (seed 2)\n" in report
    assert "- ekman-full: probe (seed 2)\n" in report_text(results)  # carl's seed 2 came in


def test_cli_builds_finetune_settings_and_refuses_probe_options():
    parser = build_parser()
    args = parser.parse_args(
        ["benchmark", "--protocol", "finetune", "--tasks", "ekman", "--regimes", "full", "--seeds", "1", "2"]
    )
    settings = finetune_settings_from_args(args)
    assert settings.tasks == ("ekman",) and settings.regimes == ("full",) and settings.seeds == (1, 2)
    assert settings.methods == tuple(ft.METHODS)
    with pytest.raises(ValueError, match="--quick: only for --protocol probe"):
        finetune_settings_from_args(parser.parse_args(["benchmark", "--protocol", "finetune", "--quick"]))
    assert main(["benchmark", "--regimes", "k8"]) == 2  # the probe protocol has no regimes
    assert main(["benchmark", "--report-only"]) == 2
