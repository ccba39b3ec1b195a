"""Unsupervised SimCSE (Gao et al., 2021): a sentence's second dropout view is its positive.

The query encoder embeds every sentence of the batch twice; the two passes differ only in their
dropout masks. For views u_i, v_i (sentence embeddings [B, H]) and temperature tau (0.05):

    s_ij = cos(u_i, v_j) / tau
    L    = -1/B sum_i log softmax_j(s_ij)[i]      (in-batch InfoNCE: the other sentences are negatives)

Labels are not used. On several processes each process contrasts its own batch share.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from carl.objectives.base import ObjectiveOutput


def simcse_loss(first: torch.Tensor, second: torch.Tensor, temperature: float) -> ObjectiveOutput:
    """Views [B, H] and [B, H] of the same B sentences -> in-batch InfoNCE (row i's positive is column i)."""
    logits = F.normalize(first.float(), dim=-1) @ F.normalize(second.float(), dim=-1).T / temperature  # [B, B]
    positive = torch.arange(len(logits), device=logits.device)
    loss = F.cross_entropy(logits, positive)
    with torch.no_grad():
        diagnostics = {
            "simcse_top1": (logits.argmax(-1) == positive).float().mean(),
            "simcse_positive_cosine": logits.diagonal().mean() * temperature,
        }
    return ObjectiveOutput(loss, diagnostics)


class SimCSELoss(nn.Module):
    """In-batch InfoNCE between two dropout views of the batch's sentence embeddings.

    Args:
        temperature: tau on the cosine similarities (0.05 in the paper).

    Inputs: ``first`` [B, H] and ``second`` [B, H], the two views' sentence embeddings.
    """

    def __init__(self, *, temperature: float = 0.05):
        super().__init__()
        self.temperature = temperature

    def forward(self, first: torch.Tensor, second: torch.Tensor) -> ObjectiveOutput:
        return simcse_loss(first, second, self.temperature)
