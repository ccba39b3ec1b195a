"""Ridge probe on frozen embeddings (SentEval-style) with a frozen-encoder check."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import pearsonr, spearmanr
from sklearn.linear_model import Ridge
from sklearn.preprocessing import StandardScaler

ALPHAS = (0.01, 0.1, 1.0, 10.0, 100.0, 1e3, 3e3, 1e4, 3e4, 1e5, 3e5, 1e6)
DIMENSIONS = ("valence", "arousal")


def parameter_fingerprint(module: torch.nn.Module) -> str:
    """SHA-256 over every parameter and buffer, to prove an encoder stayed frozen."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


@dataclass
class ProbeResult:
    """Per-dimension test metrics and the chosen regularisation."""

    metrics: dict[str, float]
    alphas: dict[str, float]


def ridge_probe(train_x: np.ndarray, train_y: np.ndarray, dev_x: np.ndarray, dev_y: np.ndarray,
                test_x: np.ndarray, test_y: np.ndarray, alphas=ALPHAS) -> ProbeResult:
    """Fit ridge per VA dimension on standardised features [N, H], alpha chosen by dev Pearson r.

    Labels are [N, 2]; returns Pearson r, Spearman rho and MSE on test for each dimension.
    """
    scaler = StandardScaler().fit(train_x)
    tr, dv, te = scaler.transform(train_x), scaler.transform(dev_x), scaler.transform(test_x)
    metrics, chosen = {}, {}
    for d, name in enumerate(DIMENSIONS):
        best = max(alphas, key=lambda a: pearsonr(Ridge(alpha=a).fit(tr, train_y[:, d]).predict(dv),
                                                  dev_y[:, d])[0])
        pred = Ridge(alpha=best).fit(tr, train_y[:, d]).predict(te)
        metrics[f"{name}_pearson"] = float(pearsonr(pred, test_y[:, d])[0])
        metrics[f"{name}_spearman"] = float(spearmanr(pred, test_y[:, d])[0])
        metrics[f"{name}_mse"] = float(np.mean((pred - test_y[:, d]) ** 2))
        chosen[name] = best
    return ProbeResult(metrics, chosen)
