"""The service under load on each backend: ``carl serve MODEL --backend ...`` against
``carl.serve.loadtest`` at the same concurrency, one backend at a time.

    python benchmarks/serve_backends.py --model runs/demo [--requests 300] [--concurrency 16] [--rounds 3]

For each backend: start the server (``--threads``), one warm-up round, then ``--rounds`` rounds
of ``--requests`` requests (``/embed`` and ``/predict``, 1 to 8 texts each); requests/s, p50/p95
latency and errors per round, and the server's resident memory after each round (flat over the
last round means no growth). Writes results.json and report.md to --out.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
from pathlib import Path

from carl.serve.loadtest import run_load, start_server

BACKENDS = (("torch", None), ("onnx", None), ("onnx", "int8"), ("openvino", None), ("openvino", "int8"))


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="runs/demo")
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--backends",
        nargs="+",
        default=[f"{b}{'-int8' if q else ''}" for b, q in BACKENDS],
        help="names as in the report, e.g. torch onnx-int8 (default: all five)",
    )
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "serve_backends"))
    args = parser.parse_args(argv)

    rows, missing = [], {}
    for backend, quantize in BACKENDS:
        name = f"{backend}{'-int8' if quantize else ''}"
        if name not in args.backends:
            continue
        try:
            quantized = ["--quantize", quantize] if quantize else []
            process, url = start_server(
                args.model,
                "--backend",
                backend,
                *quantized,
                threads=args.threads,
                log=Path(tempfile.gettempdir()) / f"carl-serve-{name}.log",
            )
        except RuntimeError as err:
            missing[name] = str(err).strip().splitlines()[-1]
            continue
        try:
            asyncio.run(run_load(url, requests=args.requests // 2, concurrency=args.concurrency, seed=0))
            rss = [rss_mb(process.pid)]
            for r in range(args.rounds):
                report = asyncio.run(
                    run_load(url, requests=args.requests, concurrency=args.concurrency, time_limit_s=600, seed=r + 1)
                )
                rss.append(rss_mb(process.pid))
                rows.append(
                    {
                        "backend": name,
                        "round": r + 1,
                        **report.to_dict(),
                        "rss_mb": round(rss[-1], 1),
                        "rss_before_mb": round(rss[-2], 1),
                    }
                )
                print(
                    f"{name} round {r + 1}: {report.requests_per_s:.1f} req/s, p50 {report.p50_ms:.0f} ms, "
                    f"p95 {report.p95_ms:.0f} ms, {report.errors} errors, RSS {rss[-1]:.0f} MB",
                    flush=True,
                )
        finally:
            process.terminate()
            process.wait(timeout=30)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = {
        "model": args.model,
        "requests": args.requests,
        "concurrency": args.concurrency,
        "threads": args.threads,
        "rounds": args.rounds,
        "cpu_count": os.cpu_count(),
        "load_average": os.getloadavg()[0],
        "missing": missing,
        "rows": rows,
    }
    (out / "results.json").write_text(json.dumps(result, indent=2))
    lines = [
        f"# service load per backend: {args.model}",
        "",
        f"`carl serve --threads {args.threads}`; `carl.serve.loadtest` with {args.requests} requests per round at "
        f"concurrency {args.concurrency} (/embed and /predict, 1-8 texts), after a warm-up round.",
        "",
        "| backend | round | requests/s | p50 ms | p95 ms | errors | RSS MB (before -> after) |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['backend']} | {r['round']} | {r['requests_per_s']:.1f} | {r['p50_ms']:.0f} | {r['p95_ms']:.0f} "
        f"| {r['errors']} | {r['rss_before_mb']:.0f} -> {r['rss_mb']:.0f} |"
        for r in rows
    ]
    if missing:
        lines += ["", "Not measured:"] + [f"- {name}: {why}" for name, why in missing.items()]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
