"""Inference backends on the tiny trained model: ``carl export-onnx`` writes every installed
backend's graphs and parity report; each backend gives torch's embeddings and VA in input order,
through the API, the streaming CLI and the service; stale graphs and explain are refused.

Every backend whose package is missing is skipped with that reason (``pip install 'carl[onnx]'``
or ``'carl[openvino]'``).
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest
from conftest import cli_env
from safetensors.torch import load_file, save_file

from carl.cli import main
from carl.inference import AffectEncoder
from carl.inference.graphs import export_graphs
from carl.model.folder import ModelFolderError

TEXTS = [
    "serene",
    "they were furious after the long meeting in the office",
    "",
    "a tired, gloomy week",
    " ".join(["thrilled"] * 300),
    "calm and happy",
    "angry",
]  # the 5th is truncated to max length


def _needs(*packages: str) -> list:
    missing = [p for p in packages if importlib.util.find_spec(p) is None]
    return [pytest.mark.skip(reason=f"{', '.join(missing)} not installed")] if missing else []


ONNX, OPENVINO = _needs("onnx", "onnxruntime"), _needs("onnx", "onnxruntime", "openvino")
BACKENDS = [
    pytest.param("onnx", None, 1e-4, marks=ONNX, id="onnx"),
    pytest.param("onnx", "int8", None, marks=ONNX, id="onnx-int8"),
    pytest.param("openvino", None, 1e-4, marks=OPENVINO, id="openvino"),
    pytest.param("openvino", "int8", None, marks=OPENVINO + _needs("nncf"), id="openvino-int8"),
]


@pytest.fixture(scope="module")
def exported(affect_model, tmp_path_factory):
    """A copy of the tiny trained model with every installed backend's graphs and its parity report."""
    if importlib.util.find_spec("onnxruntime") is None:
        pytest.skip("onnxruntime not installed")
    folder = tmp_path_factory.mktemp("exported") / "model"
    shutil.copytree(affect_model, folder)
    report = export_graphs(str(folder), num_threads=1, limit=40, calibration_size=32, log=lambda _: None)
    return folder, report


@pytest.fixture(scope="module")
def reference(exported):
    emb, va = AffectEncoder.load(str(exported[0])).infer(TEXTS, with_va=True)
    return emb, va


def test_export_writes_graphs_and_a_parity_report(exported):
    folder, report = exported
    assert (folder / "onnx" / "model.onnx").is_file() and (folder / "onnx" / "model_int8.onnx").is_file()
    assert json.loads((folder / "parity.json").read_text()) == report
    assert "| torch |" in (folder / "parity.md").read_text()
    rows = {(row["backend"].split(" ")[0], row["quantize"]): row for row in report["backends"]}
    assert ("onnx", None) in rows and ("onnx", "int8") in rows
    assert report["int8_onnx"]["method"] in ("dynamic", "static")
    assert report["calibration"]["sentences"] == 32 and "training data" in report["calibration"]["source"]
    float_onnx = rows[("onnx", None)]
    assert float_onnx["max_abs_diff"] < 1e-4 and float_onnx["min_cosine"] > 0.9999 and float_onnx["passes_guard"]
    assert abs(float_onnx["head_valence_r"] - rows[("torch", None)]["head_valence_r"]) < 1e-3
    assert float_onnx["worst_sentence"]
    if importlib.util.find_spec("openvino"):
        assert (folder / "openvino" / "model.xml").is_file() and ("openvino", None) in rows
    else:
        assert "openvino" in report["missing"]


