"""The starting encoder as the preservation term's reference: its embeddings of the training
sentences (distill, relational) and its weights (l2sp), both read from the encoder source.

The embeddings cost one inference pass per run and are cached in the run folder as
``preserve_teacher.safetensors``: ``embeddings`` [N, H] float32, and in the file's metadata the
seconds the pass took and the JSON key it was computed under (training-data and encoder digests of
:mod:`carl.training.fingerprint`, ``data.max_length``, ``model.pooling``). A run, or its
resumption, reuses the cache when the key matches and recomputes it otherwise. Under several
processes each computes every ``world``-th sentence, a sum over processes assembles the matrix
(each row comes from one process), every process keeps the whole matrix, and the main process
writes the cache.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import broadcast, reduce
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch.nn.attention import sdpa_kernel

from carl.atomic import temporary_beside
from carl.data.batching import length_sorted_batches
from carl.model.carl_model import ATTENTION_KERNELS
from carl.model.encoder import load_backbone
from carl.model.pooling import pool

TEACHER_FILE = "preserve_teacher.safetensors"
TEACHER_BATCH = 64


def source_weights(encoder: str, device: torch.device | str) -> dict[str, torch.Tensor]:
    """The encoder source's backbone parameters by name (float32, on ``device``), for L2-SP."""
    backbone, _ = load_backbone(encoder)
    return {name: p.detach().float().to(device) for name, p in backbone.named_parameters()}


def teacher_key(fingerprint: dict[str, str], max_length: int, pooling: str) -> dict:
    """What the teacher embeddings depend on: data and encoder digests, max length, pooling."""
    return {**fingerprint, "max_length": max_length, "pooling": pooling}


def read_teacher(path: Path, key: dict, shape: tuple[int, int]) -> torch.Tensor | None:
    """The cached embeddings [N, H] when the file exists, holds ``key`` and has ``shape``; else None."""
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            saved = json.loads((f.metadata() or {}).get("key", "null"))
            embeddings = f.get_tensor("embeddings") if saved == key else None
    except (OSError, SafetensorError, ValueError):  # unreadable: recompute and overwrite
        return None
    if embeddings is None or tuple(embeddings.shape) != shape:
        return None
    return embeddings


def write_teacher(path: Path, embeddings: torch.Tensor, key: dict, seconds: float) -> None:
    """Write the cache whole or not at all (a temporary beside it, then a rename); the metadata
    holds the key and the seconds the pass took."""
    tmp = temporary_beside(path, folder=False)
    metadata = {"key": json.dumps(key), "seconds": f"{seconds:.3f}"}
    save_file({"embeddings": embeddings.detach().cpu().contiguous()}, str(tmp), metadata)
    os.replace(tmp, path)


@torch.no_grad()
def encode_rows(
    backbone: torch.nn.Module, rows: Sequence[Sequence[int]], pad_id: int, pooling: str, device: torch.device
) -> torch.Tensor:
    """Sentence embeddings [len(rows), H] (float32) of token-id rows, in the rows' order."""
    out = torch.zeros(len(rows), backbone.config.hidden_size, device=device)
    for positions, ids, mask in length_sorted_batches(rows, TEACHER_BATCH, pad_id):
        ids, mask = ids.to(device), mask.to(device)
        with sdpa_kernel(ATTENTION_KERNELS):
            hidden = backbone(input_ids=ids, attention_mask=mask).last_hidden_state  # [B, T, H]
        out[torch.as_tensor(positions, device=device)] = pool(hidden, mask, pooling).float()
    return out


def teacher_embeddings(
    acc: Accelerator,
    path: Path,
    key: dict,
    encoder: str,
    rows: Sequence[Sequence[int]],
    dim: int,
    pooling: str,
) -> torch.Tensor:
    """The starting encoder's embeddings [N, H] of the N training sentences ``rows`` (token ids), on
    ``acc.device`` in every process: read from the cache at ``path`` when its key matches, else
    computed (sharded over processes) and cached."""
    shape = (len(rows), dim)
    cached = read_teacher(path, key, shape) if acc.is_main_process else None
    found = broadcast(torch.tensor([float(cached is not None)], device=acc.device), from_process=0)
    if found.item():
        embeddings = cached.to(acc.device) if cached is not None else torch.zeros(shape, device=acc.device)
        acc.print(f"preserve: teacher embeddings of {len(rows)} sentences reused from {path}")
        return broadcast(embeddings, from_process=0)
    started = time.perf_counter()
    backbone, tokenizer = load_backbone(encoder)  # the source, in eval mode: no dropout
    backbone.eval().to(acc.device)
    mine = list(range(acc.process_index, len(rows), acc.num_processes))
    embeddings = torch.zeros(shape, device=acc.device)
    embeddings[mine] = encode_rows(backbone, [rows[i] for i in mine], tokenizer.pad_token_id, pooling, acc.device)
    embeddings = reduce(embeddings, reduction="sum")  # each row is non-zero on one process only
    del backbone
    seconds = time.perf_counter() - started
    if acc.is_main_process:
        write_teacher(path, embeddings, key, seconds)
    acc.print(
        f"preserve: teacher embeddings of {len(rows)} sentences computed in {seconds:.1f} s "
        f"({acc.num_processes} process(es)), cached in {path}"
    )
    acc.wait_for_everyone()
    return embeddings
