"""A bounded load generator for the service, and slow clients (used by the tests and the benchmarks).

    python -m carl.serve.loadtest http://127.0.0.1:8000 --requests 2000 --concurrency 16
    python -m carl.serve.loadtest http://127.0.0.1:8000 --requests 600 --stalled 300   # alone, then stalled

Sends at most ``requests`` requests from ``concurrency`` concurrent clients, stopping early at
``time_limit_s``; mixes ``/embed`` and ``/predict`` (``/predict`` only when the model has heads)
with 1 to ``max_texts`` texts each. Reports counts, errors and latency percentiles. With
``--stalled N`` it runs the load twice, alone and while :func:`stall_clients` holds N stalled
connections, and prints both reports.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import queue
import random
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

WORDS = [
    "the",
    "morning",
    "felt",
    "serene",
    "and",
    "calm",
    "but",
    "the",
    "meeting",
    "made",
    "everyone",
    "furious",
    "and",
    "tired",
    "while",
    "a",
    "letter",
    "from",
    "home",
    "left",
    "her",
    "thrilled",
    "excited",
    "anxious",
    "gloomy",
    "bored",
    "relaxed",
]


def start_server(
    model: str, *serve_args: str, threads: int, log: Path, timeout_s: float = 300
) -> tuple[subprocess.Popen, str]:
    """``carl serve MODEL SERVE_ARGS`` on a free loopback port with ``threads`` threads, its output in
    ``log``; returns (process, url) once /health answers, or raises RuntimeError with the log's end."""
    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    command = [
        sys.executable,
        "-m",
        "carl.cli",
        "serve",
        model,
        "--port",
        str(port),
        "--threads",
        str(threads),
        "--log-level",
        "warning",
        *serve_args,
    ]
    with log.open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"carl serve exited with {process.returncode}:\n{log.read_text()[-2000:]}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    process.kill()
    raise RuntimeError(f"carl serve did not answer /health within {timeout_s:g} s")


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


async def run_load(
    url: str,
    *,
    requests: int = 1000,
    concurrency: int = 16,
    time_limit_s: float = 60.0,
    max_texts: int = 8,
    predict: bool = True,
    seed: int = 0,
) -> LoadReport:
    """Drive the server at ``url`` and return a :class:`LoadReport` (loopback use intended)."""
    import httpx

    rng = random.Random(seed)
    payloads = [
        ("/predict" if predict and rng.random() < 0.5 else "/embed", random_payload(rng, max_texts))
        for _ in range(requests)
    ]
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
    return LoadReport(
        requests=done,
        errors=done - statuses.get("200", 0),
        status_counts=statuses,
        p50_ms=float(np.percentile(lat, 50)),
        p95_ms=float(np.percentile(lat, 95)),
        max_ms=float(lat.max()),
        wall_s=wall,
        requests_per_s=done / wall if wall else 0.0,
        texts=texts,
        error_samples=samples,
    )


@dataclass
class StallReport:
    """What the stalled connections saw: how many were opened, closed by the server (and of those,
    answered 408), and how long the server kept one open (s); ``still_open`` at the end."""

    sockets: int
    opened: int
    connect_errors: int
    closed_by_server: int
    answered_408: int
    still_open: int
    held_p50_s: float
    held_max_s: float

    def to_dict(self) -> dict:
        return asdict(self)


def stalled_request(i: int) -> bytes:
    """The part of a request that stalled connection ``i`` sends: even ones stop inside the
    headers, odd ones send the headers of a POST /embed and the start of its 1000-byte body."""
    if i % 2 == 0:
        return b"POST /embed HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    return (
        b"POST /embed HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b'Content-Length: 1000\r\n\r\n{"texts": ["stal'
    )


