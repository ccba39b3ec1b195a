"""Compare objectives (carl, mcl, mse, ...) over seeds on EmoBank only: a thin wrapper of
``carl benchmark`` (carl/evaluation/benchmark.py) restricted to the EmoBank task.

    python benchmarks/objective_comparison.py --out benchmarks/results/objectives \
        --objectives carl mcl mse --seeds 1 2 3 [--set train.epochs=1 ...]

Equivalent to ``carl benchmark --out OUT --tasks emobank --methods frozen carl mcl mse
--seeds 1 2 3``: each (objective, seed) cell trains into OUT/runs/<objective>-s<seed>, is
probed on EmoBank (and the EmoBank geometry), cached in OUT/cells/, and OUT/results.json and
OUT/report.md are written (step time relative to mse in the report's cost table).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from carl.evaluation.benchmark import BenchmarkSettings, run_benchmark
from carl.evaluation.tasks import TaskSettings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="benchmarks/results/objectives")
    parser.add_argument("--objectives", nargs="+", default=["carl", "mcl", "mse"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--encoder", default="minilm-l6")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="extra config overrides")
    args = parser.parse_args(argv)
    settings = BenchmarkSettings(
        methods=("frozen", *args.objectives),
        seeds=tuple(args.seeds),
        encoder=args.encoder,
        overrides=tuple(args.overrides),
        tasks=TaskSettings(tasks=("emobank",)),
    )
    run_benchmark(args.out, settings, command="python " + " ".join(sys.argv))
    print((Path(args.out) / "report.md").read_text(encoding="utf-8"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
