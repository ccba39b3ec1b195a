"""The service's middleware on a small ASGI app, in process: 415 for non-JSON POSTs, 413 for large
bodies, 503 over the in-flight limit, and a body still arriving does not count as in flight."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from carl.serve.middleware import BodyLimit, InFlightLimit, JsonOnly, is_json


class Held:
    """An ASGI app that answers ``{"bytes": n}`` once ``release`` is set; counts requests entered."""

    def __init__(self):
        self.release = asyncio.Event()
        self.entered = 0

    async def __call__(self, scope, receive, send):
        size, more = 0, True
        while more:
            message = await receive()
            size += len(message.get("body", b""))
            more = message.get("more_body", False)
        self.entered += 1
        await self.release.wait()
        body = json.dumps({"bytes": size}).encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})


def stack(app, *, max_bytes: int = 100, max_requests: int = 2):
    """The order of ``create_app``: 415, then 413, then 503, then the app."""
    return JsonOnly(BodyLimit(InFlightLimit(app, max_requests=max_requests), max_bytes=max_bytes))


@pytest.mark.parametrize(
    "value, expected",
    [
        (b"application/json", True),
        (b"application/json; charset=utf-8", True),
        (b"Application/JSON", True),
        (b"application/problem+json", True),
        (b"text/plain", False),
        (b"application/jsonx", False),
        (None, False),
    ],
)
def test_is_json(value, expected):
    assert is_json(value) is expected


def test_limits_answer_before_the_app():
    async def main():
        app = Held()
        app.release.set()
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=stack(app)), base_url="http://t") as http:
            wrong = await http.post("/embed", content=b"{}", headers={"content-type": "text/plain"})
            large = await http.post("/embed", json={"texts": ["x" * 200]})
            fine = await http.post("/embed", json={"texts": ["x"]})
        return wrong, large, fine, app.entered

    wrong, large, fine, entered = asyncio.run(main())
    assert wrong.status_code == 415 and "text/plain" in wrong.json()["detail"]
    assert large.status_code == 413 and "100 bytes" in large.json()["detail"]
    assert fine.status_code == 200 and entered == 1


def test_requests_over_the_in_flight_limit_get_503():
    async def main():
        app = Held()
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=stack(app)), base_url="http://t") as http:
            held = [asyncio.ensure_future(http.post("/embed", json={"texts": ["x"]})) for _ in range(2)]
            while app.entered < 2:
                await asyncio.sleep(0.01)
            over = await http.post("/embed", json={"texts": ["x"]})
            app.release.set()
            return over, await asyncio.gather(*held)

    over, held = asyncio.run(main())
    assert over.status_code == 503 and "2 requests in flight" in over.json()["detail"]
    assert [r.status_code for r in held] == [200, 200]


def test_a_body_still_arriving_is_not_in_flight():
    """Two requests whose bodies stall do not take the two in-flight slots of complete requests."""

    async def main():
        app = Held()
        app.release.set()
        wrapped = stack(app)
        never = asyncio.Event()

        async def stalled_receive():
            await never.wait()
            return {"type": "http.disconnect"}

        scope = {
            "type": "http",
            "method": "POST",
            "path": "/embed",
            "headers": [(b"content-type", b"application/json"), (b"content-length", b"10")],
        }

        async def ignore(message):
            pass

        stalled = [asyncio.ensure_future(wrapped(scope, stalled_receive, ignore)) for _ in range(2)]
        await asyncio.sleep(0.05)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=wrapped), base_url="http://t") as http:
            answers = await asyncio.gather(*(http.post("/embed", json={"texts": ["x"]}) for _ in range(2)))
        never.set()
        await asyncio.gather(*stalled)
        return answers

    assert [r.status_code for r in asyncio.run(main())] == [200, 200]
