"""Continuous perturbation of the salient tokens' word embeddings (``objective.ptd.replacement = embedding``).

FreeLB/SMART-style (Zhu et al., 2020; Jiang et al., 2020), restricted to the chosen positions M:
starting from delta_0 = 0, k normalised ascent steps on the affect loss L_a (VA regression or
classification) of the perturbed sentence, each token projected back into its L2 ball:

    delta_{s+1,t} = Proj_{||.|| <= eps}( delta_{s,t} + eps * g_{s,t} / ||g_{s,t}|| ),  t in M
    g_s = dL_a(e + delta_s) / d delta_s,    delta_t = 0 for t not in M

One step (k = 1) is the fast gradient method (Miyato et al., 2017): each chosen token moves by
exactly eps along its own gradient. The detector then learns to find the shifted tokens, and an
optional consistency term keeps the affect predictions of the perturbed view near the clean ones:

    VA:            C = mean_i ||a~_i - sg(a_i)||^2 / 2                (a: standardised VA, [B, 2])
    classes (CE):  C = mean_i KL(p_i || p~_i) + KL(p~_i || p_i),  p = softmax(z), sg on the clean side
    classes (BCE): the same symmetric KL between per-class Bernoulli distributions, averaged over classes
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F


def project_to_ball(delta: torch.Tensor, epsilon: float) -> torch.Tensor:
    """Shifts [B, T, H] -> the same with every token's L2 norm clipped to ``epsilon``."""
    norm = delta.norm(dim=-1, keepdim=True)
    return delta * (epsilon / norm.clamp(min=epsilon))


def ascent_step(delta: torch.Tensor, grad: torch.Tensor, positions: torch.Tensor, epsilon: float) -> torch.Tensor:
    """One normalised ascent step of size ``epsilon`` at ``positions`` [B, T] bool, projected."""
    step = grad / grad.norm(dim=-1, keepdim=True).clamp(min=1e-12)  # [B, T, H] unit per token
    return project_to_ball(delta + epsilon * step * positions[..., None], epsilon)


def adversarial_shift(
    affect_loss: Callable[[torch.Tensor], torch.Tensor],
    positions: torch.Tensor,
    shape: tuple[int, ...],
    *,
    epsilon: float,
    steps: int,
) -> torch.Tensor:
    """``steps`` ascent steps from 0 on ``affect_loss(delta)``; returns the shift [B, T, H], detached.

    ``positions`` [B, T] bool: only these tokens move; ``shape`` is [B, T, H] of the word embeddings.
    """
    delta = torch.zeros(shape, device=positions.device)
    for _ in range(steps):
        delta.requires_grad_(True)
        (grad,) = torch.autograd.grad(affect_loss(delta), delta)
        delta = ascent_step(delta.detach(), grad.float(), positions, epsilon)
    return delta.detach()


def _symmetric_kl(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """sum over the last dim of KL(p || q) + KL(q || p) for distributions [..., C]."""
    log_p, log_q = p.clamp(min=1e-12).log(), q.clamp(min=1e-12).log()
    return ((p - q) * (log_p - log_q)).sum(-1)


def consistency_loss(clean: torch.Tensor, perturbed: torch.Tensor, kind: str) -> torch.Tensor:
    """Affect outputs [B, D] of the clean (no gradient) and perturbed views -> scalar (see module doc).

    ``kind``: ``va`` (standardised VA), ``single`` (class logits, softmax) or ``multi`` (sigmoids).
    """
    clean, perturbed = clean.detach().float(), perturbed.float()
    if kind == "va":
        return 0.5 * (perturbed - clean).pow(2).sum(-1).mean()
    if kind == "single":
        return _symmetric_kl(F.softmax(clean, -1), F.softmax(perturbed, -1)).mean()
    p, q = torch.sigmoid(clean)[..., None], torch.sigmoid(perturbed)[..., None]
    return _symmetric_kl(torch.cat([p, 1 - p], -1), torch.cat([q, 1 - q], -1)).mean()
