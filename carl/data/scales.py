"""Rating scales and their mapping to [0, 1].

CARL regresses valence and arousal normalised to [0, 1]; corpora use their own scales
(EmoBank 1-5 SAM, Facebook posts 1-9, ...). A :class:`Scale` converts both ways.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

ArrayOrFloat = TypeVar("ArrayOrFloat", float, np.ndarray)

_NUMBER = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_SCALE_RE = re.compile(rf"^\s*({_NUMBER})\s*(?:\.\.|:|-|,|\bto\b)\s*({_NUMBER})\s*$")


@dataclass(frozen=True)
class Scale:
    """A closed rating interval ``[low, high]`` with ``low < high`` (both finite)."""

    low: float
    high: float

    def __post_init__(self) -> None:
        low, high = float(self.low), float(self.high)
        if not (math.isfinite(low) and math.isfinite(high)):
            raise ValueError(f"scale bounds must be finite numbers, got {self.low!r}, {self.high!r}")
        if not low < high:
            raise ValueError(f"scale needs low < high, got low={low:g}, high={high:g}")
        object.__setattr__(self, "low", low)
        object.__setattr__(self, "high", high)

    @classmethod
    def parse(cls, text: str | Scale) -> Scale:
        """Parse ``"1-5"``, ``"0-1"``, ``"1:9"``, ``"-1:1"``, ``"-1-1"``, ``"1..9"`` or ``"1 to 5"``.

        A :class:`Scale` is returned unchanged. ``":"`` is the unambiguous separator for
        negative bounds; ``"LOW-HIGH"`` works too because a leading ``-`` belongs to the number.
        """
        if isinstance(text, Scale):
            return text
        if not isinstance(text, str):
            raise ValueError(f"a scale is written like '1-5' or '-1:1', got {text!r}")
        match = _SCALE_RE.match(text)
        if match is None:
            raise ValueError(f"cannot read scale {text!r}; write it like '1-5', '0-1', '1-9' or '-1:1'")
        return cls(float(match.group(1)), float(match.group(2)))

    @property
    def width(self) -> float:
        return self.high - self.low

    def contains(self, x: float) -> bool:
        """True when ``low <= x <= high``."""
        return self.low <= x <= self.high

    def normalise(self, x: ArrayOrFloat) -> ArrayOrFloat:
        """Map from this scale to [0, 1]: ``(x - low) / (high - low)``; arrays any shape."""
        return (x - self.low) / self.width

    def denormalise(self, y: ArrayOrFloat) -> ArrayOrFloat:
        """Inverse of :meth:`normalise`: ``low + y * (high - low)``."""
        return self.low + y * self.width

    def __str__(self) -> str:
        sep = ":" if self.low < 0 else "-"
        return f"{self.low:g}{sep}{self.high:g}"


def as_scale(scale: Scale | str) -> Scale:
    """Accept a :class:`Scale` or its text form."""
    return Scale.parse(scale)


UNIT = Scale(0.0, 1.0)
