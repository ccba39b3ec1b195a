"""The bundled EmoBank corpus (Buechel & Hahn, 2017; CC BY-SA 4.0).

``carl/data/emobank/emobank.csv`` (columns id, split, V, A, D, text; V/A/D on the 1-5 SAM
scale; 10,062 sentences) ships with the package; see ``carl/data/emobank/README.md`` for
source, commit, licence and citations. The official split is the ``split`` column:
train 8,062 / dev 1,000 / test 1,000.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from .readers import AffectDataset, load_table

EMOBANK_SPLITS: tuple[str, ...] = ("train", "dev", "test")
EMOBANK_SPLIT_SIZES: dict[str, int] = {"train": 8062, "dev": 1000, "test": 1000}
EMOBANK_SCALE = "1-5"


def emobank_path() -> Path:
    """Filesystem path of the bundled ``emobank.csv``."""
    try:
        resource = resources.files("carl.data") / "emobank" / "emobank.csv"
        path = Path(str(resource))
        if path.is_file():
            return path
    except (ModuleNotFoundError, TypeError):  # pragma: no cover - unusual import setups
        pass
    return Path(__file__).resolve().parent / "emobank" / "emobank.csv"


def load_emobank(split: str) -> AffectDataset:
    """One official EmoBank split (``"train"``, ``"dev"`` or ``"test"``).

    Returns an :class:`AffectDataset` of the sentences with labels ``[N, 2]`` = (V, A)
    normalised from 1-5 to [0, 1]. Dominance (D) is not used.
    """
    if split not in EMOBANK_SPLITS:
        raise ValueError(f"unknown EmoBank split {split!r}; choose one of {', '.join(repr(s) for s in EMOBANK_SPLITS)}")
    return load_table(
        emobank_path(),
        text_column="text",
        valence_column="V",
        arousal_column="A",
        scale=EMOBANK_SCALE,
        file_format="csv",
        split_column="split",
        split=split,
    )
