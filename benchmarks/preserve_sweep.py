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
points are cached in OUT/cells/ (metrics only: without the per-point arrays and loss curves the
probe benchmark keeps for its plots) and an interrupted point resumes its training, so rerunning the
same command, or a larger grid into the same OUT, computes only what is missing. Every
invocation rewrites OUT/results.json, OUT/report.md and OUT/front.png (affect against SICK-R);
``--report-only`` does only that. The report tables every point in OUT/cells, whichever
invocation computed it, with the invocations that reproduce them, each configuration's standing
against issue 14's targets, and the front: a line per objective and kind through its weights.
"""

from __future__ import annotations

import argparse
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
from carl.evaluation.cells import POINT_AND_CURVE_KEYS, dump_json, read_cell
from carl.evaluation.report import aggregate
from carl.evaluation.tasks import TaskSettings, load_task_data
from carl.training.run_info import environment_info
from carl.training.teacher import TEACHER_FILE

TASKS = ("emobank", "goemotions", "sickr")
# (task, metric, label): the front's axes
AFFECT = (("emobank", "valence_pearson", "EmoBank valence r"), ("goemotions", "macro_f1", "GoEmotions macro-F1"))
SEMANTICS = ("sickr", "spearman", "SICK-R rho x100")
TRAINING = ("train.epochs=1",)  # the benchmark's budget (DEFAULT_TRAIN_OVERRIDES)
ENCODER = "minilm-l6"
OUT = Path("benchmarks/results/preserve_sweep")


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


def configuration(record: dict) -> tuple[str, float, str]:
    """(objective, preserve weight, kind) of a cached point, from its overrides; the frozen
    reference is ("frozen", 0, "none") and weight 0 has kind "none"."""
    if record.get("kind") == "frozen":
        return "frozen", 0.0, "none"
    sets = dict(o.split("=", 1) for o in (record.get("spec") or {}).get("overrides", []) if "=" in o)
    weight = float(sets.get("objective.preserve_weight", 0))
    return sets["objective.name"], weight, sets.get("objective.preserve.kind", "none") if weight else "none"


def summarise(cells: dict[str, dict]) -> list[dict]:
    """One row per configuration (point without its seed), frozen first, then by objective, kind
    and weight: mean and std over the seeds done, and against the targets of issue 14: SICK-R
    minus the frozen encoder's, and the share of the same objective's weight-0 gain over the
    frozen encoder kept on each affect metric (``None`` where a reference is missing)."""
    rows: dict[tuple, dict] = {}
    for record in cells.values():
        objective, weight, kind = configuration(record)
        row = rows.setdefault(
            (objective != "frozen", objective, kind != "none", kind, weight),
            {"point": record["method"], "objective": objective, "kind": kind, "weight": weight, "seeds": []},
        )
        row["seeds"].append(record.get("seed"))
        for task, metric, _ in (*AFFECT, SEMANTICS):
            row.setdefault(f"{task}/{metric}", []).append(value(record, task, metric))
        if "training" in record:
            row.setdefault("median_step_seconds", []).append(record["training"]["median_step_seconds"])
    ordered = [rows[key] for key in sorted(rows)]
    for row in ordered:
        row["seeds"] = sorted(s for s in row["seeds"] if s is not None)
        for key in [k for k in row if "/" in k or k == "median_step_seconds"]:
            # a metric no seed has yet: mean None (shown as "-")
            row[key] = aggregate([v for v in row[key] if v is not None]) or {"mean": None, "std": 0.0, "values": []}
    frozen = next((r for r in ordered if r["objective"] == "frozen"), None)
    plain = {r["objective"]: r for r in ordered if r["weight"] == 0 and r["objective"] != "frozen"}
    sickr = f"{SEMANTICS[0]}/{SEMANTICS[1]}"
    for row in ordered:
        if row["objective"] == "frozen" or frozen is None:
            continue
        row["sickr_vs_frozen"] = row[sickr]["mean"] - frozen[sickr]["mean"]
        base = plain.get(row["objective"])
        for task, metric, _ in AFFECT:
            key = f"{task}/{metric}"
            gain = None if base is None else base[key]["mean"] - frozen[key]["mean"]
            row[f"{key}/gain_kept"] = None if not gain else (row[key]["mean"] - frozen[key]["mean"]) / gain
    return ordered


def commands(rows: list[dict], args) -> list[str]:
    """Invocations that compute these points (each brings the frozen reference): one per
    objective, kind and seed set, a weight-0 point riding with the first of its objective's."""
    groups: dict[tuple[str, str, tuple[int, ...]], list[float]] = {}
    plain = []
    for r in rows:
        if r["objective"] == "frozen":
            continue
        if r["weight"] == 0:
            plain.append(r)
        else:
            groups.setdefault((r["objective"], r["kind"], tuple(r["seeds"])), []).append(r["weight"])
    for r in plain:
        key = next((k for k in groups if k[0] == r["objective"] and k[2] == tuple(r["seeds"])), None)
        groups.setdefault(key or (r["objective"], "distill", tuple(r["seeds"])), []).insert(0, 0.0)
    extra = "".join(
        [f" --encoder {args.encoder}" if args.encoder != ENCODER else ""]
        + [f" --set {o}" for o in args.overrides]
        + [f" --out {args.out}" if args.out != OUT else ""]
    )
    return [
        f"python benchmarks/preserve_sweep.py --objectives {objective} --kinds {kind} "
        f"--weights {' '.join(f'{w:g}' for w in weights)} --seeds {' '.join(str(s) for s in seeds)}{extra}"
        for (objective, kind, seeds), weights in groups.items()
    ]


