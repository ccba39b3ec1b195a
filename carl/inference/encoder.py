"""Load a trained (or plain) encoder and embed, score or explain texts.

>>> from carl import AffectEncoder
>>> enc = AffectEncoder.load("minilm-l6")
>>> enc.encode(["What a lovely day!", "I am furious."], normalize=True).shape
(2, 384)
>>> enc.has_heads          # the plain MiniLM has no VA head: predict/explain need a carl model
False
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import BatchEncoding

from carl.data.batching import length_sorted_batches
from carl.data.scales import Scale
from carl.inference.backends import Session, TorchSession, check_choice, graph_heads, open_session
from carl.inference.classify import Classification, Classifier
from carl.model.carl_model import CarlModel
from carl.model.encoder import load_backbone, resolve_encoder
from carl.model.folder import (
    ModelFolderError,
    check_heads,
    has_classifier,
    has_va_head,
    head_state_prefixes,
    load_heads,
    read_json_object,
    trained_heads,
)
from carl.model.momentum import world_size

if TYPE_CHECKING:
    from carl.inference.explain import Explanation


class Prediction(NamedTuple):
    """Valence [N] and arousal [N] on the model's declared scale (unpacks as a 2-tuple); two
    floats for a single text given as a bare ``str``."""

    valence: np.ndarray | float
    arousal: np.ndarray | float


def as_texts(texts: str | Sequence[str]) -> list[str]:
    """``texts`` as a non-empty list of str: a bare ``str`` is one text, not a sequence of characters."""
    texts = [texts] if isinstance(texts, str) else list(texts)
    if not texts:
        raise ValueError("no texts given")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"texts[{i}] is {type(text).__name__}, not str")
    return texts


def _pooling_of(folder: Path) -> str:
    """Pooling mode from a sentence-transformers ``1_Pooling/config.json`` (mean by default)."""
    config = folder / "1_Pooling" / "config.json"
    if not config.is_file():
        return "mean"
    data = read_json_object(config)
    mode = data.get("pooling_mode")
    if isinstance(mode, list):
        mode = mode[0]
    if mode in ("cls", "mean"):
        return mode
    return "cls" if data.get("pooling_mode_cls_token") else "mean"


def _max_length_of(folder: Path, backbone, tokenizer, requested: int | None) -> int:
    """``requested`` (else sentence-transformers' ``max_seq_length``, else 256), capped by the model."""
    if requested is None:
        config = folder / "sentence_bert_config.json"
        requested = 256
        if config.is_file():
            requested = read_json_object(config).get("max_seq_length") or 256
            if isinstance(requested, bool) or not isinstance(requested, int) or requested < 1:
                raise ModelFolderError(config, f"'max_seq_length' must be a positive integer, got {requested!r}")
    limits = [requested]
    positions = getattr(backbone.config, "max_position_embeddings", None)
    if positions:
        limits.append(int(positions))
    if 0 < (tokenizer.model_max_length or 0) < 1_000_000:
        limits.append(int(tokenizer.model_max_length))
    return min(limits)


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """``"auto"``: bfloat16 on a CUDA device that supports it, else float16 on CUDA, float32 on CPU."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    names = {
        "float32": torch.float32,
        "fp32": torch.float32,
        "bfloat16": torch.bfloat16,
        "bf16": torch.bfloat16,
        "float16": torch.float16,
        "fp16": torch.float16,
    }
    if dtype not in names:
        raise ValueError(f"unknown dtype {dtype!r}; choose auto, float32, bfloat16 or float16")
    return names[dtype]


class AffectEncoder:
    """A frozen encoder for embeddings and, when trained with carl, VA predictions and explanations.

    Texts are tokenised once, sorted by token count and cut into batches so that padding is
    minimal; results come back in input order. The forward pass runs on the chosen backend.

    >>> enc = AffectEncoder.load("minilm-l6", num_threads=1)
    >>> emb = enc.encode(["What a lovely day!"])
    >>> emb.shape, emb.dtype
    ((1, 384), dtype('float32'))
    """

    def __init__(
        self,
        model: CarlModel,
        tokenizer,
        *,
        scale: tuple[float, float] | None,
        has_heads: bool,
        max_length: int = 256,
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype | None = "auto",
        info: dict | None = None,
        source: str = "",
        session: Session | None = None,
    ):
        self.device = torch.device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.model = model.eval().to(self.device)
        if self.dtype != torch.float32:
            self.model.to(self.dtype)
        self.session = session or TorchSession(self.model, self.device, tokenizer.pad_token_id or 0)
        self.tokenizer = tokenizer
        self.scale = scale
        self.has_heads = has_heads
        self.max_length = max_length
        self.info = info or {}
        self.source = source
        # the calibrated emotion classifier, when the model folder has one
        self.classifier = Classifier.from_info(self.info) if has_classifier(self.info) else None

    @classmethod
    def load(
        cls,
        path_or_alias: str,
        *,
        device: str | torch.device = "cpu",
        max_length: int | None = None,
        dtype: str | torch.dtype | None = "auto",
        num_threads: int | None = None,
        backend: str = "torch",
        quantize: str | None = None,
    ) -> AffectEncoder:
        """Load a carl model folder, a run folder, an alias (``minilm-l6``) or a Hugging Face encoder.

        ``dtype="auto"`` runs bfloat16 (or float16) on CUDA and float32 on CPU. ``num_threads``
        sets torch's intra-op thread count for the whole process (``torch.set_num_threads``).
        ``max_length`` (tokens; longer texts are truncated) defaults to the folder's
        sentence-transformers ``max_seq_length`` or 256, capped by the model's position limit.

        ``backend`` runs the forward pass with ``"torch"``, ``"onnx"`` (onnxruntime) or
        ``"openvino"`` on the graphs that ``carl export-onnx`` wrote into the folder;
        ``quantize="int8"`` picks their int8 graph (:mod:`carl.inference.backends`). The torch
        weights are loaded on every backend: explanations need their gradients.
        """
        check_choice(backend, quantize, torch.device(device), resolve_dtype(dtype, torch.device(device)))
        if num_threads is not None:
            if num_threads < 1:
                raise ValueError(f"num_threads must be >= 1, got {num_threads}")
            torch.set_num_threads(num_threads)
        folder = Path(resolve_encoder(path_or_alias))
        backbone, tokenizer = load_backbone(str(folder))
        heads = load_heads(folder) if folder.is_dir() else None
        info, tensors = heads if heads else ({}, {})
        model = CarlModel(
            backbone,
            pooling=info.get("pooling") or _pooling_of(folder),
            use_key_encoder=False,
            projection_dim=info.get("projection_dim", 128),
            detector_hidden=info.get("detector_hidden", 0),
            num_classes=len(info["classes"]) if has_classifier(info) else 0,
        )
        if heads:
            prefixes = head_state_prefixes(trained_heads(info))
            check_heads(folder, tensors, {k: v.shape for k, v in model.state_dict().items() if k.startswith(prefixes)})
            model.load_state_dict(tensors, strict=False)
        va = bool(info) and has_va_head(info)
        session = None
        if backend != "torch":
            pad = tokenizer.pad_token_id or 0
            session = open_session(folder, backend, quantize, num_threads, graph_heads(info), pad)
        return cls(
            model,
            tokenizer,
            scale=tuple(info["scale"]) if va else None,
            has_heads=va,
            max_length=_max_length_of(folder, backbone, tokenizer, max_length),
            device=device,
            dtype=dtype,
            info=info or None,
            source=str(folder),
            session=session,
        )

    @property
    def dim(self) -> int:
        """Embedding width H."""
        return int(self.model.backbone.config.hidden_size)

    # -- batching ---------------------------------------------------------------------------

    def tokenize(self, texts: Sequence[str], *, offsets: bool = False) -> BatchEncoding:
        """Token ids of ``texts`` in one fast-tokenizer call, truncated to ``max_length`` (unpadded);
        ``offsets`` adds each token's character span (``offset_mapping``) for word attributions."""
        return self.tokenizer(
            list(texts),
            truncation=True,
            max_length=self.max_length,
            return_offsets_mapping=offsets,
            return_attention_mask=False,
            return_token_type_ids=False,
        )

    def padded_batches(
        self, texts: Sequence[str], batch_size: int
    ) -> Iterator[tuple[np.ndarray, torch.Tensor, torch.Tensor]]:
        """``(positions [B], input_ids [B, T], attention_mask [B, T])``, longest texts first, each
        batch padded to its longest row (:func:`carl.data.batching.length_sorted_batches`)."""
        return length_sorted_batches(self.tokenize(texts)["input_ids"], batch_size, self.pad_token_id)

    @property
    def pad_token_id(self) -> int:
        return self.tokenizer.pad_token_id or 0

    @property
    def backend(self) -> str:
        """The session running the forward pass: ``torch``, or ``onnx (model_int8.onnx)`` and the like."""
        return self.session.name

    def infer(
        self, texts: str | Sequence[str], *, batch_size: int = 64, with_va: bool = False, show_progress: bool = False
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Embeddings [N, H] float32 and standardised VA [N, 2] (``with_va``), in input order.

        One forward pass gives both; :meth:`encode` and :meth:`predict` are views of it. Inside
        a torch.distributed process group every rank embeds a share and gets the whole result.
        A bare ``str`` is one text (N = 1).
        """
        texts = as_texts(texts)
        if with_va:
            self.require_heads("predict")
        out = self._outputs(texts, ("va",) if with_va else (), batch_size=batch_size, show_progress=show_progress)
        return out["embedding"], out.get("va")

    def _outputs(
        self, texts: list[str], heads: tuple[str, ...], *, batch_size: int, show_progress: bool = False
    ) -> dict[str, np.ndarray]:
        """``embedding`` [N, H] and each of ``heads`` (``va`` [N, 2], ``class_logits`` [N, C]) from
        one pass, in input order; sharded over the ranks inside a torch.distributed process group."""
        if world_size() > 1:
            return self._outputs_sharded(texts, heads, batch_size=batch_size, show_progress=show_progress)
        return self._outputs_local(texts, heads, batch_size=batch_size, show_progress=show_progress)

    def _output_widths(self, heads: tuple[str, ...]) -> dict[str, int]:
        widths = {"embedding": self.dim, "va": 2}
        if self.classifier is not None:
            widths["class_logits"] = len(self.classifier.classes)
        return {name: widths[name] for name in ("embedding", *heads)}

    def _outputs_local(
        self, texts: list[str], heads: tuple[str, ...], *, batch_size: int, show_progress: bool
    ) -> dict[str, np.ndarray]:
        """This process's pass over ``texts``: ``{output: [N, width]}``."""
        out = {name: np.empty((len(texts), width), np.float32) for name, width in self._output_widths(heads).items()}
        total = (len(texts) + batch_size - 1) // max(batch_size, 1)
        batches = self.padded_batches(texts, batch_size)
        for rows, ids, mask in tqdm(batches, total=total, desc="batches", disable=not show_progress):
            result = self.session.run(ids, mask, heads)
            for name, values in out.items():
                values[rows] = result[name]
        return out

    def _outputs_sharded(
        self, texts: list[str], heads: tuple[str, ...], *, batch_size: int, show_progress: bool
    ) -> dict[str, np.ndarray]:
        """Under a process group: each rank runs a contiguous share of the N texts, the shares are
        gathered on every rank and written back by index, each row exactly once.

        Every rank returns the full ``{output: [N, width]}``, in input order.
        """
        import torch.distributed as dist

        world, rank = dist.get_world_size(), dist.get_rank()
        mine = np.array_split(np.arange(len(texts)), world)[rank]
        widths = self._output_widths(heads)
        local = {name: np.empty((0, width), np.float32) for name, width in widths.items()}
        if len(mine):
            local = self._outputs_local(
                [texts[i] for i in mine], heads, batch_size=batch_size, show_progress=show_progress and rank == 0
            )
        parts: list = [None] * world
        dist.all_gather_object(parts, (mine, local))
        seen = np.concatenate([rows for rows, _ in parts])
        if len(seen) != len(texts) or len(np.unique(seen)) != len(texts):
            raise RuntimeError(
                f"sharded inference covered {len(np.unique(seen))} of {len(texts)} texts "
                f"with {len(seen)} rows: the ranks disagree on the input"
            )
        out = {name: np.empty((len(texts), width), np.float32) for name, width in widths.items()}
        for rows, values in parts:
            for name in out:
                out[name][rows] = values[name]
        return out

    # -- public API -------------------------------------------------------------------------

    def encode(
        self, texts: str | Sequence[str], *, batch_size: int = 64, normalize: bool = False, show_progress: bool = False
    ) -> np.ndarray:
        """Sentence embeddings [N, H] (float32), in input order; ``normalize`` gives unit L2 norm.

        A bare ``str`` is one text and gives one embedding [H], as sentence-transformers does.
        """
        emb, _ = self.infer(texts, batch_size=batch_size, show_progress=show_progress)
        if normalize:
            emb /= np.linalg.norm(emb, axis=1, keepdims=True).clip(min=1e-12)
        return emb[0] if isinstance(texts, str) else emb

    def predict(self, texts: str | Sequence[str], *, batch_size: int = 64, show_progress: bool = False) -> Prediction:
        """Valence [N] and arousal [N] on the training data's declared scale (``self.scale``).

        A bare ``str`` is one text: its valence and arousal are then two floats.

        >>> enc = AffectEncoder.load("runs/x")                  # doctest: +SKIP
        >>> valence, arousal = enc.predict(["What a lovely day!"])  # doctest: +SKIP
        >>> enc.predict("What a lovely day!").valence           # doctest: +SKIP
        """
        _, z = self.infer(texts, batch_size=batch_size, with_va=True, show_progress=show_progress)
        assert z is not None  # with_va=True
        prediction = self.to_scale(z)
        if isinstance(texts, str):
            return Prediction(float(prediction.valence[0]), float(prediction.arousal[0]))  # type: ignore[index]
        return prediction

    def to_scale(self, z: np.ndarray) -> Prediction:
        """Standardised VA [N, 2] from the regression head -> :class:`Prediction` on ``self.scale``."""
        self.require_heads("predict")
        unit = self.model.destandardise(torch.from_numpy(np.asarray(z, dtype=np.float32))).numpy()  # [N, 2]
        assert self.scale is not None  # require_heads
        values = Scale(*self.scale).denormalise(unit)
        return Prediction(values[:, 0], values[:, 1])

    def class_logits(
        self, texts: str | Sequence[str], *, batch_size: int = 64, with_va: bool = False
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Class logits [N, C] float32 (uncalibrated) and, with ``with_va``, standardised VA [N, 2]
        from the same pass on this encoder's backend, in input order (sharded like :meth:`infer`)."""
        texts = as_texts(texts)
        self.require_classifier("classify")
        if with_va:
            self.require_heads("predict")
        out = self._outputs(texts, ("class_logits", "va") if with_va else ("class_logits",), batch_size=batch_size)
        return out["class_logits"], out.get("va")

    def classify(self, texts: str | Sequence[str], *, batch_size: int = 64) -> Classification:
        """Top label(s) and calibrated class probabilities [N, C] (softmax or sigmoid at the stored
        temperature; multi-label: the classes at or above their dev-tuned thresholds).

        A bare ``str`` is one text: its label (or list of labels) and probabilities [C].

        >>> enc = AffectEncoder.load("runs/x")             # doctest: +SKIP
        >>> enc.classify("What a lovely day!").labels      # doctest: +SKIP
        'joy'
        """
        logits, _ = self.class_logits(texts, batch_size=batch_size)
        result = self.require_classifier("classify").classify(logits)
        if isinstance(texts, str):
            return Classification(result.labels[0], result.probabilities[0], result.classes)
        return result

    def explain(self, text: str) -> Explanation:
        """Per-word valence and arousal attributions (gradient x input, summed over sub-words).

        >>> enc = AffectEncoder.load("runs/x")                  # doctest: +SKIP
        >>> e = enc.explain("What a lovely day!")               # doctest: +SKIP
        >>> e.words, e.valence_scores                           # doctest: +SKIP
        """
        from carl.inference.explain import explain_texts

        return explain_texts(self, [text])[0]

    def explain_batch(self, texts: Sequence[str], *, batch_size: int = 16) -> list[Explanation]:
        """:meth:`explain` for many texts, batched (results in input order; a bare ``str`` is one text)."""
        from carl.inference.explain import explain_texts

        return explain_texts(self, as_texts(texts), batch_size=batch_size)

    def save(self, path: str | Path) -> Path:
        """Write this model as a sentence-transformers folder (plus carl's heads and model card)."""
        from carl.model.export import export_model

        if not self.info:
            raise RuntimeError(
                "this model has no VA regression head and no classifier, so it cannot be saved: "
                "a plain encoder is already a folder or a Hugging Face name"
            )
        metadata = {k: v for k, v in self.info.items() if k not in ("pooling", "projection_dim", "detector_hidden")}
        model = self.model.float() if self.dtype != torch.float32 else self.model
        try:
            return export_model(
                model,
                self.tokenizer,
                path,
                max_length=self.max_length,
                metadata=metadata,
                heads=tuple(trained_heads(self.info)),
            )
        finally:
            if self.dtype != torch.float32:
                self.model.to(self.dtype)

    def require_classifier(self, what: str) -> Classifier:
        """The calibrated classifier; ``RuntimeError`` naming ``what`` when this model has none."""
        if self.classifier is None:
            raise RuntimeError(
                f"this model has no classification head, so it cannot {what}: train it with "
                "a classification objective (objective.name = classify, mcl-classify or "
                "carl-classify) and a data.label_column"
            )
        return self.classifier

    def require_heads(self, what: str) -> None:
        """Raise ``RuntimeError`` naming ``what`` when this model has no VA regression head."""
        if not self.has_heads:
            raise RuntimeError(
                f"this model has no VA regression head, so it cannot {what}: "
                "train it with carl first (carl train) or load a carl model folder"
            )
