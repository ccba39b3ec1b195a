"""Length-grouped batches and their sharding over processes."""

from __future__ import annotations

import random

import pytest

from carl.data.batching import LengthGroupedBatchSampler


def lengths(n: int, seed: int = 0) -> list[int]:
    rng = random.Random(seed)
    return [rng.randint(3, 60) for _ in range(n)]


@pytest.mark.parametrize("n, batch, group", [(100, 8, 3), (101, 8, 3), (7, 32, 50), (1601, 32, 50)])
def test_one_process_sees_every_sentence_once_per_epoch(n, batch, group):
    sampler = LengthGroupedBatchSampler(lengths(n), batch, seed=1, group_batches=group)
    for epoch in (0, 1):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert sorted(i for b in batches for i in b) == list(range(n))
        assert len(batches) == len(sampler) and max(map(len, batches)) <= batch


def test_batches_group_similar_lengths_and_change_with_epoch():
    lens = lengths(400)
    sampler = LengthGroupedBatchSampler(lens, 16, seed=3, group_batches=5)
    first = list(sampler)
    spread = sum(max(lens[i] for i in b) - min(lens[i] for i in b) for b in first) / len(first)
    assert spread < 15  # random batches of 16 from 3..60 spread over ~50
    sampler.set_epoch(1)
    assert list(sampler) != first
    sampler.set_epoch(0)
    assert list(sampler) == first


@pytest.mark.parametrize(
    "n, batch, shards", [(100, 8, 2), (101, 8, 2), (103, 9, 3), (97, 32, 4), (65, 32, 2), (33, 32, 3), (5, 4, 3)]
)
def test_shards_split_each_global_batch_without_repeats(n, batch, shards):
    """Every sentence once per epoch across the processes, the same number of steps on each,
    the last short batch split (sizes differ by at most one) instead of padded with repeats."""
    lens = lengths(n, seed=n)
    one = LengthGroupedBatchSampler(lens, batch, seed=7)
    parts = [list(LengthGroupedBatchSampler(lens, batch, seed=7, num_shards=shards, shard=r)) for r in range(shards)]
    assert len({len(p) for p in parts}) == 1
    assert all(len(p) == len(LengthGroupedBatchSampler(lens, batch, num_shards=shards)) for p in parts)
    seen = [i for p in parts for b in p for i in b]
    assert sorted(seen) == list(range(n))
    for step, slices in enumerate(zip(*parts)):
        assert all(slices), f"an empty slice at step {step}"
        assert max(map(len, slices)) - min(map(len, slices)) <= 1
    if shards <= min(len(b) for b in one):  # no short batch was merged: slices concatenate to it
        assert [[row for s in slices for row in s] for slices in zip(*parts)] == list(one)


def test_fewer_sentences_than_processes_is_refused():
    with pytest.raises(ValueError, match="2 training sentences cannot be shared by 3 processes"):
        LengthGroupedBatchSampler([4, 5], 8, num_shards=3, shard=0)
