"""The classification head in the exported graphs: a classifier exported with ``carl export-onnx``
classifies on every backend (``AffectEncoder.classify``, ``carl predict --classes``, ``/classify``)
with torch's calibrated probabilities, the folder's temperature and thresholds applied by the same
code, and its parity report compares the probabilities and labels.

Every backend whose package is missing is skipped with that reason.
"""

from __future__ import annotations

import importlib.util
import json
import shutil

import numpy as np
import pytest
from fastapi.testclient import TestClient

from carl.cli import main
from carl.evaluation.calibration import probabilities
from carl.inference import AffectEncoder
from carl.inference.backends import graph_path, source_digest
from carl.inference.graphs import export_graphs
from carl.inference.onnx_export import export_onnx
from carl.model.folder import ModelFolderError
from carl.serve.app import create_app
from carl.serve.schemas import ServeLimits

TEXTS = [
    "we felt thrilled after dinner",
    "the report was gloomy",
    "she was furious at the office",
    "a serene walk by the river",
    "we felt thrilled and then gloomy",
    "the day",
]


def _needs(*packages: str) -> list:
    missing = [p for p in packages if importlib.util.find_spec(p) is None]
    return [pytest.mark.skip(reason=f"{', '.join(missing)} not installed")] if missing else []


ONNX, OPENVINO = _needs("onnx", "onnxruntime"), _needs("onnx", "onnxruntime", "openvino")
BACKENDS = [
    pytest.param("onnx", None, marks=ONNX, id="onnx"),
    pytest.param("onnx", "int8", marks=ONNX, id="onnx-int8"),
    pytest.param("openvino", None, marks=OPENVINO, id="openvino"),
    pytest.param("openvino", "int8", marks=OPENVINO + _needs("nncf"), id="openvino-int8"),
]


def _export(model, tmp_path_factory, name: str):
    if importlib.util.find_spec("onnxruntime") is None:
        pytest.skip("onnxruntime not installed")
    folder = tmp_path_factory.mktemp(name) / "model"
    shutil.copytree(model, folder)
    return folder, export_graphs(str(folder), num_threads=1, limit=40, calibration_size=32, log=lambda _: None)


@pytest.fixture(scope="module")
def single(emotion_model, tmp_path_factory):
    """The single-label classifier (with a VA head too), its graphs and parity report."""
    return _export(emotion_model, tmp_path_factory, "single")


@pytest.fixture(scope="module")
def multi(multi_emotion_model, tmp_path_factory):
    """The multi-label classifier (no VA head), its graphs and parity report."""
    return _export(multi_emotion_model, tmp_path_factory, "multi")


@pytest.mark.parametrize("kind", ["single", "multi"])
@pytest.mark.parametrize(("backend", "quantize"), BACKENDS)
def test_backend_classifies_like_torch(request, kind, backend, quantize):
    folder, report = request.getfixturevalue(kind)
    reference = AffectEncoder.load(str(folder)).classify(TEXTS)
    encoder = AffectEncoder.load(str(folder), backend=backend, quantize=quantize, num_threads=1)
    got = encoder.classify(TEXTS, batch_size=4)  # length sorting and batching undone
    assert got.classes == reference.classes and got.labels == reference.labels
    atol = 0.05 if quantize else 1e-5
    np.testing.assert_allclose(got.probabilities, reference.probabilities, rtol=0, atol=atol)
    c = encoder.classifier
    # this backend's own logits, in the same batches (dynamic int8 quantises each batch on its own range)
    logits, va = encoder.class_logits(TEXTS, batch_size=4, with_va=encoder.has_heads)
    expected = probabilities(logits, c.temperature, multi_label=c.multi_label)
    np.testing.assert_allclose(got.probabilities, expected, rtol=0, atol=1e-6)
    if c.multi_label:  # the folder's per-class thresholds, applied as on torch
        assert got.labels == [
            [k for k, p, t in zip(c.classes, row, c.thresholds) if p >= t] for row in got.probabilities
        ]
    else:
        assert va is not None and np.allclose(va, encoder.infer(TEXTS, batch_size=4, with_va=True)[1], atol=1e-5)
    one = encoder.classify(TEXTS[0])
    assert one.labels == reference.labels[0] and one.probabilities.shape == (len(c.classes),)
    row = next(r for r in report["backends"] if r["backend"] == encoder.backend)
    if quantize:  # the tiny model's probabilities are sharp (dev temperature ~0.04): compare decisions
        assert row["label_agreement"] >= 0.9
    else:
        assert row["probability_max_abs_diff"] < 1e-4 and row["label_agreement"] == 1.0 and row["passes_guard"]


def test_parity_report_compares_the_classifier(single):
    folder, report = single
    torch_row = report["backends"][0]
    assert torch_row["backend"] == "torch" and "label_agreement" not in torch_row
    assert report["guard"]["min_label_agreement"] == 0.99
    assert "| same labels |" in (folder / "parity.md").read_text()


@pytest.mark.parametrize("backend", [pytest.param("onnx", marks=ONNX), pytest.param("openvino", marks=OPENVINO)])
def test_predict_classes_and_serve_classify_on_the_backend(single, backend, tmp_path):
    folder = single[0]
    encoder = AffectEncoder.load(str(folder), backend=backend, num_threads=1)
    expected = encoder.classify(TEXTS)
    source, out = tmp_path / "in.txt", tmp_path / "out.jsonl"
    source.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    args = ["-i", str(source), "-o", str(out), "--classes", "--backend", backend, "--threads", "1", "--no-progress"]
    assert main(["predict", str(folder), *args]) == 0
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["labels"] for r in rows] == [[label] for label in expected.labels]
    got = np.array([list(r["probabilities"].values()) for r in rows])
    np.testing.assert_allclose(got, expected.probabilities, atol=1e-5)
    limits = ServeLimits(max_texts=8, max_chars=100, max_batch_texts=8)
    with TestClient(create_app(encoder, limits, name="emotion")) as client:
        body = client.post("/classify", json={"texts": TEXTS}).json()
    assert [p["labels"] for p in body["predictions"]] == [[label] for label in expected.labels]
    served = np.array([list(p["probabilities"].values()) for p in body["predictions"]])
    np.testing.assert_allclose(served, expected.probabilities, atol=1e-5)


@pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None, reason="onnxruntime not installed")
def test_a_graph_without_the_classifier_is_refused(emotion_model, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(emotion_model, folder)
    encoder = AffectEncoder.load(str(folder))
    encoder.info = {**encoder.info, "heads": ["va"]}  # as export wrote it before graphs carried the classifier
    export_onnx(encoder, graph_path(folder, "onnx", None), source=source_digest(folder))
    with pytest.raises(ModelFolderError, match="has no 'class_logits' output .* export again"):
        AffectEncoder.load(str(folder), backend="onnx")
