"""Unsupervised SimCSE (Gao, Yao and Chen, 2021, EMNLP) on the same sentences, as a baseline.

Each sentence is encoded twice in training mode; the two dropout masks make two views, and
in-batch InfoNCE with temperature tau = 0.05 pulls the views of a sentence together:

    L = -(1/B) sum_i log( exp(cos(h_i, h'_i) / tau) / sum_j exp(cos(h_i, h'_j) / tau) )

with h = pool(encoder(x)) (mean pooling by default, as carl). Labels are not used: this is
the label-free contrastive peer of CARL's MCL. The run folder mirrors a carl run:
``config.json``, ``environment.json``, ``metrics.jsonl`` (``simcse`` and ``loss`` per step),
``checkpoint.pt`` (atomic; rerunning resumes where it stopped) and ``model/``, a
sentence-transformers folder that :meth:`carl.inference.AffectEncoder.load` reads (as a plain
encoder: it has no VA head).
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from carl.data.batching import LengthGroupedBatchSampler, PaddingCollator, TokenizedDataset
from carl.model.encoder import load_backbone, resolve_encoder
from carl.model.pooling import pool
from carl.training.run_info import environment_info


@dataclass
class SimCSEConfig:
    """SimCSE settings; :meth:`from_carl_config` takes the training budget of a carl config."""

    encoder: str = "minilm-l6"
    pooling: str = "mean"
    temperature: float = 0.05
    batch_size: int = 32
    epochs: float = 1.0
    max_steps: int = 0
    learning_rate: float = 5e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.06
    max_grad_norm: float = 1.0
    max_length: int = 128
    seed: int = 42
    checkpoint_every: int = 100
    num_threads: int = 0

    @classmethod
    def from_carl_config(cls, cfg) -> SimCSEConfig:
        """Same encoder, pooling, batch size, steps, optimiser settings and seed as ``cfg``."""
        t = cfg.train
        return cls(encoder=cfg.model.encoder, pooling=cfg.model.pooling, batch_size=t.batch_size,
                   epochs=t.epochs, max_steps=t.max_steps, learning_rate=t.learning_rate,
                   weight_decay=t.weight_decay, warmup_ratio=t.warmup_ratio, max_grad_norm=t.max_grad_norm,
                   max_length=cfg.data.max_length, seed=t.seed, checkpoint_every=t.checkpoint_every,
                   num_threads=t.num_threads)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def simcse_loss(first: torch.Tensor, second: torch.Tensor, temperature: float) -> torch.Tensor:
    """In-batch InfoNCE between two views [B, H]: row i's positive is column i."""
    sim = F.normalize(first, dim=-1) @ F.normalize(second, dim=-1).T / temperature
    return F.cross_entropy(sim, torch.arange(len(sim), device=sim.device))


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


