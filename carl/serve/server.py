"""Run the service with uvicorn and the connection guard (what ``carl serve`` calls)."""

from __future__ import annotations

from pathlib import Path

from carl.inference import AffectEncoder
from carl.serve.schemas import ServeLimits


def serve(
    model: str,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    limits: ServeLimits | None = None,
    device: str = "cpu",
    dtype: str = "auto",
    num_threads: int | None = None,
    log_level: str = "info",
    backend: str = "torch",
    quantize: str | None = None,
) -> None:
    """Load ``model`` on ``backend`` (see ``AffectEncoder.load``) and serve it until interrupted (one
    process; the micro-batcher merges requests).

    A model that does not load raises before the server starts (``carl serve`` prints it in one line).
    """
    try:
        import uvicorn

        from carl.serve.app import create_app
        from carl.serve.protocol import guarded_protocol
    except ImportError as err:
        raise RuntimeError(f"carl serve needs FastAPI and uvicorn ({err}): pip install 'carl[serve]'") from err

    limits = limits or ServeLimits()
    encoder = AffectEncoder.load(
        model, device=device, dtype=dtype, num_threads=num_threads, backend=backend, quantize=quantize
    )
    app = create_app(encoder, limits, name=Path(model).name)  # a name, never the path (shown by /health)
    # uvicorn's own limit_concurrency counts open connections, stalled ones included: the app's
    # InFlightLimit counts requests instead, and the guard caps connections and read times.
    uvicorn.run(
        app, host=host, port=port, log_level=log_level, workers=1, http=guarded_protocol(limits), timeout_keep_alive=5
    )
