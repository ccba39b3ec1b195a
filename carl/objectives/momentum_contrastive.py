"""Momentum continuous-label contrastive learning (MCL).

For query i and keys j (the batch's momentum keys, gathered over processes, then the queue):

    s_ij = <q_i, k_j> / tau                              (cosine similarities, tau = temperature)
    p_ij = softmax_j( -||z_i - z_j||^2 / sigma )        (soft targets from standardised VA labels z)
    L    = -1/B sum_i sum_j p_ij log softmax_j(s_ij)    (soft cross-entropy = KL(p||softmax s) + H(p))

The sentence's own key has distance 0 and so the largest target. With one-hot targets on the
own key the loss is exactly InfoNCE (MoCo). ``hard_label_targets`` gives the SupCon ablation:
uniform targets over keys whose binned label equals the query's. Keys without a label
(``negatives``: the perturbed sentences of ``objective.ptd.as_negative``) get target 0 for every
query: they enter only the softmax's denominator.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from carl.objectives.base import ObjectiveOutput


def soft_label_targets(query_labels: torch.Tensor, key_labels: torch.Tensor, sigma: float) -> torch.Tensor:
    """Labels [B, L] and [K, L] -> target distribution [B, K], rows summing to 1."""
    distance = torch.cdist(query_labels.float(), key_labels.float(), compute_mode="donot_use_mm_for_euclid_dist").pow(
        2
    )  # [B, K], exact 0 on own key
    return torch.softmax(-distance / sigma, dim=-1)


def hard_label_targets(query_classes: torch.Tensor, key_classes: torch.Tensor) -> torch.Tensor:
    """Classes [B] and [K] -> uniform targets over same-class keys [B, K] (SupCon)."""
    same = (query_classes[:, None] == key_classes[None, :]).float()  # [B, K]
    return same / same.sum(-1, keepdim=True).clamp(min=1.0)


def soft_contrastive_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Soft cross-entropy of logits [B, K] against target rows [B, K], averaged over B."""
    return -(targets * F.log_softmax(logits.float(), dim=-1)).sum(-1).mean()


def va_bins(labels: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """Standardised labels [N, 2] and per-dimension inner bin edges [2, b-1] -> class ids [N]."""
    bins = edges.shape[1] + 1
    valence = torch.bucketize(labels[:, 0].contiguous(), edges[0].contiguous())
    arousal = torch.bucketize(labels[:, 1].contiguous(), edges[1].contiguous())
    return valence * bins + arousal


class MomentumContrastiveLoss(nn.Module):
    """Contrast queries with momentum keys under VA-distance soft targets.

    Args:
        temperature: tau on the cosine similarities.
        label_temperature: sigma on squared standardised-VA distances; small sigma -> InfoNCE.
        hard_bin_edges: if given ([2, b-1] standardised quantile edges), use hard SupCon
            targets over b x b VA classes instead of soft targets (the ``supcon-hard`` ablation).

    Inputs: queries [B, P] and keys [K, P] (L2-normalised), labels [B, 2] and [K, 2]
    (standardised), ``own_index`` [B], the column of each query's own key among the K keys, and
    optional ``negatives`` [N, P], keys without a label that no query targets.
    """

    def __init__(
        self, *, temperature: float = 0.1, label_temperature: float = 0.5, hard_bin_edges: torch.Tensor | None = None
    ):
        super().__init__()
        self.temperature = temperature
        self.label_temperature = label_temperature
        self.hard_bin_edges = hard_bin_edges

    def targets(self, query_labels: torch.Tensor, key_labels: torch.Tensor) -> torch.Tensor:
        if self.hard_bin_edges is not None:
            edges = self.hard_bin_edges.to(query_labels.device)
            return hard_label_targets(va_bins(query_labels, edges), va_bins(key_labels, edges))
        return soft_label_targets(query_labels, key_labels, self.label_temperature)

    def forward(self, queries, keys, query_labels, key_labels, own_index, negatives=None) -> ObjectiveOutput:
        targets = self.targets(query_labels, key_labels)  # [B, K]
        if negatives is not None:
            keys = torch.cat([keys, negatives.to(keys.dtype)])  # [K + N, P]
            targets = torch.cat([targets, targets.new_zeros(targets.shape[0], negatives.shape[0])], dim=1)
        logits = queries.float() @ keys.float().T / self.temperature  # [B, K (+ N)]
        loss = soft_contrastive_loss(logits, targets)
        with torch.no_grad():
            log_probs = F.log_softmax(logits, dim=-1)
            rows = torch.arange(len(own_index), device=logits.device)
            entropy = -(targets * targets.clamp(min=1e-12).log()).sum(-1).mean()
            diagnostics = {
                "mcl_kl": loss.detach() - entropy,
                "mcl_target_entropy": entropy,
                "mcl_own_key_prob": log_probs[rows, own_index].exp().mean(),
                "mcl_top1_own": (logits.argmax(-1) == own_index).float().mean(),
                "mcl_num_keys": float(keys.shape[0]),
            }
        return ObjectiveOutput(loss=loss, diagnostics=diagnostics)
