"""Auxiliary VA regression: mean squared error on standardised valence and arousal."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from carl.objectives.base import ObjectiveOutput


class VARegressionLoss(nn.Module):
    """MSE between predictions [B, 2] and standardised labels [B, 2] (both dimensions averaged)."""

    def forward(self, predictions: torch.Tensor, labels: torch.Tensor) -> ObjectiveOutput:
        loss = F.mse_loss(predictions.float(), labels.float())
        with torch.no_grad():
            per_dim = (predictions.float() - labels.float()).pow(2).mean(0)
        return ObjectiveOutput(loss, {"mse_valence": per_dim[0], "mse_arousal": per_dim[1]})
