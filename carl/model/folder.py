"""Check a model folder before loading it, and read carl's heads from it; nothing here runs code.

A model folder is what ``carl train`` exports (docs/formats.md): the transformer's
``config.json``, its weights as ``model.safetensors`` (or shards listed in
``model.safetensors.index.json``), the tokenizer files, sentence-transformers' configs and, for
a carl model, ``carl/carl.json`` with ``carl/heads.safetensors``. Every problem is one
:class:`ModelFolderError` naming the file and what is wrong: missing, truncated or unreadable,
or inconsistent with the rest of the folder. Weights are read only from safetensors files:
pickled weights (``pytorch_model.bin``) are refused, since unpickling can run code.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

CARL_SUBDIR = "carl"
# state-dict prefix of each query-encoder head (``CarlModel.forward``'s head names), and the label
# statistics every carl folder holds
HEAD_PREFIXES = {
    "query": "projection.",
    "va": "regression.",
    "token_logits": "detector.",
    "class_logits": "classifier.",
}
LABEL_STATISTICS = ("label_mean", "label_std")
WEIGHTS = "model.safetensors"
WEIGHTS_INDEX = "model.safetensors.index.json"
PICKLED_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json")
POOLING_MODES = ("mean", "cls")
MAX_HEADER_BYTES = 100_000_000  # safetensors' own limit on a header


class ModelFolderError(ValueError):
    """A model folder, or a file in it, that cannot be loaded: ``PATH: what is wrong``."""

    def __init__(self, path: str | Path, reason: str):
        self.path, self.reason = str(path), reason
        super().__init__(f"{path}: {reason}")


def looks_local(name: str) -> bool:
    """Whether ``name`` means a folder on disk and must never be looked up on the Hugging Face Hub:
    it exists, or is written as a path (starts with ``.``, ``/`` or ``~``, ends with ``/``, holds
    a backslash or more than one ``/``). A Hub id is ``name`` or ``owner/name``."""
    return (
        Path(name).expanduser().exists()
        or name.startswith((".", "/", "~"))
        or name.endswith("/")
        or "\\" in name
        or name.count("/") > 1
    )


def read_json_object(path: Path) -> dict:
    """The JSON object in ``path`` (UTF-8), or a ModelFolderError saying why it is not one."""
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise ModelFolderError(path, "not UTF-8 text (corrupt?)") from None
    except json.JSONDecodeError as err:
        raise ModelFolderError(path, f"not valid JSON (line {err.lineno}: {err.msg}; truncated?)") from None
    if not isinstance(data, dict):
        raise ModelFolderError(path, f"expected a JSON object, found {type(data).__name__}")
    return data


def check_safetensors(path: Path) -> dict[str, tuple[int, ...]]:
    """``{tensor name: shape}`` from a ``.safetensors`` header, checked against the file's size
    (a truncated copy is caught here, without reading the tensors)."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        prefix = f.read(8)
        length = int.from_bytes(prefix, "little") if len(prefix) == 8 else -1
        if not 0 < length <= min(size - 8, MAX_HEADER_BYTES):
            raise ModelFolderError(path, f"truncated or not a safetensors file ({size} bytes)")
        try:
            header = json.loads(f.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError):
            header = None
    if not isinstance(header, dict):
        raise ModelFolderError(path, "unreadable safetensors header (truncated or corrupt)")
    shapes, end = {}, 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            start, stop = (int(x) for x in entry["data_offsets"])
            shapes[name] = tuple(int(x) for x in entry["shape"])
        except (KeyError, TypeError, ValueError):
            raise ModelFolderError(path, f"unreadable safetensors header entry {name!r}") from None
        end = max(end, start, stop)
    expected = 8 + length + end
    if size != expected:
        what = "truncated" if size < expected else "longer than its header says (corrupt)"
        raise ModelFolderError(path, f"{what}: {size} bytes, the header describes {expected}")
    return shapes


