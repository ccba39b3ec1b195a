"""The benchmark: every method x seed trained, probed on every task, cached, reported.

    carl benchmark --out benchmarks/results/main            # the default comparison
    carl benchmark --out benchmarks/results/quick --quick   # one seed, subsets (< 20 min)

A *cell* is one method with one seed (``carl-s1``), or a seedless reference (``frozen``,
``vader``, ``textblob``). Each cell trains into ``OUT/runs/<cell>`` (carl's trainer, whose
``objective.name`` picks the method's terms, SimCSE included), is probed on every task with :func:`carl.evaluation.tasks.evaluate_encoder`
and is written to ``OUT/cells/<cell>.json`` once finished. A rerun of the same command skips
finished cells and resumes an interrupted training from its last checkpoint. A cell's spec is
its training spec (what its model depends on) plus its task settings: a cached cell that matches
but ran fewer tasks (a task added to the defaults since, such as ``sickr``) is completed by
evaluating only the missing tasks on its model (``OUT/runs/<cell>/model``, retrained when absent)
and merged; a cell cached under any other settings is refused (train into a new ``--out``).

When all cells are done, ``OUT/results.json`` (every number, seed, configuration, software
versions, hardware, runtimes; the per-point arrays behind the plots stay in the cell files) and
``OUT/report.md`` with its PNG plots are written (:mod:`carl.evaluation.report`).
"""

from __future__ import annotations

import dataclasses
import gc
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from carl.atomic import write_text_atomic
from carl.config import ObjectiveConfig, load_config
from carl.evaluation.cells import (
    dump_json,
    mismatch,
    new_record,
    read_cell,
    read_metrics,
    refuse_objective_override,
    save_cell,
    spec_hash,
    training_summary,
    without_points,
)
from carl.evaluation.tasks import TaskSettings, evaluate_encoder, load_task_data
from carl.training.run_info import environment_info
from carl.training.trainer import CarlTrainer  # module attribute: tests count calls through it


