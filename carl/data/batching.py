"""Tokenised datasets, length-grouped batches and dynamic padding."""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler
from transformers import PreTrainedTokenizerBase


class TokenizedDataset(Dataset):
    """Sentences tokenised once, with word ids for word-level saliency.

    Item: ``input_ids`` list[int], ``word_index`` list[int] (-1 for special tokens),
    ``labels`` [2] float (VA in [0, 1]) when labels are given, ``targets`` (a class index, or
    multi-hot [C] float) when class targets are given.
    """

    def __init__(
        self,
        texts: Sequence[str],
        labels: np.ndarray | None,
        tokenizer: PreTrainedTokenizerBase,
        max_length: int,
        targets: np.ndarray | None = None,
    ):
        encoded = tokenizer(list(texts), truncation=True, max_length=max_length)
        self.input_ids: list[list[int]] = encoded["input_ids"]
        self.word_index = [[-1 if w is None else w for w in encoded.word_ids(i)] for i in range(len(self.input_ids))]
        self.labels = None if labels is None else torch.as_tensor(labels, dtype=torch.float32)
        self.targets = None if targets is None else torch.as_tensor(targets)

    def __len__(self) -> int:
        return len(self.input_ids)

    def lengths(self) -> list[int]:
        return [len(ids) for ids in self.input_ids]

    def __getitem__(self, i: int) -> dict:
        item = {"input_ids": self.input_ids[i], "word_index": self.word_index[i], "index": i}
        if self.labels is not None:
            item["labels"] = self.labels[i]
        if self.targets is not None:
            item["targets"] = self.targets[i]
        return item


def pad_to_longest(rows: Sequence[Sequence[int]], pad_value: int) -> tuple[torch.Tensor, torch.Tensor]:
    """B rows of ids (any lengths) -> ``(padded [B, T], attention_mask [B, T])``, T the longest row."""
    lengths = [len(row) for row in rows]
    padded = np.full((len(rows), max(lengths)), pad_value, dtype=np.int64)
    mask = np.zeros(padded.shape, dtype=np.int64)
    for r, (row, n) in enumerate(zip(rows, lengths)):
        padded[r, :n] = row
        mask[r, :n] = 1
    return torch.from_numpy(padded), torch.from_numpy(mask)


def length_sorted_batches(
    rows: Sequence[Sequence[int]], batch_size: int, pad_value: int
) -> Iterator[tuple[np.ndarray, torch.Tensor, torch.Tensor]]:
    """``(positions [B], input_ids [B, T], attention_mask [B, T])`` over ``rows`` sorted by length.

    Longest first (so that a too-large batch fails at once), stable among equal lengths, each
    batch padded to its own longest row: the least padding for ``batch_size``. For inference.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    lengths = np.fromiter((len(row) for row in rows), dtype=np.int64, count=len(rows))
    order = np.argsort(-lengths, kind="stable")
    for start in range(0, len(order), batch_size):
        positions = order[start : start + batch_size]
        yield (positions, *pad_to_longest([rows[i] for i in positions], pad_value))


class PaddingCollator:
    """Pad items to the longest in the batch: ids/mask/word_index [B, T], labels [B, 2], and class
    targets [B] (int64) or [B, C] (multi-hot) when the items carry them."""

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, items: list[dict]) -> dict[str, torch.Tensor]:
        ids, mask = pad_to_longest([item["input_ids"] for item in items], self.pad_token_id)
        words, _ = pad_to_longest([item["word_index"] for item in items], -1)
        batch = {
            "input_ids": ids,
            "attention_mask": mask,
            "word_index": words,
            "index": torch.tensor([item["index"] for item in items]),
        }
        if "labels" in items[0]:
            batch["labels"] = torch.stack([item["labels"] for item in items])
        if "targets" in items[0]:
            batch["targets"] = torch.stack([item["targets"] for item in items])
        return batch


class LengthGroupedBatchSampler(Sampler[list[int]]):
    """Shuffled batches of similar length; the order depends only on (seed, epoch).

    Indices are shuffled, cut into groups of ``group_batches`` batches, sorted by length within
    each group, cut into global batches of ``batch_size`` and the batches shuffled again.

    With ``num_shards`` processes, every process builds the same global batches and takes the
    ``shard``-th of ``num_shards`` contiguous, near-equal slices of each. So every sentence is
    seen once per epoch by one process, all processes take the same number of steps, and a
    short last batch is split unevenly (sizes differ by at most one) rather than padded with
    repeated sentences; a batch smaller than ``num_shards`` joins the batch before it.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        *,
        seed: int = 0,
        group_batches: int = 50,
        num_shards: int = 1,
        shard: int = 0,
    ):
        if not 0 <= shard < num_shards:
            raise ValueError(f"shard {shard} outside 0..{num_shards - 1}")
        if len(lengths) < num_shards:
            raise ValueError(f"{len(lengths)} training sentences cannot be shared by {num_shards} processes")
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.group = batch_size * group_batches
        self.num_shards, self.shard = num_shards, shard
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        n, b = len(self.lengths), self.batch_size
        full_groups, rest = divmod(n, self.group)
        count = full_groups * (self.group // b) + (rest + b - 1) // b
        short = rest % b
        return count - (1 if count > 1 and 0 < short < self.num_shards else 0)

    def _global_batches(self) -> list[list[int]]:
        rng = random.Random(self.seed * 100_003 + self.epoch)
        order = list(range(len(self.lengths)))
        rng.shuffle(order)
        batches = []
        for start in range(0, len(order), self.group):
            group = sorted(order[start : start + self.group], key=self.lengths.__getitem__)
            batches += [group[i : i + self.batch_size] for i in range(0, len(group), self.batch_size)]
        if len(batches) > 1 and len(batches[-1]) < self.num_shards:
            short = batches.pop()
            batches[-1] = batches[-1] + short
        rng.shuffle(batches)
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self._global_batches():
            if self.num_shards == 1:
                yield batch
            else:
                size, extra = divmod(len(batch), self.num_shards)
                start = self.shard * size + min(self.shard, extra)
                yield batch[start : start + size + (1 if self.shard < extra else 0)]
