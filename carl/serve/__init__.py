"""HTTP service for a carl model: FastAPI app, micro-batcher, limits (``pip install carl[serve]``)."""

from carl.serve.schemas import ServeLimits

__all__ = ["ServeLimits"]
