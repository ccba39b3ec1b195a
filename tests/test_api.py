"""The user-facing Python API: ``carl.AffectEncoder``, version, scale, dtype/threads, batching,
save/load in the sentence-transformers format with a model card, and the runnable docstrings."""

from __future__ import annotations

import doctest
import importlib.metadata
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

import carl
from carl.inference import AffectEncoder, Prediction, resolve_dtype


def test_package_exposes_version_and_encoder_lazily():
    assert carl.__version__ == importlib.metadata.version("carl")
    assert carl.AffectEncoder is AffectEncoder
    code = "import sys, carl; print('torch' in sys.modules)"
    assert (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout.strip()
        == "False"
    )


def test_predict_returns_named_values_on_the_declared_scale(affect_model, synthetic_csv):
    encoder = AffectEncoder.load(str(affect_model))
    texts = synthetic_csv.heldout_texts[:50]
    prediction = encoder.predict(texts)
    assert isinstance(prediction, Prediction) and prediction.valence.shape == (50,)
    r = np.corrcoef(prediction.valence, synthetic_csv.heldout_labels[:50, 0])[0, 1]
    assert r > 0.8, f"valence r {r:.2f}"  # the trained tiny model tracks the labels
    encoder.scale = (1.0, 9.0)  # the same model declared on a 1-9 scale maps linearly
    nine = encoder.predict(texts)
    np.testing.assert_allclose(nine.valence, 1 + 8 * prediction.valence, atol=1e-4)


def test_dtype_and_threads(affect_model):
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype("bf16", torch.device("cpu")) == torch.bfloat16
    with pytest.raises(ValueError, match="unknown dtype"):
        resolve_dtype("int8", torch.device("cpu"))
    texts = ["a serene morning by the river", "furious"]
    full = AffectEncoder.load(str(affect_model)).encode(texts)
    half = AffectEncoder.load(str(affect_model), dtype="bfloat16").encode(texts)
    assert half.dtype == np.float32
    np.testing.assert_allclose(half, full, atol=0.1 * np.abs(full).max())
    try:
        AffectEncoder.load(str(affect_model), num_threads=2)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(1)
    with pytest.raises(ValueError, match="num_threads"):
        AffectEncoder.load(str(affect_model), num_threads=0)


def test_batches_are_length_sorted_to_minimise_padding(affect_model, synthetic_csv):
    encoder = AffectEncoder.load(str(affect_model))
    texts = list(synthetic_csv.heldout_texts[:112])
    texts[::16] = [" ".join(["calm"] * 60)] * 7  # one long text in every input-order batch
    batches = list(encoder.padded_batches(texts, 16))
    assert sorted(np.concatenate([rows for rows, _, _ in batches]).tolist()) == list(range(len(texts)))
    lengths = [mask.sum(1).tolist() for _, _, mask in batches]
    flat = [n for batch in lengths for n in batch]
    assert flat == sorted(flat, reverse=True)
    padded = sum(mask.numel() for _, _, mask in batches)
    real = sum(flat)
    best = sum(len(flat[i : i + 16]) * max(flat[i : i + 16]) for i in range(0, len(flat), 16))  # optimal
    ids = encoder.tokenizer(texts)["input_ids"]
    in_order = sum(len(ids[i : i + 16]) * max(map(len, ids[i : i + 16])) for i in range(0, len(ids), 16))
    assert padded == best and padded < 0.5 * in_order, (padded, best, in_order, real)


def test_save_and_load_in_sentence_transformers_format(affect_model, tmp_path, synthetic_csv):
    from sentence_transformers import SentenceTransformer

    encoder = AffectEncoder.load(str(affect_model))
    folder = encoder.save(tmp_path / "copy")
    texts = synthetic_csv.heldout_texts[:8]
    st = SentenceTransformer(str(folder), device="cpu").encode(texts, convert_to_numpy=True)
    np.testing.assert_allclose(st, encoder.encode(texts), atol=1e-5)
    again = AffectEncoder.load(str(folder))
    np.testing.assert_allclose(again.predict(texts).valence, encoder.predict(texts).valence, atol=1e-6)
    card = (folder / "README.md").read_text(encoding="utf-8")
    for needle in ("Training data: user data", "Objective: `mse`", "Data licence:", "| metric | value |"):
        assert needle in card
    assert json.loads((folder / "carl" / "carl.json").read_text())["scale"] == [0.0, 1.0]
    with pytest.raises(RuntimeError, match="no VA regression head"):
        AffectEncoder(encoder.model, encoder.tokenizer, scale=None, has_heads=False).save(tmp_path / "nope")


@pytest.mark.real_model
def test_docstring_examples_run():
    import carl.inference.encoder

    result = doctest.testmod(carl.inference.encoder, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 5 and result.failed == 0
