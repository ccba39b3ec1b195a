"""``carl benchmark``: its arguments (no heavy imports here, so ``carl --help`` stays fast)."""

from __future__ import annotations

import argparse
import sys

DESCRIPTION = """\
Train every method with every seed, probe the frozen embeddings on every task and write
OUT/results.json, OUT/report.md and PNG plots. Finished cells are cached in OUT/cells/ and an
interrupted training resumes from its checkpoint: rerun the same command to continue.

Methods: frozen (the backbone), mse, supcon-hard, mcl, carl, carl-random-positions,
carl-replace-random, carl-replace-mask, simcse (unsupervised SimCSE), vader, textblob.
Tasks: EmoBank VA regression, SST-2 and MR polarity, SST-5, GoEmotions (Ekman + neutral),
alignment/uniformity; plus user corpora given with --corpus.

Every trained cell runs carl's default configuration with train.epochs=1 (one epoch of EmoBank
train), the given --encoder and seed, then any --set overrides. See docs/evaluation.md.
"""


def add_benchmark_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``carl benchmark``."""
    parser.add_argument(
        "--out",
        "-o",
        default="benchmarks/results/main",
        help="benchmark folder: cells/, runs/, results.json, report.md, plots (default benchmarks/results/main)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="one seed, 40 training steps per cell, data subsets (< 20 min on 2 cores)"
    )
    parser.add_argument("--seeds", nargs="+", type=int, help="training seeds (default 1 2 3; --quick: 1)")
    parser.add_argument("--methods", nargs="+", help="methods to run (default: all)")
    parser.add_argument("--tasks", nargs="+", help="bundled tasks (default: emobank sst2 mr sst5 goemotions sickr)")
    parser.add_argument("--encoder", default="minilm-l6", help="backbone for every method (default minilm-l6)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override for every trained cell, e.g. --set train.epochs=2 (repeatable)",
    )
    parser.add_argument(
        "--corpus",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="a user copy of iemocap, facebookposts or emotales (repeatable)",
    )
    parser.add_argument(
        "--va-file",
        action="append",
        default=[],
        metavar="PATH",
        help="any CSV/TSV/JSONL with text, valence, arousal columns (repeatable)",
    )
    parser.add_argument("--va-scale", default="1-5", help="rating scale of the --va-file files (default 1-5)")
    parser.add_argument(
        "--readme",
        metavar="PATH",
        help="also write the main tables into this README between its benchmark-results markers",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def settings_from_args(args: argparse.Namespace):
    """:class:`~carl.evaluation.benchmark.BenchmarkSettings` from parsed arguments."""
    from carl.evaluation.benchmark import BenchmarkSettings, quick_task_settings
    from carl.evaluation.tasks import TaskSettings

    corpora = {}
    for item in args.corpus:
        name, sep, path = item.partition("=")
        if not sep or not path:
            raise ValueError(f"--corpus expects NAME=PATH, got {item!r}")
        corpora[name] = path
    task_changes = dict(user_corpora=corpora, va_files=list(args.va_file), va_file_scale=args.va_scale)
    if args.tasks:
        task_changes["tasks"] = tuple(args.tasks)
    tasks = quick_task_settings(**task_changes) if args.quick else TaskSettings(**task_changes)
    changes = dict(encoder=args.encoder, overrides=tuple(args.overrides), tasks=tasks)
    if args.seeds:
        changes["seeds"] = tuple(args.seeds)
    if args.methods:
        changes["methods"] = tuple(args.methods)
    return BenchmarkSettings.preset(quick=args.quick, **changes)


def run_from_args(args: argparse.Namespace) -> int:
    """Run the benchmark; print where the report is."""
    from carl.evaluation.benchmark import run_benchmark
    from carl.evaluation.report import update_readme

    settings = settings_from_args(args)
    command = "carl benchmark " + " ".join(sys.argv[2:]) if len(sys.argv) > 1 and sys.argv[1] == "benchmark" else None
    results = run_benchmark(args.out, settings, show_progress=not args.no_progress, command=command)
    if args.readme:
        if update_readme(args.readme, results, f"{args.out}/report.md"):
            print(f"updated the results section of {args.readme}")
        else:
            print(
                f"{args.readme} has no <!-- benchmark-results:start --> / <!-- benchmark-results:end --> "
                "markers: README not changed",
                file=sys.stderr,
            )
    return 0
