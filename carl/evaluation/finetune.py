"""The fine-tuning protocol of ``carl benchmark --protocol finetune``: cells, budget, the run.

    carl benchmark --protocol finetune --tasks ekman --regimes full --seeds 1 2 3

A *cell* is task x regime x method x seed (``ekman-full-carl-s1``, ``ekman-k8-ft-s2``). A trained
cell fine-tunes encoder + task head with carl's one trainer on the task's train split (files under
``OUT/data/<task>/``, :mod:`carl.evaluation.finetune_data`) into ``OUT/runs/<cell>``, selects the
step on dev (``train.eval_every``, ``train.select_metric``; the temperature and, multi-label, the
per-class thresholds are fitted on dev by the trainer), and scores the exported model on the full
test split (:mod:`carl.evaluation.finetune_score`). Every method trains with the same pinned step
budget, batch and learning rates (:data:`BUDGETS`), without the preservation term
(:data:`~carl.evaluation.benchmark.PINNED_OVERRIDES`); ``--set`` overrides apply to every training.

Methods: ``ft`` (objective ``classify``; ``mse`` on EmoBank), ``mcl`` (``mcl-classify``/``mcl``),
``carl`` (``carl-classify``/``carl``), ``carl-stage`` (``ft`` from the encoder of a first stage: carl
with its default configuration, preservation off, on bundled EmoBank at the cell's seed, one shared run per seed in
``OUT/runs/stage-carl-s<seed>``), ``setfit`` (the peer) and ``probe`` (the frozen encoder, linear
model on the same training rows). The plan runs task, then seed, then regime, then method, so an
interrupted grid has every method at equal depth. Cells are cached in ``OUT/cells/`` exactly as
the probe protocol's (:mod:`carl.evaluation.cells`); a rerun skips finished cells and resumes an
interrupted training from its checkpoint. ``OUT/results.json`` and ``OUT/report.md``
(:mod:`carl.evaluation.finetune_report`) are rewritten after every cell, so a partial grid has a report.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from carl.atomic import write_text_atomic
from carl.config import load_config
from carl.evaluation.benchmark import PINNED_OVERRIDES
from carl.evaluation.benchmark import VARIANT_METHODS as PROBE_VARIANTS
from carl.evaluation.cells import (
    POINT_AND_CURVE_KEYS,
    dump_json,
    load_cached,
    new_record,
    read_cell,
    read_metrics,
    refuse_objective_override,
    save_cell,
    spent_seconds,
    training_summary,
    without_points,
)
from carl.evaluation.finetune_data import (
    DEV_CAP,
    STAGE_CORPUS_SPECS,
    TASKS,
    FinetuneTask,
    TaskFiles,
    prepare_stage_files,
    prepare_task_files,
    stage_files,
    task_files,
)
from carl.evaluation.finetune_score import require_setfit, score_model, score_probe, score_setfit
from carl.training.run_info import environment_info
from carl.training.trainer import CarlTrainer  # module attribute: tests count calls through it

METHODS: dict[str, str] = {
    "ft": "plain fine-tuning: the task head alone (cross-entropy / BCE; MSE on EmoBank)",
    "mcl": "task head + MCL on VA coordinates",
    "carl": "task head + MCL + saliency PTD",
    "carl-stage": "ft from the encoder of a first carl stage on bundled EmoBank (carl's defaults, same seed)",
    "setfit": "SetFit, the peer (setfit package, same encoder, its default recipe)",
    "probe": "the frozen encoder, linear model on the same training rows",
}
# each trained method's objective by task kind (single, multi: a classifier; va: EmoBank regression)
FT = {"single": "classify", "multi": "classify", "va": "mse"}
CARL = {"single": "carl-classify", "multi": "carl-classify", "va": "carl"}
OBJECTIVES: dict[str, dict[str, str]] = {
    "ft": FT,
    "mcl": {"single": "mcl-classify", "multi": "mcl-classify", "va": "mcl"},
    "carl": CARL,
    "carl-stage": FT,
}


@dataclass(frozen=True)
class Variant:
    """A method of the variant study (issue 16; docs/method.md, "Variants under study"): objectives
    by task kind plus config switches, trained like the method it varies."""

    description: str
    objectives: dict[str, str]
    switches: tuple[str, ...] = ()


def probe_switches(name: str) -> tuple[str, ...]:
    """The config switches of the probe protocol's variant ``name`` (its overrides but the objective)."""
    return tuple(o for o in PROBE_VARIANTS[name].overrides if not o.startswith("objective.name="))


