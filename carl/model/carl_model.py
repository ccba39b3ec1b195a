"""The CARL network: query encoder with heads, momentum key encoder and key queue."""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from transformers import PreTrainedModel
from transformers.utils import ModelOutput

from carl.model.heads import ClassificationHead, ProjectionHead, RegressionHead, TokenDetectionHead
from carl.model.momentum import MomentumEncoder, MomentumQueue
from carl.model.pooling import pool

# Attention kernels of every encoder pass: all but cuDNN's. torch prefers cuDNN's for bf16/fp16 on
# Hopper GPUs, and it builds a new execution plan for every new sequence length (about 10 ms per
# layer and call on an H100: a bf16 training step with length-grouped batches ran 8x slower than
# fp32); carl's batches bring a new length nearly every step. Measured in
# benchmarks/results/profile_step_gpu/.
ATTENTION_KERNELS = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


@dataclass
class CarlOutput(ModelOutput):
    """Outputs of one query-encoder pass over B sentences of T tokens (None if not requested).

    A ``ModelOutput`` (a dict), so that DistributedDataParallel finds the output tensors.
    """

    embedding: torch.Tensor | None = None  # [B, H] pooled sentence embedding (what users get)
    query: torch.Tensor | None = None  # [B, P] L2-normalised projection (contrastive space)
    va: torch.Tensor | None = None  # [B, 2] standardised valence/arousal prediction
    token_logits: torch.Tensor | None = None  # [B, T] perturbed-token detection logits
    class_logits: torch.Tensor | None = None  # [B, C] emotion-class logits (uncalibrated)


HEADS = ("query", "va", "token_logits", "class_logits")


