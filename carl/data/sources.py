"""Turn the ``[data]`` config section into training (and optional dev) datasets."""

from __future__ import annotations

from carl.config import DataConfig
from carl.data.emobank import load_emobank
from carl.data.readers import AffectDataset, load_table

EMOBANK_DESCRIPTION = {
    "description": "EmoBank (Buechel and Hahn, EACL 2017), official train split, "
                   "valence and arousal on the 1-5 SAM scale",
    "licence": "CC BY-SA 4.0",
}


def _read(cfg: DataConfig, path: str) -> AffectDataset:
    return load_table(
        path, text_column=cfg.text_column, valence_column=cfg.valence_column,
        arousal_column=cfg.arousal_column, scale=cfg.scale, file_format=cfg.file_format or None,
        label_column=cfg.label_column or None,
        label_mapping=cfg.label_mapping if cfg.label_column else None,
    )


def load_training_data(cfg: DataConfig, verbose: bool = True) -> tuple[AffectDataset, AffectDataset | None]:
    """Training set (bundled EmoBank train when ``cfg.path`` is empty) and dev set or None."""
    if cfg.path:
        train = _read(cfg, cfg.path)
        dev = _read(cfg, cfg.dev_path) if cfg.dev_path else None
    else:
        train, dev = load_emobank("train"), load_emobank("dev")
    if cfg.limit:
        train = train.subset(list(range(min(cfg.limit, len(train)))))
    if verbose:
        print(train.summary())
    return train, dev


def describe_data(cfg: DataConfig) -> dict[str, str]:
    """A human description and licence note of the training data, for the model card."""
    if not cfg.path:
        return EMOBANK_DESCRIPTION
    kind = f"categorical labels ({cfg.label_column}) mapped via {cfg.label_mapping}" if cfg.label_column \
        else f"continuous valence/arousal on the {cfg.scale} scale"
    return {"description": f"user data {cfg.path}, {kind}", "licence": "as declared by the data's owner"}