def export_plain(backbone, tokenizer, path: Path, *, pooling: str, max_length: int) -> Path:
    """Write a sentence-transformers folder (Transformer + Pooling) atomically to ``path``."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    with tempfile.TemporaryDirectory() as raw:
        backbone.save_pretrained(raw)
        tokenizer.save_pretrained(raw)
        st = SentenceTransformer(modules=[Transformer(raw, max_seq_length=max_length),
                                          Pooling(backbone.config.hidden_size, pooling_mode=pooling)],
                                 device="cpu")
        st.save(str(tmp), create_model_card=False)
    shutil.rmtree(path, ignore_errors=True)
    os.replace(tmp, path)
    return path


def train_simcse(cfg: SimCSEConfig, texts: Sequence[str], output_dir: str | Path, *,
                 show_progress: bool = True) -> Path:
    """Train unsupervised SimCSE on ``texts`` into ``output_dir`` (resuming); returns ``<out>/model``."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    saved = out / "config.json"
    if saved.is_file() and json.loads(saved.read_text(encoding="utf-8")) != cfg.to_dict():
        raise ValueError(f"{out} holds a SimCSE run with other settings; train into a new folder")
    _write_atomic(saved, json.dumps(cfg.to_dict(), indent=2))
    if cfg.num_threads > 0:
        torch.set_num_threads(cfg.num_threads)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)

    backbone, tokenizer = load_backbone(cfg.encoder)
    data = TokenizedDataset(texts, None, tokenizer, cfg.max_length)
    sampler = LengthGroupedBatchSampler(data.lengths(), cfg.batch_size, seed=cfg.seed)
    # the loader's own generator keeps iterator creation from consuming the global RNG, so a
    # resumed run draws the same dropout masks as an uninterrupted one
    loader = DataLoader(data, batch_sampler=sampler, collate_fn=PaddingCollator(tokenizer.pad_token_id),
                        generator=torch.Generator().manual_seed(cfg.seed))
    decay = [p for n, p in backbone.named_parameters() if p.ndim >= 2 and "norm" not in n.lower()]
    no_decay = [p for n, p in backbone.named_parameters() if not (p.ndim >= 2 and "norm" not in n.lower())]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=cfg.learning_rate)
    total = cfg.max_steps or max(1, int(np.ceil(cfg.epochs * len(loader))))
    scheduler = get_linear_schedule_with_warmup(optimizer, int(cfg.warmup_ratio * total), total)

    step, epoch, batch_in_epoch = 0, 0, 0
    checkpoint = out / "checkpoint.pt"
    metrics = out / "metrics.jsonl"
    if checkpoint.is_file():
        state = torch.load(checkpoint, map_location="cpu", weights_only=False)
        backbone.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step, epoch, batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
        _set_rng_state(state["rng"])
        if metrics.exists():  # drop log lines written after the checkpoint
            keep = [l for l in metrics.read_text(encoding="utf-8").splitlines()
                    if l.strip() and json.loads(l)["step"] <= step]
            _write_atomic(metrics, "".join(l + "\n" for l in keep))
    elif metrics.exists():
        metrics.unlink()
    _write_atomic(out / "environment.json", json.dumps(environment_info("cpu"), indent=2))

    def save() -> None:
        tmp = checkpoint.with_name(".checkpoint.pt.tmp")
        torch.save({"model": backbone.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "step": step, "epoch": epoch,
                    "batch_in_epoch": batch_in_epoch, "rng": _rng_state()}, tmp)
        os.replace(tmp, checkpoint)

    backbone.train()
    bar = tqdm(total=total, initial=step, desc="train simcse", unit="step", disable=not show_progress)
    while step < total:
        sampler.set_epoch(epoch)
        for b, batch in enumerate(loader):
            if b < batch_in_epoch:
                continue  # already trained on before the interruption
            started = time.perf_counter()
            ids, mask = batch["input_ids"], batch["attention_mask"]
            first = pool(backbone(input_ids=ids, attention_mask=mask).last_hidden_state, mask, cfg.pooling)
            second = pool(backbone(input_ids=ids, attention_mask=mask).last_hidden_state, mask, cfg.pooling)
            loss = simcse_loss(first, second, cfg.temperature)
            if not torch.isfinite(loss):
                raise RuntimeError(f"SimCSE loss is not finite at step {step + 1}; lower the learning rate")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(backbone.parameters(), cfg.max_grad_norm)
            optimizer.step()
            scheduler.step()
            step, batch_in_epoch = step + 1, b + 1
            record = {"step": step, "epoch": epoch, "simcse": float(loss.detach()), "loss": float(loss.detach()),
                      "lr": scheduler.get_last_lr()[0], "grad_norm": float(grad_norm),
                      "step_time": time.perf_counter() - started}
            with open(metrics, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
            bar.update(1)
            if cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
                save()
            if step >= total:
                break
        else:
            epoch, batch_in_epoch = epoch + 1, 0
    bar.close()
    save()
    backbone.eval()
    return export_plain(backbone, tokenizer, out / "model", pooling=cfg.pooling, max_length=cfg.max_length)


def describe(cfg: SimCSEConfig) -> dict:
    """Where the SimCSE model came from, for reports."""
    return {"method": "unsupervised SimCSE (Gao et al., 2021)", "encoder": cfg.encoder,
            "encoder_path": resolve_encoder(cfg.encoder), **cfg.to_dict()}
