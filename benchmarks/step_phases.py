"""Where a training step's time goes, per objective: forward passes, backward, HotFlip, optimizer, EMA.

    python benchmarks/step_phases.py [--objectives mse mcl carl] [--steps 20] [--warmup 5] \
        [--batch-size 32] [--out benchmarks/results/step_phases] [--set KEY=VALUE]

Each objective trains ``--steps`` steps of the default configuration on the first EmoBank
sentences (one process, torch's thread count; the overrides of ``train_speed.py``), with the trainer's model passes, backward calls,
PTD perturbation, optimizer step and momentum update wrapped by wall-clock timers. Reports the mean
milliseconds per step of each phase after ``--warmup`` steps, the rest of the step (data, logging,
clipping) and each objective's whole step relative to mse. Writes results.json and report.md.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import warnings
from collections import defaultdict
from pathlib import Path

import torch

from carl.config import load_config
from carl.evaluation.benchmark import read_metrics
from carl.training.run_info import environment_info
from carl.training.trainer import CarlTrainer
from train_speed import timing_overrides


class PhaseTimer:
    """Accumulates wall time per phase name, counting only steps past the warm-up."""

    def __init__(self, warmup: int):
        self.warmup, self.step, self.totals = warmup, 0, defaultdict(float)

    def wrap(self, name, fn):
        def timed(*args, **kwargs):
            start = time.perf_counter()
            result = fn(*args, **kwargs)
            if self.step >= self.warmup:
                key = name(*args, **kwargs) if callable(name) else name
                self.totals[key] += time.perf_counter() - start
            return result
        return timed


def profile(objective: str, args) -> dict:
    with tempfile.TemporaryDirectory(prefix="carl-phases-") as run_dir:
        return _profile_in(objective, args, Path(run_dir))


def _profile_in(objective: str, args, run_dir: Path) -> dict:
    cfg = load_config(None, [*timing_overrides(objective, args.steps + args.warmup, args.batch_size), *args.overrides])
    # the timer wraps optimizer.step after the scheduler was built, which torch warns about
    warnings.filterwarnings("ignore", message="Seems like `optimizer.step\\(\\)` has been overridden")
    trainer = CarlTrainer(cfg, run_dir, show_progress=False)
    timer, model = PhaseTimer(args.warmup), trainer.model
    model.forward = timer.wrap(lambda *a, heads=(), **k: "forward " + "+".join(heads), model.forward)
    model.encode_keys = timer.wrap("key encoder forward", model.encode_keys)
    ptd = trainer.losses.get("ptd")  # built only for objectives with a ptd term
    if ptd is not None:
        ptd.perturb = timer.wrap("saliency + HotFlip", ptd.perturb)
    trainer.accelerator.backward = timer.wrap("backward", trainer.accelerator.backward)
    trainer.optimizer.step = timer.wrap("optimizer step", trainer.optimizer.step)
    update = timer.wrap("EMA update", model.momentum_update)

    def update_and_count():  # the last call of every optimizer step
        update()
        timer.step += 1

    model.momentum_update = update_and_count
    trainer.train()
    metrics = read_metrics(trainer.out)
    step_ms = 1000 * sum(m["step_time"] for m in metrics[args.warmup:]) / args.steps
    phases = {k: 1000 * v / args.steps for k, v in sorted(timer.totals.items(), key=lambda kv: -kv[1])}
    phases["rest of the step"] = step_ms - sum(phases.values())
    trainer.close()
    return {"objective": objective, "step_ms": step_ms, "phases_ms": phases}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--objectives", nargs="+", default=["mse", "mcl", "carl"])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/step_phases"))
    args = parser.parse_args()
    rows = [profile(o, args) for o in args.objectives]
    base = next((r["step_ms"] for r in rows if r["objective"] == "mse"), None)
    args.out.mkdir(parents=True, exist_ok=True)
    info = environment_info(torch.device("cpu"))
    (args.out / "results.json").write_text(json.dumps({"args": vars(args) | {"out": str(args.out)},
                                                       "environment": info, "rows": rows}, indent=2) + "\n")
    lines = ["# Where a training step's time goes (ms per step)", "",
             f"Hardware: {info['processor']} ({info['cpu_count']} cores), torch {info['versions'].get('torch')}, "
             f"{torch.get_num_threads()} threads; "
             f"{args.steps} timed steps after {args.warmup} warm-up steps, batch {args.batch_size}.", ""]
    for r in rows:
        ratio = f", {r['step_ms'] / base:.2f}x mse" if base else ""
        lines += [f"## {r['objective']}: {r['step_ms']:.0f} ms per step{ratio}", "", "| phase | ms |", "|---|---:|"]
        lines += [f"| {k} | {v:.1f} |" for k, v in r["phases_ms"].items()] + [""]
    (args.out / "report.md").write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
