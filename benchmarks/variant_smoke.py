"""Smoke run of each variant under study on the real MiniLM: a few steps each, no quality claim.

    python benchmarks/variant_smoke.py --out /tmp/variant-smoke            # every variant, 10 steps
    python benchmarks/variant_smoke.py --out /tmp/vs --steps 5 --methods carl-rank

Each method of ``VARIANT_METHODS`` (and ``carl`` for reference) trains ``--steps`` optimizer steps
of batch 16 on bundled EmoBank with ``model.encoder=minilm-l6``, without dev evaluation, into
``OUT/<method>``; the table gives the mean step time (the first step excluded) and the last step's
loss components and variant diagnostics. It shows that each switch runs on the real model.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from carl.config import load_config
from carl.evaluation.benchmark import METHODS, VARIANT_METHODS, read_metrics
from carl.training.trainer import CarlTrainer

SHOWN = ("loss", "mcl", "mse", "ptd", "ptd_weight", "ptd_affect_increase", "ptd_consistency", "mcl_num_keys")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--methods", nargs="+", default=["carl", *VARIANT_METHODS])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    rows = []
    for name in args.methods:
        overrides = [
            *METHODS[name].overrides,
            "model.encoder=minilm-l6",
            f"train.max_steps={args.steps}",
            "train.batch_size=16",
            "data.max_length=64",
            "train.select_metric=",
            "train.checkpoint_every=0",
            f"train.num_threads={args.threads}",
        ]
        CarlTrainer(load_config(None, overrides), args.out / name, show_progress=False).train()
        records = read_metrics(args.out / name)
        last = records[-1]
        step_time = statistics.mean(r["step_time"] for r in records[1:]) if len(records) > 1 else float("nan")
        rows.append(
            {
                "method": name,
                "steps": len(records),
                "step_time_s": step_time,
                **{k: last[k] for k in SHOWN if k in last},
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    print("\n| method | steps | s/step | " + " | ".join(SHOWN) + " |")
    print("|---" * (3 + len(SHOWN)) + "|")
    for row in rows:
        cells = [f"{row[k]:.4g}" if k in row else "-" for k in SHOWN]
        print(f"| {row['method']} | {row['steps']} | {row['step_time_s']:.2f} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
