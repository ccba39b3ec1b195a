"""Features of texts for the probes: encoder embeddings computed once per distinct text.

Tasks share sentences (every SST-2 sentence is an SST-5 sentence; half of MR is in SST), so
the suite embeds the union of their texts once and looks rows up by text.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np

Features = Callable[[Sequence[str]], np.ndarray]


class FeatureTable:
    """``table(texts)`` -> rows [len(texts), D] of precomputed features, by exact text."""

    def __init__(self, texts: Sequence[str], values: np.ndarray):
        values = np.asarray(values)
        if values.ndim == 1:
            values = values[:, None]
        if len(texts) != len(values):
            raise ValueError(f"{len(texts)} texts but {len(values)} feature rows")
        self.index = {text: i for i, text in enumerate(texts)}
        self.values = values

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        try:
            return self.values[[self.index[t] for t in texts]]
        except KeyError as err:
            raise KeyError(f"no features computed for text {str(err)[:80]}") from None

    @property
    def dim(self) -> int:
        return int(self.values.shape[1])


def unique_texts(groups: Iterable[Sequence[str]]) -> list[str]:
    """Distinct texts of all groups, first occurrence order."""
    return list(dict.fromkeys(t for group in groups for t in group))


def embed_table(
    encoder, groups: Iterable[Sequence[str]], *, batch_size: int = 64, show_progress: bool = False
) -> FeatureTable:
    """Embed the distinct texts of ``groups`` once with ``encoder.encode`` (an AffectEncoder)."""
    texts = unique_texts(groups)
    return FeatureTable(texts, encoder.encode(texts, batch_size=batch_size, show_progress=show_progress))


def scored_table(score: Callable[[str], float | Sequence[float]], groups: Iterable[Sequence[str]]) -> FeatureTable:
    """Features from a per-text scoring function (e.g. a lexicon's polarity), computed once per text."""
    texts = unique_texts(groups)
    return FeatureTable(texts, np.asarray([score(t) for t in texts], dtype=np.float64))