def report(rows: list[dict], invocations: list[str], env: dict, missing: list[str]) -> str:
    def fmt(agg, digits):
        if agg["mean"] is None:
            return "-"
        return f"{agg['mean']:.{digits}f}" + (f" ± {agg['std']:.{digits}f}" if len(agg["values"]) > 1 else "")

    def share(x):
        return "-" if x is None else f"{100 * x:.0f} %"

    lines = [
        "# Preservation sweep: affect against general semantics",
        "",
        "Commands (each computes only the points not yet in `cells/`):",
        "",
        "```",
        *invocations,
        "```",
        "",
        f"Machine: {env.get('cpu_count')} CPU cores ({env.get('processor')}), torch {env['versions'].get('torch')}"
        + (f", GPUs {env['gpus']}" if env.get("gpus") else "")
        + f"; git {env.get('git_revision')}.",
        "",
        "Each point: one epoch of EmoBank training (the benchmark's budget), then probes of the frozen "
        "result; mean ± std over the seeds listed. Against issue 14's targets: SICK-R minus the frozen "
        "encoder's (target: at least -1), and the share of the same objective's weight-0 gain over the "
        "frozen encoder kept (target: at least 90 % on both), from the means.",
        "",
        "| point | seeds | EmoBank valence r | GoEmotions macro-F1 | SICK-R rho x100 | SICK-R vs frozen "
        "| valence gain kept | GoEmotions gain kept | median step (s) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        step = r.get("median_step_seconds")
        vs = r.get("sickr_vs_frozen")
        lines.append(
            f"| {r['point']} | {', '.join(str(s) for s in r['seeds']) or '-'} | "
            f"{fmt(r['emobank/valence_pearson'], 4)} | {fmt(r['goemotions/macro_f1'], 4)} | "
            f"{fmt(r['sickr/spearman'], 2)} | {'-' if vs is None else f'{vs:+.2f}'} | "
            f"{share(r.get('emobank/valence_pearson/gain_kept'))} | {share(r.get('goemotions/macro_f1/gain_kept'))} | "
            f"{fmt(step, 3) if step else '-'} |"
        )
    lines += ["", "![affect against SICK-R](front.png)", ""]
    if missing:
        lines += [f"Not computed yet ({len(missing)}): {', '.join(missing)}.", ""]
    return "\n".join(lines)


def plot_front(rows: list[dict], out: Path) -> None:
    """Two panels: EmoBank valence r and GoEmotions macro-F1 against SICK-R; a line per objective
    and kind through its weights (from the objective's weight 0), error bars the std over seeds."""
    fig = Figure(figsize=(10, 4.4), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2)
    x_key = f"{SEMANTICS[0]}/{SEMANTICS[1]}"
    lines = {(r["objective"], r["kind"]) for r in rows if r["kind"] != "none"}
    lines |= {(r["objective"], "none") for r in rows if r["objective"] != "frozen"} - {(o, "none") for o, _ in lines}
    for ax, (task, metric, label) in zip(axes, AFFECT):
        y_key = f"{task}/{metric}"
        done = [r for r in rows if r[x_key]["mean"] is not None and r[y_key]["mean"] is not None]
        for objective, kind in sorted(lines):
            series = [r for r in done if r["objective"] == objective and (r["kind"] == kind or r["weight"] == 0)]
            series.sort(key=lambda r: r["weight"])
            if not series:
                continue
            ax.errorbar(
                [r[x_key]["mean"] for r in series],
                [r[y_key]["mean"] for r in series],
                xerr=[r[x_key]["std"] for r in series],
                yerr=[r[y_key]["std"] for r in series],
                fmt="-o" if objective == "carl" else "--s",
                ms=5,
                lw=1,
                label=f"{objective}, {kind}" if kind != "none" else objective,
            )
            for r in series:
                ax.annotate(
                    f"{r['weight']:g}",
                    (r[x_key]["mean"], r[y_key]["mean"]),
                    fontsize=7,
                    xytext=(4, 3),
                    textcoords="offset points",
                )
        for r in done:
            if r["objective"] == "frozen":
                ax.plot(r[x_key]["mean"], r[y_key]["mean"], "k*", ms=10, label="frozen encoder")
                ax.axvline(r[x_key]["mean"] - 1, ls=":", color="grey", lw=1, label="SICK-R target (frozen - 1)")
        ax.set_xlabel(SEMANTICS[2] + " (general semantics)")
        ax.set_ylabel(label + " (affect)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(
        "Preservation weight (numbers at the points): affect against semantics (up and right is better)", fontsize=10
    )
    fig.savefig(out / "front.png")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--objectives", nargs="+", default=["carl", "mse"])
    parser.add_argument("--kinds", nargs="+", default=["distill", "relational", "l2sp"])
    parser.add_argument("--weights", nargs="+", type=float, default=[0.0, 1.0, 10.0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--encoder", default=ENCODER)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--report-only", action="store_true", help="compute nothing: rewrite the report from OUT/cells")
    args = parser.parse_args(argv)
    out = args.out
    settings = BenchmarkSettings(methods=("frozen",), encoder=args.encoder, tasks=TaskSettings(tasks=TASKS))
    data = load_task_data(settings.tasks)
    # every point computed so far, by any invocation into OUT (the planned ones are checked below)
    cells = {path.stem: read_cell(path) for path in sorted((out / "cells").glob("*.json"))}
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
            cells[cell.name] = complete_cell(
                cell, cached, missing, settings, out, data, show_progress=False, drop=POINT_AND_CURVE_KEYS
            )
        else:
            cells[cell.name] = run_cell(cell, settings, out, data, show_progress=False, drop=POINT_AND_CURVE_KEYS)
        write_results(out, args, cells, todo, started)
    write_results(out, args, cells, todo, started)
    return 0


def write_results(out: Path, args, cells: dict[str, dict], todo: list[Cell], started: float) -> None:
    rows = summarise(cells)
    invocations = commands(rows, args)
    env = environment_info()
    missing = [c.name for c in todo if c.name not in cells]
    points = {
        name: {
            "seed": c.get("seed"),
            "overrides": c.get("spec", {}).get("overrides"),
            "metrics": {f"{t}/{m}": value(c, t, m) for t, m, _ in (*AFFECT, SEMANTICS)},
            "training": c.get("training", {}),
            "teacher_seconds": teacher_seconds(c),
            "wall_seconds": c.get("wall_seconds"),
        }
        for name, c in cells.items()
    }
    results = {
        "commands": invocations,
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "tasks": list(TASKS),
        "points": points,
        "summary": rows,
        "not_computed": missing,
        "this_invocation_seconds": time.time() - started,
        "environment": env,
    }
    write_text_atomic(out / "results.json", dump_json(results))
    write_text_atomic(out / "report.md", report(rows, invocations, env, missing))
    plot_front(rows, out)


if __name__ == "__main__":
    sys.exit(main())
