"""What every objective returns."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch


@dataclass
class ObjectiveOutput:
    """A scalar ``loss`` plus diagnostics that the trainer logs under their names.

    Diagnostics are 0-d tensors (or floats), left on the device: the trainer reads all of a
    step's values in one transfer, so an objective adds no host synchronisation of its own.
    """

    loss: torch.Tensor
    diagnostics: Mapping[str, torch.Tensor | float] = field(default_factory=dict)
