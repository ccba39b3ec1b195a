"""Alignment and uniformity of embeddings (Wang and Isola, 2020, ICML).

On L2-normalised embeddings f(x):

    alignment(P)  = E_{(x, y) in P} ||f(x) - f(y)||_2^alpha          (alpha = 2)
    uniformity    = log E_{x, y} exp(-t ||f(x) - f(y)||_2^2)          (t = 2)

Lower is better for both: positive pairs close together, all embeddings spread over the
sphere. The expectations run over unordered pairs of distinct sentences (i < j), as
``torch.pdist`` does in the authors' code.

Positive pairs for affect (:func:`va_pairs`, :func:`label_pairs`):

* **VA pairs**: sentences whose (valence, arousal) labels, on the [0, 1] scale carl stores,
  lie within Euclidean distance ``max_distance`` (default :data:`VA_PAIR_DISTANCE` = 0.025,
  i.e. 0.1 points on EmoBank's 1-5 scale, under half the standard deviation of either
  dimension on EmoBank test (valence 0.086, arousal 0.061 on [0, 1]): both sentences express
  practically the same affect. On EmoBank test this selects 20,087 of the 499,500 pairs (4 %));
* **same-label pairs**: sentences of the same class (SST-2 polarity, GoEmotions-Ekman).
"""

from __future__ import annotations

import numpy as np

VA_PAIR_DISTANCE = 0.025
UNIFORMITY_T = 2.0


def normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (float64)."""
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True).clip(min=1e-12)


def _squared_distances(x: np.ndarray, i: np.ndarray, j: np.ndarray, chunk: int = 65536) -> np.ndarray:
    out = np.empty(len(i), dtype=np.float64)
    for start in range(0, len(i), chunk):
        a, b = x[i[start : start + chunk]], x[j[start : start + chunk]]
        out[start : start + chunk] = np.sum((a - b) ** 2, axis=1)
    return out


def alignment(x: np.ndarray, y: np.ndarray, alpha: float = 2.0) -> float:
    """Mean ``||x_i - y_i||^alpha`` over row pairs of L2-normalised ``x`` and ``y`` [P, H].

    The inputs are normalised here (pass raw embeddings); NaN for no pairs.
    """
    x, y = normalise(x), normalise(y)
    if len(x) == 0:
        return float("nan")
    return float(np.mean(np.sum((x - y) ** 2, axis=1) ** (alpha / 2)))


def pair_alignment(emb: np.ndarray, pairs: tuple[np.ndarray, np.ndarray], alpha: float = 2.0) -> float:
    """:func:`alignment` over index pairs ``(i, j)`` of the rows of ``emb``."""
    i, j = pairs
    if len(i) == 0:
        return float("nan")
    x = normalise(emb)
    return float(np.mean(_squared_distances(x, i, j) ** (alpha / 2)))


def uniformity(emb: np.ndarray, t: float = UNIFORMITY_T) -> float:
    """``log mean_{i<j} exp(-t ||f(x_i) - f(x_j)||^2)`` over L2-normalised rows of ``emb``."""
    x = normalise(emb)
    n = len(x)
    if n < 2:
        return float("nan")
    i, j = np.triu_indices(n, k=1)
    values = -t * _squared_distances(x, i, j)
    top = values.max()
    return float(top + np.log(np.mean(np.exp(values - top))))  # stable log-mean-exp


def va_pairs(labels: np.ndarray, max_distance: float = VA_PAIR_DISTANCE) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs ``i < j`` whose VA labels [N, 2] lie within ``max_distance`` (Euclidean)."""
    labels = np.asarray(labels, dtype=np.float64)
    i, j = np.triu_indices(len(labels), k=1)
    close = np.sum((labels[i] - labels[j]) ** 2, axis=1) <= max_distance**2 + 1e-12
    return i[close], j[close]


def label_pairs(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs ``i < j`` of the same class label [N]."""
    labels = np.asarray(labels)
    i, j = np.triu_indices(len(labels), k=1)
    same = labels[i] == labels[j]
    return i[same], j[same]


def sample_rows(n: int, limit: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of a fixed random subset of ``limit`` of ``n`` rows (all when ``limit`` is 0)."""
    if not limit or limit >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).permutation(n)[:limit])


def geometry_metrics(
    emb: np.ndarray,
    *,
    va: np.ndarray | None = None,
    classes: np.ndarray | None = None,
    max_distance: float = VA_PAIR_DISTANCE,
) -> dict[str, float]:
    """``uniformity`` and, given labels, ``alignment_va`` / ``alignment_label`` with pair counts."""
    out: dict[str, float] = {"uniformity": uniformity(emb), "n": len(emb)}
    if va is not None:
        pairs = va_pairs(va, max_distance)
        out.update(alignment_va=pair_alignment(emb, pairs), pairs_va=len(pairs[0]), va_pair_distance=max_distance)
    if classes is not None:
        pairs = label_pairs(classes)
        out.update(alignment_label=pair_alignment(emb, pairs), pairs_label=len(pairs[0]))
    return out
