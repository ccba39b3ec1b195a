"""The FastAPI application: ``/embed``, ``/predict``, ``/classify``, ``/explain``, ``/health`` (+ ``/openapi.json``).

>>> from carl import AffectEncoder
>>> from carl.serve.app import create_app
>>> app = create_app(AffectEncoder.load("runs/x"), name="x")     # doctest: +SKIP
>>> # carl serve runs/x --port 8000   (uvicorn with the connection guard of carl.serve.protocol)

Errors: 400 malformed JSON, 409 /predict or /explain on a model without a VA head (/classify: without a
classification head), 413 body
larger than ``max_body_bytes``, 415 a Content-Type other than JSON, 422 wrong types, empty list,
too many texts, text too long, unknown fields, 503 ``max_concurrency`` requests already in flight;
all bodies are ``{"detail": ...}``. There is no ``/docs`` page (its assets would come from a CDN).

(No ``from __future__ import annotations`` here: FastAPI must see the request models, which are
built inside :func:`create_app` from the limits, as real annotations.)
"""

import asyncio
from contextlib import asynccontextmanager
from dataclasses import asdict

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from carl import __version__
from carl.inference import AffectEncoder
from carl.model.folder import trained_heads
from carl.serve.batcher import MicroBatcher
from carl.serve.middleware import BodyLimit, InFlightLimit, JsonOnly
from carl.serve.schemas import (
    ClassifyResponse,
    EmbedResponse,
    ErrorResponse,
    ExplainResponse,
    Health,
    PredictResponse,
    ServeLimits,
    request_models,
)

ERRORS = {
    400: {"model": ErrorResponse, "description": "malformed JSON"},
    413: {"model": ErrorResponse, "description": "request body too large"},
    415: {"model": ErrorResponse, "description": "Content-Type is not application/json"},
    503: {"model": ErrorResponse, "description": "too many requests in flight"},
}
NEEDS_HEADS = {409: {"model": ErrorResponse, "description": "the model has no VA regression head"}}
NEEDS_CLASSIFIER = {409: {"model": ErrorResponse, "description": "the model has no classification head"}}


def create_app(encoder: AffectEncoder, limits: ServeLimits | None = None, *, name: str = "model") -> FastAPI:
    """An app serving ``encoder`` (called ``name`` in ``/health``) under ``limits``; the micro-batcher
    starts with the app."""
    limits = limits or ServeLimits()
    EmbedRequest, PredictRequest, ExplainRequest = request_models(limits)
    with_va = encoder.has_heads

    def forward(texts: list[str]) -> tuple[np.ndarray, np.ndarray | None]:
        return encoder.infer(texts, batch_size=limits.batch_size, with_va=with_va)

    batcher = MicroBatcher(forward, max_batch_texts=limits.max_batch_texts, max_wait_ms=limits.max_wait_ms)

    def classify_forward(texts: list[str]) -> tuple[np.ndarray, None]:
        return encoder.class_logits(texts, batch_size=limits.batch_size)

    # /classify merges its own requests; its forwards run in the same one model thread
    classify_batcher = MicroBatcher(
        classify_forward,
        max_batch_texts=limits.max_batch_texts,
        max_wait_ms=limits.max_wait_ms,
        executor=batcher.executor,
    )
    batchers = (batcher, classify_batcher)

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        for b in batchers:
            await b.start()
        yield
        for b in batchers:
            await b.stop()
        batcher.executor.shutdown(wait=True)

    app = FastAPI(
        title="carl affect encoder",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        description=f"Sentence embeddings, valence/arousal and per-word affect attributions from {name}.",
    )
    # the last added runs first: 415, then 413, then 503, then the app
    app.add_middleware(InFlightLimit, max_requests=limits.max_concurrency)
    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes)
    app.add_middleware(JsonOnly)
    app.state.batcher = batcher

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, err: RequestValidationError) -> JSONResponse:
        errors = err.errors()
        bad_json = [e for e in errors if e.get("type") == "json_invalid"]
        if bad_json:
            reason = (bad_json[0].get("ctx") or {}).get("error", "invalid JSON")
            return JSONResponse({"detail": f"malformed JSON body: {reason}"}, status_code=400)
        detail = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")} for e in errors]
        return JSONResponse({"detail": detail}, status_code=422)

    def no_heads() -> JSONResponse:
        return JSONResponse(
            {"detail": "this model has no VA regression head: serve a model trained with carl"}, status_code=409
        )

    @app.get("/health", response_model=Health, responses={503: ERRORS[503]})
    async def health() -> Health:
        """Liveness, the model's name, shape and heads, the limits and the micro-batchers' counters."""
        stats = [b.stats for b in batchers]
        return Health(
            status="ok",
            model=name,
            version=__version__,
            dim=encoder.dim,
            has_heads=encoder.has_heads,
            heads=trained_heads(encoder.info) if encoder.info else [],
            classes=list(encoder.classifier.classes) if encoder.classifier else None,
            scale=encoder.scale,
            limits={k: float(v) for k, v in asdict(limits).items()},
            requests=sum(s.requests for s in stats),
            batches=sum(s.batches for s in stats),
            texts=sum(s.texts for s in stats),
            largest_batch=max(s.largest_batch for s in stats),
        )

    @app.post("/embed", response_model=EmbedResponse, responses=ERRORS)
    async def embed(request: EmbedRequest) -> EmbedResponse:
        """Sentence embeddings [N, H], in request order."""
        emb, _ = await batcher.submit(request.texts)
        if request.normalize:
            emb = emb / np.linalg.norm(emb, axis=1, keepdims=True).clip(min=1e-12)
        return EmbedResponse(embeddings=emb.tolist(), dim=int(emb.shape[1]))

    @app.post("/predict", response_model=PredictResponse, responses={**ERRORS, **NEEDS_HEADS})
    async def predict(request: PredictRequest):
        """Valence and arousal on the model's declared scale."""
        if not encoder.has_heads:
            return no_heads()
        _, z = await batcher.submit(request.texts)
        valence, arousal = encoder.to_scale(z)
        return PredictResponse(
            predictions=[{"valence": float(v), "arousal": float(a)} for v, a in zip(valence, arousal)],
            scale=encoder.scale,
        )

    @app.post("/classify", response_model=ClassifyResponse, responses={**ERRORS, **NEEDS_CLASSIFIER})
    async def classify(request: PredictRequest):
        """Top label(s) and calibrated class probabilities (the same request body as /predict)."""
        classifier = encoder.classifier
        if classifier is None:
            return JSONResponse(
                {
                    "detail": "this model has no classification head: serve a model trained with "
                    "a classification objective (classify, mcl-classify, carl-classify)"
                },
                status_code=409,
            )
        logits, _ = await classify_batcher.submit(request.texts)
        return ClassifyResponse(
            predictions=classifier.classify(logits).rows(),
            classes=list(classifier.classes),
            multi_label=classifier.multi_label,
            temperature=classifier.temperature,
        )

    @app.post("/explain", response_model=ExplainResponse, responses={**ERRORS, **NEEDS_HEADS})
    async def explain(request: ExplainRequest):
        """Per-word valence and arousal attributions (gradient x input)."""
        if not encoder.has_heads:
            return no_heads()
        loop = asyncio.get_running_loop()
        explanations = await loop.run_in_executor(batcher.executor, encoder.explain_batch, request.texts)
        return ExplainResponse(explanations=[e.to_dict() for e in explanations])

    return app
