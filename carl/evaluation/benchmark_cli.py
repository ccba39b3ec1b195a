"""``carl benchmark``: its arguments (no heavy imports here, so ``carl --help`` stays fast)."""

from __future__ import annotations

import argparse
import sys

DESCRIPTION = """\
Two protocols. --protocol probe (the default): train every method with every seed, probe the
frozen embeddings on every task and write OUT/results.json, OUT/report.md and PNG plots. Finished cells are cached in OUT/cells/ and an
interrupted training resumes from its checkpoint: rerun the same command to continue.

Methods: frozen (the backbone), mse, supcon-hard, mcl, carl, carl-random-positions,
carl-replace-random, carl-replace-mask, simcse (unsupervised SimCSE), vader, textblob.
Tasks: EmoBank VA regression, SST-2 and MR polarity, SST-5, GoEmotions (Ekman + neutral),
alignment/uniformity; plus user corpora given with --corpus.

Every trained cell runs carl's default configuration with train.epochs=1 (one epoch of EmoBank
train), the given --encoder and seed, then any --set overrides. See docs/evaluation.md.

--protocol finetune: every method fine-tunes encoder + task head (carl's trainer, dev selection,
calibration on dev) and is scored on test. Cells are task x regime x method x seed.
Tasks: ekman (GoEmotions Ekman + neutral), goemotions28 (multi-label), sst5, emobank (VA).
Methods: ft, mcl, carl, carl-stage, setfit, probe; by name, the variants under study (ft-dropout,
carl-dropout, carl-affect-saliency, carl-embedding, carl-embedding-consistency, carl-negative,
mcl-rank, carl-rank, carl-ptd-warmup, carl-ptd-decay). Regimes: full (1000 steps), k64 (300 steps),
k8 (150 steps); k64/k8 for single-label tasks only; EmoBank full: 504 steps. Default --out
benchmarks/results/finetune. See docs/evaluation.md, "Fine-tuning protocol".
"""
PROBE_ONLY = ("quick", "corpus", "va_file")
FINETUNE_ONLY = ("regimes", "report_only")


def add_benchmark_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``carl benchmark``."""
    parser.add_argument(
        "--protocol",
        choices=("probe", "finetune"),
        default="probe",
        help="probe: linear probes on frozen trained encoders (default); finetune: fine-tune and score on test",
    )
    parser.add_argument(
        "--out",
        "-o",
        help="benchmark folder: cells/, runs/, results.json, report.md "
        "(default benchmarks/results/main, or benchmarks/results/finetune for --protocol finetune)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="one seed, 40 training steps per cell, data subsets (< 20 min on 2 cores)"
    )
    parser.add_argument("--seeds", nargs="+", type=int, help="training seeds (default 1 2 3; --quick: 1)")
    parser.add_argument("--methods", nargs="+", help="methods to run (default: all but the variants under study)")
    parser.add_argument(
        "--tasks",
        nargs="+",
        help="bundled tasks (probe default: emobank sst2 mr sst5 goemotions sickr; finetune: ekman goemotions28 sst5 emobank)",
    )
    parser.add_argument("--regimes", nargs="+", help="finetune: training-data regimes (default full k64 k8)")
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
        help="also write the main table into this README between its benchmark-results markers "
        "(finetune: its finetune-results markers)",
    )
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="finetune: train nothing; rewrite results.json and report.md from the cached cells "
        "(the others are listed as missing)",
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


def finetune_settings_from_args(args: argparse.Namespace):
    """:class:`~carl.evaluation.finetune.FinetuneSettings` from parsed arguments."""
    from carl.evaluation.finetune import FinetuneSettings

    given = [f"--{name.replace('_', '-')}" for name in PROBE_ONLY if getattr(args, name)]
    if given:
        raise ValueError(f"{', '.join(given)}: only for --protocol probe")
    changes = dict(encoder=args.encoder, overrides=tuple(args.overrides))
    for name in ("tasks", "methods", "regimes", "seeds"):
        if getattr(args, name):
            changes[name] = tuple(getattr(args, name))
    return FinetuneSettings(**changes)


def run_from_args(args: argparse.Namespace) -> int:
    """Run the benchmark of ``--protocol``; print where the report is."""
    command = None  # the command that computes the cells (a --report-only rerun records it without the flag)
    if len(sys.argv) > 1 and sys.argv[1] == "benchmark":
        command = "carl benchmark " + " ".join(a for a in sys.argv[2:] if a != "--report-only")
    if args.protocol == "finetune":
        from carl.evaluation.finetune import run_finetune
        from carl.evaluation.finetune_report import README_END, README_START, update_readme

        out = args.out or "benchmarks/results/finetune"
        results = run_finetune(
            out,
            finetune_settings_from_args(args),
            show_progress=not args.no_progress,
            command=command,
            report_only=args.report_only,
        )
    else:
        from carl.evaluation.benchmark import run_benchmark
        from carl.evaluation.report import README_END, README_START, update_readme

        given = [f"--{name.replace('_', '-')}" for name in FINETUNE_ONLY if getattr(args, name)]
        if given:
            raise ValueError(f"{', '.join(given)}: only for --protocol finetune")
        out = args.out or "benchmarks/results/main"
        results = run_benchmark(out, settings_from_args(args), show_progress=not args.no_progress, command=command)
    if args.readme:
        if update_readme(args.readme, results, f"{out}/report.md"):
            print(f"updated the results section of {args.readme}")
        else:
            print(f"{args.readme} has no {README_START} / {README_END} markers: README not changed", file=sys.stderr)
    return 0
