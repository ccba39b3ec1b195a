"""Rank-N-Contrast (RNC; Zha et al., 2023) over the momentum keys: the ``rank`` MCL targets.

For query i, keys j (the batch's momentum keys, gathered over processes, then the queue) with
standardised VA labels z and d_ij = ||z_i - z_j||^2:

    s_ij = <q_i, k_j> / tau
    L    = -1/B sum_i 1/K sum_j log( exp(s_ij) / sum_{k : d_ik >= d_ij} exp(s_ik) )

Every key j is in turn the positive of query i, and its negatives are the keys at least as far
from i in VA as j (j itself included, as in the paper). The own key (d = 0) thus contrasts
against every key, exactly InfoNCE; a far key contrasts only against keys farther still, so the
similarities are pushed to be ordered by VA distance. Keys without a label (``negatives``: the
perturbed sentences of ``objective.ptd.as_negative``) are farther than every labelled key: they
sit in every denominator and are never a positive.

The denominators are a suffix log-sum-exp over the keys sorted by decreasing distance: O(B K log K)
time and O(B K) memory, not the [B, K, K] mask of the definition (a test checks they agree).
"""

from __future__ import annotations

import torch
from torch import nn

from carl.objectives.base import ObjectiveOutput


def rank_log_denominators(logits: torch.Tensor, distance: torch.Tensor) -> torch.Tensor:
    """Logits [B, K] and distances [B, K] -> log sum_{k : d_ik >= d_ij} exp(s_ik) [B, K].

    Ties count as "at least as far": keys of equal distance share one denominator.
    """
    order = distance.argsort(dim=-1, descending=True)  # [B, K] farthest first
    far_first = distance.gather(-1, order)
    suffix = torch.logcumsumexp(logits.gather(-1, order), dim=-1)  # over the k farther than or as far as
    # keys at least as far as key j: their count is the position of j's tie group's last member + 1
    count = torch.searchsorted(-far_first.contiguous(), -distance.contiguous(), right=True)  # [B, K]
    return suffix.gather(-1, count - 1)


def rank_n_contrast_loss(logits: torch.Tensor, distance: torch.Tensor, num_negatives: int = 0) -> torch.Tensor:
    """RNC of logits [B, K + N] whose last ``num_negatives`` columns are unlabelled keys; ``distance``
    [B, K] covers the labelled keys. Averaged over the K positives and the B queries."""
    labelled = logits.shape[1] - num_negatives
    if num_negatives:
        far = distance.new_full((distance.shape[0], num_negatives), float("inf"))
        distance = torch.cat([distance, far], dim=1)
    log_ratio = logits - rank_log_denominators(logits, distance)  # [B, K + N]
    return -log_ratio[:, :labelled].mean()


class RankNContrastLoss(nn.Module):
    """Rank-N-Contrast of queries against momentum keys by VA distance.

    Args:
        temperature: tau on the cosine similarities.

    Inputs as :class:`carl.objectives.MomentumContrastiveLoss`: queries [B, P] and keys [K, P]
    (L2-normalised), standardised labels [B, 2] and [K, 2], ``own_index`` [B], and optional
    ``negatives`` [N, P] without labels.
    """

    def __init__(self, *, temperature: float = 0.1):
        super().__init__()
        self.temperature = temperature

    def forward(self, queries, keys, query_labels, key_labels, own_index, negatives=None) -> ObjectiveOutput:
        if negatives is not None:
            keys = torch.cat([keys, negatives.to(keys.dtype)])
        logits = queries.float() @ keys.float().T / self.temperature  # [B, K + N]
        distance = torch.cdist(
            query_labels.float(), key_labels.float(), compute_mode="donot_use_mm_for_euclid_dist"
        ).pow(2)  # [B, K], exact 0 on the own key
        loss = rank_n_contrast_loss(logits, distance, 0 if negatives is None else negatives.shape[0])
        with torch.no_grad():
            rows = torch.arange(len(own_index), device=logits.device)
            diagnostics = {
                "mcl_own_key_prob": torch.softmax(logits, dim=-1)[rows, own_index].mean(),
                "mcl_top1_own": (logits.argmax(-1) == own_index).float().mean(),
                "mcl_num_keys": float(keys.shape[0]),
            }
        return ObjectiveOutput(loss=loss, diagnostics=diagnostics)
