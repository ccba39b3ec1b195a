"""Affect against general semantics over the preservation weight: the trade-off, measured.

    python benchmarks/preserve_sweep.py [--objectives carl mse] [--kinds distill relational l2sp] \
        [--weights 0 1 10] [--seeds 1 2 3] [--encoder minilm-l6] [--set KEY=VALUE] \
        [--out benchmarks/results/preserve_sweep]

A point is (objective, ``objective.preserve_weight``, ``objective.preserve.kind``, seed); weight 0
is one point per objective and seed whatever the kind. Each point is a cell of the benchmark
(:mod:`carl.evaluation.benchmark`): the benchmark's one-epoch EmoBank training
(``train.epochs=1``) into OUT/runs/<point>, then three probes of the frozen result: EmoBank
valence r (ridge, alpha on dev), GoEmotions Ekman macro-F1 (logistic regression, C on dev) and
SICK-R (cosine Spearman x 100, no training); plus the frozen encoder as the reference. Finished
points are cached in OUT/cells/ and an interrupted point resumes its training, so rerunning the
same command, or a larger grid into the same OUT, computes only what is missing. Every
invocation rewrites OUT/results.json, OUT/report.md and OUT/front.png (affect against SICK-R);
``--report-only`` does only that, from the points in OUT/cells (e.g. after invocations of parts
of the grid ran at once).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from safetensors import safe_open

from carl.atomic import write_text_atomic
from carl.evaluation.benchmark import (
    METHODS,
    BenchmarkSettings,
    Cell,
    Method,
    cached_cell,
    cell_spec,
    complete_cell,
    run_cell,
)
from carl.evaluation.cells import dump_json
from carl.evaluation.tasks import TaskSettings, load_task_data
from carl.training.run_info import environment_info
from carl.training.teacher import TEACHER_FILE

TASKS = ("emobank", "goemotions", "sickr")
# (task, metric, label): the front's axes
AFFECT = (("emobank", "valence_pearson", "EmoBank valence r"), ("goemotions", "macro_f1", "GoEmotions macro-F1"))
SEMANTICS = ("sickr", "spearman", "SICK-R rho x100")
TRAINING = ("train.epochs=1",)  # the benchmark's budget (DEFAULT_TRAIN_OVERRIDES)


def plan(args) -> list[Cell]:
    """The frozen reference, then every point; seeds outermost so that a cut run has every
    configuration at equal depth."""
    cells = [Cell(METHODS["frozen"], None, ())]
    for seed in args.seeds:
        for objective in args.objectives:
            for weight in args.weights:
                for kind in args.kinds if weight else ("none",):
                    name = f"{objective}-w{weight:g}" + (f"-{kind}" if weight else "")
                    sets = [f"objective.name={objective}", f"objective.preserve_weight={weight:g}"]
                    sets += [f"objective.preserve.kind={kind}"] if weight else []
                    method = Method(name, "carl", tuple(sets), f"{objective}, preserve {kind} x {weight:g}")
                    overrides = (
                        *sets,
                        f"model.encoder={args.encoder}",
                        f"train.seed={seed}",
                        *TRAINING,
                        *args.overrides,
                    )
                    cells.append(Cell(method, seed, overrides))
    return cells


def value(cell: dict, task: str, metric: str) -> float | None:
    return cell.get("results", {}).get("tasks", {}).get(task, {}).get("metrics", {}).get(metric)


def teacher_seconds(cell: dict) -> float | None:
    """Seconds of the run's teacher pass, from its cache's metadata (None without a cache)."""
    cache = Path(cell.get("run_dir", "")) / TEACHER_FILE
    if not cell.get("run_dir") or not cache.is_file():
        return None
    with safe_open(str(cache), framework="pt") as f:
        return float((f.metadata() or {}).get("seconds", "nan"))


def summarise(cells: dict[str, dict], plan_cells: list[Cell]) -> list[dict]:
    """One row per configuration (point without its seed): mean and std over the seeds done."""
    rows: dict[str, dict] = {}
    for c in plan_cells:
        record = cells.get(c.name)
        if record is None:
            continue
        row = rows.setdefault(
            c.method.name, {"point": c.method.name, "overrides": list(c.method.overrides), "seeds": []}
        )
        row["seeds"].append(c.seed)
        for task, metric, _ in (*AFFECT, SEMANTICS):
            row.setdefault(f"{task}/{metric}", []).append(value(record, task, metric))
        if "training" in record:
            row.setdefault("median_step_seconds", []).append(record["training"]["median_step_seconds"])
    for row in rows.values():
        for key in [k for k in row if "/" in k or k == "median_step_seconds"]:
            values = [v for v in row[key] if v is not None]
            row[key] = {
                "mean": statistics.fmean(values) if values else None,
                "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                "values": values,
            }
    return list(rows.values())


def report(rows: list[dict], command: str, env: dict, missing: list[str]) -> str:
    def fmt(agg, digits):
        if agg["mean"] is None:
            return "-"
        return f"{agg['mean']:.{digits}f}" + (f" ± {agg['std']:.{digits}f}" if len(agg["values"]) > 1 else "")

    lines = [
        "# Preservation sweep: affect against general semantics",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {env.get('cpu_count')} CPU cores ({env.get('processor')}), torch {env['versions'].get('torch')}"
        + (f", GPUs {env['gpus']}" if env.get("gpus") else "")
        + f"; git {env.get('git_revision')}.",
        "",
        "Each point: one epoch of EmoBank training (the benchmark's budget), then probes of the frozen "
        "result; mean ± std over the seeds listed.",
        "",
        "| point | seeds | EmoBank valence r | GoEmotions macro-F1 | SICK-R rho x100 | median step (s) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        step = r.get("median_step_seconds")
        lines.append(
            f"| {r['point']} | {', '.join(str(s) for s in r['seeds'] if s is not None) or '-'} | "
            f"{fmt(r['emobank/valence_pearson'], 4)} | {fmt(r['goemotions/macro_f1'], 4)} | "
            f"{fmt(r['sickr/spearman'], 2)} | {fmt(step, 3) if step else '-'} |"
        )
    lines += ["", "![affect against SICK-R](front.png)", ""]
    if missing:
        lines += [f"Not computed yet ({len(missing)}): {', '.join(missing)}.", ""]
    return "\n".join(lines)


def plot_front(rows: list[dict], out: Path) -> None:
    """Two panels: EmoBank valence r and GoEmotions macro-F1 against SICK-R, a point per configuration."""
    fig = Figure(figsize=(10, 4.2), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2)
    x_key = f"{SEMANTICS[0]}/{SEMANTICS[1]}"
    for ax, (task, metric, label) in zip(axes, AFFECT):
        for r in rows:
            x, y = r[x_key], r[f"{task}/{metric}"]
            if x["mean"] is None or y["mean"] is None:
                continue
            marker = "*" if r["point"] == "frozen" else "o"
            ax.errorbar(x["mean"], y["mean"], xerr=x["std"], yerr=y["std"], fmt=marker, ms=9 if marker == "*" else 6)
            ax.annotate(r["point"], (x["mean"], y["mean"]), fontsize=7, xytext=(4, 3), textcoords="offset points")
        ax.set_xlabel(SEMANTICS[2] + " (general semantics)")
        ax.set_ylabel(label + " (affect)")
        ax.grid(alpha=0.3)
    fig.suptitle("Preservation weight: affect against semantics (up and right is better)", fontsize=10)
    fig.savefig(out / "front.png")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--objectives", nargs="+", default=["carl", "mse"])
    parser.add_argument("--kinds", nargs="+", default=["distill", "relational", "l2sp"])
    parser.add_argument("--weights", nargs="+", type=float, default=[0.0, 1.0, 10.0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--encoder", default="minilm-l6")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/preserve_sweep"))
    parser.add_argument("--report-only", action="store_true", help="compute nothing: rewrite the report from OUT/cells")
    args = parser.parse_args(argv)
    out = args.out
    settings = BenchmarkSettings(methods=("frozen",), encoder=args.encoder, tasks=TaskSettings(tasks=TASKS))
    data = load_task_data(settings.tasks)
    cells: dict[str, dict] = {}
    started = time.time()
    todo = plan(args)
    for cell in todo:  # results are rewritten after every point, so a cut run keeps what it measured
        cached, missing = cached_cell(out / "cells" / f"{cell.name}.json", cell_spec(cell, settings))
        if cached is not None and not missing:
            cells[cell.name] = cached
            continue
        if args.report_only:
            continue
        print(f"[preserve_sweep] {cell.name}: computing", flush=True)
        if cached is not None:
            cells[cell.name] = complete_cell(cell, cached, missing, settings, out, data, show_progress=False)
        else:
            cells[cell.name] = run_cell(cell, settings, out, data, show_progress=False)
        write_results(out, args, cells, todo, started)
    write_results(out, args, cells, todo, started)
    return 0


def write_results(out: Path, args, cells: dict[str, dict], todo: list[Cell], started: float) -> None:
    rows = summarise(cells, todo)
    # the command that computes these points (a --report-only rewrite shows it without the flag)
    command = "python benchmarks/preserve_sweep.py " + " ".join(a for a in sys.argv[1:] if a != "--report-only")
    env = environment_info()
    missing = [c.name for c in todo if c.name not in cells]
    points = {
        name: {
            "seed": c.get("seed"),
            "overrides": c.get("spec", {}).get("overrides"),
            "metrics": {f"{t}/{m}": value(c, t, m) for t, m, _ in (*AFFECT, SEMANTICS)},
            "training": {k: v for k, v in c.get("training", {}).items() if k != "curves"},
            "teacher_seconds": teacher_seconds(c),
            "wall_seconds": c.get("wall_seconds"),
        }
        for name, c in cells.items()
    }
    results = {
        "command": command,
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "tasks": list(TASKS),
        "points": points,
        "summary": rows,
        "not_computed": missing,
        "this_invocation_seconds": time.time() - started,
        "environment": env,
    }
    write_text_atomic(out / "results.json", dump_json(results))
    write_text_atomic(out / "report.md", report(rows, command, env, missing))
    plot_front(rows, out)


if __name__ == "__main__":
    sys.exit(main())
