"""``carl serve``: a real uvicorn process on a loopback port, probed by hand, by a bounded load
test and by schemathesis against its own OpenAPI schema.

The server serves the tiny trained model (conftest ``affect_model``) with small limits (16 texts
per request, 500 characters per text, 4 texts per /explain, 200 kB bodies, 64 requests in flight,
2 s for a request head and 3 s for its body) so that every limit is cheap to hit.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import schemathesis
from conftest import cli_env
from hypothesis import HealthCheck, given, settings

from carl.inference import AffectEncoder
from carl.serve.loadtest import run_load, stall_clients

MAX_TEXTS, MAX_CHARS, MAX_EXPLAIN, MAX_BODY = 16, 500, 4, 200_000
MAX_CONCURRENCY, HEAD_S, BODY_S = 64, 2.0, 3.0
STALLED, STALL_S = 300, 8.0  # stalled sockets held open (reopened when cut) while clients are served
LOAD_REQUESTS, LOAD_CONCURRENCY, LOAD_TIME_LIMIT_S = 800, 16, 45.0
RSS_GROWTH_LIMIT_MB = 40.0  # measured ~3 MB after warm-up on this model
SCHEMA_EXAMPLES = 30  # per operation and mode


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


class Server:
    def __init__(self, process: subprocess.Popen, url: str):
        self.process, self.url = process, url

    def health(self) -> dict:
        return httpx.get(self.url + "/health", timeout=10).json()


@pytest.fixture(scope="module")
def server(affect_model, tmp_path_factory) -> Server:
    port = free_port()
    log = open(tmp_path_factory.mktemp("serve") / "server.log", "w+")  # noqa: SIM115 - closed at teardown
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "carl.cli",
            "serve",
            str(affect_model),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--threads",
            "1",
            "--log-level",
            "warning",
            "--max-texts",
            str(MAX_TEXTS),
            "--max-chars",
            str(MAX_CHARS),
            "--max-explain-texts",
            str(MAX_EXPLAIN),
            "--max-body-bytes",
            str(MAX_BODY),
            "--max-concurrency",
            str(MAX_CONCURRENCY),
            "--timeout-header",
            str(HEAD_S),
            "--timeout-body",
            str(BODY_S),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=cli_env(),
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            if process.poll() is not None:
                log.seek(0)
                pytest.fail(f"server exited with {process.returncode}:\n{log.read()[-3000:]}")
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.time() > deadline:
                pytest.fail("server did not come up within 120 s")
            time.sleep(0.3)
        yield Server(process, url)
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)
        log.close()
    assert process.returncode in (0, -15), f"server ended with {process.returncode}"


@pytest.fixture(scope="module")
def encoder(affect_model) -> AffectEncoder:
    return AffectEncoder.load(str(affect_model))


def test_health_and_openapi_schema(server):
    health = server.health()
    assert health["status"] == "ok" and health["has_heads"] and health["dim"] == 32
    assert health["limits"]["max_texts"] == MAX_TEXTS
    schema = httpx.get(server.url + "/openapi.json", timeout=10).json()
    assert {"/embed", "/predict", "/explain", "/health"} <= set(schema["paths"])
    text = json.dumps(schema)
    assert f'"maxItems": {MAX_TEXTS}' in text and f'"maxLength": {MAX_CHARS}' in text


def test_results_match_the_python_api(server, encoder, synthetic_csv):
    texts = synthetic_csv.heldout_texts[:MAX_TEXTS]
    emb = httpx.post(server.url + "/embed", json={"texts": texts}, timeout=30).json()
    np.testing.assert_allclose(emb["embeddings"], encoder.encode(texts), atol=1e-5)
    unit = httpx.post(server.url + "/embed", json={"texts": texts, "normalize": True}, timeout=30).json()
    np.testing.assert_allclose(np.linalg.norm(unit["embeddings"], axis=1), 1.0, atol=1e-5)
    pred = httpx.post(server.url + "/predict", json={"texts": texts}, timeout=30).json()
    valence, arousal = encoder.predict(texts)
    np.testing.assert_allclose([p["valence"] for p in pred["predictions"]], valence, atol=1e-5)
    np.testing.assert_allclose([p["arousal"] for p in pred["predictions"]], arousal, atol=1e-5)
    assert pred["scale"] == [0.0, 1.0]
    ex = httpx.post(server.url + "/explain", json={"texts": texts[:2]}, timeout=30).json()["explanations"]
    reference = encoder.explain(texts[1])
    assert ex[1]["words"] == reference.words
    np.testing.assert_allclose(ex[1]["valence_scores"], reference.valence_scores, atol=1e-5)


@pytest.mark.parametrize(
    "path, body, status, message",
    [
        ("/embed", b'{"texts": ["unterminated', 400, "malformed JSON"),
        ("/embed", b"", 422, "Field required"),
        ("/embed", {"texts": "not a list"}, 422, "valid list"),
        ("/embed", {"texts": [1, 2]}, 422, "valid string"),
        ("/embed", {"texts": ["ok"], "normalize": "yes"}, 422, "valid boolean"),
        ("/embed", {"texts": []}, 422, "at least 1 item"),
        ("/embed", {}, 422, "Field required"),
        ("/embed", {"texts": ["ok"], "extra": 1}, 422, "Extra inputs"),
        ("/predict", {"texts": ["x"] * (MAX_TEXTS + 1)}, 422, f"at most {MAX_TEXTS} items"),
        ("/predict", {"texts": ["x" * (MAX_CHARS + 1)]}, 422, f"at most {MAX_CHARS} characters"),
        ("/explain", {"texts": ["x"] * (MAX_EXPLAIN + 1)}, 422, f"at most {MAX_EXPLAIN} items"),
        ("/explain", b'{"texts": ["bad \\ud800 surrogate"]}', 422, "unicode"),
        ("/embed", {"texts": ["y" * 400] * 600}, 413, "larger than"),
    ],
)
def test_bad_requests_get_clear_4xx(server, path, body, status, message):
    kwargs = (
        {"content": body, "headers": {"content-type": "application/json"}}
        if isinstance(body, bytes)
        else {"json": body}
    )
    response = httpx.post(server.url + path, timeout=30, **kwargs)
    assert response.status_code == status, response.text[:500]
    assert message.lower() in response.text.lower(), response.text[:500]


def test_streamed_oversized_body_gets_413(server):
    """No Content-Length (chunked upload): the limit is enforced on the bytes received."""

    def chunks():
        yield b'{"texts": ['
        for _ in range(400):
            yield b'"' + b"z" * 1000 + b'",'
        yield b'"end"]}'

    response = httpx.post(
        server.url + "/embed", content=chunks(), headers={"content-type": "application/json"}, timeout=30
    )
    assert response.status_code == 413, response.text[:300]
    assert httpx.get(server.url + "/health", timeout=10).status_code == 200


def test_health_and_schema_show_no_paths(server, affect_model):
    """/health names the model (its folder's name) and, like the OpenAPI schema, shows no path."""
    health = server.health()
    assert health["model"] == affect_model.name
    assert {"status", "dim", "has_heads", "scale"} <= set(health)
    schema = httpx.get(server.url + "/openapi.json", timeout=10).text
    for text in (json.dumps(health), schema):
        assert str(affect_model.parent) not in text, text[:500]


def test_docs_page_is_off_and_the_schema_stays(server):
    """/docs would load its assets from a CDN (broken offline): there is none; /openapi.json stays."""
    for path in ("/docs", "/redoc"):
        assert httpx.get(server.url + path, timeout=10).status_code == 404
    assert httpx.get(server.url + "/openapi.json", timeout=10).status_code == 200


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", None]
)
def test_non_json_content_type_gets_415(server, content_type):
    headers = {"content-type": content_type} if content_type else {}
    for path in ("/embed", "/predict", "/explain"):
        response = httpx.post(server.url + path, content=b'{"texts": ["a calm day"]}', headers=headers, timeout=30)
        assert response.status_code == 415, response.text[:300]
        assert "application/json" in response.json()["detail"]


