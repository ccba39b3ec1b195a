"""The service under slow clients: the 16-client load test alone and while 300 connections stall,
side by side, in one run.

    python benchmarks/serve_slow_clients.py [--model tiny|minilm-l6|PATH] [--stalled 300] [--rounds 3]

Starts ``carl serve`` (default limits: 5 s for a request head, 30 s for its body) on a loopback
port, warms it up, then runs ``--rounds`` rounds of: the load alone, then the same load while
``carl.serve.loadtest.stall_clients`` holds ``--stalled`` connections that each sent part of a
request (half stop inside the headers, half inside the body) and reopens every one the server
cuts. The load is /embed only (``tiny``, a random 32-wide BERT built here, and ``minilm-l6`` are
plain encoders). Target: 0 errors, p95 under stalled sockets within 1.5x of the load alone.
Writes results.json and report.md to --out.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import httpx

from carl.serve.loadtest import WORDS, compare_with_stalled, run_load, start_server

P95_RATIO_TARGET = 1.5


def report_md(result: dict) -> str:
    rows = [
        "| round | run | requests | errors | requests/s | p50 ms | p95 ms | max ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for i, r in enumerate(result["rounds"], 1):
        for name in ("alone", "stalled"):
            x = r[name]
            rows.append(
                f"| {i} | {name} | {x['requests']} | {x['errors']} | {x['requests_per_s']:.1f} | "
                f"{x['p50_ms']:.0f} | {x['p95_ms']:.0f} | {x['max_ms']:.0f} |"
            )
    stall = [
        (
            "| round | stalled sockets | opened | cut by the server | answered 408 | still open at the end | "
            "held p50 s | held max s |"
        ),
        "|---|---|---|---|---|---|---|---|",
    ]
    for i, r in enumerate(result["rounds"], 1):
        s = r["stall"]
        stall.append(
            f"| {i} | {s['sockets']} | {s['opened']} | {s['closed_by_server']} | {s['answered_408']} | "
            f"{s['still_open']} | {s['held_p50_s']:.1f} | {s['held_max_s']:.1f} |"
        )
    summary = result["summary"]
    return "\n".join(
        [
            "# carl serve under slow clients",
            "",
            f"`{result['command']}`",
            "",
            (
                f"{result['machine']}; model `{result['model']}` (/embed only, 1 to {result['max_texts']} texts per "
                f"request), {result['concurrency']} clients, {result['stalled']} stalled sockets (from another process), "
                f"server limits: {result['server_limits']}."
            ),
            "",
            *rows,
            "",
            *stall,
            "",
            (
                f"Errors alone / under stalled sockets: {summary['errors_alone']} / {summary['errors_stalled']}. "
                f"Median p95 {summary['p95_alone_ms']:.0f} ms alone, {summary['p95_stalled_ms']:.0f} ms under stalled "
                f"sockets: ratio {summary['p95_ratio']:.2f} (target <= {P95_RATIO_TARGET}); "
                f"requests/s {summary['rps_alone']:.1f} vs {summary['rps_stalled']:.1f}. "
                f"{'Target met.' if summary['target_met'] else 'Target NOT met.'}"
            ),
            "",
        ]
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tiny", help="tiny (built here), an alias or a model folder")
    parser.add_argument("--requests", type=int, default=5000, help="most requests per load run (default 5000)")
    parser.add_argument(
        "--seconds",
        type=float,
        default=12.0,
        help="each load run stops after this long (default 12: over two 5 s head deadlines)",
    )
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--max-texts", type=int, default=8)
    parser.add_argument("--stalled", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="benchmarks/results/serve_slow_clients")
    args = parser.parse_args()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if model == "tiny":
            from carl.testing import make_tiny_encoder

            model = make_tiny_encoder(Path(tmp) / "tiny", sorted(set(WORDS)))
        server, url = start_server(model, threads=args.threads, log=Path(tmp) / "server.log")
        try:
            health = httpx.get(url + "/health", timeout=10).json()
            load = {
                "requests": args.requests,
                "concurrency": args.concurrency,
                "max_texts": args.max_texts,
                "predict": False,
                "time_limit_s": args.seconds,
            }
            asyncio.run(run_load(url, **{**load, "requests": 200, "seed": 99}))  # warm-up, not reported
            rounds = [
                asyncio.run(compare_with_stalled(url, stalled=args.stalled, **{**load, "seed": i}))
                for i in range(args.rounds)
            ]
            alive = server.poll() is None
        finally:
            server.terminate()
            server.wait(timeout=30)

    p95_alone = statistics.median(r["alone"]["p95_ms"] for r in rounds)
    p95_stalled = statistics.median(r["stalled"]["p95_ms"] for r in rounds)
    errors_alone = sum(r["alone"]["errors"] for r in rounds)
    errors_stalled = sum(r["stalled"]["errors"] for r in rounds)
    summary = {
        "errors_alone": errors_alone,
        "errors_stalled": errors_stalled,
        "p95_alone_ms": p95_alone,
        "p95_stalled_ms": p95_stalled,
        "p95_ratio": p95_stalled / p95_alone,
        "rps_alone": statistics.median(r["alone"]["requests_per_s"] for r in rounds),
        "rps_stalled": statistics.median(r["stalled"]["requests_per_s"] for r in rounds),
        "server_alive_after": alive,
    }
    summary["target_met"] = errors_alone == errors_stalled == 0 and alive and summary["p95_ratio"] <= P95_RATIO_TARGET
    limits = health["limits"]
    result = {
        "command": "python " + " ".join(["benchmarks/serve_slow_clients.py", *sys.argv[1:]]),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.processor() or platform.machine()} ({os.cpu_count()} cores), "
        f"{args.threads} torch thread(s), 1-min load average {os.getloadavg()[0]:.1f} after",
        "model": args.model,
        "concurrency": args.concurrency,
        "max_texts": args.max_texts,
        "stalled": args.stalled,
        "server_limits": f"header {limits['timeout_header_s']:g} s, body {limits['timeout_body_s']:g} s, "
        f"{limits['max_connections']:g} connections, {limits['max_concurrency']:g} in flight",
        "rounds": rounds,
        "summary": summary,
    }
    (out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "report.md").write_text(report_md(result))
    print(report_md(result))
    return 0 if summary["target_met"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
