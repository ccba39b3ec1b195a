"""Small heads on top of the encoder: contrastive projection, VA regression, token detection, classes."""

from __future__ import annotations

import torch
from torch import nn


class ProjectionHead(nn.Module):
    """MLP to the contrastive space: [B, H] -> [B, P] (not normalised).

    ``projection_dim = 0`` makes it the identity (P = H): the contrast then acts on the
    sentence embedding that users get, as in the sentence-embedding (SimCSE-style) setting.
    """

    def __init__(self, hidden_size: int, projection_dim: int):
        super().__init__()
        self.output_dim = projection_dim or hidden_size
        self.net = (
            nn.Sequential(nn.Linear(hidden_size, hidden_size), nn.GELU(), nn.Linear(hidden_size, projection_dim))
            if projection_dim
            else nn.Identity()
        )

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        return self.net(embedding)


class RegressionHead(nn.Module):
    """Linear VA regression on the sentence embedding: [B, H] -> [B, 2] standardised VA."""

    def __init__(self, hidden_size: int, num_outputs: int = 2):
        super().__init__()
        self.linear = nn.Linear(hidden_size, num_outputs)

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        return self.linear(embedding)


class TokenDetectionHead(nn.Module):
    """ELECTRA-style discriminator: token states [B, T, H] -> perturbed-token logits [B, T]."""

    def __init__(self, hidden_size: int, hidden: int = 0):
        super().__init__()
        self.net: nn.Module
        if hidden > 0:
            self.net = nn.Sequential(nn.Linear(hidden_size, hidden), nn.GELU(), nn.Linear(hidden, 1))
        else:
            self.net = nn.Linear(hidden_size, 1)

    def forward(self, token_states: torch.Tensor) -> torch.Tensor:
        return self.net(token_states).squeeze(-1)


class ClassificationHead(nn.Module):
    """Linear emotion classifier on the sentence embedding: [B, H] -> class logits [B, C].

    The logits feed a softmax (single-label) or one sigmoid per class (multi-label); see
    :mod:`carl.objectives.classification`.
    """

    def __init__(self, hidden_size: int, num_classes: int):
        super().__init__()
        self.linear = nn.Linear(hidden_size, num_classes)

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        return self.linear(embedding)
