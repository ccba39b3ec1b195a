"""The service's micro-batcher: merged batches never exceed ``max_batch_texts`` and every request
gets its own rows, in order."""

from __future__ import annotations

import asyncio
import random

import numpy as np
import pytest

from carl.serve.batcher import MicroBatcher
from carl.serve.schemas import ServeLimits


def run_requests(sizes: list[int], max_batch_texts: int) -> tuple[list[int], list[np.ndarray]]:
    """Submit requests of ``sizes`` texts at once; return the forward's batch sizes and each answer."""
    batches: list[int] = []

    def forward(texts: list[str]) -> tuple[np.ndarray]:
        batches.append(len(texts))
        return (np.array([int(t) for t in texts]),)

    async def main() -> list[np.ndarray]:
        batcher = MicroBatcher(forward, max_batch_texts=max_batch_texts, max_wait_ms=200)
        await batcher.start()
        try:
            starts = np.cumsum([0, *sizes])
            answers = await asyncio.gather(
                *(batcher.submit([str(i) for i in range(a, a + n)]) for a, n in zip(starts, sizes))
            )
        finally:
            await batcher.stop()
        return [a[0] for a in answers]

    return batches, asyncio.run(main())


@pytest.mark.parametrize(
    "sizes",
    [[4] + [8] * 20, [127, 5, 64, 64, 1], [1] * 300],
    ids=["4+8s (old merge reached 132)", "no-fit-then-exact", "singles"],
)
def test_merged_batches_never_exceed_the_limit(sizes):
    batches, answers = run_requests(sizes, max_batch_texts=128)
    assert max(batches) <= 128, batches
    assert sum(batches) == sum(sizes)
    starts = np.cumsum([0, *sizes])
    for start, n, answer in zip(starts, sizes, answers):
        np.testing.assert_array_equal(answer, np.arange(start, start + n))


def test_random_request_sizes_fill_batches_up_to_the_limit():
    rng = random.Random(0)
    sizes = [rng.randint(1, 16) for _ in range(200)]
    batches, _ = run_requests(sizes, max_batch_texts=32)
    assert max(batches) <= 32 and sum(batches) == sum(sizes)
    assert len(batches) <= 2 * sum(sizes) // 32 + 1  # still merged: at least half-full batches on average


def test_a_request_larger_than_a_batch_is_refused():
    with pytest.raises(ValueError, match="max_batch_texts=4"):
        run_requests([5], max_batch_texts=4)
    with pytest.raises(ValueError, match="max_batch_texts"):
        ServeLimits(max_texts=200, max_batch_texts=128)
