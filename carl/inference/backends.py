"""Inference backends: a session maps one padded batch to embeddings and standardised VA.

``AffectEncoder`` tokenises, sorts by token count and pads (``carl.data.batching``); the session
only runs the network, so streaming, micro-batching and the service are the same on every
backend. The graphs that ``carl export-onnx`` writes live in the model folder::

    <model>/onnx/model.onnx           float32 ONNX: embedding [B, H], and the folder's heads:
                                      va [B, 2] (standardised), class_logits [B, C] (uncalibrated)
    <model>/onnx/model_int8.onnx      int8 weights, onnxruntime.quantization
    <model>/openvino/model.xml        OpenVINO IR of the float graph
    <model>/openvino/model_int8.xml   int8 weights and activations (NNCF, calibrated)

Every session pads each batch up to one of a few shapes (:func:`bucket_shape`): the runtimes keep
per-shape state (OpenVINO compiles and caches kernels and buffers for each new input shape, several
MB each; torch's oneDNN caches primitives), so a service that sees every batch size and length
would grow without bound; with buckets the set of shapes, and the memory, stays small.

Each graph records the SHA-256 of the folder's weight files it was exported from
(:func:`source_digest`); loading refuses a graph whose record does not match the folder.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from carl.model.folder import (
    CARL_SUBDIR,
    WEIGHTS,
    WEIGHTS_INDEX,
    ModelFolderError,
    has_classifier,
    has_va_head,
    read_json_object,
)

BACKENDS = ("torch", "onnx", "openvino")
QUANTIZE = (None, "int8")
RUNTIMES = {"onnx": "onnxruntime", "openvino": "openvino"}
# fastest first, as benchmarks/encode_speed.py measured on 2 CPU threads (docs/results.md)
SPEED_ORDER = (("openvino", "int8"), ("onnx", "int8"), ("openvino", None), ("onnx", None), ("torch", None))
SOURCE_KEY = "carl_source_sha256"  # ONNX metadata_props key / OpenVINO rt_info key


SHAPE_STEP = 8  # batch sizes and lengths round up to a power of two up to this, then to a multiple of it


def bucket(n: int, step: int = SHAPE_STEP) -> int:
    """``n`` rounded up to a power of two when ``n <= step``, else to a multiple of ``step``."""
    return 1 << (n - 1).bit_length() if n <= step else -(-n // step) * step


def bucket_shape(
    input_ids: torch.Tensor, attention_mask: torch.Tensor, pad_token_id: int
) -> tuple[np.ndarray, np.ndarray]:
    """``[B, T]`` ids and mask padded to ``[bucket(B), bucket(T)]`` as numpy arrays: new columns are
    masked padding, new rows one unmasked pad token each (no row is fully masked; callers keep
    the first B rows)."""
    (b, t), (rows, cols) = input_ids.shape, (bucket(input_ids.shape[0]), bucket(input_ids.shape[1]))
    ids = np.full((rows, cols), pad_token_id, dtype=np.int64)
    mask = np.zeros((rows, cols), dtype=np.int64)
    ids[:b, :t], mask[:b, :t], mask[b:, 0] = input_ids.numpy(), attention_mask.numpy(), 1
    return ids, mask


class Session(Protocol):
    """``run(input_ids [B, T], attention_mask [B, T], heads) -> {"embedding": [B, H], head: ...}``:
    float32 arrays, one per name in ``heads`` (``va`` [B, 2], ``class_logits`` [B, C]); ids and
    mask are int64 CPU tensors."""

    name: str

    def run(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, heads: tuple[str, ...]
    ) -> dict[str, np.ndarray]: ...


def graph_heads(info: dict) -> tuple[str, ...]:
    """The outputs after ``embedding`` of a graph of the folder whose ``carl.json`` is ``info``
    (``{}`` for a plain encoder): ``va`` for a VA head, ``class_logits`` for a classifier."""
    if not info:
        return ()
    return (("va",) if has_va_head(info) else ()) + (("class_logits",) if has_classifier(info) else ())


def graph_path(folder: Path, backend: str, quantize: str | None) -> Path:
    """Where ``carl export-onnx`` writes the ``backend`` graph (``quantize``: None or "int8")."""
    stem = "model_int8" if quantize == "int8" else "model"
    return folder / "onnx" / f"{stem}.onnx" if backend == "onnx" else folder / "openvino" / f"{stem}.xml"


def weight_files(folder: Path) -> list[Path]:
    """The folder's weight files: the transformer's safetensors (or shards) and carl's heads."""
    if (folder / WEIGHTS).is_file():
        files = [folder / WEIGHTS]
    else:
        shards = read_json_object(folder / WEIGHTS_INDEX).get("weight_map", {}).values()
        files = [folder / name for name in sorted(set(shards))]
    heads = folder / CARL_SUBDIR / "heads.safetensors"
    return files + ([heads] if heads.is_file() else [])


def source_digest(folder: Path) -> str:
    """SHA-256 over the folder's weight files (names and bytes): what a graph was exported from."""
    digest = hashlib.sha256()
    for path in weight_files(folder):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


def best_backend(folder: Path) -> tuple[str, str | None]:
    """The fastest backend (:data:`SPEED_ORDER`) that the folder's parity report passes through the
    quality guard, whose graph is there and whose package is installed; else torch."""
    report = folder / "parity.json"
    rows = read_json_object(report).get("backends", []) if report.is_file() else []
    passing = {(row["backend"].split(" ")[0], row.get("quantize")) for row in rows if row.get("passes_guard")}
    for backend, quantize in SPEED_ORDER:
        if backend == "torch" or (
            (backend, quantize) in passing
            and graph_path(folder, backend, quantize).is_file()
            and importlib.util.find_spec(RUNTIMES[backend])
        ):
            return backend, quantize
    return "torch", None