class CarlModel(nn.Module):
    """Query encoder (backbone, pooling, heads) plus momentum key encoder and queue.

    Labels enter standardised: ``z = (y - label_mean) / label_std`` with buffers fitted on
    the training set, so that VA distances and the regression target are scale-free.
    ``num_classes > 0`` adds the emotion classifier (``class_logits``); 0 builds none.
    """

    def __init__(
        self,
        backbone: PreTrainedModel,
        *,
        pooling: str = "mean",
        projection_dim: int = 128,
        momentum: float = 0.999,
        queue_size: int = 4096,
        detector_hidden: int = 0,
        use_key_encoder: bool = True,
        num_classes: int = 0,
    ):
        super().__init__()
        hidden = backbone.config.hidden_size
        self.pooling = pooling
        self.projection_dim = projection_dim  # 0: contrast on the sentence embedding itself
        self.backbone = backbone
        self.projection = ProjectionHead(hidden, projection_dim)
        self.regression = RegressionHead(hidden, 2)
        self.detector = TokenDetectionHead(hidden, detector_hidden)
        self.label_mean: torch.Tensor  # [2] buffers, declared for type checkers
        self.label_std: torch.Tensor
        self.register_buffer("label_mean", torch.zeros(2))
        self.register_buffer("label_std", torch.ones(2))
        self.key_encoder = (
            MomentumEncoder({"backbone": backbone, "projection": self.projection}, momentum)
            if use_key_encoder
            else None
        )
        self.queue = MomentumQueue(queue_size if use_key_encoder else 0, self.projection.output_dim, 2)
        # built last, and only when asked for: a VA model draws the same initial weights as before
        self.classifier: ClassificationHead | None = ClassificationHead(hidden, num_classes) if num_classes else None

    def set_label_statistics(self, labels: torch.Tensor) -> None:
        """Fit the standardisation buffers on training labels [N, 2] in [0, 1]."""
        self.label_mean.copy_(labels.mean(0))
        self.label_std.copy_(labels.std(0).clamp(min=1e-6))

    def standardise(self, labels: torch.Tensor) -> torch.Tensor:
        """Labels [..., 2] in [0, 1] -> standardised ``z``."""
        return (labels - self.label_mean) / self.label_std

    def destandardise(self, z: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`standardise`: VA head output [..., 2] -> [0, 1] (``z``'s device and dtype)."""
        return z * self.label_std.to(z) + self.label_mean.to(z)

    def _encode(self, backbone: nn.Module, input_ids, attention_mask, inputs_embeds=None):
        kwargs = {"inputs_embeds": inputs_embeds} if inputs_embeds is not None else {"input_ids": input_ids}
        with sdpa_kernel(ATTENTION_KERNELS):
            hidden = backbone(attention_mask=attention_mask, **kwargs).last_hidden_state  # [B, T, H]
        return hidden, pool(hidden, attention_mask, self.pooling)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        *,
        heads: tuple[str, ...] | None = None,
        track_input_grad: bool = False,
        input_delta: torch.Tensor | None = None,
    ) -> CarlOutput:
        """Query pass computing only ``heads`` (None: every head this model has; each head's
        parameters then get a gradient, which multi-process training requires). With
        ``track_input_grad`` the word embeddings keep their gradient for ``input_gradient`` (the
        saliency). They are kept on the module, not returned: DistributedDataParallel re-wraps
        returned tensors, losing retained grads. ``input_delta`` [B, T, H] is added to the word
        embeddings (the ``embedding`` perturbation of PTD)."""
        if heads is None:
            heads = HEADS if self.classifier is not None else HEADS[:-1]
        unknown = set(heads) - set(HEADS)
        if unknown:
            raise ValueError(f"unknown heads {sorted(unknown)}; choose from {HEADS}")
        if "class_logits" in heads and self.classifier is None:
            raise ValueError("this model has no classification head (built with num_classes=0)")
        input_embeds = None
        if track_input_grad and torch.is_grad_enabled():
            input_embeds = self.backbone.get_input_embeddings()(input_ids)
            input_embeds.retain_grad()
        self._input_embeds = input_embeds
        if input_delta is not None:
            input_embeds = self.backbone.get_input_embeddings()(input_ids) + input_delta
        hidden, embedding = self._encode(self.backbone, input_ids, attention_mask, input_embeds)
        return CarlOutput(
            embedding=embedding,
            query=F.normalize(self.projection(embedding), dim=-1) if "query" in heads else None,
            va=self.regression(embedding) if "va" in heads else None,
            token_logits=self.detector(hidden) if "token_logits" in heads else None,
            class_logits=self.classifier(embedding)
            if "class_logits" in heads and self.classifier is not None
            else None,
        )

    def input_gradient(self) -> torch.Tensor:
        """dL/d(word embeddings) [B, T, H] of the last ``track_input_grad`` pass, after backward."""
        embeds = getattr(self, "_input_embeds", None)
        if embeds is None or embeds.grad is None:
            raise RuntimeError("no input gradient: run forward(track_input_grad=True) and backward first")
        return embeds.grad

    def input_gradient_of(self, loss: torch.Tensor) -> torch.Tensor:
        """d loss / d(word embeddings) [B, T, H] of the last ``track_input_grad`` pass, before its
        backward (whose graph is kept): the saliency of one part of the loss, parameters untouched."""
        embeds = getattr(self, "_input_embeds", None)
        if embeds is None:
            raise RuntimeError("no tracked input: run forward(track_input_grad=True) under grad first")
        (grad,) = torch.autograd.grad(loss, embeds, retain_graph=True)
        return grad

    def input_attribution(self, outputs: torch.Tensor) -> torch.Tensor:
        """Gradient x input of each of K outputs [B, K] of the last ``track_input_grad`` pass:
        ``a[b, t, k] = sum_h d outputs[b, k] / d e[b, t, h] * e[b, t, h]`` [B, T, K], float32.

        For attribution at inference: ``autograd.grad`` reaches only the word embeddings (no
        parameter gradients, nothing accumulated), and the pass's graph is released at the end.
        Rows are independent, so the gradient of a column's sum gives every row's own gradient.
        """
        embeds = getattr(self, "_input_embeds", None)
        if embeds is None:
            raise RuntimeError("no tracked input: run forward(track_input_grad=True) under grad first")
        columns = []
        for k in range(outputs.shape[1]):
            (grad,) = torch.autograd.grad(outputs[:, k].sum(), embeds, retain_graph=k + 1 < outputs.shape[1])
            columns.append((grad.float() * embeds.detach().float()).sum(-1))  # [B, T]
        self._input_embeds = None
        return torch.stack(columns, dim=-1)

    @torch.no_grad()
    def encode_keys(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, input_delta: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Momentum-encoder keys [B, P], L2-normalised, without gradient (``input_delta`` as in forward)."""
        if self.key_encoder is None:
            raise RuntimeError("this model was built without a momentum key encoder")
        parts = self.key_encoder.parts
        backbone = cast(PreTrainedModel, parts["backbone"])
        embeds = None if input_delta is None else backbone.get_input_embeddings()(input_ids) + input_delta
        _, embedding = self._encode(backbone, input_ids, attention_mask, embeds)
        return F.normalize(parts["projection"](embedding), dim=-1)

    @torch.no_grad()
    def momentum_update(self) -> None:
        if self.key_encoder is not None:
            self.key_encoder.update({"backbone": self.backbone, "projection": self.projection})