@pytest.mark.parametrize(("backend", "quantize", "atol"), BACKENDS)
def test_backend_matches_torch_in_input_order(exported, reference, backend, quantize, atol):
    encoder = AffectEncoder.load(str(exported[0]), backend=backend, quantize=quantize, num_threads=1)
    assert encoder.backend.startswith(backend)
    for batch_size in (1, 3, 16):  # dynamic batch and sequence axes; length sorting undone
        emb, va = encoder.infer(TEXTS, batch_size=batch_size, with_va=True)
        if atol:
            np.testing.assert_allclose(emb, reference[0], rtol=0, atol=atol)
            np.testing.assert_allclose(va, reference[1], rtol=0, atol=atol)
        else:  # int8: close in direction, and each row still nearest its own torch embedding
            unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
            ref = reference[0] / np.linalg.norm(reference[0], axis=1, keepdims=True)
            assert (unit * ref).sum(1).min() > 0.95
            np.testing.assert_allclose(va, reference[1], atol=0.25)
    shuffled = [TEXTS[i] for i in (3, 0, 6, 1, 5, 2, 4)]
    np.testing.assert_array_equal(
        encoder.encode(shuffled, batch_size=2), encoder.encode(TEXTS, batch_size=2)[[3, 0, 6, 1, 5, 2, 4]]
    )
    prediction = encoder.predict(TEXTS)
    assert prediction.valence.shape == (len(TEXTS),)
    assert isinstance(encoder.predict("serene").valence, float)


@pytest.mark.parametrize("backend", [pytest.param("onnx", marks=ONNX), pytest.param("openvino", marks=OPENVINO)])
def test_streaming_cli_gives_the_api_rows_in_order(exported, backend, tmp_path):
    folder = exported[0]
    source = tmp_path / "in.txt"
    source.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    encoder = AffectEncoder.load(str(folder), backend=backend, num_threads=1)
    common = ["-i", str(source), "--chunk-size", "2", "--no-progress", "--threads", "1", "--backend", backend]
    assert main(["embed", str(folder), "-o", str(tmp_path / "e.npy"), *common]) == 0
    assert main(["predict", str(folder), "-o", str(tmp_path / "p.jsonl"), *common]) == 0
    np.testing.assert_allclose(np.load(tmp_path / "e.npy"), encoder.encode(TEXTS), atol=1e-5)
    rows = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["text"] for r in rows] == TEXTS
    np.testing.assert_allclose([r["valence"] for r in rows], encoder.predict(TEXTS).valence, atol=1e-4)


@pytest.mark.parametrize("backend", [pytest.param("onnx", marks=ONNX), pytest.param("openvino", marks=OPENVINO)])
def test_service_answers_on_the_backend(exported, backend):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    folder = exported[0]
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "carl.cli",
            "serve",
            str(folder),
            "--port",
            str(port),
            "--threads",
            "1",
            "--log-level",
            "warning",
            "--backend",
            backend,
            "--quantize",
            "int8",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=cli_env(),
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            assert process.poll() is None, process.stdout.read().decode()[-3000:]
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                assert time.time() < deadline, "server did not come up within 120 s"
                time.sleep(0.3)
        encoder = AffectEncoder.load(str(folder), backend=backend, quantize="int8", num_threads=1)
        embedded = httpx.post(url + "/embed", json={"texts": TEXTS[:4]}, timeout=30).json()
        np.testing.assert_allclose(embedded["embeddings"], encoder.encode(TEXTS[:4]), atol=1e-4)
        predicted = httpx.post(url + "/predict", json={"texts": TEXTS[:4]}, timeout=30).json()["predictions"]
        np.testing.assert_allclose([p["valence"] for p in predicted], encoder.predict(TEXTS[:4]).valence, atol=1e-4)
        explained = httpx.post(url + "/explain", json={"texts": ["calm and happy"]}, timeout=30)
        assert explained.status_code == 200  # explanations run on the torch weights
    finally:
        process.terminate()
        process.wait(timeout=15)


