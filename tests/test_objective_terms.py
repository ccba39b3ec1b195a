"""Objectives as data: each ``objective.name`` resolves to weighted terms; the trainer reads only those."""

from __future__ import annotations

import json

import pytest

from carl.config import OBJECTIVE_TERMS, ConfigError, Term, load_config
from carl.training.trainer import CarlTrainer


def test_each_objective_resolves_to_its_weighted_terms():
    cfg = load_config(
        None, ["objective.name=carl", "objective.mcl_weight=0.5", "objective.mse_weight=0.25", "objective.ptd_weight=2"]
    )
    assert cfg.objective.terms() == {
        "mcl": Term("mcl", "mcl_weight", "soft", 0.5),
        "mse": Term("mse", "mse_weight", weight=0.25),
        "ptd": Term("ptd", "ptd_weight", weight=2.0),
        "preserve": Term("preserve", "preserve_weight", weight=0.3),  # on by default (docs/method.md)
    }
    expected = {
        "carl": {"mcl", "mse", "ptd"},
        "mcl": {"mcl", "mse"},
        "supcon-hard": {"mcl", "mse"},
        "mse": {"mse"},
        "simcse": {"simcse"},
        "classify": {"classify"},  # objective.va_weight (default 0) adds an mse term
        "mcl-classify": {"classify", "mcl"},
        "carl-classify": {"classify", "mcl", "ptd"},
        "mcl-rank": {"mcl", "mse"},
        "mcl-rank-classify": {"classify", "mcl"},
        "carl-rank": {"mcl", "mse", "ptd"},
        "carl-rank-classify": {"classify", "mcl", "ptd"},
    }
    assert set(OBJECTIVE_TERMS) == set(expected)
    for name, losses in expected.items():
        labelled = ["data.label_column=label"] if "classify" in losses else []  # a classifier needs labels
        terms = load_config(
            None, [f"objective.name={name}", "objective.preserve_weight=0", *labelled]
        ).objective.terms()
        assert set(terms) == losses and all(t.weight == 1.0 for t in terms.values())
        # every objective trains its encoder, so every one has the preservation term (default 0.3)
        kept = load_config(None, [f"objective.name={name}", *labelled]).objective
        assert set(kept.terms()) == losses | {"preserve"} and kept.terms()["preserve"].weight == 0.3
    assert load_config(None, ["objective.name=supcon-hard"]).objective.terms()["mcl"].targets == "hard"
    assert load_config(None, ["objective.name=carl-rank"]).objective.terms()["mcl"].targets == "rank"


def test_zero_weights_drop_terms_and_an_empty_objective_is_refused():
    terms = load_config(None, ["objective.name=mcl", "objective.mse_weight=0"]).objective.terms()
    assert set(terms) == {"mcl", "preserve"}
    with pytest.raises(ConfigError, match="objective.mse_weight"):
        load_config(None, ["objective.name=mse", "objective.mse_weight=0"])


def test_the_trainer_applies_the_mse_weight_of_the_mse_objective(tmp_path, tiny_overrides):
    """Before objectives were data, ``mse`` ignored ``objective.mse_weight``."""
    overrides = tiny_overrides + ["objective.name=mse", "train.max_steps=2", "objective.mse_weight=0.5"]
    overrides.append("objective.preserve_weight=0")  # the loss is then the weighted mse alone
    CarlTrainer(load_config(None, overrides), tmp_path, show_progress=False).train()
    for line in (tmp_path / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        assert record["loss"] == pytest.approx(0.5 * record["mse"], rel=1e-6)


def test_train_help_lists_the_objectives(run_cli):
    done = run_cli("train", "--help")
    assert done.returncode == 0
    for name in OBJECTIVE_TERMS:
        assert name in done.stdout
    assert "simcse" in done.stdout and "mcl (soft)" in done.stdout
