"""A held-out dev split of the training data, for when no dev file is given.

The split is stratified, so that dev mirrors train:

* single-label data: on the class;
* multi-label data: on each row's rarest label (its least frequent label in the training data,
  the lowest class index on ties), the usual cheap stand-in for iterative stratification;
* VA-only data: on 3 x 3 valence-arousal bins (tertiles of each dimension).

Each stratum of n rows gives ``fraction * n`` rows to dev, rounded so that the strata add up to
``round(fraction * N)`` (largest remainders first), and always keeps at least one row in train.
A class with fewer than 2 examples cannot be in both parts and is a :class:`DataError`; give a
dev file instead. The rows drawn depend only on the data and the seed.
"""

from __future__ import annotations

import math

import numpy as np

from .errors import DataError
from .readers import AffectDataset

VA_BINS = 3  # tertiles per dimension for VA-only data


def strata(data: AffectDataset) -> tuple[np.ndarray, str]:
    """One stratum id per row ``[N]`` int64, and what it stratifies on (for the log)."""
    if data.targets is None:
        edges = np.quantile(data.labels, np.linspace(0, 1, VA_BINS + 1)[1:-1], axis=0)  # [VA_BINS-1, 2]
        valence = np.searchsorted(edges[:, 0], data.labels[:, 0], side="right")
        arousal = np.searchsorted(edges[:, 1], data.labels[:, 1], side="right")
        return (valence * VA_BINS + arousal).astype(np.int64), f"{VA_BINS}x{VA_BINS} valence-arousal bins"
    counts = data.class_counts()
    small = {name: n for name, n in counts.items() if n < 2}
    if small:
        listing = ", ".join(f"{name!r} ({n})" for name, n in small.items())
        raise DataError(
            f"too few examples of class {listing} for a stratified dev split (at least 2 per "
            "class); give a dev file (data.dev_path), more examples, or data.dev_fraction = 0 (no selection)",
            path=data.source,
        )
    if not data.multi_label:
        return data.targets.astype(np.int64), "the class"
    frequency = np.array(list(counts.values()), dtype=np.float64)
    rarity = np.where(data.targets > 0, frequency[None, :], np.inf)  # [N, C]
    return rarity.argmin(1).astype(np.int64), "each row's rarest label"


def _dev_counts(sizes: np.ndarray, fraction: float) -> np.ndarray:
    """Rows per stratum for dev: largest-remainder rounding of ``fraction * sizes``, each <= size - 1."""
    caps = np.maximum(sizes - 1, 0)
    quotas = fraction * sizes
    counts = np.minimum(np.floor(quotas).astype(np.int64), caps)
    total = min(round(fraction * sizes.sum()), int(caps.sum()))
    for s in np.argsort(-(quotas - np.floor(quotas)), kind="stable"):
        if counts.sum() >= total:
            break
        if counts[s] < caps[s]:
            counts[s] += 1
    return counts


def hold_out_dev(train: AffectDataset, fraction: float, seed: int) -> tuple[AffectDataset, AffectDataset, str]:
    """Split ``train`` into (train, dev) with a stratified ``fraction`` in dev; plus a one-line note.

    Both parts keep the original row order. Raises :class:`DataError` when a class has fewer
    than 2 examples or when the split would leave dev empty.
    """
    if not (math.isfinite(fraction) and 0.0 < fraction < 1.0):
        raise ValueError(f"fraction must lie in (0, 1), got {fraction!r}")
    stratum, basis = strata(train)
    ids, sizes = np.unique(stratum, return_counts=True)
    counts = _dev_counts(sizes, fraction)
    if counts.sum() == 0:
        raise DataError(
            f"{len(train)} rows are too few to hold out {fraction:.0%} as dev; give a dev file (data.dev_path)",
            path=train.source,
        )
    rng = np.random.default_rng(seed)
    dev_rows = [rng.permutation(np.flatnonzero(stratum == s))[:k] for s, k in zip(ids, counts)]
    is_dev = np.zeros(len(train), dtype=bool)
    is_dev[np.concatenate(dev_rows)] = True
    note = (
        f"dev: held out {int(is_dev.sum())} of {len(train)} training rows ({fraction:.0%}, seed {seed}, "
        f"stratified on {basis}); training on {int((~is_dev).sum())}"
    )
    return train.subset(~is_dev), train.subset(is_dev), note