# run by name (--methods), not by default; the switches are the probe protocol's variants'
VARIANTS: dict[str, Variant] = {
    "ft-dropout": Variant(
        "ft with the backbone's dropout on (the usual fine-tuning recipe)", FT, probe_switches("mse-dropout")
    ),
    "carl-dropout": Variant("carl with the backbone's dropout on", CARL, probe_switches("carl-dropout")),
    "carl-affect-saliency": Variant(
        "carl, saliency from the gradient of the task loss alone", CARL, probe_switches("carl-affect-saliency")
    ),
    "carl-embedding": Variant(
        "carl, salient words' embeddings shifted adversarially", CARL, probe_switches("carl-embedding")
    ),
    "carl-embedding-consistency": Variant(
        "carl-embedding plus consistency between the clean and shifted predictions",
        CARL,
        probe_switches("carl-embedding-consistency"),
    ),
    "carl-negative": Variant(
        "carl, perturbed sentences' keys also in the contrast as negatives", CARL, probe_switches("carl-negative")
    ),
    "mcl-rank": Variant(
        "task head + Rank-N-Contrast on VA",
        {"single": "mcl-rank-classify", "multi": "mcl-rank-classify", "va": "mcl-rank"},
    ),
    "carl-rank": Variant(
        "carl with Rank-N-Contrast instead of soft targets",
        {"single": "carl-rank-classify", "multi": "carl-rank-classify", "va": "carl-rank"},
    ),
    "carl-ptd-warmup": Variant("carl, PTD weight rising over the first half", CARL, probe_switches("carl-ptd-warmup")),
    "carl-ptd-decay": Variant("carl, PTD weight falling over the last half", CARL, probe_switches("carl-ptd-decay")),
    "carl-stage-goemotions": Variant(
        "ft from the encoder of a first carl stage on EmoBank plus GoEmotions mapped to VA (same seed)", FT
    ),
}
OBJECTIVES.update({name: v.objectives for name, v in VARIANTS.items()})
ALL_METHODS: dict[str, str] = {**METHODS, **{name: v.description for name, v in VARIANTS.items()}}
# the methods that do not run on a task kind, with the reason the report states
SKIPPED: dict[tuple[str, str], str] = {
    ("setfit", "va"): "SetFit trains a classifier; EmoBank is VA regression",
}
REGIMES: dict[str, int | None] = {"full": None, "k64": 64, "k8": 8}  # examples per class (None: all)
DEFAULT_SEEDS: tuple[int, ...] = (1, 2, 3)
BATCH_SIZE = 32
STAGE_OBJECTIVE = "carl"
# the methods that fine-tune from a first carl stage, by the stage's corpus
STAGE_CORPORA: dict[str, str] = {"carl-stage": "emobank", "carl-stage-goemotions": "emobank-goemotions"}


@dataclass(frozen=True)
class Budget:
    """Optimizer steps of a cell and its dev evaluation (and checkpoint) interval."""

    steps: int
    eval_every: int


# the same for every method; pinned here so that a change of carl's defaults does not change it
BUDGETS: dict[str, Budget] = {"full": Budget(1000, 200), "k64": Budget(300, 50), "k8": Budget(150, 25)}
TASK_BUDGETS: dict[tuple[str, str], Budget] = {("emobank", "full"): Budget(504, 126)}  # 2 epochs of 252 steps
# the MCL queue must hold fewer keys than a subset has sentences (7 x 8 Ekman, 5 x 8 SST-5 rows)
QUEUE_SIZES: dict[str, int] = {"k64": 256, "k8": 0}


def budget(task: str, regime: str) -> Budget:
    return TASK_BUDGETS.get((task, regime), BUDGETS[regime])


