"""Hyper-parameter sweep on EmoBank: train each configuration, probe it, table the results.

    python benchmarks/emobank_sweep.py --grid benchmarks/grids/example.toml --out runs/sweep \
        [--jobs 4] [--device cuda] [--set train.num_threads=1] [--keep-models]

The grid is a TOML file of ``[[run]]`` tables, each with a ``name``, its ``set`` overrides and
optionally ``seeds`` (one run per seed, named ``<name>-s<seed>``)::

    [[run]]
    name = "carl-e4"
    set = ["objective.name=carl", "train.epochs=4"]
    seeds = [1, 2, 42]

Every run is ``carl train`` into OUT/runs/<name> then ``carl evaluate`` (ridge probe on frozen
embeddings, alpha on EmoBank dev, Pearson r on test, float32) on ``--device``; ``--jobs`` runs go
at once (on one GPU several small runs share it well). Each finished run appends one line to
OUT/results.jsonl; a rerun skips runs already there. OUT/report.md tables every run and the mean
and standard deviation over seeds. Without ``--keep-models`` the trained model folders are
deleted once probed (metrics, configs and the probe result stay).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import threading
import time
import tomllib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from carl.evaluation.benchmark import read_metrics
from carl.training.run_info import environment_info


def expand_grid(path: Path) -> list[tuple[str, str, list[str]]]:
    """``[[run]]`` tables -> (run name, configuration name, overrides), one per seed."""
    runs = tomllib.loads(path.read_text(encoding="utf-8")).get("run", [])
    if not runs:
        raise SystemExit(f"{path}: no [[run]] tables")
    out = []
    for i, run in enumerate(runs):
        if "name" not in run:
            raise SystemExit(f"{path}: [[run]] number {i + 1} has no name")
        sets = list(run.get("set", []))
        seeds = run.get("seeds")
        if seeds:
            out += [(f"{run['name']}-s{seed}", run["name"], [*sets, f"train.seed={seed}"]) for seed in seeds]
        else:
            out.append((run["name"], run["name"], sets))
    names = [name for name, _, _ in out]
    if len(set(names)) != len(names):
        raise SystemExit(f"{path}: run names repeat: {sorted({n for n in names if names.count(n) > 1})}")
    return out


def run_one(name: str, config: str, sets: list[str], args, out: Path) -> dict:
    """Train and probe one configuration; the result row (with ``error`` on failure)."""
    run = out / "runs" / name
    cli = [sys.executable, "-m", "carl.cli"]
    train = [*cli, "train", "--output", str(run), "--no-progress",
             *[a for s in [*args.overrides, *sets] for a in ("--set", s)]]
    probe = [*cli, "evaluate", str(run), "--device", args.device, "--dtype", "float32",
             "--output", str(run / "probe.json"), "--no-progress"]
    row = {"name": name, "config": config, "set": sets}
    started = time.perf_counter()
    for step, command in (("train", train), ("probe", probe)):
        done = subprocess.run(command, capture_output=True, text=True)
        row[f"{step}_s"] = round(time.perf_counter() - started, 1)
        if done.returncode != 0:
            row["error"] = f"{step}: {done.stderr[-1500:]}"
            return row
    row["metrics"] = json.loads((run / "probe.json").read_text())["metrics"]
    steps = read_metrics(run)
    row["steps"] = len(steps)
    row["median_step_s"] = statistics.median(s["step_time"] for s in steps)
    if not args.keep_models:
        shutil.rmtree(run / "model", ignore_errors=True)
        for checkpoint in run.glob("step-*"):
            shutil.rmtree(checkpoint, ignore_errors=True)
    return row


def report(rows: list[dict], command: str, env: dict) -> str:
    """Markdown: every run, then mean and std over the seeds of each configuration."""
    hw = f"{env.get('processor')} ({env.get('cpu_count')} cores), torch {env['versions'].get('torch')}"
    if env.get("gpus"):
        hw += f", GPU: {', '.join(env['gpus'])}"
    lines = [f"# EmoBank sweep\n\nCommand: `{command}`\n\nHardware: {hw}\n",
             "| run | valence r | arousal r | steps | median step (s) | overrides |", "|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['name']} | failed | | | | {' '.join(r['set'])} |")
            continue
        m = r["metrics"]
        lines.append(f"| {r['name']} | {m['valence_pearson']:.4f} | {m['arousal_pearson']:.4f} | {r['steps']} | "
                     f"{r['median_step_s']:.3f} | {' '.join(s for s in r['set'] if not s.startswith('train.seed='))} |")
    groups: dict[str, list[dict]] = {}
    for r in rows:
        if "error" not in r:
            groups.setdefault(r["config"], []).append(r["metrics"])
    if any(len(ms) > 1 for ms in groups.values()):
        lines += ["", "| configuration | seeds | valence r (mean ± std) | arousal r (mean ± std) |", "|---|---|---|---|"]
        for name, ms in groups.items():
            cells = []
            for dim in ("valence", "arousal"):
                xs = [m[f"{dim}_pearson"] for m in ms]
                cells.append(f"{statistics.mean(xs):.4f} ± {statistics.stdev(xs) if len(xs) > 1 else 0.0:.4f}")
            lines.append(f"| {name} | {len(ms)} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--grid", required=True, type=Path, help="TOML file of [[run]] tables")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--jobs", type=int, default=1, help="runs at once (default 1)")
    parser.add_argument("--device", default="cpu", help="device for the probe's embeddings (default cpu)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override for every run (before the run's own)")
    parser.add_argument("--keep-models", action="store_true", help="keep each trained model folder")
    args = parser.parse_args(argv)
    grid = expand_grid(args.grid)
    args.out.mkdir(parents=True, exist_ok=True)
    results = args.out / "results.jsonl"
    done = {json.loads(line)["name"] for line in results.read_text().splitlines()} if results.exists() else set()
    lock = threading.Lock()

    def work(item):
        row = run_one(*item, args, args.out)
        with lock, open(results, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps({k: row.get(k) for k in ("name", "train_s", "metrics", "error")}), flush=True)

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        list(pool.map(work, [item for item in grid if item[0] not in done]))
    order = {name: i for i, (name, _, _) in enumerate(grid)}
    rows = sorted((json.loads(line) for line in results.read_text().splitlines()),
                  key=lambda r: order.get(r["name"], len(order)))
    text = report(rows, "python " + " ".join(sys.argv), environment_info())
    (args.out / "report.md").write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
