"""Two CPU processes (gloo) through torchrun: shared queue and equivalence with one process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

WORKER = Path(__file__).with_name("distributed_worker.py")
KILL_AT_STEP = Path(__file__).with_name("kill_at_step.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict[str, str]:
    """Offline, one thread, this tree's carl (also for scripts run by path)."""
    repo = str(Path(__file__).resolve().parents[1])
    return {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONPATH": os.pathsep.join(filter(None, [repo, os.environ.get("PYTHONPATH")])),
    }


def _torchrun(*args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(_free_port()),
        *args,
    ]


@pytest.fixture()
def no_dropout_encoder(tiny_encoder, tmp_path) -> str:
    """The tiny encoder with dropout off, so that rank count cannot change the maths."""
    import shutil

    folder = tmp_path / "enc"
    shutil.copytree(tiny_encoder, folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (folder / "config.json").write_text(json.dumps(config))
    return str(folder)


def _overrides(encoder: str, data) -> list[str]:
    return [
        f"data.path={data.train_path}",
        "data.scale=0-1",
        "data.dev_fraction=0",  # dev data only where a test gives it
        f"model.encoder={encoder}",
        "objective.name=carl",
        "objective.mcl.queue_size=48",
        "train.max_steps=6",
        "train.learning_rate=1e-3",
        "train.batch_size=16",
        "train.num_threads=1",
        "train.checkpoint_every=3",
    ]


def _trace(run_dir: Path) -> list[dict]:
    return [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines() if l.strip()]


def test_two_processes_share_one_queue_and_key_encoder(tiny_encoder, synthetic_csv, tmp_path):
    out = tmp_path / "ranks.json"
    # 397 sentences in global batches of 2 x 16: 12 full batches and one of 13, split 7 + 6
    cmd = _torchrun(
        str(WORKER), str(out), str(tmp_path / "run"), *_overrides(tiny_encoder, synthetic_csv), "data.limit=397"
    )
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["world_size"] == 2
    assert report["filled"] == 48  # 6 steps x 2 ranks x 16 keys, wrapped into 48 slots
    for name in ("queue_keys", "queue_labels", "key_encoder", "query_encoder"):
        assert report[f"{name}_max_diff"] == 0.0, name
    # data sharding: one epoch covers every sentence exactly once, same step count on both ranks
    assert report["train_size"] == 397
    assert report["epoch_indices"] == list(range(397))
    assert report["epoch_batches_per_rank"] == [13, 13]


def test_two_processes_share_one_teacher_pass(tiny_encoder, synthetic_csv, tmp_path):
    """With a distillation term each rank embeds half the training sentences with the starting
    encoder; every rank ends with the whole matrix, the single-process embeddings, cached once."""
    import numpy as np
    from safetensors.numpy import load_file

    from carl.data.readers import load_table
    from carl.inference import AffectEncoder
    from carl.training.teacher import TEACHER_FILE

    out, run = tmp_path / "ranks.json", tmp_path / "run"
    overrides = [*_overrides(tiny_encoder, synthetic_csv), "data.limit=397", "objective.preserve_weight=1"]
    done = subprocess.run(
        _torchrun(str(WORKER), str(out), str(run), *overrides), env=_env(), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("preserve: teacher embeddings of 397 sentences computed") == 1
    assert "(2 process(es))" in done.stdout
    report = json.loads(out.read_text())
    assert report["teacher_max_diff"] == 0.0 and report["query_encoder_max_diff"] == 0.0
    cached = load_file(str(run / TEACHER_FILE))["embeddings"]
    texts = load_table(synthetic_csv.train_path, scale="0-1").texts[:397]
    np.testing.assert_allclose(cached, AffectEncoder.load(tiny_encoder).encode(texts), atol=1e-5)


def test_two_processes_stop_early_at_the_same_step(tiny_encoder, synthetic_csv, tmp_path):
    """Rank 0 scores dev; every rank takes the same selection decisions and stops at the same step."""
    out, run = tmp_path / "ranks.json", tmp_path / "run"
    overrides = [
        *_overrides(tiny_encoder, synthetic_csv),
        f"data.dev_path={synthetic_csv.heldout_path}",
        "train.learning_rate=1e-2",
        "train.head_learning_rate=1e-2",
        "train.max_steps=40",
        "train.eval_every=2",
        "train.early_stopping_patience=1",
    ]
    done = subprocess.run(
        _torchrun(str(WORKER), str(out), str(run), *overrides), env=_env(), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    steps, selections = report["step_per_rank"], report["selection_per_rank"]
    assert steps[0] == steps[1] < 40 and selections[0] == selections[1]
    assert selections[0]["evaluations_since_best"] == 1 and selections[0]["best_step"] == steps[0] - 2
    dev = [r for r in _trace(run) if "dev" in r]
    assert [r["step"] for r in dev] == list(range(2, steps[0] + 1, 2))
    assert json.loads((run / "model" / "carl" / "carl.json").read_text())["selection"]["stopped_early"]


def test_two_processes_with_split_batches_match_one_process(no_dropout_encoder, synthetic_csv, tmp_path):
    """2 ranks x 8 sentences (split batch of 16) follow the 1-process batch-16 loss trace.

    Deliberate difference: token-level terms (the PTD BCE and detection accuracies) are means
    per rank, then averaged over ranks, which differs from a global token mean when the ranks
    hold different numbers of tokens; so accuracies are not compared and losses get 5e-4. The
    PTD sentence share is drawn per rank (each rank detects on at least one of its sentences), so
    the comparison perturbs every sentence (``sentence_fraction = 1``).
    """
    overrides = _overrides(no_dropout_encoder, synthetic_csv) + ["objective.ptd.sentence_fraction=1.0"]
    sets = [arg for o in overrides for arg in ("--set", o)]
    single, double = tmp_path / "one", tmp_path / "two"
    one = subprocess.run(
        [sys.executable, "-m", "carl.cli", "train", "--output", str(single), "--no-progress", *sets],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run(
        _torchrun(
            "-m",
            "carl.cli",
            "train",
            "--output",
            str(double),
            "--no-progress",
            *sets,
            "--set",
            "train.split_batches=true",
        ),
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = _trace(single), _trace(double)
    assert [r["step"] for r in a] == [r["step"] for r in b] == list(range(1, 7))
    for x, y in zip(a, b):
        for key in ("loss", "mcl", "mse", "ptd", "mcl_own_key_prob"):
            assert x[key] == pytest.approx(y[key], abs=5e-4), (x["step"], key)
    # a 2-process run killed after step 4 (last checkpoint: step 3) resumes in ONE process
    # and finishes on the same trace
    killed = tmp_path / "killed"
    dead = subprocess.run(
        _torchrun(
            str(KILL_AT_STEP),
            "4",
            "train",
            "--output",
            str(killed),
            "--no-progress",
            *sets,
            "--set",
            "train.split_batches=true",
        ),
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert dead.returncode != 0
    assert (killed / "checkpoints" / "latest").read_text().strip() == "step-3"
    resumed = subprocess.run(
        [
            sys.executable,
            "-m",
            "carl.cli",
            "train",
            "--output",
            str(killed),
            "--no-progress",
            *sets,
            "--set",
            "train.split_batches=true",
        ],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    c = _trace(killed)
    assert [r["step"] for r in c] == list(range(1, 7))
    for x, z in zip(a, c):
        assert x["loss"] == pytest.approx(z["loss"], abs=5e-4), x["step"]


@pytest.mark.parametrize("processes, n_texts", [(2, 11), (3, 7), (3, 2)])
def test_sharded_inference_gathers_every_text_once_in_order(tiny_encoder, synthetic_csv, tmp_path, processes, n_texts):
    """N processes split the texts unevenly (some ranks may get none), gather, and every rank ends
    with the single-process result: each row once, in input order."""
    import numpy as np

    from carl.inference import AffectEncoder
    from carl.testing import synthetic_affect_corpus

    run = tmp_path / "run"
    from carl.config import load_config
    from carl.training.trainer import CarlTrainer

    config = load_config(None, _overrides(tiny_encoder, synthetic_csv) + ["train.max_steps=2"])
    CarlTrainer(config, run, show_progress=False).train()
    cmd = _torchrun(str(WORKER.with_name("distributed_infer_worker.py")), str(run), str(n_texts), str(tmp_path))
    cmd[cmd.index("--nproc_per_node") + 1] = str(processes)
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    texts, _ = synthetic_affect_corpus(n_texts, seed=5)
    embeddings, va = AffectEncoder.load(str(run)).infer(texts, batch_size=3, with_va=True)
    shares = [list(np.load(tmp_path / f"rank{rank}.npz")["local"]) for rank in range(processes)]
    assert [t for share in shares for t in share] == texts  # contiguous shares in rank order: every text embedded once
    assert max(len(s) for s in shares) == -(-n_texts // processes)
    for rank in range(processes):
        got = np.load(tmp_path / f"rank{rank}.npz")
        assert got["embeddings"].shape == embeddings.shape and got["va"].shape == va.shape
        np.testing.assert_allclose(got["embeddings"], embeddings, atol=1e-5)
        np.testing.assert_allclose(got["va"], va, atol=1e-5)


def test_sharded_class_logits_match_one_process(emotion_model, tmp_path):
    """``class_logits`` (and so ``classify`` and ``predict --classes``) is sharded like ``infer``: 2 ranks
    each run half the texts, and both end with the one-process logits and VA in input order."""
    import numpy as np

    from carl.inference import AffectEncoder
    from carl.testing import synthetic_affect_corpus

    cmd = _torchrun(str(WORKER.with_name("distributed_infer_worker.py")), str(emotion_model), "9", str(tmp_path))
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    texts, _ = synthetic_affect_corpus(9, seed=5)
    logits, va = AffectEncoder.load(str(emotion_model)).class_logits(texts, batch_size=3, with_va=True)
    shares = [list(np.load(tmp_path / f"rank{rank}.npz")["local"]) for rank in range(2)]
    assert shares[0] == texts[:5] * 2 and shares[1] == texts[5:] * 2  # infer, then class_logits: each share once
    for rank in range(2):
        got = np.load(tmp_path / f"rank{rank}.npz")
        np.testing.assert_allclose(got["logits"], logits, atol=1e-5)
        np.testing.assert_allclose(got["logits_va"], va, atol=1e-5)


def test_carl_evaluate_under_torchrun_prints_once_and_matches_one_process(tiny_encoder, tmp_path):
    """``carl evaluate`` on 2 gloo processes: one table, one JSON, the 1-process numbers."""
    common = ["-m", "carl.cli", "evaluate", tiny_encoder, "--limit", "40", "--no-progress", "--batch-size", "8"]
    one = subprocess.run(
        [sys.executable, *common, "--output", str(tmp_path / "one.json")],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run(
        _torchrun(*common, "--output", str(tmp_path / "two.json")),
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stdout.count("EmoBank test, ridge probe") == 1
    one_json, two_json = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("one", "two"))
    a, b = one_json["metrics"] | one_json["sickr"], two_json["metrics"] | two_json["sickr"]
    assert a.keys() == b.keys() and "spearman" in a
    for key in a:  # SICK-R is x100: its 1e-4 is the 1e-6 of a correlation
        assert a[key] == pytest.approx(b[key], abs=1e-4 if key in one_json["sickr"] else 1e-6), key