def effective_budget(b: Budget, overrides: Sequence[str]) -> Budget:
    """The budget a cell runs: ``b`` after the ``--set`` overrides, which come last in a cell's
    overrides (``train.max_steps=0``, epochs instead of steps, keeps the budget's steps)."""
    if not overrides:
        return b
    train = load_config(None, [f"train.max_steps={b.steps}", f"train.eval_every={b.eval_every}", *overrides]).train
    return Budget(train.max_steps or b.steps, train.eval_every)


def cell_steps(cell: FinetuneCell, settings: FinetuneSettings) -> int:
    """Optimizer steps of a cell (SetFit gets the same number as the methods carl's trainer runs)."""
    return effective_budget(budget(cell.task.name, cell.regime), settings.overrides).steps


@dataclass
class FinetuneSettings:
    """What the fine-tuning grid runs; recorded in ``results.json``."""

    tasks: tuple[str, ...] = tuple(TASKS)
    methods: tuple[str, ...] = tuple(METHODS)
    regimes: tuple[str, ...] = tuple(REGIMES)
    seeds: tuple[int, ...] = DEFAULT_SEEDS
    encoder: str = "minilm-l6"
    overrides: tuple[str, ...] = ()  # --set, for every training (the first stage too)
    batch_size: int = 64  # test and probe encoding

    def __post_init__(self) -> None:
        self.tasks, self.methods = tuple(self.tasks), tuple(self.methods)
        self.regimes, self.seeds, self.overrides = tuple(self.regimes), tuple(self.seeds), tuple(self.overrides)
        for what, given, known in (
            ("task", self.tasks, TASKS),
            ("method", self.methods, ALL_METHODS),
            ("regime", self.regimes, REGIMES),
        ):
            unknown = [x for x in given if x not in known]
            if unknown:
                raise ValueError(f"unknown {what}(s) {unknown}; choose from {list(known)}")
        for what, count in (
            ("task", len(self.tasks)),
            ("method", len(self.methods)),
            ("regime", len(self.regimes)),
            ("seed", len(self.seeds)),
        ):
            if not count:
                raise ValueError(f"give at least one {what}")
        refuse_objective_override(self.overrides)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class FinetuneCell:
    """One task x regime x method x seed."""

    task: FinetuneTask
    regime: str
    method: str
    seed: int

    @property
    def name(self) -> str:
        return f"{self.task.name}-{self.regime}-{self.method}-s{self.seed}"

    @property
    def trained(self) -> bool:
        return self.method in OBJECTIVES


def skip_reason(cell: FinetuneCell) -> str | None:
    """Why ``cell`` is not run (None: it runs): a method that does not fit the task's kind, or a first
    stage holding all of the task's training labels in a regime that withholds most of them."""
    corpus = STAGE_CORPORA.get(cell.method)
    if corpus and REGIMES[cell.regime] is not None and cell.task.name in STAGE_CORPUS_SPECS[corpus].tasks:
        return (
            f"its first stage trains on all of {cell.task.name}'s training texts with their labels mapped to VA,"
            f" more than {REGIMES[cell.regime]} examples per class"
        )
    return SKIPPED.get((cell.method, cell.task.kind))


def plan_cells(settings: FinetuneSettings) -> tuple[list[FinetuneCell], list[dict]]:
    """The cells in run order (task, seed, regime, method) and the skipped ones with their reason.

    Left out silently: low-resource regimes of multi-label tasks, and the frozen probe on all the
    training data at any seed but the first (its rows and its fit do not depend on the seed)."""
    cells, skipped = [], []
    for task in (TASKS[t] for t in settings.tasks):
        for seed in settings.seeds:
            for regime in settings.regimes:
                if REGIMES[regime] is not None and not task.low_resource:
                    continue
                for method in settings.methods:
                    if method == "probe" and REGIMES[regime] is None and seed != settings.seeds[0]:
                        continue
                    cell = FinetuneCell(task, regime, method, seed)
                    reason = skip_reason(cell)
                    if reason:
                        skipped.append({"cell": cell.name, "reason": reason})
                    else:
                        cells.append(cell)
    return cells, skipped


