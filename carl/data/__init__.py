"""Data layer: reading labelled text, rating scales, emotion-label VA mapping, EmoBank.

Public API: :class:`AffectDataset` (texts, VA labels ``[N, 2]`` in [0, 1], optional class targets), :class:`DataError`,
:class:`Scale`, :func:`load_table`, :func:`load_emobank`, :func:`emotion_to_va`.
(``carl.data.batching`` holds the torch-side batching and is not imported here.)
"""

from .emobank import load_emobank
from .emotion_va import available_mappings, emotion_to_va
from .errors import DataError, UnknownLabelError
from .readers import AffectDataset, load_table
from .scales import Scale
from .user_corpora import load_user_corpus

__all__ = [
    "AffectDataset",
    "DataError",
    "Scale",
    "UnknownLabelError",
    "available_mappings",
    "emotion_to_va",
    "load_emobank",
    "load_table",
    "load_user_corpus",
]