@dataclass(frozen=True)
class Method:
    """A row of the comparison: how its encoder is obtained."""

    name: str
    kind: str  # "frozen" | "carl" (trained by carl's trainer with ``overrides``) | "lexicon"
    overrides: tuple[str, ...] = ()
    description: str = ""

    @property
    def seeded(self) -> bool:
        return self.kind == "carl"


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("frozen", "frozen", (), "the backbone, not trained (the floor)"),
        Method("mse", "carl", ("objective.name=mse",), "VA regression fine-tuning only"),
        Method("supcon-hard", "carl", ("objective.name=supcon-hard",), "hard-label (binned VA) SupCon, no PTD"),
        Method("mcl", "carl", ("objective.name=mcl",), "continuous-label momentum contrast, no PTD"),
        Method("carl", "carl", ("objective.name=carl",), "CARL: MCL + saliency PTD (hotflip), no preservation"),
        Method(
            "carl-preserve",
            "carl",
            ("objective.name=carl", f"objective.preserve_weight={ObjectiveConfig().preserve_weight:g}"),
            "CARL with carl's default preservation term: `carl train`'s default",
        ),
        Method(
            "carl-random-positions",
            "carl",
            ("objective.name=carl", "objective.ptd.selection=random"),
            "CARL with random positions instead of saliency",
        ),
        Method(
            "carl-replace-random",
            "carl",
            ("objective.name=carl", "objective.ptd.replacement=random"),
            "CARL, salient words replaced by random tokens",
        ),
        Method(
            "carl-replace-mask",
            "carl",
            ("objective.name=carl", "objective.ptd.replacement=mask"),
            "CARL, salient words replaced by the mask token",
        ),
        Method("simcse", "carl", ("objective.name=simcse",), "unsupervised SimCSE on the same sentences (tau 0.05)"),
        Method("vader", "lexicon", (), "VADER compound score (one feature)"),
        Method("textblob", "lexicon", (), "TextBlob polarity (one feature)"),
    )
}
# the variants under study (docs/method.md, "Variants under study"): run by name, not by default
VARIANT_METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method(
            "carl-affect-saliency",
            "carl",
            ("objective.name=carl", "objective.ptd.saliency_source=affect"),
            "CARL, saliency from the gradient of the VA loss alone",
        ),
        Method(
            "carl-embedding",
            "carl",
            ("objective.name=carl", "objective.ptd.replacement=embedding"),
            "CARL, salient words' embeddings shifted adversarially (one step, L2 radius epsilon)",
        ),
        Method(
            "carl-embedding-consistency",
            "carl",
            ("objective.name=carl", "objective.ptd.replacement=embedding", "objective.ptd.consistency_weight=1"),
            "carl-embedding plus VA consistency between the clean and shifted views",
        ),
        Method(
            "carl-negative",
            "carl",
            ("objective.name=carl", "objective.ptd.as_negative=true"),
            "CARL, perturbed sentences' keys also in the contrast as negatives",
        ),
        Method("mcl-rank", "carl", ("objective.name=mcl-rank",), "Rank-N-Contrast with the queue, no PTD"),
        Method("carl-rank", "carl", ("objective.name=carl-rank",), "CARL with Rank-N-Contrast instead of soft targets"),
        Method(
            "carl-ptd-warmup",
            "carl",
            ("objective.name=carl", "objective.ptd_schedule=warmup"),
            "CARL, PTD weight rising linearly over the first half of training",
        ),
        Method(
            "carl-ptd-decay",
            "carl",
            ("objective.name=carl", "objective.ptd_schedule=decay"),
            "CARL, PTD weight falling linearly over the last half of training",
        ),
        Method(
            "carl-dropout", "carl", ("objective.name=carl", "train.dropout=true"), "CARL with the backbone's dropout on"
        ),
        Method("mse-dropout", "carl", ("objective.name=mse", "train.dropout=true"), "VA regression with dropout on"),
    )
}
DEFAULT_METHODS: tuple[str, ...] = tuple(METHODS)
METHODS.update(VARIANT_METHODS)
DEFAULT_SEEDS: tuple[int, ...] = (1, 2, 3)
QUICK_SEEDS: tuple[int, ...] = (1,)
# the default benchmark trains every cell for one epoch of its data (EmoBank train: 252 steps of
# 32), pinned here so that a change of carl's default epochs does not silently change the budget
DEFAULT_TRAIN_OVERRIDES: tuple[str, ...] = ("train.epochs=1",)
# the methods compared are defined without the preservation term (whose default weight is 0.3 since
# 2026-12-03; docs/method.md, "Choosing the weight"): every trained cell starts from this pin and a
# method that wants the term sets it after it. Cached specs record it, so that a later change of
# the default cannot relabel them.
PINNED_OVERRIDES: tuple[str, ...] = ("objective.preserve_weight=0",)
# every trained cell of the quick variant stops after this many optimizer steps
QUICK_TRAIN_OVERRIDES: tuple[str, ...] = ("train.max_steps=40",)


def quick_task_settings(**changes) -> TaskSettings:
    """Subsets for ``--quick``: 500 sentences per split of every task, MR 1,000 (10 folds)."""
    base = dict(limit=500, mr_limit=1000, goemotions_train_limit=500, goemotions_dev_limit=500, geometry_limit=500)
    base.update(changes)
    return TaskSettings(**base)


