"""VA regression probe of a frozen encoder: EmoBank (official split) and any VA file.

One code path for every VA task: features of train/dev/test, ridge per dimension with alpha
chosen on dev (:func:`probe_va_splits`), or 10-fold cross-validation when a corpus has no
split (:func:`probe_va_cv`). ``evaluate_emobank`` and ``evaluate_va_file`` wrap it for an
:class:`~carl.inference.AffectEncoder` and check that the encoder stayed frozen.
"""

from __future__ import annotations

from os import PathLike

from carl.data.emobank import load_emobank
from carl.data.readers import AffectDataset, load_table
from carl.evaluation.features import Features, embed_table
from carl.evaluation.probe import CV_SEED, EncoderNotFrozen, ProbeResult, cv_ridge_probe, frozen_check, ridge_probe

__all__ = ["EncoderNotFrozen", "evaluate_emobank", "evaluate_va", "evaluate_va_file", "probe_va_cv", "probe_va_splits"]


def probe_va_splits(features: Features, train: AffectDataset, dev: AffectDataset, test: AffectDataset) -> ProbeResult:
    """Ridge probe: fit on train, alpha on dev, metrics and predictions on test."""
    return ridge_probe(
        features(train.texts), train.labels, features(dev.texts), dev.labels, features(test.texts), test.labels
    )


def probe_va_cv(
    features: Features, data: AffectDataset, *, k: int = 10, seed: int = CV_SEED, inner_folds: int = 1
) -> ProbeResult:
    """``k``-fold cross-validated ridge probe (alpha chosen inside each training part)."""
    return cv_ridge_probe(features(data.texts), data.labels, k=k, seed=seed, inner_folds=inner_folds)


def evaluate_va(
    encoder,
    train: AffectDataset,
    dev: AffectDataset | None = None,
    test: AffectDataset | None = None,
    *,
    batch_size: int = 64,
    show_progress: bool = False,
    k: int = 10,
    seed: int = CV_SEED,
) -> ProbeResult:
    """Probe ``encoder`` on VA data: official split when dev and test are given, else k-fold CV.

    Raises :class:`EncoderNotFrozen` if the encoder's weights change while probing.
    """
    if (dev is None) != (test is None):
        raise ValueError("give both dev and test (official split) or neither (cross-validation)")
    groups = [d.texts for d in (train, dev, test) if d is not None]
    with frozen_check(encoder.model):
        table = embed_table(encoder, groups, batch_size=batch_size, show_progress=show_progress)
        if dev is None:
            return probe_va_cv(table, train, k=k, seed=seed)
        return probe_va_splits(table, train, dev, test)


def evaluate_emobank(encoder, *, batch_size: int = 64, show_progress: bool = True, limit: int = 0) -> ProbeResult:
    """Ridge probe on EmoBank: fit on train, choose alpha on dev, report on test (r, rho, MSE).

    ``limit`` keeps the first N sentences of each split (0 = all).
    """
    splits = []
    for split in ("train", "dev", "test"):
        data = load_emobank(split)
        if limit:
            data = data.subset(list(range(min(limit, len(data)))))
        splits.append(data)
    return evaluate_va(encoder, *splits, batch_size=batch_size, show_progress=show_progress)


def evaluate_va_file(
    encoder,
    path: str | PathLike[str],
    *,
    scale: str = "1-5",
    text_column: str = "text",
    valence_column: str = "valence",
    arousal_column: str = "arousal",
    split_column: str | None = None,
    file_format: str | None = None,
    batch_size: int = 64,
    show_progress: bool = False,
    k: int = 10,
) -> ProbeResult:
    """VA probe on a user CSV/TSV/JSONL: its ``split_column`` (train/dev/test) or k-fold CV."""
    kwargs = dict(
        text_column=text_column,
        valence_column=valence_column,
        arousal_column=arousal_column,
        scale=scale,
        file_format=file_format,
    )
    if split_column:
        train, dev, test = (
            load_table(path, split_column=split_column, split=s, **kwargs) for s in ("train", "dev", "test")
        )
        return evaluate_va(encoder, train, dev, test, batch_size=batch_size, show_progress=show_progress)
    return evaluate_va(encoder, load_table(path, **kwargs), batch_size=batch_size, show_progress=show_progress, k=k)