def check_choice(backend: str, quantize: str | None, device: torch.device, dtype: torch.dtype) -> None:
    """Raise ``ValueError`` for a backend, quantisation, device or dtype that do not go together."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose {', '.join(BACKENDS)}")
    if quantize not in QUANTIZE:
        raise ValueError(f"unknown quantize {quantize!r}; choose int8 (or none)")
    if backend == "torch" and quantize:
        raise ValueError("quantize='int8' runs on the onnx or openvino backend, not torch")
    if backend != "torch" and (device.type != "cpu" or dtype != torch.float32):
        raise ValueError(f"the {backend} backend runs on CPU in float32: drop --device/--dtype (or use torch)")


class TorchSession:
    """The PyTorch model itself (the reference; the only backend with gradients, for explain)."""

    name = "torch"

    def __init__(self, model, device: torch.device, pad_token_id: int):
        self.model, self.device, self.pad_token_id = model, device, pad_token_id

    @torch.inference_mode()
    def run(self, input_ids, attention_mask, heads):
        ids, mask = (
            torch.from_numpy(a).to(self.device) for a in bucket_shape(input_ids, attention_mask, self.pad_token_id)
        )
        out = self.model(ids, mask, heads=heads)
        return {name: getattr(out, name)[: len(input_ids)].float().cpu().numpy() for name in ("embedding", *heads)}


class OnnxSession:
    """An onnxruntime ``InferenceSession`` on the CPU over an exported graph."""

    def __init__(self, path: Path, num_threads: int | None, pad_token_id: int):
        try:
            import onnxruntime as ort
        except ImportError as err:
            raise RuntimeError(f"the onnx backend needs onnxruntime ({err}): pip install 'carl[onnx]'") from err
        options = ort.SessionOptions()
        if num_threads:
            options.intra_op_num_threads, options.inter_op_num_threads = num_threads, 1
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.name = f"onnx ({path.name})"
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.pad_token_id = pad_token_id

    def source(self) -> str | None:
        return self.session.get_modelmeta().custom_metadata_map.get(SOURCE_KEY)

    def run(self, input_ids, attention_mask, heads):
        names = ["embedding", *heads]
        ids, mask = bucket_shape(input_ids, attention_mask, self.pad_token_id)
        out = self.session.run(names, {"input_ids": ids, "attention_mask": mask})
        return {name: value[: len(input_ids)] for name, value in zip(names, out)}


class OpenVinoSession:
    """An OpenVINO model compiled for the CPU (latency hint, float32 where not int8, ``num_threads`` threads)."""

    def __init__(self, path: Path, num_threads: int | None, pad_token_id: int):
        try:
            import openvino as ov
        except ImportError as err:
            raise RuntimeError(f"the openvino backend needs openvino ({err}): pip install 'carl[openvino]'") from err
        core = ov.Core()
        self.model = core.read_model(str(path))
        # f32: on CPUs with bf16 units OpenVINO would otherwise run the float parts in bfloat16
        config: dict[str, object] = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
        if num_threads:
            config["INFERENCE_NUM_THREADS"] = num_threads
        self.compiled = core.compile_model(self.model, "CPU", config)
        self.request = self.compiled.create_infer_request()
        self.name = f"openvino ({path.name})"
        self.outputs = [o.get_any_name() for o in self.compiled.outputs]
        self.pad_token_id = pad_token_id

    def source(self) -> str | None:
        return self.model.get_rt_info([SOURCE_KEY]).astype(str) if self.model.has_rt_info([SOURCE_KEY]) else None

    def run(self, input_ids, attention_mask, heads):
        ids, mask = bucket_shape(input_ids, attention_mask, self.pad_token_id)
        out = self.request.infer({"input_ids": ids, "attention_mask": mask})
        values = {name: out[port] for port, name in zip(self.compiled.outputs, self.outputs)}
        # the request reuses its output buffers: copy before the next batch overwrites them
        return {name: np.array(values[name][: len(input_ids)]) for name in ("embedding", *heads)}


def open_session(
    folder: Path, backend: str, quantize: str | None, num_threads: int | None, heads: tuple[str, ...], pad_token_id: int
) -> OnnxSession | OpenVinoSession:
    """The exported ``backend`` graph of ``folder``, checked against the folder's weights and
    required to carry ``heads`` (:func:`graph_heads`)."""
    path = graph_path(folder, backend, quantize)
    if not path.is_file():
        raise ModelFolderError(path, f"missing: export the {backend} graphs first (carl export-onnx {folder})")
    session = (OnnxSession if backend == "onnx" else OpenVinoSession)(path, num_threads, pad_token_id)
    recorded, actual = session.source(), source_digest(folder)
    if recorded != actual:
        raise ModelFolderError(
            path,
            f"exported from other weights (recorded source {str(recorded)[:12]}, "
            f"this folder {actual[:12]}): export again (carl export-onnx {folder})",
        )
    for head in heads:
        if head not in session.outputs:
            raise ModelFolderError(
                path,
                f"has no {head!r} output although the folder has that head: export again (carl export-onnx {folder})",
            )
    return session
