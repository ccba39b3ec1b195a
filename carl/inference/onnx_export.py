"""Export the encoder (backbone + pooling, and the VA and classification heads when present) to ONNX,
float32 and int8.

The graph takes ``input_ids`` and ``attention_mask`` (int64 [batch, tokens], both axes dynamic)
and returns ``embedding`` [batch, H], for a carl model ``va`` [batch, 2] standardised as the
regression head gives it (``AffectEncoder.to_scale`` maps it to the declared scale), and for a
classifier ``class_logits`` [batch, C], uncalibrated (``Classifier.classify`` applies the
folder's temperature and thresholds, the same code as on torch). It is
traced with torch's TorchScript-based exporter and records the SHA-256 of the weights it came
from (``carl_source_sha256`` in its metadata). :func:`optimize_onnx` fuses it for onnxruntime
(``onnxruntime.transformers.optimizer``: skip + layer norm, bias + GELU; fused operators that
only onnxruntime runs, so OpenVINO converts the plain graph). :func:`quantize_onnx` writes the
int8 graph of the plain graph (the fused one hides activation types from the quantiser, which
then leaves most MatMuls float; onnxruntime fuses the int8 graph when it loads it) with
``onnxruntime.quantization``: int8 weights of the transformer's weight MatMuls,
per output channel; ``dynamic`` quantises their inputs per batch at run time, ``static`` with
ranges calibrated on training sentences (QDQ). Kept float32 (measured on all-MiniLM-L6-v2,
docs/inference.md): attention's activation-by-activation MatMuls, the feed-forward
down-projections (their GELU inputs have the widest ranges) and the heads.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from carl.atomic import temporary_beside
from carl.inference.backends import SOURCE_KEY, graph_heads

if TYPE_CHECKING:
    from carl.inference.encoder import AffectEncoder

INT8_METHODS = ("dynamic", "static")


class _EmbeddingGraph(nn.Module):
    """``(input_ids, attention_mask) -> (embedding[, va][, class_logits])`` for tracing."""

    def __init__(self, encoder: AffectEncoder):
        super().__init__()
        self.model = encoder.model
        self.heads = graph_heads(encoder.info)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        out = self.model(input_ids, attention_mask, heads=self.heads)
        return (out.embedding, *(getattr(out, name) for name in self.heads))


def _onnx():
    try:
        import onnx
        import onnxruntime  # noqa: F401  (quantisation and the parity check run it)
    except ImportError as err:
        raise RuntimeError(f"ONNX export needs onnx and onnxruntime ({err}): pip install 'carl[onnx]'") from err
    return onnx


def _record_source(path: Path, source: str) -> None:
    """Write ``source`` into the graph's metadata (``carl_source_sha256``), in place."""
    onnx = _onnx()
    graph = onnx.load(str(path))
    del graph.metadata_props[:]
    graph.metadata_props.add(key=SOURCE_KEY, value=source)
    onnx.save(graph, str(path))


def _write_atomic(path: Path, write) -> Path:
    """Call ``write(tmp)`` on a temporary beside ``path``, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_beside(path, folder=False)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def export_onnx(encoder: AffectEncoder, path: str | Path, *, source: str, opset: int = 17) -> Path:
    """Write ``encoder`` as a float32 ONNX graph to ``path`` recording ``source`` (the weights' digest)."""
    _onnx()
    if encoder.dtype != torch.float32 or encoder.device.type != "cpu":
        raise ValueError("export from a float32 CPU encoder: AffectEncoder.load(..., device='cpu', dtype='float32')")
    graph = _EmbeddingGraph(encoder).eval()
    sample = encoder.tokenizer(["an example sentence to trace", "short"], padding=True, return_tensors="pt")
    args = (sample["input_ids"], sample["attention_mask"])
    outputs = ["embedding", *graph_heads(encoder.info)]
    axes = {
        "input_ids": {0: "batch", 1: "tokens"},
        "attention_mask": {0: "batch", 1: "tokens"},
        **{name: {0: "batch"} for name in outputs},
    }

    def write(tmp: Path) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings about python control flow on shapes
            torch.onnx.export(
                graph,
                args,
                str(tmp),
                input_names=["input_ids", "attention_mask"],
                output_names=outputs,
                dynamic_axes=axes,
                opset_version=opset,
                dynamo=False,
            )
        _record_source(tmp, source)

    return _write_atomic(Path(path), write)


def optimize_onnx(plain_path: Path, path: Path, *, source: str, num_heads: int, hidden_size: int) -> Path:
    """The graph at ``plain_path`` with onnxruntime's transformer fusions, written to ``path``."""
    from onnxruntime.transformers import optimizer

    def write(tmp: Path) -> None:
        fused = optimizer.optimize_model(
            str(plain_path), model_type="bert", num_heads=num_heads, hidden_size=hidden_size, opt_level=1
        )
        fused.save_model_to_file(str(tmp))
        _record_source(tmp, source)

    return _write_atomic(path, write)


def weight_matmuls(path: Path) -> tuple[list[str], list[str]]:
    """``(the MatMuls to quantise, every other MatMul/Gemm)`` in the graph at ``path``: the
    transformer's weight MatMuls but its feed-forward down-projections (``layer.i/output/dense``).
    Attention's score and context products multiply two activations; the heads are small and
    give the VA values directly."""
    graph = _onnx().load(str(path)).graph
    weights = {init.name for init in graph.initializer}
    matmuls = [n for n in graph.node if n.op_type in ("MatMul", "Gemm")]
    inside = [
        n.name
        for n in matmuls
        if "/backbone/" in n.name
        and any(i in weights for i in n.input)
        and not (n.name.endswith("/output/dense/MatMul") and "/attention/" not in n.name)
    ]
    return inside, [n.name for n in matmuls if n.name not in inside]


class _Calibration:
    """onnxruntime's ``CalibrationDataReader`` over padded batches of training sentences."""

    def __init__(self, batches: Iterator[tuple[torch.Tensor, torch.Tensor]]):
        self.batches = batches

    def get_next(self) -> dict | None:
        batch = next(self.batches, None)
        return None if batch is None else {"input_ids": batch[0].numpy(), "attention_mask": batch[1].numpy()}


def quantize_onnx(
    float_path: Path,
    path: Path,
    *,
    method: str,
    source: str,
    calibration: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
) -> Path:
    """Write the int8 graph of ``float_path`` to ``path`` (``method``: dynamic or static; static
    needs ``calibration`` batches of (input_ids, attention_mask))."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static

    if method not in INT8_METHODS:
        raise ValueError(f"unknown int8 method {method!r}; choose {', '.join(INT8_METHODS)}")
    nodes, excluded = weight_matmuls(float_path)
    options = {"DefaultTensorType": _onnx().TensorProto.FLOAT}  # any untyped tensor is float32

    def write(tmp: Path) -> None:
        if method == "dynamic":
            quantize_dynamic(
                str(float_path),
                str(tmp),
                per_channel=True,
                weight_type=QuantType.QInt8,
                nodes_to_quantize=nodes,
                nodes_to_exclude=excluded,
                extra_options=options,
            )
        else:
            if not calibration:
                raise ValueError("static int8 quantisation needs calibration sentences")
            quantize_static(
                str(float_path),
                str(tmp),
                _Calibration(iter(calibration)),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QInt8,
                weight_type=QuantType.QInt8,
                nodes_to_quantize=nodes,
                nodes_to_exclude=excluded,
                calibrate_method=CalibrationMethod.MinMax,
                extra_options={**options, "ActivationSymmetric": True, "WeightSymmetric": True},
            )
        _record_source(tmp, source)

    return _write_atomic(path, write)
