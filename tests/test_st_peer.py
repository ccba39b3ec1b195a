"""sentence-transformers' own backends as encode_speed's peer: the subprocess plumbing with a fake
worker (no second environment needed), and the real worker in ``.venv-st-peer`` on the tiny encoder."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import encode_speed
import st_peer

FAKE_WORKER = textwrap.dedent(
    """
    import argparse, json, sys
    import numpy as np

    parser = argparse.ArgumentParser()
    for flag in ("--model", "--backend", "--threads", "--scratch", "--calibration"):
        parser.add_argument(flag)
    args = parser.parse_args()
    if args.backend == "onnx":
        print(json.dumps({"error": "ImportError: no optimum here"}))
        sys.exit(1)
    if args.backend == "openvino":
        print("dying before the protocol starts", file=sys.stderr)
        sys.exit(3)
    config = {"threads": args.threads, "calibration": args.calibration}
    print(json.dumps({"ready": True, "backend": args.backend, "graph": None, "config": config}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        texts = json.load(open(request["texts"]))
        rows = [[len(t), request["batch_size"]] for t in texts]
        np.save(request["embeddings"], np.array(rows, dtype=np.float32))
        print(json.dumps({"seconds": [0.25], "shape": [len(rows), 2]}), flush=True)
    """
)


def test_peer_methods_run_each_backend_in_its_worker_and_record_the_ones_that_fail(tmp_path):
    worker = tmp_path / "fake_worker.py"
    worker.write_text(FAKE_WORKER)
    calibration = tmp_path / "calibration.json"
    methods, missing, workers = st_peer.peer_methods(
        sys.executable,
        "unused",
        ["torch", "onnx", "openvino", "openvino-int8"],
        "/some/model",
        2,
        8,
        tmp_path / "scratch",
        calibration,
        worker=worker,
    )
    try:
        assert list(methods) == [
            "sentence-transformers torch (peer env)",
            "sentence-transformers openvino-int8 (peer env)",
        ]
        assert missing["sentence-transformers onnx (peer env)"].startswith("ImportError: no optimum here")
        assert "exited with 3: dying before the protocol starts" in missing["sentence-transformers openvino (peer env)"]
        # the calibration texts go to static int8 only; the thread count to every worker
        assert [w.ready["config"] for w in workers] == [
            {"threads": "2", "calibration": None},
            {"threads": "2", "calibration": str(calibration)},
        ]
        embeddings, seconds = methods["sentence-transformers torch (peer env)"](["ab", "abcd", "x"])
        assert seconds == 0.25  # the worker's own timing, not the round trip
        np.testing.assert_array_equal(embeddings, [[2, 8], [4, 8], [1, 8]])
    finally:
        for w in workers:
            w.close()
    assert [w.process.returncode for w in workers] == [0, 0]


def test_without_the_peer_environment_every_backend_is_missing_with_the_reason(tmp_path):
    methods, missing, workers = st_peer.peer_methods(
        None, "no .venv-st-peer", ["torch", "onnx-int8"], "/m", 1, 8, tmp_path
    )
    assert methods == {} and workers == []
    assert missing == {
        "sentence-transformers torch (peer env)": "no .venv-st-peer",
        "sentence-transformers onnx-int8 (peer env)": "no .venv-st-peer",
    }


def test_rounds_rotate_the_methods_and_keep_the_seconds_each_method_reports():
    calls = []

    def method(name: str, seconds: float):
        def encode(texts):
            calls.append((name, len(texts)))
            return np.zeros((len(texts), 2)), seconds

        return encode

    methods = {"a": method("a", 1.0), "b": method("b", 2.0)}
    times, outputs = encode_speed.time_rounds(methods, {"short": ["x"] * 5}, rounds=2, batch_size=2, threads=1)
    assert calls == [("a", 2), ("b", 2), ("a", 5), ("b", 5), ("b", 5), ("a", 5)]  # warm-up, then rotated
    assert times == {("a", "short"): [1.0, 1.0], ("b", "short"): [2.0, 2.0]}
    assert outputs["b", "short"].shape == (5, 2)


@pytest.mark.skipif(
    not st_peer.ST_PEER_PYTHON.is_file(),
    reason=f"no {st_peer.ST_PEER_PYTHON}: `make st-peer-env` builds sentence-transformers' onnx/openvino peer",
)
def test_the_real_worker_matches_sentence_transformers_and_writes_only_into_scratch(tmp_path):
    from sentence_transformers import SentenceTransformer

    from carl.testing import make_tiny_encoder, synthetic_affect_corpus, synthetic_vocabulary

    # 512 positions: export_static_quantized_openvino_model pads its calibration to 384 tokens
    folder = Path(make_tiny_encoder(tmp_path / "model", synthetic_vocabulary(), seed=0, max_length=512))
    # the peer's transformers (4.x) does not know the class name transformers 5 writes
    config_path = folder / "tokenizer_config.json"
    config_path.write_text(
        json.dumps({**json.loads(config_path.read_text()), "tokenizer_class": "PreTrainedTokenizerFast"})
    )
    before = sorted(p.name for p in folder.rglob("*"))
    texts, _ = synthetic_affect_corpus(24, seed=0)
    calibration = tmp_path / "calibration.json"
    calibration.write_text(json.dumps(texts))
    reference = encode_speed.unit(SentenceTransformer(str(folder), device="cpu").encode(texts))

    methods, missing, workers = st_peer.peer_methods(
        str(st_peer.ST_PEER_PYTHON),
        "unused",
        ["torch", "onnx-int8", "openvino-int8"],
        str(folder),
        1,
        8,
        tmp_path / "scratch",
        calibration,
    )
    try:
        assert missing == {}
        for name, min_cosine in zip(methods, (0.99999, 0.99, 0.99)):
            embeddings, seconds = methods[name](texts)
            assert embeddings.shape == reference.shape and seconds > 0
            assert (encode_speed.unit(embeddings) * reference).sum(axis=1).min() > min_cosine, name
    finally:
        for w in workers:
            w.close()
    assert workers[1].ready["graph"].startswith("onnx/model_qint8_")
    assert workers[2].ready["graph"] == "openvino/openvino_model_qint8_quantized.xml"
    assert sorted(p.name for p in folder.rglob("*")) == before