@dataclass
class BenchmarkSettings:
    """What the benchmark runs; everything here is recorded in ``results.json``."""

    methods: tuple[str, ...] = DEFAULT_METHODS
    seeds: tuple[int, ...] = DEFAULT_SEEDS
    encoder: str = "minilm-l6"
    overrides: tuple[str, ...] = ()  # config overrides for every trained cell
    tasks: TaskSettings = field(default_factory=TaskSettings)
    quick: bool = False
    batch_size: int = 64

    def __post_init__(self) -> None:
        self.methods, self.seeds, self.overrides = tuple(self.methods), tuple(self.seeds), tuple(self.overrides)
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise ValueError(f"unknown method(s) {unknown}; choose from {list(METHODS)}")
        if not self.seeds:
            raise ValueError("give at least one seed")
        refuse_objective_override(self.overrides)

    @classmethod
    def preset(cls, quick: bool = False, **changes) -> BenchmarkSettings:
        """The default benchmark (one epoch per cell), or ``--quick`` (one seed, 40 steps, subsets).

        ``changes["overrides"]`` come after the preset's training overrides, so they win.
        """
        if quick:
            changes.setdefault("seeds", QUICK_SEEDS)
            changes.setdefault("tasks", quick_task_settings())
        preset = QUICK_TRAIN_OVERRIDES if quick else DEFAULT_TRAIN_OVERRIDES
        changes["overrides"] = preset + tuple(changes.get("overrides", ()))
        return cls(quick=quick, **changes)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["tasks"] = self.tasks.to_dict()
        return d


@dataclass
class Cell:
    """One method with one seed (seed None for seedless references)."""

    method: Method
    seed: int | None
    overrides: tuple[str, ...]

    @property
    def name(self) -> str:
        return self.method.name if self.seed is None else f"{self.method.name}-s{self.seed}"


def plan_cells(settings: BenchmarkSettings) -> list[Cell]:
    """References first, then seeds outermost: an interrupted run has every method at equal depth."""
    cells = []
    for name in settings.methods:
        method = METHODS[name]
        if not method.seeded:
            cells.append(Cell(method, None, ()))
    for seed in settings.seeds:
        for name in settings.methods:
            method = METHODS[name]
            if method.seeded:
                overrides = (
                    *PINNED_OVERRIDES,
                    *method.overrides,
                    f"model.encoder={settings.encoder}",
                    f"train.seed={seed}",
                    *settings.overrides,
                )
                cells.append(Cell(method, seed, overrides))
    return cells


def training_spec(cell: Cell, settings: BenchmarkSettings) -> dict:
    """What a cell's model depends on (method, seed, encoder or training overrides)."""
    spec: dict = {"method": cell.method.name, "kind": cell.method.kind, "seed": cell.seed}
    if cell.method.kind == "frozen":
        spec["encoder"] = settings.encoder
    if cell.method.seeded:
        spec["overrides"] = list(cell.overrides)
    return spec


def cell_spec(cell: Cell, settings: BenchmarkSettings) -> dict:
    """Everything a cell's numbers depend on: its training spec plus what is evaluated (``tasks``)."""
    return {**training_spec(cell, settings), "tasks": settings.tasks.to_dict()}


def cached_cell(path: Path, spec: dict) -> tuple[dict | None, tuple[str, ...]]:
    """The finished cell at ``path`` (None when absent) and the tasks of ``spec`` it lacks.

    A cell whose training spec and task settings match ``spec`` but which ran a subset of its
    tasks (cached before a task joined the defaults) comes back with the missing task names;
    any other difference raises :class:`~carl.evaluation.cells.BenchmarkMismatch`.
    """
    cell = read_cell(path)
    if cell is None or cell.get("spec_hash") == spec_hash(spec):
        return cell, ()
    saved = cell.get("spec") or {}
    saved_tasks, tasks = dict(saved.get("tasks") or {}), dict(spec["tasks"])
    done, wanted = tuple(saved_tasks.pop("tasks", ())), tuple(tasks.pop("tasks"))
    same_model = {k: v for k, v in saved.items() if k != "tasks"} == {k: v for k, v in spec.items() if k != "tasks"}
    if same_model and saved_tasks == tasks and set(done) <= set(wanted):
        return cell, tuple(t for t in wanted if t not in done)
    raise mismatch(path, cell, spec)


