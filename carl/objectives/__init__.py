"""The CARL objectives, one per file; each returns an ``ObjectiveOutput``."""

from carl.objectives.base import ObjectiveOutput
from carl.objectives.classification import (
    MultiLabelClassificationLoss,
    SingleLabelClassificationLoss,
)
from carl.objectives.momentum_contrastive import (
    MomentumContrastiveLoss,
    hard_label_targets,
    soft_contrastive_loss,
    soft_label_targets,
)
from carl.objectives.perturbed_token_detection import PerturbedTokenDetection
from carl.objectives.preservation import PreservationLoss
from carl.objectives.simcse import SimCSELoss, simcse_loss
from carl.objectives.va_regression import VARegressionLoss

__all__ = [
    "MomentumContrastiveLoss",
    "MultiLabelClassificationLoss",
    "ObjectiveOutput",
    "PerturbedTokenDetection",
    "PreservationLoss",
    "SimCSELoss",
    "SingleLabelClassificationLoss",
    "VARegressionLoss",
    "hard_label_targets",
    "simcse_loss",
    "soft_contrastive_loss",
    "soft_label_targets",
]