async def stall_clients(
    url: str,
    *,
    sockets: int = 300,
    duration_s: float = 10.0,
    stop: asyncio.Event | None = None,
    all_open: asyncio.Event | None = None,
) -> StallReport:
    """Hold ``sockets`` connections that each send part of a request (:func:`stalled_request`) and
    then nothing, for ``duration_s`` or until ``stop`` is set; a connection the server closes is
    opened again, so ``sockets`` stay stalled throughout. ``all_open`` is set once every socket
    has been opened and has sent its part."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    end = loop.time() + duration_s
    held: list[float] = []
    counts = {"opened": 0, "connect_errors": 0, "closed": 0, "408": 0, "open": 0}

    async def one(i: int) -> None:
        while not stop.is_set() and loop.time() < end:
            try:
                reader, writer = await asyncio.open_connection(host, port)
            except OSError:
                counts["connect_errors"] += 1
                await asyncio.sleep(0.05)
                continue
            counts["opened"] += 1
            started = loop.time()
            try:
                writer.write(stalled_request(i))
                await writer.drain()
                if all_open is not None and counts["opened"] >= sockets:
                    all_open.set()
                read = asyncio.ensure_future(reader.read())  # everything until the server closes
                stopped = asyncio.ensure_future(stop.wait())
                await asyncio.wait(
                    [read, stopped], timeout=max(end - loop.time(), 0), return_when=asyncio.FIRST_COMPLETED
                )
                stopped.cancel()
                if read.done() and read.exception() is None:
                    counts["closed"] += 1
                    counts["408"] += read.result().startswith(b"HTTP/1.1 408")
                    held.append(loop.time() - started)
                else:
                    read.cancel()
                    counts["open"] += 1
            except OSError:  # reset by the server
                counts["closed"] += 1
                held.append(loop.time() - started)
            finally:
                writer.close()

    await asyncio.gather(*(one(i) for i in range(sockets)))
    times = np.asarray(held) if held else np.zeros(1)
    return StallReport(
        sockets=sockets,
        opened=counts["opened"],
        connect_errors=counts["connect_errors"],
        closed_by_server=counts["closed"],
        answered_408=counts["408"],
        still_open=counts["open"],
        held_p50_s=float(np.percentile(times, 50)),
        held_max_s=float(times.max()),
    )


def _stall_in_process(url: str, sockets: int, stop, reports) -> None:
    """Child process of :func:`compare_with_stalled`: puts ``"open"`` on ``reports`` once every
    socket stalls, then its :class:`StallReport` (a dict) once ``stop`` (a process Event) is set."""

    async def run() -> StallReport:
        stopped, all_open = asyncio.Event(), asyncio.Event()

        async def watch() -> None:
            await all_open.wait()
            reports.put("open")
            while not stop.is_set():
                await asyncio.sleep(0.1)
            stopped.set()

        watcher = asyncio.ensure_future(watch())
        report = await stall_clients(url, sockets=sockets, duration_s=1e9, stop=stopped, all_open=all_open)
        await watcher
        return report

    reports.put(asyncio.run(run()).to_dict())


def _report_of(child, reports, timeout_s: float):
    """The next item the stalling process puts on ``reports``; a clear error if it ended or hangs."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            return reports.get(timeout=0.5)
        except queue.Empty:
            if not child.is_alive():
                raise RuntimeError(f"the stalling process ended with exit code {child.exitcode}") from None
    raise RuntimeError(f"the stalling process sent nothing within {timeout_s:g} s")


async def compare_with_stalled(url: str, *, stalled: int = 300, **load) -> dict:
    """The same load (``run_load`` arguments) alone, then while ``stalled`` connections stall.

    The stalled connections come from another process (as they would from another client, and so
    that they do not slow this process's clients: call it under ``if __name__ == "__main__"``); the
    load starts once all of them are open and they are kept, reopened whenever the server cuts one,
    until it ends. Returns ``{"alone": ...,
    "stalled": ..., "stall": ...}``: two :class:`LoadReport` and a :class:`StallReport`, as dicts.
    """
    import multiprocessing

    alone = await run_load(url, **load)
    context = multiprocessing.get_context("spawn")
    stop, reports = context.Event(), context.Queue()
    child = context.Process(target=_stall_in_process, args=(url, stalled, stop, reports), daemon=True)
    child.start()
    loop = asyncio.get_running_loop()
    try:
        if await loop.run_in_executor(None, _report_of, child, reports, 120.0) != "open":
            raise RuntimeError("the stalling process did not say its connections are open")
        under = await run_load(url, **load)
    finally:
        stop.set()
    stall = await loop.run_in_executor(None, _report_of, child, reports, 60.0)
    child.join(timeout=10)
    return {"alone": alone.to_dict(), "stalled": under.to_dict(), "stall": stall}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m carl.serve.loadtest", description=__doc__.split("\n\n")[0])
    parser.add_argument("url")
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--time-limit", type=float, default=60.0)
    parser.add_argument("--max-texts", type=int, default=8)
    parser.add_argument("--embed-only", action="store_true", help="no /predict (a model without heads)")
    parser.add_argument(
        "--stalled",
        type=int,
        default=0,
        help="also run the load while this many connections stall (default 0: load only)",
    )
    args = parser.parse_args(argv)
    load = {
        "requests": args.requests,
        "concurrency": args.concurrency,
        "time_limit_s": args.time_limit,
        "max_texts": args.max_texts,
        "predict": not args.embed_only,
    }
    if args.stalled:
        result = asyncio.run(compare_with_stalled(args.url, stalled=args.stalled, **load))
        print(json.dumps(result, indent=2))
        return 0 if result["alone"]["errors"] == result["stalled"]["errors"] == 0 else 1
    report = asyncio.run(run_load(args.url, **load))
    print(json.dumps(report.to_dict(), indent=2))
    return 0 if report.errors == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
