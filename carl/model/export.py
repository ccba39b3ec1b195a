"""Save a trained encoder as a sentence-transformers folder plus carl's heads.

Folder layout: the sentence-transformers files (``modules.json``, Transformer weights and
tokenizer, ``1_Pooling/``, ``README.md`` model card) so that
``SentenceTransformer(path)`` gives carl's sentence embeddings, and ``carl/`` with
``heads.safetensors`` (projection, VA regression, token detector, label statistics) and
``carl.json`` (pooling, label scale, training configuration and metrics).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import PreTrainedTokenizerBase

from carl.model.carl_model import CarlModel
from carl.atomic import write_text_atomic

CARL_SUBDIR = "carl"
HEAD_PREFIXES = ("projection.", "regression.", "detector.", "label_mean", "label_std")


def export_model(model: CarlModel, tokenizer: PreTrainedTokenizerBase, path: str | Path, *,
                 max_length: int, metadata: dict) -> Path:
    """Write ``model`` to ``path`` atomically (an existing folder is replaced only when done)."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    with tempfile.TemporaryDirectory() as raw:
        model.backbone.save_pretrained(raw)
        tokenizer.save_pretrained(raw)
        st = SentenceTransformer(
            modules=[Transformer(raw, max_seq_length=max_length),
                     Pooling(model.backbone.config.hidden_size, pooling_mode=model.pooling)],
            device="cpu",
        )
        st.save(str(tmp), create_model_card=False)
    heads = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()
             if k.startswith(HEAD_PREFIXES)}
    (tmp / CARL_SUBDIR).mkdir()
    save_file(heads, str(tmp / CARL_SUBDIR / "heads.safetensors"))
    info = {"pooling": model.pooling, "projection_dim": model.projection_dim,
            "detector_hidden": _detector_hidden(model), **metadata}
    (tmp / CARL_SUBDIR / "carl.json").write_text(json.dumps(info, indent=2), encoding="utf-8")
    (tmp / "README.md").write_text(model_card(info), encoding="utf-8")
    if path.exists():
        old = path.with_name(f".{path.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, path)
    return path


def _detector_hidden(model: CarlModel) -> int:
    net = model.detector.net
    return net[0].out_features if isinstance(net, torch.nn.Sequential) else 0


def load_heads(path: str | Path) -> tuple[dict, dict[str, torch.Tensor]] | None:
    """``(carl.json contents, head tensors)`` of an exported folder, or None for a plain model."""
    folder = Path(path) / CARL_SUBDIR
    if not (folder / "carl.json").is_file():
        return None
    info = json.loads((folder / "carl.json").read_text(encoding="utf-8"))
    return info, load_file(str(folder / "heads.safetensors"))


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


def model_card(info: dict) -> str:
    """A short Markdown model card: data, objective, metrics, licence of the data."""
    metrics = info.get("metrics") or {}
    rows = "\n".join(f"| {k} | {v:.4f} |" for k, v in metrics.items() if isinstance(v, (int, float)))
    data = info.get("data", {})
    selection = info.get("selection")
    selected = ""
    if selection and selection["best_step"] is None:
        selected = f"- Model selection: dev `{selection['metric']}` was never finite; the last step is exported\n"
    elif selection:
        selected = (f"- Model selection: step {selection['best_step']} of {selection['steps_trained']}, the best dev "
                    f"`{selection['metric']}` ({selection['dev'][selection['metric']]:.4f})"
                    + (", early stopping" if selection["stopped_early"] else "") + "\n")
    return f"""---
library_name: sentence-transformers
tags: [carl, affect, valence-arousal, sentence-embeddings]
---
# CARL affect-aware encoder

Fine-tuned with carl (Continuous Adversarial Representation Learning, Son, Saurez and Har,
arXiv 2502.20613) from `{info.get('base_encoder', '?')}`.

- Objective: `{info.get('objective', '?')}`; pooling: `{info.get('pooling')}`.
- Training data: {data.get('description', '?')}
- Data licence: {data.get('licence', 'see the data source')}
- Label scale of `predict`: {info.get('scale')}
{selected}
Load with `carl.AffectEncoder.load(path)` or `sentence_transformers.SentenceTransformer(path)`.

| metric | value |
|---|---|
{rows}
"""
