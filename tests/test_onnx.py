"""ONNX export (``carl export-onnx``): onnxruntime and PyTorch give the same embeddings and VA.
(Every backend, int8 and the parity report: test_backends.py.)"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from carl.inference import AffectEncoder
from carl.inference.backends import graph_path, source_digest
from carl.inference.onnx_export import export_onnx
from carl.model.encoder import resolve_encoder

TEXTS = [
    "serene",
    "they were furious after the long meeting in the office",
    "",
    "a tired, gloomy week",
    " ".join(["thrilled"] * 300),
]  # the last is truncated to the model's max length


def _export_float(folder) -> None:
    export_onnx(AffectEncoder.load(str(folder)), graph_path(folder, "onnx", None), source=source_digest(folder))


def test_onnx_matches_pytorch_on_a_carl_model(affect_model, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(affect_model, folder)
    _export_float(folder)
    encoder = AffectEncoder.load(str(folder))
    onnx_encoder = AffectEncoder.load(str(folder), backend="onnx")
    for batch_size in (1, 3, 16):  # dynamic batch and sequence axes
        emb, va = onnx_encoder.infer(TEXTS, batch_size=batch_size, with_va=True)
        ref_emb, ref_va = encoder.infer(TEXTS, with_va=True)
        np.testing.assert_allclose(emb, ref_emb, rtol=0, atol=1e-4)
        np.testing.assert_allclose(va, ref_va, rtol=0, atol=1e-4)
    valence, _ = encoder.to_scale(va)
    np.testing.assert_allclose(valence, encoder.predict(TEXTS).valence, atol=1e-4)


def test_onnx_export_refuses_half_precision(affect_model, tmp_path):
    encoder = AffectEncoder.load(str(affect_model), dtype="bfloat16")
    with pytest.raises(ValueError, match="float32 CPU"):
        export_onnx(encoder, tmp_path / "m.onnx", source="")


@pytest.mark.real_model
def test_onnx_matches_pytorch_on_minilm(tmp_path):
    folder = tmp_path / "minilm"
    shutil.copytree(resolve_encoder("minilm-l6"), folder)
    _export_float(folder)
    encoder = AffectEncoder.load(str(folder))
    emb, va = AffectEncoder.load(str(folder), backend="onnx").infer(TEXTS[:4], batch_size=2)
    assert va is None
    np.testing.assert_allclose(emb, encoder.encode(TEXTS[:4]), rtol=0, atol=1e-4)


def test_temporaries_of_killed_exports_are_removed_by_the_next(affect_model, tmp_path):
    """A writer SIGKILLed mid-export leaves its hidden temporaries; the next export of the same
    target removes them (dead writer, older than the running process), not those in use."""
    import os
    import subprocess
    import sys
    import time

    from carl.atomic import temporary_beside

    onnx_target, model_target = tmp_path / "m.onnx", tmp_path / "copy"
    child = (
        "import os, signal, sys; from carl.atomic import temporary_beside; "
        "(temporary_beside(sys.argv[2], folder=True) / 'weights').write_bytes(b'x' * 4096); "
        "temporary_beside(sys.argv[1], folder=False).write_bytes(b'partial'); "
        "os.kill(os.getpid(), signal.SIGKILL)"
    )
    killed = subprocess.run([sys.executable, "-c", child, str(onnx_target), str(model_target)], check=False)
    assert killed.returncode == -9
    stale = sorted(tmp_path.glob(".*.tmp"))
    assert len(stale) == 2
    for path in stale:  # as when the next run is a later process
        os.utime(path, (time.time() - 3600, time.time() - 3600))
    in_use = temporary_beside(onnx_target, folder=False)  # this process's own: kept
    export_onnx(AffectEncoder.load(str(affect_model)), onnx_target, source="")
    AffectEncoder.load(str(affect_model)).save(model_target)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([in_use.name, "copy", "m.onnx"])
    assert (model_target / "carl" / "heads.safetensors").is_file()
