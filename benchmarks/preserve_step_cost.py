"""What the preservation term adds to a training step, measured inside the step it is part of.

    python benchmarks/preserve_step_cost.py [--kinds distill relational l2sp] [--objective carl] \
        [--steps 12] [--warmup 2] [--batch-size 32] [--encoder minilm-l6] [--teacher-sentences 0] \
        [--out benchmarks/results/preserve_sweep/step_cost]

On a shared CPU, step times of separate runs drift by more than the few per cent in question, so
each cell trains ``objective`` with the term on (weight 1, ``train_speed.py``'s timing overrides)
and times, within every step, the term's forward (its call in the clean pass) and its own backward
(``autograd.grad`` of the term's loss to its direct inputs: the sentence embeddings, or the
backbone weights for l2sp; the rest of its backward is the shared pass through the encoder, which
the step does once for all terms). That extra backward is subtracted from the step time, so the
term's share is ``(forward + backward) / (step - forward - 2 backward)``, medians over the timed
steps. The teacher pass (distill, relational) is paid once per run and reported separately:
seconds for the run's sentences, and with ``--teacher-sentences N`` (0: all of EmoBank train) a
separate timing of that many. Writes results.json and report.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors import safe_open
from train_speed import timing_overrides

from carl.config import load_config
from carl.data.emobank import load_emobank
from carl.evaluation.benchmark import read_metrics
from carl.model.encoder import load_backbone
from carl.training.run_info import environment_info
from carl.training.teacher import TEACHER_FILE, encode_rows
from carl.training.trainer import CarlTrainer


def time_cell(kind: str, args) -> dict:
    overrides = [
        *timing_overrides(args.objective, args.warmup + args.steps, args.batch_size),
        f"model.encoder={args.encoder}",
        "objective.preserve_weight=1",
        f"objective.preserve.kind={kind}",
    ]
    with tempfile.TemporaryDirectory(prefix="carl-preserve-cost-") as run_dir:
        trainer = CarlTrainer(load_config(None, overrides), run_dir, show_progress=False)
        compute, timings = trainer._preserve_term, []

        def timed_term(batch, out, labels):
            started = time.perf_counter()
            term = compute(batch, out, labels)
            forward = time.perf_counter() - started
            core = trainer.accelerator.unwrap_model(trainer.model)
            inputs = list(core.backbone.parameters()) if kind == "l2sp" else [out.embedding]
            torch.autograd.grad(term.loss, inputs, retain_graph=True)
            timings.append((forward, time.perf_counter() - started - forward))
            return term

        trainer.clean_terms["preserve"] = timed_term
        trainer.train()
        steps = [m["step_time"] for m in read_metrics(Path(run_dir))]
        teacher = None
        if (Path(run_dir) / TEACHER_FILE).is_file():
            with safe_open(str(Path(run_dir) / TEACHER_FILE), framework="pt") as f:
                teacher = float(f.metadata()["seconds"])
        trainer.close()
    forward = statistics.median(f for f, _ in timings[args.warmup :])
    backward = statistics.median(b for _, b in timings[args.warmup :])
    step = statistics.median(steps[args.warmup :]) - backward  # without the measuring backward
    return {
        "kind": kind,
        "objective": args.objective,
        "median_step_s": step,
        "term_forward_s": forward,
        "term_backward_s": backward,
        "term_share_of_step": (forward + backward) / (step - forward - backward),
        "teacher_seconds_run": teacher,
        "run_sentences": args.batch_size * (args.warmup + args.steps) + 64,
        "steps_timed": len(steps) - args.warmup,
    }


def time_teacher(args) -> dict:
    """One teacher pass over the first N EmoBank training sentences (0: all), as a run does it."""
    backbone, tokenizer = load_backbone(args.encoder)
    texts = load_emobank("train").texts
    texts = texts[: args.teacher_sentences or len(texts)]
    rows = tokenizer(texts, truncation=True, max_length=128)["input_ids"]
    started = time.perf_counter()
    encode_rows(backbone.eval(), rows, tokenizer.pad_token_id, "mean", torch.device("cpu"))
    return {"sentences": len(rows), "seconds": time.perf_counter() - started}


def report(rows: list[dict], teacher: dict | None, command: str, env: dict) -> str:
    lines = [
        "# Preservation term: cost per step",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {env.get('cpu_count')} CPU cores ({env.get('processor')}), torch {env['versions'].get('torch')}"
        f"; git {env.get('git_revision')}.",
        "",
        "| objective + term | median step (s) | term forward (ms) | term backward (ms) | term / step without it | "
        "teacher pass in the run (s, sentences) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        teacher_run = f"{r['teacher_seconds_run']:.1f} ({r['run_sentences']})" if r["teacher_seconds_run"] else "-"
        lines.append(
            f"| {r['objective']} + {r['kind']} | {r['median_step_s']:.3f} | {1000 * r['term_forward_s']:.2f} | "
            f"{1000 * r['term_backward_s']:.2f} | {100 * r['term_share_of_step']:.2f} % | {teacher_run} |"
        )
    if teacher:
        lines += [
            "",
            f"Teacher pass over {teacher['sentences']:,} EmoBank training sentences (once per run, "
            f"cached): {teacher['seconds']:.1f} s.",
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kinds", nargs="+", default=["distill", "relational", "l2sp"])
    parser.add_argument("--objective", default="carl")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--encoder", default="minilm-l6")
    parser.add_argument("--teacher-sentences", type=int, default=0, help="-1: skip the separate teacher timing")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/preserve_sweep/step_cost"))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    command = "python " + " ".join(sys.argv)
    env = environment_info()
    rows: list[dict] = []
    teacher = None
    for kind in args.kinds:  # written after every cell, so a cut run keeps what it measured
        rows.append(time_cell(kind, args))
        print(json.dumps(rows[-1]), flush=True)
        (args.out / "report.md").write_text(report(rows, teacher, command, env), encoding="utf-8")
    if args.teacher_sentences >= 0:
        teacher = time_teacher(args)
    results = {"command": command, "rows": rows, "teacher_pass": teacher, "environment": env}
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    (args.out / "report.md").write_text(report(rows, teacher, command, env), encoding="utf-8")
    print(report(rows, teacher, command, env))
    return 0


if __name__ == "__main__":
    sys.exit(main())
