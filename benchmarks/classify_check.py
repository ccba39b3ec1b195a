"""A quick real-model check of the classifier: MiniLM on GoEmotions Ekman + neutral, test ECE before
and after temperature scaling.

    python benchmarks/classify_check.py [--objective classify] [--steps 300] [--out /tmp/classify-check]

Writes the bundled train/dev/test splits as ``text,label`` CSVs into ``--out``, trains
``--objective`` for ``--steps`` optimizer steps (batch 32, max_length 64, 2 threads; T fitted on
dev at the end), then scores test: macro-F1, accuracy, and ECE (15 bins, top label) at T = 1 and
at the fitted T. Prints and writes ``result-<objective>.json`` in ``--out``.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np

from carl.config import load_config
from carl.data.classification import load_goemotions_ekman
from carl.evaluation.calibration import expected_calibration_error, probabilities
from carl.evaluation.metrics import per_class_f1
from carl.inference import AffectEncoder
from carl.training.trainer import CarlTrainer


def write_splits(out: Path) -> None:
    for split in ("train", "dev", "test"):
        data = load_goemotions_ekman(split)
        with open(out / f"{split}.csv", "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["text", "label"])
            writer.writerows([text, data.classes[y]] for text, y in zip(data.texts, data.labels))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--objective", default="classify")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--out", default="/tmp/classify-check")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_splits(out)
    cfg = load_config(
        None,
        [
            f"data.path={out / 'train.csv'}",
            f"data.dev_path={out / 'dev.csv'}",
            "data.label_column=label",
            "data.max_length=64",
            f"objective.name={args.objective}",
            f"train.max_steps={args.steps}",
            "train.batch_size=32",
            "train.learning_rate=5e-5",
            "train.head_learning_rate=1e-3",
            "train.checkpoint_every=0",
            "train.num_threads=2",
        ],
    )
    started = time.time()
    run = out / f"run-{args.objective}"
    trainer = CarlTrainer(cfg, run, show_progress=False)
    trainer.train()
    trainer.close()
    encoder = AffectEncoder.load(str(run / "model"), num_threads=2)
    test = load_goemotions_ekman("test")
    y = np.array([encoder.classifier.classes.index(test.classes[k]) for k in test.labels])  # model order: sorted
    logits, _ = encoder.class_logits(test.texts)
    t = encoder.classifier.temperature
    info = json.loads((run / "model" / "carl" / "carl.json").read_text())
    result = {
        "objective": args.objective,
        "steps": args.steps,
        "temperature": t,
        "test_ece_before": expected_calibration_error(probabilities(logits, multi_label=False), y),
        "test_ece_after": expected_calibration_error(probabilities(logits, t, multi_label=False), y),
        "test_macro_f1": float(np.mean(per_class_f1(logits.argmax(1), y, logits.shape[1]))),
        "test_accuracy": float((logits.argmax(1) == y).mean()),
        "dev_calibration": info["calibration"],
        "seconds": time.time() - started,
    }
    print(json.dumps(result, indent=1))
    (out / f"result-{args.objective}.json").write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
