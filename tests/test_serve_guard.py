"""The connection guard (``carl.serve.protocol``) on a real uvicorn server in this process, serving a
small echo app with short deadlines: stalled and trickled requests are cut at their deadline,
requests that arrive in time (also on a kept-alive connection) are served, and connections over
the cap are closed at once."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest
import uvicorn

from carl.serve.protocol import guarded_protocol
from carl.serve.schemas import ServeLimits

HEAD_S, BODY_S, MAX_CONNECTIONS = 0.6, 0.9, 8
SLACK_S = 2.0  # the machine is shared: deadlines may fire late, never early


async def echo(scope, receive, send):
    """Reads the whole body and answers ``{"bytes": n}``."""
    if scope["type"] != "http":
        return
    size, more = 0, True
    while more:
        message = await receive()
        if message["type"] != "http.request":
            return
        size += len(message.get("body", b""))
        more = message.get("more_body", False)
    body = json.dumps({"bytes": size}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


@pytest.fixture(scope="module")
def address():
    limits = ServeLimits(timeout_header_s=HEAD_S, timeout_body_s=BODY_S, max_connections=MAX_CONNECTIONS)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(
            echo,
            host="127.0.0.1",
            port=port,
            http=guarded_protocol(limits),
            lifespan="off",
            log_level="warning",
            timeout_keep_alive=5,
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started:
        assert time.time() < deadline and thread.is_alive(), "server did not start"
        time.sleep(0.05)
    yield "127.0.0.1", port
    server.should_exit = True
    thread.join(timeout=10)


def request(path: str = "/", body: bytes = b"") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def read_response(sock: socket.socket) -> bytes:
    """One response with a Content-Length body (or everything until the server closes)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
    )
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def read_until_closed(sock: socket.socket, limit_s: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes, and the seconds that took."""
    sock.settimeout(limit_s)
    started, data = time.perf_counter(), b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return data, time.perf_counter() - started
        data += chunk


@pytest.mark.parametrize("sent", [b"", b"POST / HTTP/1.1\r\nHost: x\r\n"], ids=["nothing", "part-of-head"])
def test_stalled_head_gets_408_at_the_deadline(address, sent):
    with socket.create_connection(address) as sock:
        sock.sendall(sent)
        data, took = read_until_closed(sock, HEAD_S + SLACK_S)
    assert data.startswith(b"HTTP/1.1 408"), data
    assert b"request head" in data and HEAD_S * 0.9 <= took <= HEAD_S + SLACK_S, took


def test_trickled_head_does_not_extend_the_deadline(address):
    """One byte every 0.1 s keeps data flowing, but the head deadline is absolute."""
    head = request()
    with socket.create_connection(address) as sock:
        sock.settimeout(HEAD_S + SLACK_S)
        started = time.perf_counter()
        try:
            for byte in head[:-1]:
                sock.sendall(bytes([byte]))
                time.sleep(0.1)
        except OSError:  # the server closed while we were still sending
            pass
        data, _ = read_until_closed(sock, HEAD_S + SLACK_S)
        took = time.perf_counter() - started
    assert data.startswith(b"HTTP/1.1 408"), data
    assert took <= HEAD_S + SLACK_S, took


def test_stalled_body_gets_408_at_the_deadline(address):
    with socket.create_connection(address) as sock:
        sock.sendall(request(body=b"x" * 100)[:-60])
        data, took = read_until_closed(sock, BODY_S + SLACK_S)
    assert data.startswith(b"HTTP/1.1 408") and b"request body" in data, data
    assert BODY_S * 0.9 <= took <= BODY_S + SLACK_S, took


def test_requests_in_time_are_served_also_after_a_keep_alive_pause(address):
    """A head sent in two parts within the deadline is served; on the same connection, a second
    request after a pause longer than the head deadline is served too (its deadline starts at its
    first byte, and the idle pause is uvicorn's keep-alive time)."""
    with socket.create_connection(address) as sock:
        sock.settimeout(10)
        first = request(body=b"[1, 2, 3]")
        sock.sendall(first[:10])
        time.sleep(HEAD_S / 3)
        sock.sendall(first[10:])
        assert read_response(sock).endswith(b'{"bytes": 9}')
        time.sleep(HEAD_S * 2)
        sock.sendall(request(body=b"{}"))
        assert read_response(sock).endswith(b'{"bytes": 2}')


def test_connections_over_the_cap_are_closed_at_once(address):
    held = [socket.create_connection(address) for _ in range(MAX_CONNECTIONS)]
    try:
        time.sleep(0.2)  # let the server register them
        with socket.create_connection(address) as extra:
            data, took = read_until_closed(extra, SLACK_S)
        assert data == b"" and took < HEAD_S, (data, took)
    finally:
        for sock in held:
            sock.close()
    time.sleep(0.3)
    with socket.create_connection(address) as sock:
        sock.settimeout(10)
        sock.sendall(request(body=b"{}"))
        assert read_response(sock).startswith(b"HTTP/1.1 200")
