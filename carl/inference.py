"""Load a trained (or plain) encoder and embed or score texts."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from carl.data.batching import LengthGroupedBatchSampler, PaddingCollator, TokenizedDataset
from carl.model.carl_model import CarlModel
from carl.model.encoder import load_backbone, resolve_encoder
from carl.model.export import load_heads


def _pooling_of(folder: Path) -> str:
    """Pooling mode from a sentence-transformers ``1_Pooling/config.json`` (mean by default)."""
    config = folder / "1_Pooling" / "config.json"
    if not config.is_file():
        return "mean"
    data = json.loads(config.read_text(encoding="utf-8"))
    mode = data.get("pooling_mode")
    if isinstance(mode, list):
        mode = mode[0]
    if mode in ("cls", "mean"):
        return mode
    return "cls" if data.get("pooling_mode_cls_token") else "mean"


class AffectEncoder:
    """A frozen encoder for embeddings and, when trained with carl, VA predictions.

    >>> enc = AffectEncoder.load("minilm-l6")                 # doctest: +SKIP
    >>> enc.encode(["What a lovely day!"]).shape               # doctest: +SKIP
    (1, 384)
    """

    def __init__(self, model: CarlModel, tokenizer, *, scale: tuple[float, float] | None,
                 has_heads: bool, max_length: int = 256, device: str | torch.device = "cpu"):
        self.model = model.eval().to(device)
        self.tokenizer = tokenizer
        self.scale = scale
        self.has_heads = has_heads
        self.max_length = max_length
        self.device = torch.device(device)

    @classmethod
    def load(cls, path_or_alias: str, *, device: str | torch.device = "cpu", max_length: int = 256) -> "AffectEncoder":
        """Load a carl model folder, a run folder, an alias or any Hugging Face encoder."""
        folder = Path(resolve_encoder(path_or_alias))
        backbone, tokenizer = load_backbone(str(folder))
        heads = load_heads(folder) if folder.is_dir() else None
        pooling = heads[0]["pooling"] if heads else _pooling_of(folder)
        model = CarlModel(backbone, pooling=pooling, use_key_encoder=False,
                          projection_dim=heads[0]["projection_dim"] if heads else 128,
                          detector_hidden=heads[0]["detector_hidden"] if heads else 0)
        if heads:
            missing = model.load_state_dict(heads[1], strict=False)
            unexpected = missing.unexpected_keys
            if unexpected:
                raise RuntimeError(f"{folder}: unexpected head tensors {unexpected}")
        return cls(model, tokenizer, scale=tuple(heads[0]["scale"]) if heads else None,
                   has_heads=heads is not None, max_length=max_length, device=device)

    def _batches(self, texts: Sequence[str], batch_size: int):
        """Length-sorted padded batches and the original positions of their rows."""
        data = TokenizedDataset(texts, None, self.tokenizer, self.max_length)
        sampler = LengthGroupedBatchSampler(data.lengths(), batch_size, shuffle=False)
        return DataLoader(data, batch_sampler=sampler, collate_fn=PaddingCollator(self.tokenizer.pad_token_id))

    @torch.inference_mode()
    def _run(self, texts: Sequence[str], batch_size: int, show_progress: bool, field: str) -> np.ndarray:
        texts = list(texts)
        if not texts:
            raise ValueError("no texts given")
        results: np.ndarray | None = None
        loader = self._batches(texts, batch_size)
        for batch in tqdm(loader, desc=field, unit="batch", disable=not show_progress):
            out = self.model(batch["input_ids"].to(self.device), batch["attention_mask"].to(self.device))
            values = getattr(out, field).float().cpu().numpy()
            if results is None:
                results = np.zeros((len(texts), values.shape[1]), dtype=np.float32)
            results[batch["index"].numpy()] = values
        return results

    def encode(self, texts: Sequence[str], *, batch_size: int = 64, normalize: bool = False,
               show_progress: bool = False) -> np.ndarray:
        """Sentence embeddings [N, H] (float32), in input order."""
        emb = self._run(texts, batch_size, show_progress, "embedding")
        if normalize:
            emb /= np.linalg.norm(emb, axis=1, keepdims=True).clip(min=1e-12)
        return emb

    def predict(self, texts: Sequence[str], *, batch_size: int = 64,
                show_progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Valence [N] and arousal [N] on the training data's own scale (regression head)."""
        if not self.has_heads:
            raise RuntimeError("this model has no VA regression head: train it with carl first")
        z = torch.from_numpy(self._run(texts, batch_size, show_progress, "va"))
        unit = (z * self.model.label_std + self.model.label_mean).numpy()  # [N, 2] in [0, 1]
        low, high = self.scale
        values = low + unit * (high - low)
        return values[:, 0], values[:, 1]
