"""AffectEncoder on the tiny encoder: order, normalisation, heads, run vs model folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from carl.config import load_config
from carl.inference import AffectEncoder
from carl.training.trainer import CarlTrainer


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny_overrides) -> Path:
    out = tmp_path_factory.mktemp("tiny-run")
    CarlTrainer(load_config(None, tiny_overrides + ["train.max_steps=3"]), out, show_progress=False).train()
    return out


@pytest.fixture(scope="module")
def mixed_length_texts() -> list[str]:
    """Lengths deliberately out of order (2 to 14 words), so that sorting reorders them."""
    words = [
        "the",
        "morning",
        "felt",
        "serene",
        "and",
        "the",
        "river",
        "looked",
        "calm",
        "after",
        "a",
        "long",
        "gloomy",
        "week",
    ]
    lengths = [9, 2, 14, 5, 3, 12, 7, 4, 11, 6, 13, 8]
    return [" ".join(words[:n]) for n in lengths]


def test_encode_keeps_input_order(tiny_run, mixed_length_texts):
    encoder = AffectEncoder.load(str(tiny_run))
    texts = mixed_length_texts
    batched = encoder.encode(texts, batch_size=4)  # length-sorted batches of 4
    one_by_one = np.concatenate([encoder.encode([t], batch_size=1) for t in texts])
    np.testing.assert_allclose(batched, one_by_one, rtol=0, atol=1e-5)
    reversed_ = encoder.encode(texts[::-1], batch_size=4)
    np.testing.assert_allclose(reversed_[::-1], batched, rtol=0, atol=1e-5)
    assert len({tuple(np.round(row, 4)) for row in batched}) == len(texts)  # rows really differ
    valence, arousal = encoder.predict(texts, batch_size=4)
    single = [encoder.predict([t], batch_size=1) for t in texts]
    np.testing.assert_allclose(valence, [v[0] for v, _ in single], rtol=0, atol=1e-5)
    np.testing.assert_allclose(arousal, [a[0] for _, a in single], rtol=0, atol=1e-5)


def test_normalize_gives_unit_norms(tiny_run, mixed_length_texts):
    encoder = AffectEncoder.load(str(tiny_run))
    raw = encoder.encode(mixed_length_texts)
    unit = encoder.encode(mixed_length_texts, normalize=True)
    assert unit.dtype == np.float32 and unit.shape == raw.shape == (len(mixed_length_texts), 32)
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, rtol=0, atol=1e-5)
    np.testing.assert_allclose(unit, raw / np.linalg.norm(raw, axis=1, keepdims=True), rtol=0, atol=1e-6)
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0, atol=1e-3)


def test_predict_without_heads_raises(tiny_encoder):
    encoder = AffectEncoder.load(tiny_encoder)
    assert not encoder.has_heads and encoder.scale is None
    assert encoder.encode(["a serene day"]).shape == (1, 32)  # a plain model still embeds
    with pytest.raises(RuntimeError, match="no VA regression head"):
        encoder.predict(["a serene day"])


def test_empty_input_raises(tiny_encoder):
    with pytest.raises(ValueError, match="no texts"):
        AffectEncoder.load(tiny_encoder).encode([])


def test_run_folder_and_model_folder_load_the_same(tiny_run, mixed_length_texts):
    from_run = AffectEncoder.load(str(tiny_run))
    from_model = AffectEncoder.load(str(tiny_run / "model"))
    assert from_run.has_heads and from_model.has_heads
    assert from_run.scale == from_model.scale == (0.0, 1.0)
    np.testing.assert_array_equal(from_run.encode(mixed_length_texts), from_model.encode(mixed_length_texts))
    for a, b in zip(from_run.predict(mixed_length_texts), from_model.predict(mixed_length_texts)):
        np.testing.assert_array_equal(a, b)


def test_a_bare_string_is_one_text(affect_model):
    """As in sentence-transformers: encode(str) gives one embedding [H]; predict(str) two floats."""
    encoder = AffectEncoder.load(str(affect_model))
    text = "a serene morning by the river"
    emb = encoder.encode(text)
    assert emb.shape == (encoder.dim,)
    np.testing.assert_array_equal(emb, encoder.encode([text])[0])
    np.testing.assert_allclose(np.linalg.norm(encoder.encode(text, normalize=True)), 1.0, atol=1e-6)
    prediction = encoder.predict(text)
    assert isinstance(prediction.valence, float) and isinstance(prediction.arousal, float)
    batch = encoder.predict([text])
    assert prediction == pytest.approx((batch.valence[0], batch.arousal[0]))
    assert encoder.infer(text)[0].shape == (1, encoder.dim)
    [explanation] = encoder.explain_batch(text)
    assert explanation.words == text.split()
    with pytest.raises(TypeError, match=r"texts\[1\] is int, not str"):
        encoder.encode(["fine", 3])
