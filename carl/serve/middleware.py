"""ASGI middleware of the service: checks that answer before the app reads or parses a body.

* :class:`JsonOnly`: 415 for a POST whose Content-Type is not JSON.
* :class:`BodyLimit`: reads the body before the app; 413 for a body larger than ``max_bytes``.
* :class:`InFlightLimit`: 503 while ``max_requests`` requests with complete bodies are being handled.

All answers are JSON ``{"detail": ...}`` like the app's own errors.
"""

from __future__ import annotations

import json


async def send_error(send, status: int, detail: str) -> None:
    """Answer the request with ``status`` and ``{"detail": detail}``."""
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def is_json(content_type: bytes | None) -> bool:
    """``application/json`` or ``application/<x>+json``, with or without parameters (``; charset=utf-8``)."""
    media = (content_type or b"").split(b";", 1)[0].strip().lower()
    return media == b"application/json" or (media.startswith(b"application/") and media.endswith(b"+json"))


class JsonOnly:
    """Answer 415 to a POST whose Content-Type is missing or not JSON (every POST endpoint takes JSON)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] == "POST":
            content_type = dict(scope.get("headers") or []).get(b"content-type")
            if not is_json(content_type):
                got = content_type.decode("latin-1") if content_type else "none"
                return await send_error(send, 415, f"Content-Type must be application/json, got {got}")
        return await self.app(scope, receive, send)


class BodyLimit:
    """Read the whole body before the app starts; answer 413 when it exceeds ``max_bytes``.

    A declared Content-Length is checked before reading; a chunked upload is counted as it arrives
    and stopped at the limit. The body is then replayed to the app, so a request whose body is still
    arriving is not yet in flight (:class:`InFlightLimit` runs inside this middleware).
    """

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await self._reject(send)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # client went away
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                return await self._reject(send)
            if not message.get("more_body", False):
                break
        body, replayed = b"".join(chunks), False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _reject(self, send) -> None:
        await send_error(send, 413, f"request body larger than {self.max_bytes} bytes")


class InFlightLimit:
    """Answer 503 while ``max_requests`` requests are being handled (queued for or in a forward).

    Connections that have not sent a complete request (head and body) do not count: the connection
    guard (:mod:`carl.serve.protocol`) bounds those with read deadlines and a connection cap.
    """

    def __init__(self, app, max_requests: int):
        self.app = app
        self.max_requests = max_requests
        self.active = 0

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if self.active >= self.max_requests:
            return await send_error(send, 503, f"server busy: {self.max_requests} requests in flight, retry later")
        self.active += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.active -= 1
