"""Save a trained encoder as a sentence-transformers folder plus carl's heads.

Folder layout: the sentence-transformers files (``modules.json``, Transformer weights and
tokenizer, ``1_Pooling/``, ``README.md`` model card) so that
``SentenceTransformer(path)`` gives carl's sentence embeddings, and ``carl/`` with
``heads.safetensors`` (label statistics and the heads that were trained: projection, VA
regression, token detector, emotion classifier) and ``carl.json`` (pooling, trained heads, label
scale, the classifier's classes and calibration, training configuration and metrics).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import PreTrainedTokenizerBase

from carl.atomic import temporary_beside, write_text_atomic
from carl.model.carl_model import CarlModel
from carl.model.folder import CARL_SUBDIR, VA_ERA_HEADS, head_state_prefixes, load_heads


def export_model(
    model: CarlModel,
    tokenizer: PreTrainedTokenizerBase,
    path: str | Path,
    *,
    max_length: int,
    metadata: dict,
    heads: tuple[str, ...] | None = None,
) -> Path:
    """Write ``model`` with its trained ``heads`` (None: every head it has) to ``path`` atomically (an
    existing folder is replaced only when done). Heads not listed are left out: a loader never
    offers a random head. A classifier needs ``classes``, ``multi_label``, ``temperature`` and
    ``thresholds`` in ``metadata``.

    Everything is written in one hidden temporary folder beside ``path`` (the backbone's own
    save included), which a later export removes if this one is killed.
    """
    path = Path(path)
    if heads is None:
        heads = VA_ERA_HEADS + (("class_logits",) if model.classifier is not None else ())
    tmp = temporary_beside(path, folder=True)
    try:
        _write_model_folder(model, tokenizer, tmp, max_length=max_length, metadata={**metadata, "heads": list(heads)})
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if path.exists():
        old = temporary_beside(path, folder=True)
        os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, path)
    return path


def _write_model_folder(
    model: CarlModel, tokenizer: PreTrainedTokenizerBase, folder: Path, *, max_length: int, metadata: dict
) -> None:
    """The sentence-transformers files, ``carl/`` and the model card, into the empty ``folder``."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer

    raw = folder / "backbone"  # the plain transformers save, read back by sentence-transformers
    model.backbone.save_pretrained(raw)
    tokenizer.save_pretrained(raw)
    st = SentenceTransformer(
        modules=[
            Transformer(str(raw), max_seq_length=max_length),
            Pooling(model.backbone.config.hidden_size, pooling_mode=model.pooling),
        ],
        device="cpu",
    )
    st.save(str(folder), create_model_card=False)
    shutil.rmtree(raw)
    prefixes = head_state_prefixes(metadata["heads"])
    heads = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items() if k.startswith(prefixes)}
    (folder / CARL_SUBDIR).mkdir()
    save_file(heads, str(folder / CARL_SUBDIR / "heads.safetensors"))
    info = {
        "pooling": model.pooling,
        "projection_dim": model.projection_dim,
        "detector_hidden": _detector_hidden(model),
        **metadata,
    }
    (folder / CARL_SUBDIR / "carl.json").write_text(json.dumps(info, indent=2), encoding="utf-8")
    (folder / "README.md").write_text(model_card(info), encoding="utf-8")


def _detector_hidden(model: CarlModel) -> int:
    net = model.detector.net
    first = net[0] if isinstance(net, torch.nn.Sequential) else None
    return first.out_features if isinstance(first, torch.nn.Linear) else 0


def record_metrics(path: str | Path, metrics: dict[str, float]) -> bool:
    """Store evaluation metrics in an exported folder's ``carl.json`` and model card.

    Returns False (and writes nothing) for a folder that carl did not export.
    """
    folder = Path(path)
    heads = load_heads(folder)
    if heads is None:
        return False
    info = {**heads[0], "metrics": {**(heads[0].get("metrics") or {}), **metrics}}
    write_text_atomic(folder / CARL_SUBDIR / "carl.json", json.dumps(info, indent=2))
    write_text_atomic(folder / "README.md", model_card(info))
    return True


def _classifier_card(info: dict) -> str:
    """The model card's lines on the classifier: label set, calibration, how to get probabilities."""
    if "class_logits" not in info.get("heads", ()):
        return ""
    kind = "multi-label (one sigmoid per class)" if info.get("multi_label") else "single-label (softmax)"
    calibration = info.get("calibration") or {}
    if calibration.get("fitted_on") == "dev":
        fitted = (
            f"temperature T = {info['temperature']:.4f} fitted on {calibration['dev_rows']} dev rows; "
            f"dev ECE {calibration['ece_before']:.4f} before, {calibration['ece_after']:.4f} after"
        )
    else:
        fitted = "none (no dev data): temperature T = 1"
    thresholds = ""
    if info.get("multi_label") and info.get("thresholds"):
        pairs = ", ".join(f"{c} {t:g}" for c, t in zip(info["classes"], info["thresholds"]))
        thresholds = f"\n- Decision thresholds (tuned on dev for F1): {pairs}"
    return (
        f"\n- Emotion classifier: {kind} over {len(info['classes'])} labels: "
        f"{', '.join(info['classes'])}\n- Calibration: {fitted}{thresholds}\n"
        "- Calibrated probabilities: `carl predict MODEL --classes` or `AffectEncoder.classify(texts)`."
    )


def model_card(info: dict) -> str:
    """A short Markdown model card: data, objective, label set and calibration, metrics, data licence."""
    metrics = info.get("metrics") or {}
    rows = "\n".join(f"| {k} | {v:.4f} |" for k, v in metrics.items() if isinstance(v, (int, float)))
    data = info.get("data", {})
    selection = info.get("selection")
    selected = ""
    if selection and selection["best_step"] is None:
        selected = f"- Model selection: dev `{selection['metric']}` was never finite; the last step is exported\n"
    elif selection:
        selected = (
            f"- Model selection: step {selection['best_step']} of {selection['steps_trained']}, the best dev "
            f"`{selection['metric']}` ({selection['dev'][selection['metric']]:.4f})"
            + (", early stopping" if selection["stopped_early"] else "")
            + "\n"
        )
    return f"""---
library_name: sentence-transformers
tags: [carl, affect, valence-arousal, sentence-embeddings]
---
# CARL affect-aware encoder

Fine-tuned with carl (Continuous Adversarial Representation Learning, Son, Saurez and Har,
arXiv 2502.20613) from `{info.get("base_encoder", "?")}`.

- Objective: `{info.get("objective", "?")}`; pooling: `{info.get("pooling")}`.
- Training data: {data.get("description", "?")}
- Data licence: {data.get("licence", "see the data source")}
- Label scale of `predict`: {info.get("scale")}{_classifier_card(info)}
{selected}Load with `carl.AffectEncoder.load(path)` or `sentence_transformers.SentenceTransformer(path)`.

| metric | value |
|---|---|
{rows}
"""