@pytest.mark.parametrize("content_type", ["application/json; charset=utf-8", "Application/JSON"])
def test_json_content_type_with_parameters_is_accepted(server, content_type):
    response = httpx.post(
        server.url + "/embed", content=b'{"texts": ["a calm day"]}', headers={"content-type": content_type}, timeout=30
    )
    assert response.status_code == 200, response.text[:300]


def test_stalled_sockets_do_not_starve_clients(server, synthetic_csv):
    """300 sockets each send part of a request (half stop inside the headers, half inside the body:
    150 more than the 64 requests allowed in flight) and stall, and are reopened whenever the server
    cuts them; meanwhile /health and /embed answer every request, and every stalled socket is cut
    at its deadline."""
    texts = synthetic_csv.heldout_texts[:4]

    async def scenario():
        stall = asyncio.ensure_future(stall_clients(server.url, sockets=STALLED, duration_s=STALL_S))
        await asyncio.sleep(1.0)  # the stalled sockets are open
        loop = asyncio.get_running_loop()
        statuses: list[tuple[str, int]] = []
        async with httpx.AsyncClient(timeout=30) as http:
            end = loop.time() + STALL_S - 2.0
            while loop.time() < end:
                health, embed = await asyncio.gather(
                    http.get(server.url + "/health"), http.post(server.url + "/embed", json={"texts": texts})
                )
                statuses += [("/health", health.status_code), ("/embed", embed.status_code)]
        return statuses, await stall

    statuses, stalled = asyncio.run(scenario())
    print("\nstalled sockets:", json.dumps(stalled.to_dict()), f"client requests: {len(statuses)}")
    assert len(statuses) >= 20 and all(code == 200 for _, code in statuses), [s for s in statuses if s[1] != 200][:10]
    assert stalled.connect_errors == 0 and stalled.opened >= STALLED
    assert stalled.closed_by_server >= STALLED, stalled  # each cut at least once within 8 s
    assert stalled.answered_408 >= STALLED // 2, stalled
    assert stalled.held_max_s <= BODY_S + 3.0, stalled
    assert server.process.poll() is None


