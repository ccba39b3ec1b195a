"""Run the service with uvicorn (what ``carl serve`` calls)."""

from __future__ import annotations

from carl.inference import AffectEncoder
from carl.serve.schemas import ServeLimits


def serve(model: str, *, host: str = "127.0.0.1", port: int = 8000, limits: ServeLimits | None = None,
          device: str = "cpu", dtype: str = "auto", num_threads: int | None = None,
          log_level: str = "info", backend: str = "torch", quantize: str | None = None) -> None:
    """Load ``model`` on ``backend`` (see ``AffectEncoder.load``) and serve it until interrupted (one
    process; the micro-batcher merges requests)."""
    try:
        import uvicorn

        from carl.serve.app import create_app
    except ImportError as err:
        raise RuntimeError(f"carl serve needs FastAPI and uvicorn ({err}): pip install 'carl[serve]'") from err

    limits = limits or ServeLimits()
    encoder = AffectEncoder.load(model, device=device, dtype=dtype, num_threads=num_threads, backend=backend,
                                 quantize=quantize)
    app = create_app(encoder, limits)
    uvicorn.run(app, host=host, port=port, log_level=log_level, workers=1,
                limit_concurrency=limits.max_concurrency, timeout_keep_alive=5)
