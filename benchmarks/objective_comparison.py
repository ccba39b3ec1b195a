"""Compare objectives (carl, mcl, mse, ...) over seeds on EmoBank with the ridge probe.

    python benchmarks/objective_comparison.py --out benchmarks/results/objectives \
        --objectives carl mcl mse --seeds 1 2 3 [--set train.epochs=1 ...]

Each (objective, seed) cell trains into OUT/runs/<objective>-s<seed>, is probed on EmoBank test,
and is cached in OUT/cells/<name>.json: rerunning skips finished cells (and an interrupted run
resumes from its checkpoint). The frozen backbone is the floor. Writes OUT/results.json and
OUT/report.md (mean and std over seeds, step time relative to mse).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from carl.config import load_config
from carl.evaluation.va_probe import evaluate_emobank
from carl.inference import AffectEncoder
from carl.training.run_info import environment_info
from carl.training.trainer import CarlTrainer

METRICS = ("valence_pearson", "arousal_pearson")


def run_cell(out: Path, name: str, overrides: list[str], train: bool) -> dict:
    """Train (unless floor) and probe one cell; cached in OUT/cells/<name>.json."""
    cache = out / "cells" / f"{name}.json"
    if cache.is_file():
        return json.loads(cache.read_text())
    started = time.time()
    step_time = None
    if train:
        cfg = load_config(None, overrides)
        run_dir = out / "runs" / name
        CarlTrainer(cfg, run_dir, show_progress=True).train()
        steps = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines() if l.strip()]
        step_time = statistics.median(s["step_time"] for s in steps)
        encoder = AffectEncoder.load(str(run_dir))
    else:
        encoder = AffectEncoder.load(overrides[0])
    result = evaluate_emobank(encoder, show_progress=False)
    cell = {"name": name, "overrides": overrides, "metrics": result.metrics, "alphas": result.alphas,
            "median_step_time_s": step_time, "wall_s": time.time() - started}
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(cell, indent=2))
    print(f"{name}: " + ", ".join(f"{m}={result.metrics[m]:.4f}" for m in METRICS), flush=True)
    return cell


def summarise(cells: list[dict]) -> dict:
    groups: dict[str, list[dict]] = {}
    for cell in cells:
        groups.setdefault(cell["name"].rsplit("-s", 1)[0], []).append(cell)
    table = {}
    for group, members in groups.items():
        row = {}
        for m in METRICS:
            values = [c["metrics"][m] for c in members]
            row[m] = {"mean": statistics.mean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                      "values": values}
        times = [c["median_step_time_s"] for c in members if c["median_step_time_s"]]
        row["median_step_time_s"] = statistics.mean(times) if times else None
        table[group] = row
    return table


def report(table: dict, command: str) -> str:
    base = (table.get("mse") or {}).get("median_step_time_s")
    lines = ["| objective | seeds | valence r (mean ± std) | arousal r (mean ± std) | step time (s) | × mse |",
             "|---|---|---|---|---|---|"]
    for group, row in table.items():
        t = row["median_step_time_s"]
        ratio = f"{t / base:.2f}" if t and base else "-"
        lines.append(f"| {group} | {len(row['valence_pearson']['values'])} | "
                     f"{row['valence_pearson']['mean']:.4f} ± {row['valence_pearson']['std']:.4f} | "
                     f"{row['arousal_pearson']['mean']:.4f} ± {row['arousal_pearson']['std']:.4f} | "
                     f"{t:.2f} | {ratio} |" if t else
                     f"| {group} | 1 | {row['valence_pearson']['mean']:.4f} | {row['arousal_pearson']['mean']:.4f} | - | - |")
    return (f"# Objective comparison on EmoBank (ridge probe, test split, Pearson r)\n\n"
            f"Command: `{command}`\n\n" + "\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="benchmarks/results/objectives")
    parser.add_argument("--objectives", nargs="+", default=["carl", "mcl", "mse"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--encoder", default="minilm-l6")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="extra config overrides")
    args = parser.parse_args(argv)
    out = Path(args.out)
    cells = [run_cell(out, "frozen", [args.encoder], train=False)]
    for seed in args.seeds:  # seeds outermost: an interrupted benchmark has every objective at equal depth
        for objective in args.objectives:
            overrides = [f"objective.name={objective}", f"train.seed={seed}",
                         f"model.encoder={args.encoder}", *args.overrides]
            cells.append(run_cell(out, f"{objective}-s{seed}", overrides, train=True))
    table = summarise(cells)
    command = "python " + " ".join(sys.argv)
    results = {"table": table, "cells": cells, "command": command, "environment": environment_info()}
    (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "report.md").write_text(report(table, command))
    print(report(table, command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
