"""The variant study's pre-registered decision rule (carl/evaluation/variant_study.py), on dev only."""

from __future__ import annotations

import pytest

from carl.evaluation import finetune as ft
from carl.evaluation.benchmark import PINNED_OVERRIDES
from carl.evaluation.finetune_data import task_files
from carl.evaluation.finetune_report import groups
from carl.evaluation.variant_study import compare, decide, report_lines, variant_verdict


def _cells(task, method, devs, test=0.0):
    """Cells of one method and setting with the given dev scores (one per seed) and a fixed test score."""
    return [
        {
            "name": f"{task}-full-{method}-s{seed}",
            "task": task,
            "regime": "full",
            "method": method,
            "seed": seed,
            "metrics": {"macro_f1": test},
            "training": {"selection": {"metric": "class_macro_f1", "dev": {"class_macro_f1": dev}}},
        }
        for seed, dev in enumerate(devs, 1)
    ]


def _table(rows):
    cells = [c for task, method, devs in rows for c in _cells(task, method, devs)]
    return groups({"planned": [c["name"] for c in cells], "cells": {c["name"]: c for c in cells}})


def test_compare_uses_the_pooled_std_and_needs_three_seeds():
    a = {"mean": 0.52, "std": 0.01, "n": 3}
    b = {"mean": 0.50, "std": 0.01, "n": 3}
    assert compare(a, b) == "better" and compare(b, a) == "worse"
    # pooled std sqrt((0.03^2 + 0.01^2) / 2) = 0.0224 > 0.02
    assert compare({**a, "std": 0.03}, b) == "tie"
    assert compare({**a, "n": 2}, b) == "undecided" and compare(a, None) == "undecided"


def test_a_variant_is_chosen_only_without_a_loss():
    assert variant_verdict(["better", "tie"]) == "chosen"
    assert variant_verdict(["better", "worse"]) == "rejected"
    assert variant_verdict(["tie", "tie"]) == "rejected"
    assert variant_verdict(["tie", "undecided"]) == "undecided"


def test_default_is_the_qualified_method_and_ignores_test():
    rows = [
        ("ekman", "ft", [0.50, 0.51, 0.49]),
        ("ekman", "ft-dropout", [0.52, 0.53, 0.51]),  # the stronger plain fine-tuning on ekman
        ("ekman", "carl", [0.54, 0.55, 0.53]),
        ("ekman", "carl-negative", [0.58, 0.59, 0.57]),
        ("ekman", "carl-rank", [0.50, 0.50, 0.50]),
        ("sst5", "ft", [0.40, 0.41, 0.39]),
        ("sst5", "carl", [0.40, 0.40, 0.40]),
        ("sst5", "carl-negative", [0.45, 0.46, 0.44]),
        ("sst5", "carl-rank", [0.47, 0.47, 0.47]),
    ]
    result = decide(_table(rows), ["carl-negative", "carl-rank"])
    assert result["verdicts"] == {"carl-negative": "chosen", "carl-rank": "rejected"}  # rank: worse on ekman
    assert result["vs_baseline"]["carl"] == {"ekman-full": "better", "sst5-full": "tie"}
    assert result["qualified"] == ["carl-negative"] and result["default"] == "carl-negative"
    lines = "\n".join(report_lines(decide(_table(rows), ["carl-negative", "carl-rank"])))
    assert "| carl-negative | 0.5800 ± 0.0100 (3) | 0.4500 ± 0.0100 (3) | better, better | chosen |" in lines
    assert "default by the rule: carl-negative" in lines


def test_only_the_pre_registered_settings_are_judged():
    rows = [
        ("ekman", "ft", [0.50, 0.51, 0.49]),
        ("ekman", "carl", [0.50, 0.51, 0.49]),
        ("ekman", "carl-rank", [0.55, 0.56, 0.54]),
        # not pre-registered: a loss here must not reject carl-rank, nor appear in the section
        ("goemotions28", "ft", [0.40, 0.41, 0.39]),
        ("goemotions28", "carl", [0.40, 0.41, 0.39]),
        ("goemotions28", "carl-rank", [0.30, 0.31, 0.29]),
    ]
    result = decide(_table(rows), ["carl-rank"])
    assert result["settings"] == ["ekman-full"] and result["verdicts"] == {"carl-rank": "chosen"}
    assert "goemotions28" not in "\n".join(report_lines(decide(_table(rows), ["carl-rank"])))


