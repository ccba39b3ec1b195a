"""sentence-transformers' own backends on one model folder, timed on request: the peer that
``encode_speed.py`` measures next to carl. Runs under the peer environment's python (``make
st-peer-env``: sentence-transformers with optimum-onnx and optimum-intel, whose transformers pins
cannot live in carl's environment), never imports carl.

    .venv-st-peer/bin/python benchmarks/st_peer_worker.py --model FOLDER --backend openvino-int8 \\
        --threads 2 --scratch /tmp/st-peer [--calibration texts.json]

Backends: ``torch``; ``onnx`` and ``openvino`` (exported from the folder's weights by
sentence-transformers on load, ``export=True``, so that graphs carl wrote into the folder's
``onnx/`` are never picked up); ``onnx-o3`` (``export_optimized_onnx_model``, level O3: graph
fusions and GELU approximation); ``onnx-int8`` (``export_dynamic_quantized_onnx_model`` with the
CPU's preset: avx512_vnni, avx512, avx2 or arm64) and ``openvino-int8``
(``export_static_quantized_openvino_model``, calibrated on ``--calibration``, a JSON list of
texts, given to it as a local dataset). The helpers write into the folder they are given: that is
``--scratch``, never the model folder. ONNX Runtime gets ``threads`` intra-op threads, OpenVINO
the same config as carl's (latency hint, float32, ``threads`` threads), torch ``threads``.

Protocol (JSON lines; stdout carries nothing else): after loading, one line ``{"ready": true,
"backend", "graph", "config", "versions"}`` or ``{"error": "..."}`` (then exit 1). Then each
request line ``{"texts": "a.json", "batch_size": 64, "repeat": 1, "embeddings": "out.npy"}`` is
answered by ``{"seconds": [repeat floats], "shape": [N, H]}`` after the embeddings [N, H] float32
of the last repetition were saved to ``embeddings`` (``np.save``, no pickle), or by ``{"error":
"..."}``. End of input ends the worker.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import traceback
from pathlib import Path

BACKENDS = ("torch", "onnx", "onnx-o3", "onnx-int8", "openvino", "openvino-int8")


def onnx_int8_preset() -> str:
    """sentence-transformers' dynamic int8 preset for this CPU (its docs: pick the one the CPU has)."""
    if platform.machine() in ("arm64", "aarch64"):
        return "arm64"
    try:
        line = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        return "avx2"
    flags = set(line.split(":", 1)[1].split())
    return "avx512_vnni" if "avx512_vnni" in flags else "avx512" if "avx512f" in flags else "avx2"


def load(folder: str, backend: str, threads: int, scratch: Path, calibration: list[str] | None):
    """``(model, graph, config)``: a ``SentenceTransformer`` on ``backend``, the graph file it
    runs (``None`` for torch) and the runtime config it was given."""
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(threads)
    if backend == "torch":
        return SentenceTransformer(folder, device="cpu", backend="torch"), None, {"torch_threads": threads}
    if backend.startswith("onnx"):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        kwargs = {"provider": "CPUExecutionProvider", "session_options": options}
        model = SentenceTransformer(folder, device="cpu", backend="onnx", model_kwargs={**kwargs, "export": True})
        config = {"intra_op_num_threads": threads, "inter_op_num_threads": 1}
        if backend == "onnx":
            return model, "onnx/model.onnx (exported on load)", config
        from sentence_transformers import export_dynamic_quantized_onnx_model, export_optimized_onnx_model

        model.save_pretrained(str(scratch))
        if backend == "onnx-o3":
            export_optimized_onnx_model(model, "O3", str(scratch))
            graph, how = "onnx/model_O3.onnx", "optimum optimization level O3"
        else:
            preset = onnx_int8_preset()
            export_dynamic_quantized_onnx_model(model, preset, str(scratch))
            graph, how = f"onnx/model_qint8_{preset}.onnx", f"dynamic int8, preset {preset}"
        model = SentenceTransformer(
            str(scratch), device="cpu", backend="onnx", model_kwargs={**kwargs, "file_name": graph}
        )
        return model, graph, {**config, "export": how}
    ov_config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": threads}
    model = SentenceTransformer(
        folder, device="cpu", backend="openvino", model_kwargs={"ov_config": ov_config, "export": True}
    )
    if backend == "openvino":
        return model, "openvino/openvino_model.xml (exported on load)", ov_config
    from optimum.intel import OVQuantizationConfig
    from sentence_transformers import export_static_quantized_openvino_model

    if not calibration:
        raise ValueError("openvino-int8 needs --calibration texts (static quantization)")
    # the helper reads calibration data with datasets.load_dataset: a local folder of JSON lines
    data = scratch / "calibration"
    data.mkdir(parents=True, exist_ok=True)
    (data / "train.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in calibration))
    model.save_pretrained(str(scratch))
    export_static_quantized_openvino_model(
        model,
        OVQuantizationConfig(num_samples=len(calibration)),
        str(scratch),
        dataset_name=str(data),
        dataset_config_name="default",
        dataset_split="train",
        column_name="text",
    )
    graph = "openvino/openvino_model_qint8_quantized.xml"
    model = SentenceTransformer(
        str(scratch), device="cpu", backend="openvino", model_kwargs={"ov_config": ov_config, "file_name": graph}
    )
    return model, graph, {**ov_config, "export": f"static int8 (NNCF), {len(calibration)} calibration texts"}


def versions() -> dict[str, str]:
    from importlib.metadata import distributions

    wanted = {"sentence-transformers", "transformers", "torch", "optimum", "optimum-onnx", "optimum-intel"}
    wanted |= {"onnxruntime", "openvino", "nncf"}
    return {d.metadata["Name"]: d.version for d in distributions() if d.metadata["Name"].lower() in wanted}


def answer(request: dict, model) -> dict:
    import numpy as np

    texts = json.loads(Path(request["texts"]).read_text())
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise ValueError(f"{request['texts']}: expected a JSON list of strings")
    seconds = []
    for _ in range(int(request.get("repeat", 1))):
        started = time.perf_counter()
        embeddings = model.encode(texts, batch_size=int(request.get("batch_size", 32)))
        seconds.append(time.perf_counter() - started)
    embeddings = np.asarray(embeddings, dtype=np.float32)
    np.save(request["embeddings"], embeddings, allow_pickle=False)
    return {"seconds": seconds, "shape": list(embeddings.shape)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a sentence-transformers model folder")
    parser.add_argument("--backend", required=True, choices=BACKENDS)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--scratch", required=True, help="folder for the exported graphs (created)")
    parser.add_argument("--calibration", help="JSON list of texts for openvino-int8's static quantization")
    args = parser.parse_args(argv)

    # the protocol owns the real stdout; whatever libraries print (C code included) goes to stderr
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    def say(message: dict) -> None:
        protocol.write(json.dumps(message) + "\n")

    scratch = Path(args.scratch)
    scratch.mkdir(parents=True, exist_ok=True)
    try:
        calibration = json.loads(Path(args.calibration).read_text()) if args.calibration else None
        model, graph, config = load(args.model, args.backend, args.threads, scratch, calibration)
    except Exception as err:  # any failure to build the backend is the answer, not a crash
        traceback.print_exc()
        say({"error": f"{type(err).__name__}: {err}".splitlines()[0]})
        return 1
    say({"ready": True, "backend": args.backend, "graph": graph, "config": config, "versions": versions()})
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            say(answer(json.loads(line), model))
        except Exception as err:
            traceback.print_exc()
            say({"error": f"{type(err).__name__}: {err}".splitlines()[0]})
    return 0


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local folder: no network look-ups
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    raise SystemExit(main())
