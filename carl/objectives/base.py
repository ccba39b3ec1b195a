"""What every objective returns."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class ObjectiveOutput:
    """A scalar ``loss`` plus diagnostics (floats) that the trainer logs under their names."""

    loss: torch.Tensor
    diagnostics: dict[str, float] = field(default_factory=dict)
