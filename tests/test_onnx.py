"""ONNX export (``carl export-onnx``): onnxruntime and PyTorch give the same embeddings and VA."""

from __future__ import annotations

import numpy as np
import pytest

from carl.cli import main
from carl.inference import AffectEncoder
from carl.inference.onnx_export import export_onnx, onnx_encode

TEXTS = ["serene", "they were furious after the long meeting in the office", "", "a tired, gloomy week",
         " ".join(["thrilled"] * 300)]  # the last is truncated to the model's max length


def test_onnx_matches_pytorch_on_a_carl_model(affect_model, tmp_path):
    path = tmp_path / "model.onnx"
    assert main(["export-onnx", str(affect_model), "-o", str(path), "--threads", "1"]) == 0
    encoder = AffectEncoder.load(str(affect_model))
    for batch_size in (1, 3, 16):  # dynamic batch and sequence axes
        emb, va = onnx_encode(path, encoder, TEXTS, batch_size=batch_size)
        ref_emb, ref_va = encoder.infer(TEXTS, with_va=True)
        np.testing.assert_allclose(emb, ref_emb, rtol=0, atol=1e-4)
        np.testing.assert_allclose(va, ref_va, rtol=0, atol=1e-4)
    valence, _ = encoder.to_scale(va)
    np.testing.assert_allclose(valence, encoder.predict(TEXTS).valence, atol=1e-4)


def test_onnx_export_refuses_half_precision(affect_model, tmp_path):
    encoder = AffectEncoder.load(str(affect_model), dtype="bfloat16")
    with pytest.raises(ValueError, match="float32 CPU"):
        export_onnx(encoder, tmp_path / "m.onnx")


@pytest.mark.real_model
def test_onnx_matches_pytorch_on_minilm(tmp_path):
    encoder = AffectEncoder.load("minilm-l6")
    path = export_onnx(encoder, tmp_path / "minilm.onnx")
    emb, va = onnx_encode(path, encoder, TEXTS[:4], batch_size=2)
    assert va is None
    np.testing.assert_allclose(emb, encoder.encode(TEXTS[:4]), rtol=0, atol=1e-4)
