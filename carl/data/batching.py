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
    ``labels`` [2] float (VA in [0, 1]) when labels are given.
    """

    def __init__(self, texts: Sequence[str], labels: np.ndarray | None,
                 tokenizer: PreTrainedTokenizerBase, max_length: int):
        encoded = tokenizer(list(texts), truncation=True, max_length=max_length)
        self.input_ids: list[list[int]] = encoded["input_ids"]
        self.word_index = [
            [-1 if w is None else w for w in encoded.word_ids(i)] for i in range(len(self.input_ids))
        ]
        self.labels = None if labels is None else torch.as_tensor(labels, dtype=torch.float32)

    def __len__(self) -> int:
        return len(self.input_ids)

    def lengths(self) -> list[int]:
        return [len(ids) for ids in self.input_ids]

    def __getitem__(self, i: int) -> dict:
        item = {"input_ids": self.input_ids[i], "word_index": self.word_index[i], "index": i}
        if self.labels is not None:
            item["labels"] = self.labels[i]
        return item


class PaddingCollator:
    """Pad items to the longest in the batch: ids/mask/word_index [B, T], labels [B, 2]."""

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, items: list[dict]) -> dict[str, torch.Tensor]:
        longest = max(len(item["input_ids"]) for item in items)
        ids = torch.full((len(items), longest), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(items), longest), dtype=torch.long)
        words = torch.full((len(items), longest), -1, dtype=torch.long)
        for row, item in enumerate(items):
            n = len(item["input_ids"])
            ids[row, :n] = torch.tensor(item["input_ids"])
            mask[row, :n] = 1
            words[row, :n] = torch.tensor(item["word_index"])
        batch = {"input_ids": ids, "attention_mask": mask, "word_index": words,
                 "index": torch.tensor([item["index"] for item in items])}
        if "labels" in items[0]:
            batch["labels"] = torch.stack([item["labels"] for item in items])
        return batch


class LengthGroupedBatchSampler(Sampler[list[int]]):
    """Shuffled batches of similar length; the order depends only on (seed, epoch).

    Indices are shuffled, cut into groups of ``group_batches`` batches, sorted by length within
    each group, batched, and the batches shuffled again.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, *, seed: int = 0,
                 group_batches: int = 50):
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.group = batch_size * group_batches
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return (len(self.lengths) + self.batch_size - 1) // self.batch_size

    def __iter__(self) -> Iterator[list[int]]:
        rng = random.Random(self.seed * 100_003 + self.epoch)
        order = list(range(len(self.lengths)))
        rng.shuffle(order)
        batches = []
        for start in range(0, len(order), self.group):
            group = sorted(order[start : start + self.group], key=self.lengths.__getitem__)
            batches += [group[i : i + self.batch_size] for i in range(0, len(group), self.batch_size)]
        rng.shuffle(batches)
        return iter(batches)
