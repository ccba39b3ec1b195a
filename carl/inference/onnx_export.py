"""Export the encoder (backbone + pooling, and the VA head when present) to ONNX.

The graph takes ``input_ids`` and ``attention_mask`` (int64 [batch, tokens], both axes dynamic)
and returns ``embedding`` [batch, H] and, for a carl model, ``va`` [batch, 2] standardised as
the regression head gives it (``AffectEncoder.to_scale`` maps it to the declared scale). It is
traced with torch's TorchScript-based exporter (no extra packages); run it with onnxruntime
(``pip install carl[onnx]``).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from carl.atomic import temporary_beside

if TYPE_CHECKING:
    from carl.inference.encoder import AffectEncoder


class _EmbeddingGraph(nn.Module):
    """``(input_ids, attention_mask) -> embedding[, va]`` for tracing."""

    def __init__(self, encoder: AffectEncoder):
        super().__init__()
        self.model = encoder.model
        self.heads = ("va",) if encoder.has_heads else ()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        out = self.model(input_ids, attention_mask, heads=self.heads)
        return (out.embedding, out.va) if self.heads else out.embedding


def _onnx_export(*args, **kwargs) -> None:
    try:
        torch.onnx.export(*args, **kwargs)
    except ImportError as err:
        raise RuntimeError(f"ONNX export needs the onnx package ({err}): pip install 'carl[onnx]'") from err


def export_onnx(encoder: AffectEncoder, path: str | Path, *, opset: int = 17) -> Path:
    """Write ``encoder`` as an ONNX graph to ``path`` (float32, CPU); returns the path."""
    path = Path(path)
    if encoder.dtype != torch.float32 or encoder.device.type != "cpu":
        raise ValueError("export from a float32 CPU encoder: AffectEncoder.load(..., device='cpu', dtype='float32')")
    graph = _EmbeddingGraph(encoder).eval()
    sample = encoder.tokenizer(["an example sentence to trace", "short"], padding=True, return_tensors="pt")
    args = (sample["input_ids"], sample["attention_mask"])
    outputs = ["embedding", "va"] if encoder.has_heads else ["embedding"]
    axes = {"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"},
            **{name: {0: "batch"} for name in outputs}}
    tmp = temporary_beside(path, folder=False)  # renamed into place when whole
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings about python control flow on shapes
            _onnx_export(graph, args, str(tmp), input_names=["input_ids", "attention_mask"],
                         output_names=outputs, dynamic_axes=axes, opset_version=opset, dynamo=False)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def onnx_encode(path: str | Path, encoder: AffectEncoder, texts: list[str], *, batch_size: int = 64
                ) -> tuple[np.ndarray, np.ndarray | None]:
    """Embeddings [N, H] (and standardised VA [N, 2] when exported) from the ONNX graph at ``path``.

    Uses ``encoder``'s tokenizer and length-sorted batches, like :meth:`AffectEncoder.infer`.
    """
    try:
        import onnxruntime as ort
    except ImportError as err:
        raise RuntimeError("running ONNX needs onnxruntime: pip install 'carl[onnx]'") from err

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    embeddings = np.empty((len(texts), encoder.dim), dtype=np.float32)
    va = np.empty((len(texts), 2), dtype=np.float32) if "va" in names else None
    for rows, ids, mask in encoder.padded_batches(texts, batch_size):
        out = session.run(names, {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})
        embeddings[rows] = out[0]
        if va is not None:
            va[rows] = out[1]
    return embeddings, va
