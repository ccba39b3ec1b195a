"""Training throughput of objective = mse, mcl and carl, on 1 and on N processes, in one run.

    python benchmarks/train_speed.py [--steps 30] [--processes 1 2] [--batch-size 32] \
        [--encoder minilm-l6] [--out benchmarks/results/train_speed] \
        [--objectives mse mcl carl carl+objective.ptd.sentence_fraction=0.5] [--set KEY=VALUE]

Each cell runs ``carl train`` (through torchrun when N > 1) on the first sentences of EmoBank
for ``--steps`` optimizer steps with the same backbone and per-process batch, reads the per-step
times from metrics.jsonl (the first ``--warmup`` steps dropped) and reports samples per second and
each objective's step time relative to ``--baseline`` (default mse) at the same process count (with ``--repeats R`` the
cells run R times interleaved; the ratio is taken within each repeat and its median, minimum and
maximum reported, because this machine's speed drifts between runs). Torch threads per process
are ``cores // N`` so that 1 and N processes use the same cores. An objective may carry its own
overrides after ``+`` (comma-separated); ``--set`` applies to every cell (e.g.
``train.mixed_precision=bf16``). On a CUDA machine each process takes one GPU, so N is at most
the GPU count there. Writes results.json and report.md.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from carl.evaluation.benchmark import read_metrics
from carl.training.run_info import environment_info


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def timing_overrides(objective: str, steps: int, batch_size: int, processes: int = 1) -> list[str]:
    """Config overrides of a timing run: ``steps`` steps at full learning rate on just enough of the
    first EmoBank sentences, a 64-key queue (filled within the first steps), no checkpoints."""
    return [
        f"objective.name={objective}",
        f"train.max_steps={steps}",
        f"train.batch_size={batch_size}",
        f"data.limit={steps * batch_size * processes + 64}",
        "objective.mcl.queue_size=64",
        "train.warmup_ratio=0",
        "train.checkpoint_every=0",
    ]


def run_cell(variant: str, processes: int, args, workdir: Path) -> dict:
    """``variant`` is an objective name, optionally ``+key=value,key=value`` after it."""
    objective, _, extra = variant.partition("+")
    threads = max(1, (os.cpu_count() or 1) // processes)
    out = workdir / f"cell{len(list(workdir.iterdir()))}-p{processes}"
    sets = [
        *timing_overrides(objective, args.steps, args.batch_size, processes),
        f"model.encoder={args.encoder}",
        f"train.num_threads={threads}",
        *args.overrides,
        *filter(None, extra.split(",")),
    ]
    cli = ["-m", "carl.cli", "train", "--output", str(out), "--no-progress", *[a for s in sets for a in ("--set", s)]]
    launcher = (
        [sys.executable]
        if processes == 1
        else [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            str(processes),
            "--master_addr",
            "127.0.0.1",
            "--master_port",
            str(_free_port()),
        ]
    )
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    done = subprocess.run(launcher + cli, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{variant} x {processes}: {done.stderr[-2000:]}")
    steps = read_metrics(out)
    times = [s["step_time"] for s in steps[args.warmup :]]
    step = statistics.median(times)
    return {
        "objective": variant,
        "processes": processes,
        "threads_per_process": threads,
        "median_step_s": step,
        "samples_per_s": args.batch_size * processes / step,
        "steps_timed": len(times),
    }


def summarise(cells: list[dict], baseline: str = "mse") -> list[dict]:
    """One row per (objective, processes): median over repeats of the step time, and the ratio to
    ``baseline`` taken within each repeat (median, min, max), so machine drift between repeats cancels."""
    rows: dict[tuple[str, int], dict] = {}
    for c in cells:
        row = rows.setdefault((c["objective"], c["processes"]), {**c, "steps": [], "ratios": []})
        row["steps"].append(c["median_step_s"])
        base = next(
            (
                b
                for b in cells
                if b["objective"] == baseline and b["processes"] == c["processes"] and b["repeat"] == c["repeat"]
            ),
            None,
        )
        if base:
            row["ratios"].append(c["median_step_s"] / base["median_step_s"])
    for row in rows.values():
        row["median_step_s"] = statistics.median(row["steps"])
        row["samples_per_s"] = row["samples_per_s"] * row["steps"][0] / row["median_step_s"]
    return list(rows.values())


def report(cells: list[dict], command: str, env: dict, baseline: str = "mse") -> str:
    lines = [
        f"| objective | processes | threads each | median step (s) | samples/s | step time / {baseline} (median; "
        "min-max over repeats) |",
        "|---|---|---|---|---|---|",
    ]
    for r in summarise(cells, baseline):
        ratio = (
            f"{statistics.median(r['ratios']):.2f}; {min(r['ratios']):.2f}-{max(r['ratios']):.2f}"
            if r["ratios"]
            else "n/a"
        )
        lines.append(
            f"| {r['objective']} | {r['processes']} | {r['threads_per_process']} | "
            f"{r['median_step_s']:.3f} | {r['samples_per_s']:.1f} | {ratio} |"
        )
    hw = f"{env.get('processor')} ({env.get('cpu_count')} cores), torch {env['versions'].get('torch')}"
    if env.get("gpus"):
        hw += f", GPU: {', '.join(env['gpus'])}"
    return f"# Training speed\n\nCommand: `{command}`\n\nHardware: {hw}\n\n" + "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--objectives", nargs="+", default=["mse", "mcl", "carl"])
    parser.add_argument("--encoder", default="minilm-l6")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override for every cell, e.g. train.mixed_precision=bf16",
    )
    parser.add_argument(
        "--repeats", type=int, default=1, help="run every cell this many times, interleaved (default 1)"
    )
    parser.add_argument("--baseline", default="mse", help="the objective (variant) step times are divided by")
    parser.add_argument("--out", default="benchmarks/results/train_speed")
    args = parser.parse_args(argv)
    cells = []
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for processes in args.processes:
                for objective in args.objectives:
                    cells.append({**run_cell(objective, processes, args, Path(tmp)), "repeat": repeat})
                    print(json.dumps(cells[-1]), flush=True)
    env = environment_info()
    command = "python " + " ".join(sys.argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"cells": cells, "command": command, "environment": env}, indent=2))
    (out / "report.md").write_text(report(cells, command, env, args.baseline))
    print(report(cells, command, env, args.baseline))
    return 0


if __name__ == "__main__":
    sys.exit(main())
