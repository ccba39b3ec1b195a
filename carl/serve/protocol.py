"""The connection guard: uvicorn's h11 protocol with read deadlines and a cap on open connections.

uvicorn bounds only the idle time between two requests of a kept-alive connection
(``timeout_keep_alive``); a client that opens a connection and then sends its request head or
body slowly, or not at all, holds that connection for as long as it likes (slowloris).
:class:`GuardedH11Protocol` adds, per connection:

* a head deadline: the request line and headers must be complete ``timeout_header_s`` after the
  connection opened (or after the first byte of a later request on a kept-alive connection);
  otherwise the server answers 408 and closes;
* a body deadline: the body must be complete ``timeout_body_s`` after the head; otherwise the
  server answers 408 (if no response has started) and closes, and the app sees a disconnect;
* a cap: a connection that opens while ``max_connections`` are open is closed at once.

Both deadlines are absolute, so a client that trickles a byte at a time does not extend them.
Pass ``guarded_protocol(limits)`` as uvicorn's ``http`` protocol class.
"""

from __future__ import annotations

import asyncio
import json

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from carl.serve.schemas import ServeLimits


def request_timeout(detail: str) -> bytes:
    """A complete HTTP/1.1 408 response that closes the connection, body ``{"detail": detail}``."""
    body = json.dumps({"detail": detail}).encode()
    head = (
        f"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with head and body read deadlines and a connection cap (``limits``)."""

    limits = ServeLimits()  # replaced by guarded_protocol

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._phase: str | None = None  # "head" or "body" while a deadline runs

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:  # this connection is already counted
            self.logger.warning(
                "Closed a new connection: %d connections are open (max_connections).", len(self.connections) - 1
            )
            transport.close()
            return
        self._arm("head")

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._phase is None and self.conn.their_state is h11.IDLE:
            self._arm("head")  # the first byte of a new request on a kept-alive connection
        super().data_received(data)

    def handle_events(self) -> None:
        super().handle_events()
        state = self.conn.their_state
        if state is h11.SEND_BODY:
            if self._phase != "body":
                self._arm("body")
        elif state is not h11.IDLE:  # the request is complete (DONE), or the connection failed or closes
            self._disarm()

    def _arm(self, phase: str) -> None:
        self._disarm()
        seconds = self.limits.timeout_header_s if phase == "head" else self.limits.timeout_body_s
        self._phase = phase
        self._deadline = self.loop.call_later(seconds, self._expire)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline, self._phase = None, None

    def _expire(self) -> None:
        phase, self._deadline, self._phase = self._phase, None, None
        if self.transport.is_closing():
            return
        seconds = self.limits.timeout_header_s if phase == "head" else self.limits.timeout_body_s
        what = "request head (line and headers)" if phase == "head" else "request body"
        client = "{}:{} - ".format(*self.client) if self.client else ""
        self.logger.info("%sClosed a connection: %s not received within %g s.", client, what, seconds)
        if phase == "head" or self.cycle is None or not self.cycle.response_started:
            self.transport.write(request_timeout(f"{what} not received within {seconds:g} s"))
        self.transport.close()


def guarded_protocol(limits: ServeLimits) -> type[GuardedH11Protocol]:
    """The protocol class to pass as ``uvicorn.Config(http=...)`` to enforce ``limits``."""
    return type("GuardedH11Protocol", (GuardedH11Protocol,), {"limits": limits})
