"""A bounded load generator for the service (used by the tests and for the README's figures).

    python -m carl.serve.loadtest http://127.0.0.1:8000 --requests 2000 --concurrency 16

Sends at most ``requests`` requests from ``concurrency`` concurrent clients, stopping early at
``time_limit_s``; mixes ``/embed`` and ``/predict`` (``/predict`` only when the model has heads)
with 1 to ``max_texts`` texts each. Reports counts, errors and latency percentiles.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from dataclasses import asdict, dataclass, field

import numpy as np

WORDS = ("the morning felt serene and calm but the meeting made everyone furious and tired while "
         "a letter from home left her thrilled excited anxious gloomy bored relaxed").split()


@dataclass
class LoadReport:
    """What one load run did: requests sent, non-2xx or failed ones, latency percentiles (ms)."""

    requests: int
    errors: int
    status_counts: dict[str, int]
    p50_ms: float
    p95_ms: float
    max_ms: float
    wall_s: float
    requests_per_s: float
    texts: int
    error_samples: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def random_payload(rng: random.Random, max_texts: int) -> dict:
    """``{"texts": [...]}`` with 1..max_texts texts of 3..30 words."""
    return {"texts": [" ".join(rng.choices(WORDS, k=rng.randint(3, 30))) for _ in range(rng.randint(1, max_texts))]}


async def run_load(url: str, *, requests: int = 1000, concurrency: int = 16, time_limit_s: float = 60.0,
                   max_texts: int = 8, predict: bool = True, seed: int = 0) -> LoadReport:
    """Drive the server at ``url`` and return a :class:`LoadReport` (loopback use intended)."""
    import httpx

    rng = random.Random(seed)
    payloads = [("/predict" if predict and rng.random() < 0.5 else "/embed", random_payload(rng, max_texts))
                for _ in range(requests)]
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    samples: list[str] = []
    next_index = 0
    texts = 0
    started = time.perf_counter()
    deadline = started + time_limit_s

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal next_index, texts
        while next_index < len(payloads) and time.perf_counter() < deadline:
            path, body = payloads[next_index]
            next_index += 1
            t0 = time.perf_counter()
            try:
                response = await http.post(url.rstrip("/") + path, json=body)
                key = str(response.status_code)
                if response.status_code != 200 and len(samples) < 5:
                    samples.append(f"{path} {response.status_code}: {response.text[:200]}")
            except httpx.HTTPError as err:
                key = type(err).__name__
                if len(samples) < 5:
                    samples.append(f"{path}: {err!r}")
            latencies.append((time.perf_counter() - t0) * 1000.0)
            statuses[key] = statuses.get(key, 0) + 1
            texts += len(body["texts"])

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(30.0)) as http:
        await asyncio.gather(*(client(http) for _ in range(concurrency)))
    wall = time.perf_counter() - started
    lat = np.asarray(latencies) if latencies else np.zeros(1)
    done = len(latencies)
    return LoadReport(requests=done, errors=done - statuses.get("200", 0), status_counts=statuses,
                      p50_ms=float(np.percentile(lat, 50)), p95_ms=float(np.percentile(lat, 95)),
                      max_ms=float(lat.max()), wall_s=wall, requests_per_s=done / wall if wall else 0.0,
                      texts=texts, error_samples=samples)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m carl.serve.loadtest", description=__doc__.split("\n\n")[0])
    parser.add_argument("url")
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--time-limit", type=float, default=60.0)
    parser.add_argument("--max-texts", type=int, default=8)
    parser.add_argument("--embed-only", action="store_true", help="no /predict (a model without heads)")
    args = parser.parse_args(argv)
    report = asyncio.run(run_load(args.url, requests=args.requests, concurrency=args.concurrency,
                                  time_limit_s=args.time_limit, max_texts=args.max_texts,
                                  predict=not args.embed_only))
    print(json.dumps(report.to_dict(), indent=2))
    return 0 if report.errors == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
