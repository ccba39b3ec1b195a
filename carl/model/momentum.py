"""MoCo-style state: the momentum (EMA) key encoder and the queue of past keys with labels."""

from __future__ import annotations

import copy

import torch
import torch.distributed as dist
from torch import nn


def world_size() -> int:
    """Processes in the default torch.distributed group (1 without one)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def gather_across_processes(tensor: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Concatenate ``tensor`` [n_rank, ...] from every process along dim 0 (rank order).

    Returns the gathered rows and the row at which this process's own rows start. A no-op
    (offset 0) without an initialised process group; handles unequal ``n_rank``.
    """
    world = world_size()
    if world == 1:
        return tensor, 0
    size = torch.tensor([tensor.shape[0]], device=tensor.device)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    counts = torch.cat(sizes).tolist()
    padded = tensor.new_zeros((max(counts), *tensor.shape[1:]))
    padded[: tensor.shape[0]] = tensor
    parts = [torch.zeros_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded.contiguous())
    gathered = torch.cat([p[:n] for p, n in zip(parts, counts)])
    return gathered, sum(counts[: dist.get_rank()])


class MomentumQueue(nn.Module):
    """FIFO queue of ``size`` past keys [Q, P] with their labels [Q, L], as buffers.

    The enqueue wraps around for any batch size; only filled slots are returned. The write
    position and fill count are buffers (saved with checkpoints) mirrored by host integers, so
    that neither ``contents`` nor ``enqueue`` waits for the device.
    """

    keys: torch.Tensor  # [Q, P] buffers, declared for type checkers
    labels: torch.Tensor  # [Q, L]
    ptr: torch.Tensor  # [] next write position
    filled: torch.Tensor  # [] filled slots

    def __init__(self, size: int, dim: int, label_dim: int = 2):
        super().__init__()
        self.size = size
        # an empty queue (no key encoder, or in-batch keys only) is not saved: its two empty
        # buffers would share one null storage, which safetensors de-duplicates on save
        self.register_buffer("keys", torch.zeros(size, dim), persistent=size > 0)
        self.register_buffer("labels", torch.zeros(size, label_dim), persistent=size > 0)
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("filled", torch.zeros((), dtype=torch.long))
        self._host_counts: tuple[int, int] | None = (0, 0)

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self._host_counts = None  # re-read the loaded buffers on next use

    def _counts(self) -> tuple[int, int]:
        """(ptr, filled) as host integers."""
        if self._host_counts is None:
            self._host_counts = (int(self.ptr), int(self.filled))
        return self._host_counts

    def contents(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Filled keys [F, P] and labels [F, L], F <= Q."""
        n = self._counts()[1]
        return self.keys[:n], self.labels[:n]

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor, labels: torch.Tensor) -> None:
        """Push keys [n, P] and labels [n, L] (already gathered across processes)."""
        if self.size == 0:
            return
        keys, labels = keys[-self.size :], labels[-self.size :]
        n = keys.shape[0]
        ptr, filled = self._counts()
        index = (ptr + torch.arange(n, device=self.keys.device)) % self.size
        self.keys[index] = keys.detach().to(self.keys.dtype)
        self.labels[index] = labels.detach().to(self.labels.dtype)
        self._host_counts = ((ptr + n) % self.size, min(filled + n, self.size))
        self.ptr.fill_(self._host_counts[0])
        self.filled.fill_(self._host_counts[1])


class MomentumEncoder(nn.Module):
    """Frozen copy of the query modules, updated as theta_k <- m theta_k + (1 - m) theta_q."""

    def __init__(self, modules: dict[str, nn.Module], momentum: float):
        super().__init__()
        self.momentum = momentum
        self.parts = nn.ModuleDict({name: copy.deepcopy(m) for name, m in modules.items()})
        for p in self.parts.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, modules: dict[str, nn.Module]) -> None:
        """EMA step from the query modules (same names as at construction)."""
        keys: list[torch.Tensor] = []
        queries: list[torch.Tensor] = []
        for name, query in modules.items():
            keys += list(self.parts[name].parameters())
            queries += [p.detach() for p in query.parameters()]
        # one multi-tensor kernel per operation instead of two launches per parameter
        torch._foreach_mul_(keys, self.momentum)
        torch._foreach_add_(keys, queries, alpha=1.0 - self.momentum)
