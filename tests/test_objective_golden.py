"""Loss traces of short runs of every VA objective, against traces recorded before objectives
became data (``tests/golden/objective_traces.json``, main at 829a68e).

12 steps of the tiny encoder, batch 8, queue 32 (it wraps), a checkpoint at step 5 and 10. The
refactor reproduced these values bit for bit; the test allows 1e-5 for other CPUs' float rounding.
Regenerate (only for an intended change of the maths): ``python tests/test_objective_golden.py``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

GOLDEN = Path(__file__).with_name("golden") / "objective_traces.json"
OBJECTIVES = ("carl", "mcl", "mse", "supcon-hard")
KEYS = ("step", "loss", "mcl", "mse", "ptd", "mcl_own_key_prob", "ptd_acc_perturbed", "grad_norm", "lr")


def overrides(encoder: str, train_csv: Path, objective: str) -> list[str]:
    return [
        f"data.path={train_csv}",
        "data.scale=0-1",
        "data.dev_fraction=0",  # the traces were recorded on every row, without dev evaluation
        "objective.preserve_weight=0",  # and before the preservation term (on by default since)
        f"model.encoder={encoder}",
        f"objective.name={objective}",
        "objective.mcl.queue_size=32",
        "train.batch_size=8",
        "train.learning_rate=1e-3",
        "train.max_steps=12",
        "train.checkpoint_every=5",
        "train.num_threads=1",
    ]


def trace(encoder: str, train_csv: Path, objective: str, out: Path) -> list[dict]:
    """``KEYS`` (those logged) of every step of one run."""
    from carl.config import load_config
    from carl.training.trainer import CarlTrainer

    CarlTrainer(load_config(None, overrides(encoder, train_csv, objective)), out, show_progress=False).train()
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [{k: r[k] for k in KEYS if k in r} for r in rows]


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_objective_reproduces_its_recorded_trace(objective, tiny_encoder, synthetic_csv, tmp_path):
    want = json.loads(GOLDEN.read_text())[objective]
    got = trace(tiny_encoder, synthetic_csv.train_path, objective, tmp_path)
    assert [r["step"] for r in got] == [r["step"] for r in want] == list(range(1, 13))
    for a, b in zip(got, want):
        assert a.keys() == b.keys(), a["step"]
        for key in a:
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-7), (a["step"], key, a[key], b[key])


if __name__ == "__main__":
    import tempfile

    import torch

    from carl.testing import (
        make_tiny_encoder,
        synthetic_affect_corpus,
        synthetic_vocabulary,
        write_affect_csv,
    )

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)  # the same encoder and corpus as the tiny_encoder and synthetic_csv fixtures
        encoder = make_tiny_encoder(root / "encoder", synthetic_vocabulary(), seed=0)
        train_csv = write_affect_csv(root / "train.csv", *synthetic_affect_corpus(400, seed=0))
        traces = {name: trace(encoder, train_csv, name, root / name) for name in OBJECTIVES}
    GOLDEN.write_text(json.dumps(traces, indent=1) + "\n")
    sys.exit(0)
