"""Request limits and the request/response models of the HTTP service.

Request models are built from :class:`ServeLimits` so that the limits appear in the OpenAPI
schema (``maxItems``, ``maxLength``) and are enforced by validation with a clear 422 message.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints


@dataclass(frozen=True)
class ServeLimits:
    """Limits of one server (all configurable on ``carl serve``)."""

    max_texts: int = 64  # texts per /embed or /predict request
    max_chars: int = 2000  # characters per text
    max_explain_texts: int = 8  # texts per /explain request (a backward pass each)
    max_body_bytes: int = 1_000_000  # request body size; larger bodies get 413
    max_batch_texts: int = 128  # texts merged into one forward by the micro-batcher (>= max_texts)
    max_wait_ms: float = 5.0  # how long the micro-batcher waits for more requests
    batch_size: int = 64  # texts per forward pass inside a merged batch
    max_concurrency: int = 256  # requests handled at once; more get 503
    max_connections: int = 1000  # open connections; more are closed at once
    timeout_header_s: float = 5.0  # from connect (or a request's first byte) to its complete head; else 408
    timeout_body_s: float = 30.0  # from a request's head to its complete body; else the connection is closed

    def __post_init__(self) -> None:
        for name in (
            "max_texts",
            "max_chars",
            "max_explain_texts",
            "max_body_bytes",
            "max_batch_texts",
            "batch_size",
            "max_concurrency",
            "max_connections",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("timeout_header_s", "timeout_body_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {self.max_wait_ms}")
        if self.max_batch_texts < self.max_texts:
            raise ValueError(
                f"max_batch_texts ({self.max_batch_texts}) must be >= max_texts ({self.max_texts}): "
                "a request must fit in one merged batch"
            )


def _utf8(text: str) -> str:
    """Reject strings that are not valid Unicode text (lone surrogates from JSON escapes)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise ValueError(f"text is not valid Unicode ({err.reason} at position {err.start})") from None
    return text


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


def request_models(limits: ServeLimits) -> tuple[type[BaseModel], type[BaseModel], type[BaseModel]]:
    """``(EmbedRequest, PredictRequest, ExplainRequest)`` enforcing ``limits``."""
    Text = Annotated[str, StringConstraints(max_length=limits.max_chars), AfterValidator(_utf8)]
    Texts = Annotated[
        list[Text],
        Field(
            min_length=1,
            max_length=limits.max_texts,
            description=f"1 to {limits.max_texts} texts of at most {limits.max_chars} characters",
        ),
    ]
    ExplainTexts = Annotated[
        list[Text],
        Field(min_length=1, max_length=limits.max_explain_texts, description=f"1 to {limits.max_explain_texts} texts"),
    ]

    class EmbedRequest(_Strict):
        texts: Texts
        normalize: bool = Field(False, description="L2-normalise the embeddings")

    class PredictRequest(_Strict):
        texts: Texts

    class ExplainRequest(_Strict):
        texts: ExplainTexts

    return EmbedRequest, PredictRequest, ExplainRequest


Pair = Annotated[list[float], Field(min_length=2, max_length=2)]
Span = Annotated[list[int], Field(min_length=2, max_length=2, description="character [start, end)")]


class EmbedResponse(BaseModel):
    embeddings: list[list[float]]
    dim: int


class VA(BaseModel):
    valence: float
    arousal: float


class PredictResponse(BaseModel):
    predictions: list[VA]
    scale: Pair


class ClassPrediction(BaseModel):
    labels: list[str] = Field(
        description="the top class (single-label) or the classes at or above their "
        "thresholds (multi-label, possibly none)"
    )
    probabilities: dict[str, float] = Field(description="calibrated probability of each class")


class ClassifyResponse(BaseModel):
    predictions: list[ClassPrediction]
    classes: list[str]
    multi_label: bool
    temperature: float


class WordExplanation(BaseModel):
    text: str
    words: list[str]
    spans: list[Span]
    valence_scores: list[float]
    arousal_scores: list[float]
    valence: float
    arousal: float
    scale: Pair
    truncated: bool


class ExplainResponse(BaseModel):
    explanations: list[WordExplanation]


class Health(BaseModel):
    status: str
    model: str = Field(description="the model's name (an alias or its folder's name, never a path)")
    version: str
    dim: int
    has_heads: bool
    heads: list[str] = Field(description="the model's trained heads (va: /predict, class_logits: /classify)")
    classes: list[str] | None = Field(description="the classifier's label set, or null without one")
    scale: Pair | None
    limits: dict[str, float]
    requests: int
    batches: int
    texts: int
    largest_batch: int


class ErrorResponse(BaseModel):
    detail: str