# --------------------------------------------------------------------------- configuration


def stage_name(seed: int, corpus: str = "emobank") -> str:
    """``stage-carl-s1`` (bundled EmoBank) or ``stage-carl-emobank-goemotions-s1``."""
    return f"stage-{STAGE_OBJECTIVE}-s{seed}" if corpus == "emobank" else f"stage-{STAGE_OBJECTIVE}-{corpus}-s{seed}"


def stage_overrides(
    settings: FinetuneSettings, seed: int, corpus: str = "emobank", out: Path = Path("OUT")
) -> list[str]:
    """The first stage at ``seed``: objective carl (other settings default), preservation off, on
    bundled EmoBank or the files of :func:`prepare_stage_files` under ``out``; then ``--set``."""
    data = []
    if corpus != "emobank":
        train, dev = stage_files(out)
        data = [f"data.path={train}", f"data.dev_path={dev}", "data.scale=0-1"]
    return [
        *PINNED_OVERRIDES,
        f"objective.name={STAGE_OBJECTIVE}",
        f"model.encoder={settings.encoder}",
        f"train.seed={seed}",
        *data,
        *settings.overrides,
    ]


def cell_overrides(cell: FinetuneCell, settings: FinetuneSettings, files: TaskFiles, encoder: str) -> list[str]:
    """The trainer's overrides of a trained cell: method, budget, data, selection, then ``--set``."""
    task, b = cell.task, budget(cell.task.name, cell.regime)
    overrides = [
        *PINNED_OVERRIDES,
        f"objective.name={OBJECTIVES[cell.method][task.kind]}",
        f"model.encoder={encoder}",
        f"train.seed={cell.seed}",
        f"train.batch_size={BATCH_SIZE}",
        f"train.max_steps={b.steps}",
        f"train.eval_every={b.eval_every}",
        f"train.checkpoint_every={b.eval_every}",
        f"data.max_length={task.max_length}",
        f"train.select_metric={'va_pearson_mean' if task.kind == 'va' else 'class_macro_f1'}",
    ]
    if cell.method in VARIANTS:
        overrides += VARIANTS[cell.method].switches
    if cell.regime in QUEUE_SIZES:
        overrides.append(f"objective.mcl.queue_size={QUEUE_SIZES[cell.regime]}")
    if files.train is not None:
        overrides += [
            f"data.path={files.train}",
            f"data.dev_path={files.dev}",
            "data.label_column=label",
            f"data.label_mapping={files.label_mapping}",
        ]
        if task.kind == "multi":
            overrides.append("data.multi_label=true")
    return [*overrides, *settings.overrides]


def cell_spec(cell: FinetuneCell, settings: FinetuneSettings) -> dict:
    """Everything a cell's numbers depend on (independent of where OUT lies); a cached cell must match."""
    spec = {
        "protocol": "finetune",
        "task": cell.task.name,
        "regime": cell.regime,
        "method": cell.method,
        "seed": cell.seed,
        "encoder": settings.encoder,
        "dev_cap": DEV_CAP,
    }
    if cell.trained:  # the data files as paths under OUT, so that the spec does not depend on where OUT lies
        files = task_files(cell.task, cell.regime, cell.seed, Path("OUT"))
        spec["overrides"] = cell_overrides(cell, settings, files, settings.encoder)
    if cell.method in STAGE_CORPORA:
        spec["stage"] = stage_overrides(settings, cell.seed, STAGE_CORPORA[cell.method])
    if cell.method == "setfit":
        spec["steps"] = cell_steps(cell, settings)
    return spec


# --------------------------------------------------------------------------- running


def train(overrides: list[str], run_dir: Path, show_progress: bool) -> dict:
    """Train (or resume) into ``run_dir``; the training summary with the dev selection and calibration."""
    cfg = load_config(None, overrides)
    started = time.time()
    trainer = CarlTrainer(cfg, run_dir, show_progress=show_progress)
    trainer.train()
    trainer.close()
    del trainer
    summary = training_summary(read_metrics(run_dir), time.time() - started)
    card = json.loads((run_dir / "model" / "carl" / "carl.json").read_text(encoding="utf-8"))
    summary["selection"] = card.get("selection")
    summary["calibration"] = card.get("calibration")
    summary["best_step"] = (card.get("selection") or {}).get("best_step")
    summary["config"] = cfg.to_dict()
    return summary