@pytest.mark.parametrize("backend", [pytest.param("onnx", marks=ONNX), pytest.param("openvino", marks=OPENVINO)])
def test_graphs_of_other_weights_are_refused(exported, tmp_path, backend):
    folder = tmp_path / "retrained"
    shutil.copytree(exported[0], folder)
    heads = folder / "carl" / "heads.safetensors"
    tensors = load_file(heads)
    name = next(k for k in tensors if k.startswith("regression."))
    tensors[name] = tensors[name] + 1e-3  # the model changed after its graphs were exported
    save_file(tensors, heads)
    with pytest.raises(ModelFolderError, match="exported from other weights"):
        AffectEncoder.load(str(folder), backend=backend)
    assert AffectEncoder.load(str(folder)).backend == "torch"  # torch reads the weights themselves


def test_missing_graphs_and_bad_choices_are_clear_errors(affect_model, capsys):
    with pytest.raises(ModelFolderError, match=r"onnx/model.onnx: missing: export .*\(carl export-onnx"):
        AffectEncoder.load(str(affect_model), backend="onnx")
    with pytest.raises(ValueError, match="quantize='int8' runs on the onnx or openvino backend"):
        AffectEncoder.load(str(affect_model), quantize="int8")
    with pytest.raises(ValueError, match="unknown backend 'tensorrt'"):
        AffectEncoder.load(str(affect_model), backend="tensorrt")
    with pytest.raises(ValueError, match="runs on CPU in float32"):
        AffectEncoder.load(str(affect_model), backend="onnx", dtype="bfloat16")
    capsys.readouterr()
    assert main(["explain", str(affect_model), "--backend", "onnx", "-i", "-", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "explain needs gradients, which only the torch backend gives" in err


def test_serve_default_is_the_fastest_backend_within_the_guard(exported, tmp_path):
    from carl.inference.backends import SPEED_ORDER, best_backend

    folder = tmp_path / "model"
    shutil.copytree(exported[0], folder)
    report = json.loads((folder / "parity.json").read_text())
    passing = [(row["backend"].split(" ")[0], row["quantize"]) for row in report["backends"] if row["passes_guard"]]
    assert best_backend(folder) == next(pair for pair in SPEED_ORDER if pair in passing)
    for row in report["backends"]:
        row["passes_guard"] = row["backend"] == "torch" or row["quantize"] is None
    (folder / "parity.json").write_text(json.dumps(report))
    float_pairs = [pair for pair in SPEED_ORDER if pair[1] is None and pair in passing]
    assert best_backend(folder) == float_pairs[0]  # int8 failed the guard: the fastest float backend
    (folder / "parity.json").unlink()
    assert best_backend(folder) == ("torch", None)  # nothing measured: torch


def test_export_refuses_an_installed_alias(capsys):
    assert main(["export-onnx", "minilm-l6"]) == 2  # the alias names an installed package's folder
    assert "minilm-l6: not a writable model folder of yours" in capsys.readouterr().err


def test_batches_are_padded_to_a_few_shapes():
    import torch

    from carl.inference.backends import bucket, bucket_shape

    assert [bucket(n) for n in (1, 2, 3, 5, 8, 9, 16, 17, 64, 65)] == [1, 2, 4, 8, 8, 16, 16, 24, 64, 72]
    assert len({bucket(n) for n in range(1, 257)}) == 35  # every length up to 256: 35 shapes, not 256
    ids, mask = torch.tensor([[101, 7, 102], [101, 102, 0]]), torch.tensor([[1, 1, 1], [1, 1, 0]])
    padded_ids, padded_mask = bucket_shape(ids, mask, pad_token_id=0)
    assert padded_ids.shape == padded_mask.shape == (2, 4)
    np.testing.assert_array_equal(padded_ids[:, :3], ids.numpy())
    np.testing.assert_array_equal(padded_mask, [[1, 1, 1, 0], [1, 1, 0, 0]])
    padded_ids, padded_mask = bucket_shape(ids[:1].repeat(3, 1), mask[:1].repeat(3, 1), pad_token_id=5)
    assert padded_ids.shape == (4, 4) and padded_ids[3].tolist() == [5, 5, 5, 5]
    assert padded_mask[3].tolist() == [1, 0, 0, 0]  # an added row is never fully masked
