"""Inference: load a model folder, then embed, predict, explain, stream and export.

:class:`AffectEncoder` (``encoder.py``) is the entry point; ``classify.py`` turns class logits
into calibrated probabilities and labels (:class:`Classification`); ``explain.py`` and
``explain_html.py`` give per-word attributions and their page; ``text_io.py``, ``writers.py``
and ``streaming.py`` stream texts in and results out. ``backends.py`` runs the forward pass on
torch, onnxruntime or OpenVINO; ``graphs.py`` (``carl export-onnx``) writes their graphs with
``onnx_export.py`` and ``openvino_export.py`` and measures them against torch.
"""

from carl.inference.classify import Classification
from carl.inference.encoder import AffectEncoder, Prediction, resolve_dtype

__all__ = ["AffectEncoder", "Classification", "Prediction", "resolve_dtype"]