def test_a_model_that_does_not_load_is_one_line_and_exit_2(run_cli, tmp_path):
    """A missing or empty model folder: ``carl serve`` says why on stderr, without a traceback, and
    exits 2 before it listens."""
    empty = tmp_path / "empty"
    empty.mkdir()
    errors = {}
    for folder in (tmp_path / "missing", empty):
        result = run_cli("serve", folder, "--port", str(free_port()), timeout=120)
        assert result.returncode == 2, result.stderr[-2000:]
        assert "Traceback" not in result.stderr and result.stderr.startswith("carl serve: error:"), result.stderr
        errors[folder.name] = result.stderr.strip().splitlines()
    assert len(errors["missing"]) == 1, errors["missing"]


def test_concurrent_requests_are_micro_batched(server, encoder):
    """32 single-text requests sent at once are served in far fewer forward passes, each
    request still getting its own row."""
    texts = [
        f"we were {w} that {d}"
        for w in ("serene", "furious", "tired", "thrilled")
        for d in ("morning", "evening", "week", "day", "afternoon", "meeting", "dinner", "walk")
    ]
    before = server.health()

    async def send_all():
        async with httpx.AsyncClient(timeout=30) as http:
            return await asyncio.gather(*(http.post(server.url + "/embed", json={"texts": [t]}) for t in texts))

    responses = asyncio.run(send_all())
    after = server.health()
    got = np.array([r.json()["embeddings"][0] for r in responses])
    np.testing.assert_allclose(got, encoder.encode(texts), atol=1e-5)
    requests, batches = after["requests"] - before["requests"], after["batches"] - before["batches"]
    assert requests == len(texts)
    assert batches <= len(texts) // 2, f"{requests} requests took {batches} forward passes"
    assert after["largest_batch"] >= 4


def test_bounded_load_no_errors_no_memory_growth(server):
    warm = asyncio.run(run_load(server.url, requests=200, concurrency=LOAD_CONCURRENCY, time_limit_s=30, seed=1))
    assert warm.errors == 0, warm.error_samples
    rss_before = rss_mb(server.process.pid)
    report = asyncio.run(
        run_load(
            server.url, requests=LOAD_REQUESTS, concurrency=LOAD_CONCURRENCY, time_limit_s=LOAD_TIME_LIMIT_S, seed=2
        )
    )
    rss_after = rss_mb(server.process.pid)
    figures = {**report.to_dict(), "rss_before_mb": round(rss_before, 1), "rss_after_mb": round(rss_after, 1)}
    print("\nload test:", json.dumps(figures))
    out = os.environ.get("CARL_LOADTEST_REPORT")
    if out:
        Path(out).write_text(json.dumps(figures, indent=2))
    assert report.requests >= min(LOAD_REQUESTS, 300), f"only {report.requests} requests in {LOAD_TIME_LIMIT_S} s"
    assert report.errors == 0, report.error_samples
    assert rss_after - rss_before < RSS_GROWTH_LIMIT_MB, f"RSS grew {rss_before:.0f} -> {rss_after:.0f} MB"
    assert server.process.poll() is None


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_openapi_schema_conformance(server, mode):
    """Schemathesis generates requests from the server's own OpenAPI schema (valid ones, then
    invalid ones) for every operation: no 5xx, only documented status codes, bodies that match
    the documented schemas, valid data accepted and invalid data rejected."""
    schema = schemathesis.openapi.from_url(server.url + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} == {"/embed", "/predict", "/classify", "/explain", "/health"}
    for operation in operations:
        if mode == "negative" and operation.method.upper() == "GET":
            continue  # /health takes no input to get wrong

        @given(case=operation.as_strategy(generation_mode=schemathesis.GenerationMode(mode)))
        @settings(
            max_examples=SCHEMA_EXAMPLES,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        def check(case):
            case.call_and_validate(base_url=server.url, timeout=30)

        check()