def prune_run(run_dir: Path) -> None:
    """Drop a finished run's checkpoints and selection copies (~0.8 GB for MiniLM); its exported
    ``model/`` (the selected step) and ``metrics.jsonl`` stay."""
    for folder in ("checkpoints", "selection"):
        shutil.rmtree(run_dir / folder, ignore_errors=True)


def ensure_stage(settings: FinetuneSettings, seed: int, corpus: str, out: Path, show_progress: bool, log) -> Path:
    """The first stage's model folder at ``seed`` (trained once, cached as ``cells/stage-...json``;
    trained again when its record is cached but ``runs/`` is not, as in a fresh clone of a grid)."""
    name = stage_name(seed, corpus)
    spec = {"protocol": "finetune-stage", "seed": seed, "overrides": stage_overrides(settings, seed, corpus)}
    run_dir = out / "runs" / name
    cached = load_cached(out / "cells" / f"{name}.json", spec) is not None
    if not cached or not (run_dir / "model").is_dir():
        again = ", again: its model folder is gone" if cached else ""
        log(f"[finetune] {name}: training the first stage ({STAGE_OBJECTIVE} on {corpus}){again}")
        if corpus != "emobank":
            prepare_stage_files(out)
        record = new_record(name, spec, corpus=corpus)
        record["training"] = train(stage_overrides(settings, seed, corpus, out), run_dir, show_progress)
        save_cell(out, name, record)
        prune_run(run_dir)
    return run_dir / "model"