def head_state_prefixes(heads: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """State-dict key prefixes of the label statistics and of ``heads``."""
    return LABEL_STATISTICS + tuple(HEAD_PREFIXES[h] for h in heads)


VA_ERA_HEADS = ("query", "va", "token_logits")  # a folder written before carl.json listed its heads has these


def trained_heads(info: dict) -> list[str]:
    """The heads a folder's ``carl.json`` says were trained (folders written before the list: the VA-era three)."""
    return list(info.get("heads", VA_ERA_HEADS))


def has_classifier(info: dict) -> bool:
    """Whether a folder's ``carl.json`` describes a trained emotion classifier."""
    return "class_logits" in trained_heads(info)


def has_va_head(info: dict) -> bool:
    """Whether a folder's ``carl.json`` describes a trained VA head with its scale."""
    return "va" in trained_heads(info) and info.get("scale") is not None


def check_model_folder(folder: Path) -> None:
    """The files a transformer folder needs before ``from_pretrained`` reads it: ``config.json``,
    whole safetensors weights, and valid sentence-transformers configs where present."""
    if not folder.exists():
        raise ModelFolderError(folder, "no such model folder")
    if not folder.is_dir():
        raise ModelFolderError(folder, "is a file, not a model folder")
    config = folder / "config.json"
    if not config.is_file():
        run = (folder / "config.toml").is_file() or (folder / "checkpoints").is_dir()
        hint = " (a carl run folder without an exported model/: has training finished?)" if run else ""
        raise ModelFolderError(config, "missing: not a model folder" + hint)
    read_json_object(config)
    _check_weights(folder)
    for name in ("sentence_bert_config.json", "1_Pooling/config.json", "tokenizer_config.json", "tokenizer.json"):
        if (folder / name).is_file():
            read_json_object(folder / name)


def _check_weights(folder: Path) -> None:
    if (folder / WEIGHTS).exists():
        check_safetensors(folder / WEIGHTS)
        return
    if (folder / WEIGHTS_INDEX).is_file():
        shards = sorted(set(read_json_object(folder / WEIGHTS_INDEX).get("weight_map", {}).values()))
        if not shards:
            raise ModelFolderError(folder / WEIGHTS_INDEX, "no weight_map")
        for shard in shards:
            if not (folder / shard).is_file():
                raise ModelFolderError(folder / shard, f"missing (listed in {WEIGHTS_INDEX})")
            check_safetensors(folder / shard)
        return
    for name in PICKLED_WEIGHTS:
        if (folder / name).exists():
            raise ModelFolderError(
                folder / name,
                "weights only as a PyTorch pickle, which carl does not load "
                "(unpickling can run code); save them as model.safetensors",
            )
    raise ModelFolderError(folder / WEIGHTS, "missing: the folder holds no model weights")


def load_heads(folder: str | Path) -> tuple[dict, dict[str, torch.Tensor]] | None:
    """``(carl.json contents, head tensors)`` of a carl model folder, None for a plain model.

    ``carl.json`` must give ``pooling`` (mean or cls), ``projection_dim`` and ``detector_hidden``
    (integers >= 0) and ``scale``: ``[low, high]`` of the VA predictions, or null for a model
    without a trained VA head; ``heads`` lists the trained heads (absent: the VA-era three). With a
    classifier (``class_logits``): ``classes`` (distinct names), ``multi_label``, ``temperature``
    (> 0) and, for multi-label, ``thresholds`` (one in (0, 1) per class); the classifier's tensors
    must have one row per class. Other tensor shapes are checked against the model by
    :func:`check_heads`.
    """
    carl = Path(folder) / CARL_SUBDIR
    info_path, heads_path = carl / "carl.json", carl / "heads.safetensors"
    if not carl.is_dir():
        return None
    for path in (info_path, heads_path):
        if not path.is_file():
            raise ModelFolderError(
                path, f"missing (a carl model folder holds carl/{info_path.name} and carl/{heads_path.name})"
            )
    info = read_json_object(info_path)
    _check_info(info_path, info)
    check_safetensors(heads_path)
    try:
        tensors = load_file(str(heads_path))
    except (SafetensorError, OSError) as err:
        raise ModelFolderError(heads_path, f"unreadable ({err})") from None
    if "class_logits" in trained_heads(info):
        _check_classifier_size(heads_path, tensors, len(info["classes"]))
    return info, tensors


def _check_info(path: Path, info: dict) -> None:
    if info.get("pooling") not in POOLING_MODES:
        raise ModelFolderError(
            path, f"'pooling' must be one of {', '.join(POOLING_MODES)}, got {info.get('pooling')!r}"
        )
    for key in ("projection_dim", "detector_hidden"):
        value = info.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ModelFolderError(path, f"{key!r} must be an integer >= 0, got {value!r}")
    heads = info.get("heads", list(VA_ERA_HEADS))
    if not isinstance(heads, list) or not set(heads) <= set(HEAD_PREFIXES):
        raise ModelFolderError(path, f"'heads' must be a list of {', '.join(HEAD_PREFIXES)}, got {heads!r}")
    if "class_logits" in heads:
        _check_classifier_info(path, info)
    if "scale" not in info:
        raise ModelFolderError(path, "no 'scale' (the [low, high] of the VA predictions, or null without a VA head)")
    scale = info["scale"]
    if scale is None:
        return
    if (
        not isinstance(scale, list)
        or len(scale) != 2
        or not all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in scale)
        or not scale[0] < scale[1]
    ):
        raise ModelFolderError(path, f"'scale' must be [low, high] with finite low < high, or null; got {scale!r}")


