"""Turn the ``[data]`` config section into training (and optional dev) datasets."""

from __future__ import annotations

from carl.config import DataConfig
from carl.data.emobank import load_emobank
from carl.data.readers import AffectDataset, load_table
from carl.data.splits import hold_out_dev

EMOBANK_DESCRIPTION = {
    "description": "EmoBank (Buechel and Hahn, EACL 2017), official train split, "
    "valence and arousal on the 1-5 SAM scale",
    "licence": "CC BY-SA 4.0",
}


def _read(cfg: DataConfig, path: str, classes: tuple[str, ...] | None = None, va: bool = True) -> AffectDataset:
    return load_table(
        path,
        text_column=cfg.text_column,
        valence_column=cfg.valence_column,
        arousal_column=cfg.arousal_column,
        scale=cfg.scale,
        file_format=cfg.file_format or None,
        label_column=cfg.label_column or None,
        label_mapping=cfg.label_mapping if cfg.label_column else None,
        multi_label=cfg.multi_label,
        label_delimiter=cfg.label_delimiter,
        classes=classes,
        va=va,
    )


def load_training_data(
    cfg: DataConfig, verbose: bool = True, va: bool = True, hold_out: bool = True
) -> tuple[AffectDataset, AffectDataset | None]:
    """Training set (bundled EmoBank train when ``cfg.path`` is empty) and dev set or None.

    The dev file is read against the training file's label set. Without a dev file, with
    ``hold_out`` (the run selects on dev) and ``cfg.dev_fraction > 0``, dev is a stratified
    held-out share of train (after ``cfg.limit``).
    ``va=False`` (an objective that trains on the classes alone): labelled rows without VA
    columns get NaN VA, not the mapping's.
    """
    cfg.check()
    if cfg.path:
        train = _read(cfg, cfg.path, va=va)
        classes = train.classes if cfg.label_column else None
        dev = _read(cfg, cfg.dev_path, classes, va) if cfg.dev_path else None
    else:
        train, dev = load_emobank("train"), load_emobank("dev")
    if cfg.limit:
        train = train.subset(list(range(min(cfg.limit, len(train)))))
    note = None
    if dev is None and hold_out and cfg.dev_fraction > 0:
        train, dev, note = hold_out_dev(train, cfg.dev_fraction, cfg.dev_seed)
    if verbose:
        print(train.summary())
        if note:
            print(note)
    return train, dev


def describe_data(cfg: DataConfig) -> dict[str, str]:
    """A human description and licence note of the training data, for the model card."""
    if not cfg.path:
        return EMOBANK_DESCRIPTION
    if cfg.label_column:
        labels = "multi-label" if cfg.multi_label else "single-label"
        kind = (
            f"{labels} emotion classes ({cfg.label_column}), valence/arousal from the file's columns "
            f"on the {cfg.scale} scale where present, else mapped via {cfg.label_mapping}"
        )
    else:
        kind = f"continuous valence/arousal on the {cfg.scale} scale"
    return {"description": f"user data {cfg.path}, {kind}", "licence": "as declared by the data's owner"}
