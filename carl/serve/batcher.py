"""Micro-batching: concurrent requests that arrive within a few milliseconds share one forward.

Requests put ``(texts, future)`` on an asyncio queue. One worker takes the first waiting request,
then keeps collecting for at most ``max_wait_ms`` while the next request still fits within
``max_batch_texts`` texts (one that does not fit opens the next batch), runs the
model once on all collected texts in a single worker thread (so the event loop stays free and
torch never runs two forwards at once), and hands each request its own rows. While a forward
runs, new requests queue up and form the next batch, so under load batches grow by themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class BatcherStats:
    """Counters since start: requests served, forwards run, texts embedded, largest batch."""

    requests: int = 0
    batches: int = 0
    texts: int = 0
    largest_batch: int = 0
    errors: int = 0
    busy_s: float = 0.0
    started: float = field(default_factory=time.time)


@dataclass
class _Pending:
    texts: list[str]
    future: asyncio.Future


class MicroBatcher:
    """Run ``forward(texts) -> tuple of arrays [N, ...] (or None)`` on merged requests.

    ``submit(texts)`` returns the same tuple restricted to the request's rows. ``executor``
    (one thread by default) is where ``forward`` runs; share it with other model calls to keep
    them serialised.
    """

    def __init__(
        self,
        forward: Callable[[list[str]], tuple[np.ndarray | None, ...]],
        *,
        max_batch_texts: int = 128,
        max_wait_ms: float = 5.0,
        executor: ThreadPoolExecutor | None = None,
    ):
        if max_batch_texts < 1 or max_wait_ms < 0:
            raise ValueError("max_batch_texts must be >= 1 and max_wait_ms >= 0")
        self.forward = forward
        self.max_batch_texts = max_batch_texts
        self.max_wait = max_wait_ms / 1000.0
        self.executor = executor or ThreadPoolExecutor(max_workers=1, thread_name_prefix="carl-model")
        self.stats = BatcherStats()
        self._queue: asyncio.Queue[_Pending] | None = None
        self._held: _Pending | None = None  # taken from the queue but too large for the batch being collected
        self._worker: asyncio.Task | None = None

    async def start(self) -> None:
        """Start the worker on the running event loop."""
        self._queue = asyncio.Queue()
        self._worker = asyncio.create_task(self._run(), name="carl-micro-batcher")

    async def stop(self) -> None:
        """Stop the worker; requests still queued fail with ``RuntimeError``."""
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        waiting = [self._held] if self._held is not None else []
        while self._queue is not None and not self._queue.empty():
            waiting.append(self._queue.get_nowait())
        self._held = None
        for item in waiting:
            if not item.future.done():
                item.future.set_exception(RuntimeError("server shutting down"))

    async def submit(self, texts: Sequence[str]) -> tuple[Any, ...]:
        """The forward's outputs for ``texts`` (rows in order), computed with other requests."""
        if self._queue is None:
            raise RuntimeError("MicroBatcher.start() was not called")
        if len(texts) > self.max_batch_texts:
            raise ValueError(f"{len(texts)} texts do not fit in one batch of max_batch_texts={self.max_batch_texts}")
        future = asyncio.get_running_loop().create_future()
        await self._queue.put(_Pending(list(texts), future))
        return await future

    async def _collect(self) -> list[_Pending]:
        """The requests of one forward: never more than ``max_batch_texts`` texts in all."""
        first, self._held = self._held or await self._queue.get(), None
        pending, count = [first], len(first.texts)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait
        while count < self.max_batch_texts:
            if not self._queue.empty():
                item = self._queue.get_nowait()
            else:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    item = await asyncio.wait_for(self._queue.get(), remaining)
                except asyncio.TimeoutError:
                    break
            if count + len(item.texts) > self.max_batch_texts:
                self._held = item  # first of the next batch, so arrival order is kept
                break
            pending.append(item)
            count += len(item.texts)
        return pending

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            pending = await self._collect()
            live = [p for p in pending if not p.future.done()]  # drop requests whose client left
            if not live:
                continue
            texts = [t for p in live for t in p.texts]
            started = time.perf_counter()
            try:
                outputs = await loop.run_in_executor(self.executor, self.forward, texts)
            except Exception as err:  # the model failed: every request of the batch gets the error
                self.stats.errors += 1
                for p in live:
                    if not p.future.done():
                        p.future.set_exception(err)
                continue
            self.stats.busy_s += time.perf_counter() - started
            self.stats.batches += 1
            self.stats.requests += len(live)
            self.stats.texts += len(texts)
            self.stats.largest_batch = max(self.stats.largest_batch, len(texts))
            start = 0
            for p in live:
                end = start + len(p.texts)
                if not p.future.done():
                    p.future.set_result(tuple(None if o is None else o[start:end] for o in outputs))
                start = end
