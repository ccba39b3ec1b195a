"""Resident memory an inference session gains per padded batch shape, under coarser or finer buckets.

    python benchmarks/shape_memory.py --model MODEL [--backend openvino] [--quantize int8] \
        [--buckets 8x8 64x8 16x16 64x16] [--batches 150] [--threads 1]

Runtimes keep per-shape state (OpenVINO compiles kernels and buffers for each new input shape), so
a service's RSS grows until every padded shape its traffic produces has been seen. Each bucket
setting ``RxT`` runs in a fresh process: ``--batches`` forwards of random sizes (1-64 texts of
3-40 tokens, the same draws for every setting), each padded up with ``bucket(n, R)`` rows and
``bucket(n, T)`` tokens (``carl.inference.backends.bucket``; the sessions' own padding is 8x8),
and reports the distinct shapes, the RSS gained, and the padded tokens per real token (the
compute the coarser padding costs). Prints a markdown table.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
from pathlib import Path

import torch

from carl.inference.backends import bucket, open_session


def rss_mb() -> float:
    """This process's resident set size in MiB."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def measure(args: argparse.Namespace, rows_step: int, tokens_step: int) -> str:
    """One table row: shapes seen, RSS gained and padding of ``--batches`` random batches."""
    session = open_session(Path(args.model), args.backend, args.quantize, args.threads, (), 0)
    start, rng = rss_mb(), random.Random(0)
    shapes, padded, real = set(), 0, 0
    for _ in range(args.batches):
        b, t = rng.randint(1, 64), rng.randint(3, 40)
        rows, cols = bucket(b, rows_step), bucket(t, tokens_step)
        ids = torch.full((rows, cols), 1000, dtype=torch.long)
        session.run(ids, torch.ones_like(ids), ())
        shapes.add((rows, cols))
        padded, real = padded + rows * cols, real + b * t
    return f"| {rows_step}x{tokens_step} | {len(shapes)} | {rss_mb() - start:.0f} | {padded / real:.2f} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="a model folder with exported graphs")
    parser.add_argument("--backend", default="openvino", choices=("onnx", "openvino"))
    parser.add_argument("--quantize", default="int8", choices=("int8", "none"))
    parser.add_argument("--buckets", nargs="+", default=["8x8", "64x8", "16x16", "64x16"])
    parser.add_argument("--batches", type=int, default=150)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: measure one setting in this process
    args = parser.parse_args()
    args.quantize = None if args.quantize == "none" else args.quantize
    if args.one:
        print(measure(args, *map(int, args.one.split("x"))))
        return
    print(f"{args.backend} {args.quantize or 'float32'}, {args.batches} random batches, {args.threads} thread(s)\n")
    print("| buckets (rows x tokens) | shapes | RSS gained MB | padded / real tokens |\n|---|---:|---:|---:|")
    for setting in args.buckets:
        cmd = [sys.executable, __file__, *sys.argv[1:], "--one", setting]
        print(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
