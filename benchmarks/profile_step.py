"""What a training step asks of the device: torch.profiler over a few steps per objective and precision.

    python benchmarks/profile_step.py [--cells mse carl mse@bf16 carl@bf16] [--steps 10] \
        [--warmup 10] [--batch-size 32] [--encoder minilm-l6] [--set KEY=VALUE] \
        [--out benchmarks/results/profile_step]

A cell is an objective, optionally ``@precision`` (``train.mixed_precision``). Each cell trains
in-process with the overrides of ``train_speed.py``; after ``--warmup`` steps (and one profiler
warm-up step) torch.profiler records ``--steps`` steps. Per step it reports the wall time (with the
profiler's overhead), the device's busy time (sum of kernel times; 0 on CPU), kernel launches,
waits of the host for the device (stream/device synchronisations), scalar reads
(``aten::_local_scalar_dense``, on CPU tensors too, e.g. AdamW's step counts) and the top
operators by device and by host time. On a GPU, busy time far below the wall time means
the step is bound by the host issuing work, not by the device. Writes results.json and report.md.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import warnings
from pathlib import Path

import torch
from accelerate.state import AcceleratorState
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile, schedule

from carl.config import load_config
from carl.evaluation.benchmark import read_metrics
from carl.training.run_info import environment_info
from carl.training.trainer import CarlTrainer
from train_speed import timing_overrides

LAUNCHES = ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernelEx")
SYNCS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize")
HOST_READ = "aten::_local_scalar_dense"


def _device_time(event) -> float:
    """Self device time (us) of a profiler average, across torch versions."""
    return getattr(event, "self_device_time_total", None) or getattr(event, "self_cuda_time_total", 0.0)


def _kernel_time(events) -> float:
    """Device busy time (us): kernels and copies only. A host operator's self device time repeats
    the time of the kernels it launched, so summing over every event would count it twice."""
    return sum(_device_time(e) for e in events if e.device_type == DeviceType.CUDA)


def profile_cell(cell: str, args) -> dict:
    objective, _, precision = cell.partition("@")
    overrides = [*timing_overrides(objective, args.warmup + 1 + args.steps, args.batch_size),
                 f"model.encoder={args.encoder}", f"train.mixed_precision={precision or 'no'}", *args.overrides]
    # the profiler wraps momentum_update after the scheduler was built; torch warns about step order
    warnings.filterwarnings("ignore", message="Seems like `optimizer.step\\(\\)` has been overridden")
    activities = [ProfilerActivity.CPU] + [ProfilerActivity.CUDA] * torch.cuda.is_available()
    with tempfile.TemporaryDirectory(prefix="carl-profile-") as run_dir:
        trainer = CarlTrainer(load_config(None, overrides), run_dir, show_progress=False)
        model = trainer.accelerator.unwrap_model(trainer.model)
        with profile(activities=activities, schedule=schedule(wait=args.warmup, warmup=1, active=args.steps)) as prof:
            update = model.momentum_update

            def update_and_step():  # the last call of every optimizer step
                update()
                prof.step()

            model.momentum_update = update_and_step
            trainer.train()
        metrics = read_metrics(Path(run_dir))
        trainer.close()
        AcceleratorState._reset_state(reset_partial_state=True)  # the next cell may use another precision
    events = prof.key_averages()
    n = args.steps
    count = lambda names: sum(e.count for e in events if e.key in names) / n  # noqa: E731
    row = {"cell": cell, "wall_ms": 1000 * sum(m["step_time"] for m in metrics[-n:]) / n,
           "device_busy_ms": _kernel_time(events) / 1000 / n,
           "kernel_launches": count(LAUNCHES), "device_syncs": count(SYNCS), "host_reads": count((HOST_READ,)),
           "top_host": _top(events, lambda e: e.self_cpu_time_total, n)}
    if torch.cuda.is_available():
        row["top_device"] = _top(events, _device_time, n)
    return row


def _top(events, key, steps: int, limit: int = 12) -> list[dict]:
    ranked = sorted((e for e in events if not e.key.startswith("ProfilerStep")), key=key, reverse=True)[:limit]
    return [{"op": e.key, "ms_per_step": key(e) / 1000 / steps, "calls_per_step": e.count / steps} for e in ranked]


def report(rows: list[dict], args, info: dict) -> str:
    hw = f"{info['processor']} ({info['cpu_count']} cores), torch {info['versions'].get('torch')}"
    if info.get("gpus"):
        hw += f", GPU: {', '.join(info['gpus'])}"
    lines = ["# Training step profile (per step)", "", f"Hardware: {hw}; batch {args.batch_size}, "
             f"{args.steps} profiled steps after {args.warmup + 1}.", "",
             "| cell | wall ms (profiled) | device busy ms | kernel launches | device syncs | scalar reads |",
             "|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['cell']} | {r['wall_ms']:.1f} | {r['device_busy_ms']:.1f} | {r['kernel_launches']:.0f} | "
              f"{r['device_syncs']:.0f} | {r['host_reads']:.0f} |" for r in rows]
    for r in rows:
        for side in ("top_device", "top_host"):
            if side in r:
                lines += ["", f"## {r['cell']}: top operators by {side[4:]} time", "",
                          "| operator | ms per step | calls per step |", "|---|---:|---:|"]
                lines += [f"| `{t['op']}` | {t['ms_per_step']:.2f} | {t['calls_per_step']:.1f} |" for t in r[side]]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", nargs="+", default=["mse", "carl", "mse@bf16", "carl@bf16"])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--encoder", default="minilm-l6")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/profile_step"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    info = environment_info(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    rows = []
    for cell in args.cells:  # written after every cell, so a cut-short run keeps what it measured
        rows.append(profile_cell(cell, args))
        (args.out / "results.json").write_text(json.dumps({"args": vars(args) | {"out": str(args.out)},
                                                           "environment": info, "rows": rows}, indent=2) + "\n")
        (args.out / "report.md").write_text(report(rows, args, info), encoding="utf-8")
        print(report(rows[-1:], args, info), flush=True)


if __name__ == "__main__":
    main()
