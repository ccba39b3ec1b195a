"""SetFit few-shot on GoEmotions Ekman + neutral: test macro-F1 and seconds.

    python benchmarks/setfit_goemotions.py [--per-class 8] [--steps 150] [--seed 0] [--threads N] [--out DIR]

Samples ``--per-class`` training and as many dev examples of each of the seven classes (seeded),
fits SetFit on MiniLM (:func:`carl.evaluation.setfit_peer.fit_setfit`, ``--steps`` body steps of
16 pairs), then scores all 4,968 test texts. Prints and writes ``result.json`` in ``--out``; a
finished fit in ``--out`` is reused (delete the folder to measure again).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from carl.data.classification import ClassificationDataset, load_goemotions_ekman
from carl.evaluation.metrics import classification_metrics
from carl.evaluation.setfit_peer import fit_setfit


def per_class_sample(data: ClassificationDataset, per_class: int, seed: int) -> ClassificationDataset:
    """``per_class`` random rows of every class (seeded), in file order."""
    rng = np.random.default_rng(seed)
    rows = [rng.choice(np.flatnonzero(data.labels == c), per_class, replace=False) for c in range(len(data.classes))]
    return data.subset(np.sort(np.concatenate(rows)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--per-class", type=int, default=8)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--encoder", default="minilm-l6")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--out", default="/tmp/setfit-goemotions")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    train = per_class_sample(load_goemotions_ekman("train"), args.per_class, args.seed)
    dev = per_class_sample(load_goemotions_ekman("dev"), args.per_class, args.seed)
    test = load_goemotions_ekman("test")
    fitted = fit_setfit(
        args.encoder,
        train.texts,
        train.labels,
        dev.texts,
        dev.labels,
        classes=train.classes,
        multi_label=False,
        max_steps=args.steps,
        seed=args.seed,
        out_dir=Path(args.out) / "model",
    )
    started = time.perf_counter()
    pred = fitted.predict_proba(test.texts).argmax(1)
    test_seconds = time.perf_counter() - started
    metrics = classification_metrics(pred, test.labels, len(test.classes))
    result = {
        "task": "goemotions-ekman",
        "per_class": args.per_class,
        "n_train": len(train),
        "n_dev": len(dev),
        "n_test": len(test),
        "steps": fitted.steps,
        "train_seconds": round(fitted.train_seconds, 1),
        "test_seconds": round(test_seconds, 1),
        "torch_threads": torch.get_num_threads(),
        "dev": {k: round(fitted.dev_metrics[k], 4) for k in ("accuracy", "macro_f1")},
        "test": {k: round(metrics[k], 4) for k in ("accuracy", "macro_f1")},
        "test_per_class_f1": dict(zip(test.classes, np.round(metrics["per_class_f1"], 4).tolist())),
        "recipe": fitted.recipe,
    }
    text = json.dumps(result, indent=2)
    (Path(args.out) / "result.json").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
