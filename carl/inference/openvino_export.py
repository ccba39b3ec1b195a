"""Convert the exported ONNX graph to OpenVINO IR, float32 and int8 (NNCF post-training quantisation).

``ov.convert_model`` reads the float ONNX graph; :func:`export_openvino` saves it as
``model.xml``/``model.bin`` (weights kept float32) with the graph's source digest in its
``rt_info``. :func:`quantize_openvino` runs ``nncf.quantize`` with the transformer preset
(``ModelType.TRANSFORMER``: int8 MatMuls with activation ranges calibrated on training
sentences, sensitive operations such as softmax and layer norm left float); the heads stay float.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch

from carl.atomic import temporary_beside
from carl.inference.backends import SOURCE_KEY


def _openvino():
    try:
        import openvino as ov
    except ImportError as err:
        raise RuntimeError(f"OpenVINO export needs openvino ({err}): pip install 'carl[openvino]'") from err
    return ov


def _save(model, path: Path, source: str) -> Path:
    """Save ``model`` as ``path`` (.xml) and its .bin, written in a temporary folder beside them and
    moved into place weights first, so that a killed export never leaves an IR with other weights."""
    ov = _openvino()
    model.set_rt_info(source, SOURCE_KEY)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_beside(path, folder=True)
    try:
        ov.save_model(model, str(tmp / path.name), compress_to_fp16=False)
        os.replace(tmp / path.with_suffix(".bin").name, path.with_suffix(".bin"))
        os.replace(tmp / path.name, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def export_openvino(onnx_path: Path, path: Path, *, source: str) -> Path:
    """Convert the float ONNX graph at ``onnx_path`` to OpenVINO IR at ``path`` (``.xml`` + ``.bin``)."""
    return _save(_openvino().convert_model(str(onnx_path)), path, source)


def quantize_openvino(
    onnx_path: Path, path: Path, *, source: str, calibration: list[tuple[torch.Tensor, torch.Tensor]]
) -> Path:
    """Int8 IR of the float ONNX graph at ``onnx_path``, calibrated on ``calibration`` batches
    of (input_ids, attention_mask); the heads (outside the backbone) are kept float."""
    try:
        import nncf
    except ImportError as err:
        raise RuntimeError(f"OpenVINO int8 needs nncf ({err}): pip install 'carl[openvino]'") from err
    model = _openvino().convert_model(str(onnx_path))
    heads = [
        op.get_friendly_name()
        for op in model.get_ops()
        if op.get_type_name() == "MatMul" and "/backbone/" not in op.get_friendly_name()
    ]
    dataset = nncf.Dataset(
        calibration, lambda batch: {"input_ids": batch[0].numpy(), "attention_mask": batch[1].numpy()}
    )
    quantized = nncf.quantize(
        model,
        dataset,
        model_type=nncf.ModelType.TRANSFORMER,
        preset=nncf.QuantizationPreset.MIXED,
        subset_size=len(calibration),
        ignored_scope=nncf.IgnoredScope(names=heads, validate=False),
    )
    return _save(quantized, path, source)