def _check_classifier_info(path: Path, info: dict) -> None:
    classes = info.get("classes")
    if (
        not isinstance(classes, list)
        or not classes
        or not all(isinstance(c, str) and c for c in classes)
        or len(set(classes)) != len(classes)
    ):
        raise ModelFolderError(path, f"'classes' must be a non-empty list of distinct class names, got {classes!r}")
    if not isinstance(info.get("multi_label"), bool):
        raise ModelFolderError(path, f"'multi_label' must be true or false, got {info.get('multi_label')!r}")
    t = info.get("temperature")
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not (math.isfinite(t) and t > 0):
        raise ModelFolderError(path, f"'temperature' must be a finite number > 0, got {t!r}")
    thresholds = info.get("thresholds")
    if not info["multi_label"]:
        return
    if (
        not isinstance(thresholds, list)
        or len(thresholds) != len(classes)
        or not all(isinstance(x, (int, float)) and not isinstance(x, bool) and 0 < x < 1 for x in thresholds)
    ):
        raise ModelFolderError(
            path,
            f"'thresholds' must list one number in (0, 1) for each of the {len(classes)} classes, got {thresholds!r}",
        )


def _check_classifier_size(path: Path, tensors: dict[str, torch.Tensor], n_classes: int) -> None:
    """The classification head has one output per class of carl.json."""
    for name in ("classifier.linear.weight", "classifier.linear.bias"):
        if name in tensors and tensors[name].shape[0] != n_classes:
            raise ModelFolderError(
                path,
                f"the classification head has {tensors[name].shape[0]} outputs "
                f"({name}) but carl/carl.json lists {n_classes} classes",
            )


def check_heads(folder: str | Path, tensors: dict[str, torch.Tensor], expected: dict[str, torch.Size]) -> None:
    """The head tensors of ``carl/heads.safetensors`` match, by name and shape, the heads the model
    built from ``carl.json`` and ``config.json`` has (``expected``); label_std is positive."""
    path = Path(folder) / CARL_SUBDIR / "heads.safetensors"
    missing, unexpected = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise ModelFolderError(
            path, f"tensors do not match carl/carl.json's heads: missing {missing}, unexpected {unexpected}"
        )
    for name, shape in expected.items():
        if tuple(tensors[name].shape) != tuple(shape):
            raise ModelFolderError(
                path,
                f"tensor {name!r} has shape {list(tensors[name].shape)}, the model "
                f"needs {list(shape)} (hidden size from config.json, head sizes from "
                "carl/carl.json)",
            )
    std = tensors["label_std"]
    if not (torch.isfinite(std).all() and (std > 0).all()):
        raise ModelFolderError(path, f"'label_std' must be finite and positive, got {std.tolist()}")