def test_without_a_qualified_method_the_default_is_the_best_dev_rank_and_says_so():
    rows = [
        ("ekman", "ft", [0.55, 0.56, 0.54]),
        ("ekman", "carl", [0.54, 0.55, 0.53]),
        ("sst5", "ft", [0.41, 0.42, 0.40]),
        ("sst5", "carl", [0.40, 0.41, 0.39]),
    ]
    result = decide(_table(rows), [])
    assert result["qualified"] == [] and result["default"] == "ft"
    assert "no method beats plain fine-tuning" in "\n".join(report_lines(decide(_table(rows), [])))
    two_seeds = [(task, method, devs[:2]) for task, method, devs in rows]
    one_seed = "\n".join(report_lines(decide(_table([*two_seeds, ("ekman", "ft-dropout", [0.57])]), ["ft-dropout"])))
    assert one_seed.count("| ft-dropout |") == 1 and "| ft-dropout | 0.5700 (1) | – |  |  |" in one_seed
    assert "undecided" in "\n".join(report_lines(decide(_table(two_seeds), [])))
    assert "provisional" not in "\n".join(report_lines(result))
    # a variant still undecided may yet be chosen and join the candidates: the default says so
    waiting = "\n".join(report_lines(decide(_table([*rows, ("ekman", "carl-rank", [0.60])]), ["carl-rank"])))
    assert "the best mean dev rank is ft" in waiting
    assert "- provisional: a variant chosen later joins the candidates; undecided: carl-rank (open: " in waiting
    # the settings it still needs: fewer than 3 seeds on ekman, none on sst5
    assert "carl-rank (open: ekman-full, sst5-full)" in waiting


@pytest.mark.parametrize("name", sorted(ft.VARIANTS))
def test_a_variant_cell_trains_its_objective_with_its_switches(name):
    settings = ft.FinetuneSettings(tasks=("ekman", "emobank"), regimes=("full",), methods=(name, "carl"), seeds=(1,))
    cells, _ = ft.plan_cells(settings)
    for cell in cells:
        overrides = ft.cell_overrides(cell, settings, task_files(cell.task, "full", 1, ft.Path("OUT")), "enc")
        assert overrides[: len(PINNED_OVERRIDES)] == list(PINNED_OVERRIDES)  # compared without preservation
        assert overrides[len(PINNED_OVERRIDES)] == f"objective.name={ft.OBJECTIVES[cell.method][cell.task.kind]}"
        switches = ft.VARIANTS[name].switches if cell.method == name else ()
        assert [o for o in overrides if o.startswith(("objective.ptd", "train.dropout"))] == list(switches)
    with pytest.raises(ValueError, match="unknown method"):
        ft.FinetuneSettings(methods=("carl-nonsense",))


def _study_results():
    """A grid's results.json with one setting: carl-negative chosen, carl-rank rejected, carl-dropout undecided."""
    rows = [
        ("ekman", "ft", [0.50, 0.51, 0.49]),
        ("ekman", "ft-dropout", [0.52, 0.53, 0.51]),
        ("ekman", "carl", [0.54, 0.55, 0.53]),
        ("ekman", "carl-negative", [0.58, 0.59, 0.57]),  # better than carl: chosen
        ("ekman", "carl-rank", [0.50, 0.50, 0.50]),  # worse: rejected
        ("ekman", "carl-dropout", [0.58]),  # one seed: undecided
    ]
    cells = [c for task, method, devs in rows for c in _cells(task, method, devs)]
    return {
        "planned": [c["name"] for c in cells],
        "cells": {c["name"]: c for c in cells},
        "settings": {
            "tasks": ["ekman"],
            "regimes": ["full"],
            "methods": [m for _, m, _ in rows],
            "encoder": "tiny",
            "seeds": [1, 2, 3],
            "overrides": [],
        },
        "command": "carl benchmark --protocol finetune",
        "budget": {"batch_size": 32, "regimes": {}, "tasks": {}, "mcl_queue_size": {}, "dev_cap": 1000},
        "runtime": {"all_cells_seconds": 0.0},
    }


def test_readme_shows_a_variant_only_once_chosen_and_names_the_others():
    from carl.evaluation.finetune_report import readme_section

    results = _study_results()
    section = readme_section(results, "out/report.md")
    assert "| task | regime | metric | ft | ft-dropout | carl | carl-negative |" in section
    assert "without a column (verdict on dev so far): carl-rank (rejected), carl-dropout (undecided)." in section


def test_the_report_shows_the_variant_study_plot(tmp_path):
    from carl.evaluation.finetune_report import write_report
    from carl.evaluation.plots import variant_gaps

    report = write_report(_study_results(), tmp_path).read_text()
    assert "![Variant study on dev" in report and "(variant_study.png)" in report
    assert (tmp_path / "variant_study.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "## Missing cells\n\nnone: the grid is complete\n" in report
    # without carl's dev scores there is nothing to draw a gap to
    no_carl = decide(_table([("ekman", "ft", [0.5, 0.5, 0.5]), ("ekman", "carl-rank", [0.6, 0.6, 0.6])]), ["carl-rank"])
    assert variant_gaps(no_carl, tmp_path / "none") is None


def test_missing_cells_leave_out_the_rejected_variants():
    from carl.evaluation.finetune_report import report_text

    results = _study_results()
    results["settings"]["regimes"] = ["full", "k8"]
    results["planned"] += [f"ekman-k8-{m}-s{seed}" for m in ("carl-rank", "carl-dropout") for seed in (1, 2, 3)]
    report = report_text(results)
    assert "## Missing cells\n\n- ekman-k8: carl-dropout (seeds 1, 2, 3)\n" in report
    assert "Not listed: the cells of the rejected variants (carl-rank).\n" in report
