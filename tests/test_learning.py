"""Does CARL learn? Behaviour on the synthetic affect corpus with the tiny random encoder.

The corpus has a known answer: a sentence's valence and arousal are set by its one or two
affect words (``carl.testing.AFFECT_WORDS``); the other words are neutral filler. So

* a ridge probe on frozen embeddings after a short run must predict VA far better than on the
  untrained encoder (measured on seed 0: untrained r ~0.54 valence / ~0.51 arousal, after 150
  carl steps r ~0.99 / ~0.99, after 150 mcl-only steps r ~0.95 / ~0.94);
* the word with the largest loss gradient (PTD's saliency) must be an affect word far more
  often than chance (measured ~1.00 against chance ~0.20);
* every objective and every PTD selection/replacement runs and exports a usable model.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from carl.config import load_config
from carl.data.batching import PaddingCollator, TokenizedDataset
from carl.evaluation.probe import ridge_probe
from carl.inference import AffectEncoder
from carl.objectives import VARegressionLoss
from carl.objectives.perturbed_token_detection import PerturbedTokenDetection, word_saliency
from carl.testing import AFFECT_WORDS, affect_word_positions
from carl.training.trainer import CarlTrainer

TRAINED_MIN_R = 0.90  # carl, 150 steps: measured 0.99 / 0.99
MCL_ONLY_MIN_R = 0.85  # contrastive loss alone, 150 steps: measured 0.95 / 0.94
MIN_GAIN_OVER_UNTRAINED = 0.20  # untrained tiny encoder: measured 0.54 / 0.51
SALIENCY_MIN_OVER_CHANCE = 0.50  # top-1 salient word is an affect word: measured 1.00, chance 0.20
LEARNING_STEPS = 150


def train(out: Path, overrides: list[str]) -> Path:
    """Train in-process into ``out``; returns the run folder."""
    CarlTrainer(load_config(None, overrides), out, show_progress=False).train()
    return out


def probe(model: str | Path, data) -> dict[str, float]:
    """Ridge probe on frozen embeddings: fit on the 400 training sentences, alpha chosen on
    100 held-out sentences, Pearson r on the other 200 held-out sentences."""
    encoder = AffectEncoder.load(str(model))
    train_x = encoder.encode(data.train_texts)
    heldout_x = encoder.encode(data.heldout_texts)
    y = data.heldout_labels
    result = ridge_probe(train_x, data.train_labels, heldout_x[:100], y[:100], heldout_x[100:], y[100:])
    return {name: result.metrics[f"{name}_pearson"] for name in ("valence", "arousal")}


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, tiny_overrides) -> Path:
    """The carl objective, 150 steps at a high learning rate (the encoder starts random)."""
    return train(
        tmp_path_factory.mktemp("carl-learning"),
        tiny_overrides
        + [f"train.max_steps={LEARNING_STEPS}", "train.learning_rate=3e-3", "objective.mcl.queue_size=128"],
    )


@pytest.fixture(scope="module")
def untrained_r(tiny_encoder, synthetic_csv) -> dict[str, float]:
    return probe(tiny_encoder, synthetic_csv)


def test_carl_embeddings_encode_valence_and_arousal(trained_run, untrained_r, synthetic_csv):
    trained = probe(trained_run, synthetic_csv)
    for dim in ("valence", "arousal"):
        assert trained[dim] >= TRAINED_MIN_R, f"{dim}: trained r {trained[dim]:.3f} (untrained {untrained_r[dim]:.3f})"
        assert trained[dim] - untrained_r[dim] >= MIN_GAIN_OVER_UNTRAINED, (
            f"{dim}: trained r {trained[dim]:.3f} vs untrained {untrained_r[dim]:.3f}"
        )


def test_contrastive_loss_alone_encodes_affect(tmp_path, tiny_overrides, untrained_r, synthetic_csv):
    """MCL without the auxiliary MSE: only the VA-distance soft targets carry the labels."""
    run = train(
        tmp_path,
        tiny_overrides
        + [
            "objective.name=mcl",
            "objective.mse_weight=0",
            f"train.max_steps={LEARNING_STEPS}",
            "train.learning_rate=3e-3",
            "objective.mcl.queue_size=128",
        ],
    )
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert "mse" not in records[0] and "mcl" in records[0]
    trained = probe(run, synthetic_csv)
    for dim in ("valence", "arousal"):
        assert trained[dim] >= MCL_ONLY_MIN_R, f"{dim}: mcl-only r {trained[dim]:.3f}"
        assert trained[dim] - untrained_r[dim] >= MIN_GAIN_OVER_UNTRAINED


def top_salient_words(model_dir: str | Path, texts: list[str], labels: np.ndarray) -> list[int]:
    """Index of the word with the largest ||dL/de|| for the VA MSE loss, per sentence."""
    encoder = AffectEncoder.load(str(model_dir))
    model = encoder.model.eval()
    data = TokenizedDataset(texts, labels, encoder.tokenizer, 128)
    batch = PaddingCollator(encoder.tokenizer.pad_token_id)([data[i] for i in range(len(data))])
    model.zero_grad(set_to_none=True)
    with torch.enable_grad():
        out = model(batch["input_ids"], batch["attention_mask"], track_input_grad=True)
        VARegressionLoss()(out.va, model.standardise(batch["labels"])).loss.backward()
    scores = word_saliency(model.input_gradient(), batch["word_index"])  # [B, W]
    return scores.argmax(-1).tolist()


def test_saliency_points_at_affect_words(trained_run, synthetic_csv):
    texts, labels = synthetic_csv.heldout_texts, synthetic_csv.heldout_labels
    top = top_salient_words(trained_run / "model", texts, labels)
    hit_rate = float(np.mean([t in affect_word_positions(x) for t, x in zip(top, texts)]))
    chance = float(np.mean([len(affect_word_positions(x)) / len(x.split()) for x in texts]))
    assert hit_rate >= chance + SALIENCY_MIN_OVER_CHANCE, f"top-1 affect {hit_rate:.3f}, chance {chance:.3f}"


def test_saliency_selection_perturbs_the_most_salient_words():
    """PTD's saliency selection picks max(1, round(ratio * words)) words, all sub-words of a
    chosen word, never specials or padding; ``mask`` writes the mask id there."""
    torch.manual_seed(0)
    word_index = torch.tensor(
        [
            [-1, 0, 1, 1, 2, 3, -1, -1],  # 4 words, word 1 has 2 sub-words
            [-1, 0, 1, 2, 3, 4, 5, -1],
        ]
    )  # 6 words
    ids = torch.arange(16).reshape(2, 8) + 10
    grad = torch.zeros(2, 8, 4)
    grad[0, 3, 0] = 5.0  # word 1 (second sub-word) most salient
    grad[0, 0, 0] = 99.0  # [CLS]: never selectable
    grad[1, 2, 0], grad[1, 5, 0] = 3.0, 2.0  # words 1 and 4
    ptd = PerturbedTokenDetection(
        ratio=0.3, selection="saliency", replacement="mask", special_ids=[0, 1, 2, 3, 4], mask_token_id=4, vocab_size=40
    )
    perturbed, positions = ptd.perturb(ids, word_index, grad, torch.randn(40, 4))
    assert positions.tolist() == [
        [False, False, True, True, False, False, False, False],
        [False, False, True, False, False, True, False, False],
    ]
    assert (perturbed[positions] == 4).all() and (perturbed[~positions] == ids[~positions]).all()


@pytest.mark.parametrize("objective", ["mse", "mcl", "supcon-hard", "carl"])
def test_objective_runs_and_exports(objective, tmp_path, tiny_overrides, synthetic_csv):
    run = train(tmp_path, tiny_overrides + [f"objective.name={objective}", "train.max_steps=3"])
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3]
    assert all(np.isfinite(r["loss"]) for r in records)
    expected = {"mse": {"mse"}, "mcl": {"mcl", "mse"}, "supcon-hard": {"mcl", "mse"}, "carl": {"mcl", "mse", "ptd"}}[
        objective
    ]
    assert {"mcl", "mse", "ptd"} & set(records[0]) == expected
    model = run / "model"
    assert (model / "modules.json").is_file() and (model / "carl" / "heads.safetensors").is_file()
    assert json.loads((model / "carl" / "carl.json").read_text())["objective"] == objective
    encoder = AffectEncoder.load(str(run))
    texts = synthetic_csv.heldout_texts[:5]
    assert encoder.encode(texts).shape == (5, 32)
    valence, arousal = encoder.predict(texts)
    assert valence.shape == arousal.shape == (5,) and np.isfinite(valence).all() and np.isfinite(arousal).all()


@pytest.mark.parametrize(
    "selection, replacement",
    [
        ("random", "hotflip"),
        ("random", "random"),
        ("random", "mask"),
        ("saliency", "random"),
        ("saliency", "mask"),
    ],
)
def test_ptd_variants_run(selection, replacement, tmp_path, tiny_overrides):
    run = train(
        tmp_path,
        tiny_overrides
        + [f"objective.ptd.selection={selection}", f"objective.ptd.replacement={replacement}", "train.max_steps=3"],
    )
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 3
    for r in records:
        assert np.isfinite(r["ptd"]) and np.isfinite(r["loss"])
        assert 0 < r["ptd_perturbed_fraction"] < 0.5
    assert (run / "model" / "modules.json").is_file()


def test_mcl_on_the_sentence_embedding_without_projection(tmp_path, tiny_overrides, synthetic_csv):
    """``model.projection_dim = 0``: queries, keys and the queue live in the 32-wide embedding."""
    run = train(tmp_path, tiny_overrides + ["model.projection_dim=0", "train.max_steps=3"])
    encoder = AffectEncoder.load(str(run))
    assert encoder.model.queue.keys.shape[-1] == 32
    assert not any(k.startswith("projection.") for k in encoder.model.state_dict())
    assert encoder.encode(synthetic_csv.heldout_texts[:3]).shape == (3, 32)


def test_sentence_fraction_detects_on_part_of_the_batch(tmp_path, tiny_overrides):
    """Half the sentences perturbed: the perturbed share of all tokens drops with them."""
    fractions = {}
    for fraction, sentences in ((1.0, 32), (0.5, 16)):
        run = train(
            tmp_path / str(fraction),
            tiny_overrides
            + [f"objective.ptd.sentence_fraction={fraction}", "train.max_steps=4", "train.batch_size=32"],
        )
        records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        assert all(np.isfinite(r["ptd"]) for r in records)
        assert [r["ptd_sentences"] for r in records] == [sentences] * 4
        fractions[fraction] = np.mean([r["ptd_perturbed_fraction"] for r in records])
    # the detection batch holds only perturbed sentences either way: per-token share stays alike
    assert abs(fractions[0.5] - fractions[1.0]) < 0.05


def test_affect_vocabulary_is_in_the_tiny_tokenizer(tiny_encoder):
    """Guards the premise of the saliency test: affect words are whole, known tokens."""
    encoder = AffectEncoder.load(tiny_encoder)
    unk = encoder.tokenizer.unk_token_id
    for word in AFFECT_WORDS:
        ids = encoder.tokenizer(word, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1 and ids[0] != unk
