"""Weight-space interpolation with the starting encoder (WiSE-FT) against the preservation term.

    python benchmarks/wise_ft.py --points carl-w0-s2 carl-w0.1-distill-s1 --alphas 0.5 0.7 0.8 \
        [--sweep benchmarks/results/preserve_sweep] [--out benchmarks/results/wise_ft]

WiSE-FT (Wortsman et al., 2022) keeps general ability after fine-tuning without a training term:
the exported backbone's weights are interpolated with the starting encoder's,
theta_a = (1 - a) theta_0 + a theta_ft, so one trained run gives a whole front (a = 1: the run,
a = 0: the frozen encoder). Each (point, a) takes a point of the preservation sweep
(``benchmarks/preserve_sweep.py``; its model folder SWEEP/runs/<point>/model must be there: the
sweep's runs are not committed, its command retrains them), interpolates the backbone (the heads are
unused by the probes) and runs the sweep's three probes (EmoBank valence r, GoEmotions macro-F1,
SICK-R). Finished pairs are cached in OUT/cells/ under the point's spec hash and a; every
invocation rewrites OUT/results.json, OUT/report.md and OUT/front.png, where the sweep's own fronts
(the preservation term's weights) are drawn for comparison.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from preserve_sweep import AFFECT, SEMANTICS, TASKS, configuration, summarise, value
from safetensors.torch import load_file, save_file

from carl.atomic import write_text_atomic
from carl.config import load_config
from carl.evaluation.cells import dump_json, new_record, read_cell, save_cell, without_points
from carl.evaluation.tasks import TaskSettings, evaluate_encoder, load_task_data
from carl.inference import AffectEncoder
from carl.model import resolve_encoder
from carl.training.run_info import environment_info

SWEEP = Path("benchmarks/results/preserve_sweep")
OUT = Path("benchmarks/results/wise_ft")
WEIGHTS = "model.safetensors"


def interpolate(model: Path, start: Path, alpha: float, into: Path) -> None:
    """Copy the model folder ``model`` to ``into`` with its backbone weights
    (1 - alpha) * start + alpha * model (float tensors; others kept)."""
    tuned, frozen = load_file(str(model / WEIGHTS)), load_file(str(start / WEIGHTS))
    foreign = [k for k in tuned if k not in frozen or frozen[k].shape != tuned[k].shape]
    if foreign:
        raise SystemExit(f"{model / WEIGHTS}: {foreign[0]} has no counterpart in {start / WEIGHTS}")
    shutil.copytree(model, into)
    mixed = {
        k: ((1 - alpha) * frozen[k].float() + alpha * v.float()).to(v.dtype) if v.is_floating_point() else v
        for k, v in tuned.items()
    }
    save_file(mixed, str(into / WEIGHTS), metadata={"format": "pt"})


def starting_encoder(run_dir: Path) -> Path:
    """The local folder of the encoder the run started from (its config's ``model.encoder``)."""
    name = load_config(run_dir / "config.toml", []).model.encoder
    folder = Path(resolve_encoder(name))
    if not (folder / WEIGHTS).is_file():
        raise SystemExit(f"{run_dir / 'config.toml'}: model.encoder {name!r} is not a local folder with {WEIGHTS}")
    return folder


def measure(point: dict, alpha: float, sweep: Path, data, settings: TaskSettings) -> dict:
    """The probes of one point at one alpha (alpha 1: the sweep's own cell, not recomputed)."""
    name = f"{point['name']}-a{alpha:g}"
    record = new_record(name, {"point": point["name"], "point_hash": point["spec_hash"], "alpha": alpha})
    record.update(point=point["name"], alpha=alpha)
    if alpha == 1:
        record["results"] = without_points(point["results"])
        return record
    run_dir = sweep / "runs" / point["name"]
    if not (run_dir / "model").is_dir():
        raise SystemExit(f"{run_dir / 'model'}: missing; rerun the sweep command that computes {point['name']}")
    started = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        interpolate(run_dir / "model", starting_encoder(run_dir), alpha, Path(tmp) / "model")
        encoder = AffectEncoder.load(str(Path(tmp) / "model"))
        record["results"] = without_points(evaluate_encoder(encoder, settings, data=data, show_progress=False))
    record["eval_seconds"] = time.time() - started
    return record


def report(rows: list[dict], reference: dict, command: str, env: dict) -> str:
    frozen, plain = reference["frozen"], reference["plain"]
    lines = [
        "# WiSE-FT: interpolating the trained backbone with the starting encoder",
        "",
        "```",
        command,
        "```",
        "",
        f"Machine: {env.get('cpu_count')} CPU cores ({env.get('processor')}), torch {env['versions'].get('torch')}"
        f"; git {env.get('git_revision')}.",
        "",
        "theta_a = (1 - a) theta_0 + a theta_ft of a preservation-sweep point's backbone, then the sweep's "
        "probes (one seed per row: the point's). Gains kept: against the 3-seed mean of the point's "
        "objective at preserve weight 0 over the frozen encoder, as in the sweep's report (targets: SICK-R "
        "at least frozen - 1, at least 90 % of both gains). The plot draws each point's a = 0 .. 1 line "
        "beside the preservation term's front (distill weights) at the same seed.",
        "",
        "| point | a | EmoBank valence r | GoEmotions macro-F1 | SICK-R rho x100 | SICK-R vs frozen "
        "| valence gain kept | GoEmotions gain kept |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        kept = []
        for task, metric, _ in AFFECT:
            key = f"{task}/{metric}"
            base = plain[r["objective"]][key] - frozen[key]
            kept.append(f"{100 * (r[key] - frozen[key]) / base:.0f} %")
        sickr = r[f"{SEMANTICS[0]}/{SEMANTICS[1]}"]
        lines.append(
            f"| {r['point']} | {r['alpha']:g} | {r['emobank/valence_pearson']:.4f} | {r['goemotions/macro_f1']:.4f} "
            f"| {sickr:.2f} | {sickr - frozen[f'{SEMANTICS[0]}/{SEMANTICS[1]}']:+.2f} | {kept[0]} | {kept[1]} |"
        )
    return "\n".join([*lines, "", "![WiSE-FT against the preservation term](front.png)", ""])


def plot(rows: list[dict], sweep_cells: dict[str, dict], out: Path) -> None:
    """Affect against SICK-R: a line per point through its alphas (a = 0 is the frozen encoder),
    and, dashed in the same colour, the preservation term's front (distill weights) of the point's
    objective and seed."""
    fig = Figure(figsize=(10, 4.4), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    x_key = f"{SEMANTICS[0]}/{SEMANTICS[1]}"
    frozen = sweep_cells["frozen"]
    points = list(dict.fromkeys(r["point"] for r in rows))
    configs = {name: configuration(c) for name, c in sweep_cells.items()}  # (objective, weight, kind)
    fronts = {}  # point -> the sweep's cells of its objective and seed at weight 0 and the distill weights
    for point in points:
        objective, seed = configs[point][0], sweep_cells[point]["seed"]
        same = [n for n, c in sweep_cells.items() if c.get("seed") == seed and configs[n][0] == objective]
        fronts[point] = [
            sweep_cells[n] for n in sorted(same, key=lambda n: configs[n][1]) if configs[n][2] in ("none", "distill")
        ]
    for ax, (task, metric, label) in zip(fig.subplots(1, 2), AFFECT):
        y_key = f"{task}/{metric}"
        for i, point in enumerate(points):
            color = f"C{i}"
            cells = fronts[point]
            xs, ys = [value(c, *SEMANTICS[:2]) for c in cells], [value(c, task, metric) for c in cells]
            front = f"{configs[point][0]} + distill, seed {cells[0]['seed']} (weights)"
            ax.plot(xs, ys, "--s", color=color, alpha=0.45, ms=4, lw=1, label=front)
            for c, x, y in zip(cells, xs, ys):
                ax.annotate(
                    f"{configs[c['name']][1]:g}",
                    (x, y),
                    fontsize=6,
                    color=color,
                    xytext=(3, -9),
                    textcoords="offset points",
                )
            series = sorted((r for r in rows if r["point"] == point), key=lambda r: r["alpha"])
            xs = [value(frozen, *SEMANTICS[:2]), *(r[x_key] for r in series)]
            ys = [value(frozen, task, metric), *(r[y_key] for r in series)]
            ax.plot(xs, ys, "-o", color=color, ms=4, lw=1, label=f"WiSE-FT of {point} (a)")
            for r in series:
                ax.annotate(
                    f"{r['alpha']:g}", (r[x_key], r[y_key]), fontsize=7, xytext=(4, 3), textcoords="offset points"
                )
        ax.plot(value(frozen, *SEMANTICS[:2]), value(frozen, task, metric), "k*", ms=10, label="frozen encoder")
        ax.axvline(value(frozen, *SEMANTICS[:2]) - 1, ls=":", color="grey", lw=1, label="SICK-R target (frozen - 1)")
        ax.set_xlabel(SEMANTICS[2] + " (general semantics)")
        ax.set_ylabel(label + " (affect)")
        ax.grid(alpha=0.3)
    fig.axes[0].legend(fontsize=7)
    fig.suptitle("WiSE-FT (interpolation weight a) against the preservation term at the same seed", fontsize=10)
    fig.savefig(out / "front.png")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", nargs="+", required=True, help="preservation-sweep points, e.g. carl-w0-s2")
    parser.add_argument("--alphas", nargs="+", type=float, default=[0.5, 0.7, 0.8])
    parser.add_argument("--sweep", type=Path, default=SWEEP)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    if any(not 0 <= a <= 1 for a in args.alphas):
        raise SystemExit(f"--alphas: each must be in [0, 1], got {args.alphas}")
    sweep_cells = {p.stem: read_cell(p) for p in sorted((args.sweep / "cells").glob("*.json"))}
    unknown = [p for p in args.points if p not in sweep_cells]
    if unknown:
        raise SystemExit(f"{args.sweep / 'cells'}: no point {unknown[0]} (have: {', '.join(sorted(sweep_cells))})")
    settings = TaskSettings(tasks=TASKS)  # the sweep's probes
    data = None
    for name in args.points:
        for alpha in sorted({*args.alphas, 1.0}):
            path = args.out / "cells" / f"{name}-a{alpha:g}.json"
            cached = read_cell(path)
            if cached is not None and cached["spec"]["point_hash"] == sweep_cells[name]["spec_hash"]:
                continue
            if data is None and alpha != 1:
                data = load_task_data(settings)
            record = measure(sweep_cells[name], alpha, args.sweep, data, settings)
            save_cell(args.out, record["name"], record)
            print(
                f"[wise_ft] {record['name']}: {', '.join(f'{t} {value(record, t, m):.4f}' for t, m, _ in (*AFFECT, SEMANTICS))}",
                flush=True,
            )
    sweep_rows = summarise(sweep_cells)

    def means(row: dict) -> dict:
        return {k: v["mean"] for k, v in row.items() if isinstance(v, dict) and "mean" in v}

    reference = {
        "frozen": next(means(r) for r in sweep_rows if r["objective"] == "frozen"),
        "plain": {r["objective"]: means(r) for r in sweep_rows if r["weight"] == 0 and r["objective"] != "frozen"},
    }
    rows = []
    for path in sorted((args.out / "cells").glob("*.json")):
        record = read_cell(path)
        point = sweep_cells.get(record["point"])
        if point is None or record["spec"]["point_hash"] != point["spec_hash"]:
            continue  # a pair of a point the sweep no longer has, or has recomputed
        objective = configuration(point)[0]
        if objective in reference["plain"]:
            metrics = {f"{t}/{m}": value(record, t, m) for t, m, _ in (*AFFECT, SEMANTICS)}
            rows.append({"point": record["point"], "alpha": record["alpha"], "objective": objective, **metrics})
    rows.sort(key=lambda r: (r["point"], r["alpha"]))
    alphas = sorted({r["alpha"] for r in rows} - {1.0}) or [1.0]  # alpha 1 rides with any other
    command = (
        f"python benchmarks/wise_ft.py --points {' '.join(dict.fromkeys(r['point'] for r in rows))} "
        f"--alphas {' '.join(f'{a:g}' for a in alphas)}"
        + (f" --sweep {args.sweep}" if args.sweep != SWEEP else "")
        + (f" --out {args.out}" if args.out != OUT else "")
    )
    env = environment_info()
    write_text_atomic(
        args.out / "results.json",
        dump_json({"command": command, "rows": rows, "reference": reference, "environment": env}),
    )
    write_text_atomic(args.out / "report.md", report(rows, reference, command, env))
    plot(rows, sweep_cells, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