def train_cell(cell: Cell, run_dir: Path, show_progress: bool) -> tuple[str, dict]:
    """Train (or resume) a cell's encoder; returns (model path, resolved configuration)."""
    cfg = load_config(None, list(cell.overrides))
    trainer = CarlTrainer(cfg, run_dir, show_progress=show_progress)
    trainer.train()
    del trainer
    return str(run_dir), cfg.to_dict()


def run_cell(
    cell: Cell,
    settings: BenchmarkSettings,
    out: Path,
    data,
    *,
    show_progress: bool = True,
    log=print,
    drop: tuple[str, ...] = (),
) -> dict:
    """Compute one cell (train if needed, evaluate) and cache it without the keys ``drop``
    (:func:`~carl.evaluation.cells.without_points`); returns the cell record as cached."""
    spec = cell_spec(cell, settings)
    started = time.time()
    record = new_record(cell.name, spec, method=cell.method.name, kind=cell.method.kind, seed=cell.seed)
    model_path = settings.encoder  # frozen; unused by lexicons
    if cell.method.seeded:
        run_dir = out / "runs" / cell.name
        train_started = time.time()
        model_path, record["config"] = train_cell(cell, run_dir, show_progress)
        record["training"] = training_summary(read_metrics(run_dir), time.time() - train_started)
        record["run_dir"] = str(run_dir)
    elif cell.method.kind == "frozen":
        record["config"] = None
    eval_started = time.time()
    record["results"] = evaluate_cell(cell, model_path, data, settings, show_progress)
    if cell.method.kind != "lexicon":
        record["eval_seconds"] = time.time() - eval_started
    record["wall_seconds"] = time.time() - started
    record["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    if drop:
        record = without_points(record, drop)
    save_cell(out, cell.name, record)
    gc.collect()
    log(f"[benchmark] {cell.name}: done in {record['wall_seconds']:.0f} s; {headline(record)}")
    return record


def evaluate_cell(cell: Cell, model_path: str, data, settings: BenchmarkSettings, show_progress: bool) -> dict:
    """Every task of ``data`` on the cell's model (a lexicon cell: its polarity tasks)."""
    if cell.method.kind == "lexicon":
        from carl.evaluation.lexicon import evaluate_lexicon

        return evaluate_lexicon(cell.method.name, data, settings.tasks)
    from carl.inference import AffectEncoder

    encoder = AffectEncoder.load(model_path)
    return evaluate_encoder(
        encoder, settings.tasks, data=data, batch_size=settings.batch_size, show_progress=show_progress
    )


def complete_cell(
    cell: Cell,
    record: dict,
    missing: tuple[str, ...],
    settings: BenchmarkSettings,
    out: Path,
    data,
    *,
    show_progress: bool = True,
    log=print,
    drop: tuple[str, ...] = (),
) -> dict:
    """Evaluate only the ``missing`` tasks on a cached cell's model and merge them into its record
    (cached without the keys ``drop``, as :func:`run_cell`).

    A trained cell's model is ``OUT/runs/<cell>/model``; when that folder is gone (runs/ is not
    committed) the cell is retrained (the same overrides and seed) and the record says so.
    """
    started = time.time()
    how = "reference"
    model_path = settings.encoder
    if cell.method.seeded:
        run_dir = out / "runs" / cell.name
        how = "saved model" if (run_dir / "model").is_dir() else "retrained"
        if how == "retrained":
            train_cell(cell, run_dir, show_progress)
        model_path = str(run_dir / "model")
    subset = {name: task for name, task in data.items() if name in missing}
    added = evaluate_cell(cell, model_path, subset, settings, show_progress)["tasks"] if subset else {}
    record["results"]["tasks"].update(added)
    spec = cell_spec(cell, settings)
    record["spec"], record["spec_hash"] = spec, spec_hash(spec)
    seconds = time.time() - started
    record.setdefault("completions", []).append(
        {"tasks": list(missing), "model": how, "seconds": seconds, "at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    )
    record["wall_seconds"] = record.get("wall_seconds", 0.0) + seconds
    if drop:
        record = without_points(record, drop)
    save_cell(out, cell.name, record)
    gc.collect()
    log(f"[benchmark] {cell.name}: added {', '.join(missing)} ({how}) in {seconds:.0f} s; {headline(record)}")
    return record


def headline(record: dict) -> str:
    """A one-line summary of a cell's main numbers."""
    tasks = record.get("results", {}).get("tasks", {})
    parts = []
    for task, key in (
        ("emobank", "valence_pearson"),
        ("emobank", "arousal_pearson"),
        ("sst2", "accuracy"),
        ("mr", "accuracy"),
        ("sst5", "accuracy"),
        ("goemotions", "macro_f1"),
        ("sickr", "spearman"),
    ):
        value = tasks.get(task, {}).get("metrics", {}).get(key)
        if value is not None:
            parts.append(f"{task} {key} {value:.4f}")
    return ", ".join(parts) or "no task results"


# --------------------------------------------------------------------------- the run


def check_inputs(settings: BenchmarkSettings) -> None:
    """Fail before any training: user corpora must exist, lexicon packages must be installed."""
    from carl.data.user_corpora import load_user_corpus

    for name, path in settings.tasks.user_corpora.items():
        load_user_corpus(name, path)  # raises DataError saying how to obtain it
    for name in settings.methods:
        if METHODS[name].kind == "lexicon":
            from carl.evaluation.lexicon import lexicon_scorer

            lexicon_scorer(name)


def run_benchmark(
    out: str | Path,
    settings: BenchmarkSettings | None = None,
    *,
    show_progress: bool = True,
    command: str | None = None,
    log=print,
) -> dict:
    """Run (or resume) every cell, then write ``results.json`` and the report; returns what
    ``results.json`` holds."""
    from carl.evaluation.report import write_report

    settings = settings or BenchmarkSettings()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    check_inputs(settings)
    started = time.time()
    data = load_task_data(settings.tasks)
    cells, computed = {}, []
    for cell in plan_cells(settings):
        cached, missing = cached_cell(out / "cells" / f"{cell.name}.json", cell_spec(cell, settings))
        if cached is not None and missing:
            log(f"[benchmark] {cell.name}: cached without {', '.join(missing)}: evaluating those")
            cells[cell.name] = complete_cell(
                cell, cached, missing, settings, out, data, show_progress=show_progress, log=log
            )
            computed.append(cell.name)
            continue
        if cached is not None:
            log(f"[benchmark] {cell.name}: cached")
            cells[cell.name] = cached
            continue
        log(f"[benchmark] {cell.name}: computing")
        cells[cell.name] = run_cell(cell, settings, out, data, show_progress=show_progress, log=log)
        computed.append(cell.name)
    results = {
        "command": command or "carl benchmark " + " ".join(sys.argv[1:]),
        "settings": settings.to_dict(),
        "methods": {name: dataclasses.asdict(METHODS[name]) for name in settings.methods},
        "task_sizes": {name: task.sizes() for name, task in data.items()},
        "task_protocols": {name: task.protocol for name, task in data.items()},
        "cells": cells,  # whole in memory for the report; results.json keeps them without point arrays
        "computed_this_run": computed,
        "runtime": {
            "this_invocation_seconds": time.time() - started,
            "all_cells_seconds": float(sum(c.get("wall_seconds", 0.0) for c in cells.values())),
        },
        "environment": environment_info(),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    saved = dump_json({**results, "cells": without_points(cells)}, compact=True)
    write_text_atomic(out / "results.json", saved)
    write_report(results, out)
    log(f"[benchmark] wrote {out / 'results.json'} and {out / 'report.md'}")
    return json.loads(saved)