def run_cell(
    cell: FinetuneCell, settings: FinetuneSettings, out: Path, *, show_progress: bool = True, log=print
) -> dict:
    """Compute one cell (prepare data, train if needed, score on test) and cache it; returns the record."""
    spec = cell_spec(cell, settings)
    started = time.time()
    record = new_record(cell.name, spec, task=cell.task.name, regime=cell.regime, method=cell.method, seed=cell.seed)
    files = prepare_task_files(cell.task, REGIMES[cell.regime], cell.regime, cell.seed, out)
    if cell.trained:
        encoder = settings.encoder
        if cell.method in STAGE_CORPORA:
            encoder = str(ensure_stage(settings, cell.seed, STAGE_CORPORA[cell.method], out, show_progress, log))
        run_dir = out / "runs" / cell.name
        record["training"] = train(cell_overrides(cell, settings, files, encoder), run_dir, show_progress)
        record["run_dir"] = str(run_dir)
        record["metrics"] = score_model(cell.task, run_dir / "model", files, batch_size=settings.batch_size)
    elif cell.method == "probe":
        record["metrics"] = score_probe(
            cell.task, settings.encoder, files, seed=cell.seed, batch_size=settings.batch_size
        )
    else:
        record["metrics"] = score_setfit(
            cell.task,
            settings.encoder,
            files,
            seed=cell.seed,
            max_steps=cell_steps(cell, settings),
            out_dir=out / "runs" / cell.name,
        )
    record["wall_seconds"] = time.time() - started
    record["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    save_cell(out, cell.name, record)
    if cell.trained:
        prune_run(out / "runs" / cell.name)
    gc.collect()
    log(f"[finetune] {cell.name}: done in {record['wall_seconds']:.0f} s; {headline(record)}")
    return record


def headline(record: dict) -> str:
    """One line: the cell's main metrics, best step of steps, median step seconds."""
    m = record.get("metrics", {})
    keys = (
        ("valence_pearson", "arousal_pearson") if record["task"] == "emobank" else ("macro_f1", "accuracy", "ece_after")
    )
    parts = [f"{k} {m[k]:.4f}" for k in keys if isinstance(m.get(k), float)]
    t = record.get("training")
    if t:
        parts.append(f"best step {t['best_step']} of {t['steps']}")
        if t.get("median_step_seconds") is not None:
            parts.append(f"{t['median_step_seconds']:.3f} s/step")
    return ", ".join(parts)


def check_inputs(settings: FinetuneSettings) -> None:
    """Fail before any training when a method cannot run here."""
    if "setfit" in settings.methods and any(TASKS[t].kind != "va" for t in settings.tasks):
        require_setfit()


def run_finetune(
    out: str | Path,
    settings: FinetuneSettings | None = None,
    *,
    show_progress: bool = True,
    command: str | None = None,
    report_only: bool = False,
    log=print,
) -> dict:
    """Run (or resume) every cell; ``results.json`` and ``report.md`` are rewritten after each cell.
    ``report_only``: train nothing, write them from the cached cells (the others are reported
    missing). Returns what ``results.json`` holds."""
    settings = settings or FinetuneSettings()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if not report_only:
        check_inputs(settings)
    started = time.time()
    planned, skipped = plan_cells(settings)
    cells: dict[str, dict] = {}
    computed: list[str] = []
    for n, cell in enumerate(planned, 1):
        cached = load_cached(out / "cells" / f"{cell.name}.json", cell_spec(cell, settings))
        if cached is not None:
            log(f"[finetune] {n}/{len(planned)} {cell.name}: cached")
            cells[cell.name] = cached
            continue
        if report_only:
            log(f"[finetune] {n}/{len(planned)} {cell.name}: not computed (--report-only)")
            continue
        log(f"[finetune] {n}/{len(planned)} {cell.name}: computing")
        cells[cell.name] = run_cell(cell, settings, out, show_progress=show_progress, log=log)
        computed.append(cell.name)
        write_results(out, settings, planned, skipped, cells, computed, started, command)
    results = write_results(out, settings, planned, skipped, cells, computed, started, command)
    log(f"[finetune] wrote {out / 'results.json'} and {out / 'report.md'}")
    return results


def write_results(out: Path, settings, planned, skipped, cells, computed, started, command) -> dict:
    """``results.json`` and ``report.md`` of the cells finished so far; returns the results."""
    from carl.evaluation.finetune_report import write_report

    stages = {}
    for method in sorted(set(settings.methods) & set(STAGE_CORPORA)):  # the first stages its cells start from
        for seed in settings.seeds:
            name = stage_name(seed, STAGE_CORPORA[method])
            stage = read_cell(out / "cells" / f"{name}.json")
            if stage is not None:
                stages[name] = stage
    results = {
        "protocol": "finetune",
        "command": command or "carl benchmark " + " ".join(sys.argv[1:]),
        "settings": settings.to_dict(),
        "methods": {m: ALL_METHODS[m] for m in settings.methods},
        "budget": {  # of this grid's tasks and regimes
            "batch_size": BATCH_SIZE,
            "regimes": {
                r: dataclasses.asdict(effective_budget(BUDGETS[r], settings.overrides)) for r in settings.regimes
            },
            "tasks": {
                f"{t}-{r}": dataclasses.asdict(effective_budget(b, settings.overrides))
                for (t, r), b in TASK_BUDGETS.items()
                if t in settings.tasks and r in settings.regimes
            },
            "mcl_queue_size": {r: q for r, q in QUEUE_SIZES.items() if r in settings.regimes},
            "dev_cap": DEV_CAP,
        },
        "planned": [c.name for c in planned],
        "stages": stages,
        "skipped": skipped,
        "cells": cells,
        "computed_this_run": computed,
        "runtime": {
            "this_invocation_seconds": time.time() - started,
            "all_cells_seconds": float(sum(spent_seconds(c) for c in cells.values())),
            "stage_seconds": float(sum(spent_seconds(s) for s in stages.values())),
        },
        "environment": environment_info(),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    # the report needs no loss curves: they stay in the cell files
    saved = {**results, **{k: without_points(results[k], POINT_AND_CURVE_KEYS) for k in ("cells", "stages")}}
    write_text_atomic(out / "results.json", dump_json(saved, compact=True))
    write_report(results, out)
    return results
