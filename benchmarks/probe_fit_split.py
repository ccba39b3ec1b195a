"""Is the EmoBank probe limited by being fitted on the encoder's own training sentences?

    python benchmarks/probe_fit_split.py MODEL [MODEL ...] [--out benchmarks/results/probe_fit_split]

For each model (a trained carl folder or an alias such as ``minilm-l6``) a ridge probe per VA
dimension is fitted once on the EmoBank train split (8062 sentences, which a fine-tuned encoder
has seen) and once on the dev split (1000 sentences it has not seen); both choose alpha by
leave-one-out cross-validation on their own fitting set (``RidgeCV``) and are scored on test
(Pearson r). If fine-tuning made train embeddings unrepresentative of unseen text, the dev-fitted
probe would close the gap or win despite its 8x fewer sentences. Writes results.json and report.md.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from sklearn.linear_model import RidgeCV

from carl.data.emobank import load_emobank
from carl.evaluation.metrics import pearson
from carl.evaluation.probe import DIMENSIONS
from carl.inference import AffectEncoder

# leave-one-out alpha on the fitting set itself, not carl's dev-selected ``ridge_probe``: the
# dev-fitted probe must not choose its alpha on the other split
ALPHAS = np.logspace(-3, 3, 13)


def probe_test_r(features: dict[str, np.ndarray], labels: dict[str, np.ndarray], fit: str) -> dict[str, float]:
    """Fit RidgeCV on split ``fit`` per dimension; Pearson r on test."""
    scores = {}
    for j, name in enumerate(DIMENSIONS):
        ridge = RidgeCV(alphas=ALPHAS).fit(features[fit], labels[fit][:, j])
        scores[name] = pearson(ridge.predict(features["test"]), labels["test"][:, j])
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", help="carl model folders or encoder aliases")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/probe_fit_split"))
    args = parser.parse_args()
    splits = {s: load_emobank(s) for s in ("train", "dev", "test")}
    labels = {s: np.asarray(d.labels) for s, d in splits.items()}
    rows = []
    for model in args.models:
        encoder = AffectEncoder.load(model)
        features = {s: np.asarray(encoder.encode(d.texts, batch_size=64)) for s, d in splits.items()}
        for fit in ("train", "dev"):
            rows.append({"model": model, "fit_split": fit, **probe_test_r(features, labels, fit)})
            print(json.dumps(rows[-1]), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    lines = [
        "# EmoBank probe fitted on train vs on dev (test Pearson r)",
        "",
        "| model | probe fitted on | valence r | arousal r |",
        "|---|---|---|---|",
    ]
    lines += [f"| {r['model']} | {r['fit_split']} | {r['valence']:.4f} | {r['arousal']:.4f} |" for r in rows]
    (args.out / "report.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
