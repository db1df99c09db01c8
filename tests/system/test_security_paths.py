"""One path for every request, and worker ports that serve only their supervisor: attacked on
real ``voicegate serve`` nodes (one process, and a supervisor with two workers).

- A path that reads two ways (an encoded slash, a dot segment, a NUL, an empty segment) is
  refused with a 400 JSON answer by whichever process routes it first: ``POST /api%2Foffer``
  (which used to skip the offer rate limit and the session cap) and ``/x/..%2Fmetrics`` (which
  used to reach a worker's metrics past ``--metrics-port``) included; ``/static/app.js%00.png``
  is never a 500.
- A worker's loopback port refuses every request without the supervisor's per-start key (403
  JSON): an offer sent there directly, with a valid token, is refused.
- A worker's environment (``/proc/PID/environ``) holds none of the node's secrets: the
  supervisor hands them over on the worker's stdin.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.cluster import SECRET, free_port, serve_node, token
from voicegate.signaling import pages
from voicegate.signaling.paths import path_problem

pytestmark = [pytest.mark.timeout(180)]

TURN_SECRET = "paths-test-turn-secret-77Qa"
TWO_WAY_PATHS = [
    ("POST", "/api%2Foffer"),
    ("POST", "/api%2foffer"),
    ("GET", "/x/..%2Fmetrics"),
    ("GET", "/x/../metrics"),
    ("GET", "/%2e%2e/metrics"),
    ("GET", "/api/./ice-servers"),
    ("GET", "//api/ice-servers"),
    ("GET", "/static/app.js%00.png"),
    ("GET", "/static/..%5Cindex.html"),
]


async def raw_request(url: str, method: str, path: str, headers: str = "") -> tuple[int, Any]:
    """A request with ``path`` exactly as given (HTTP clients normalise paths themselves)."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(
            f"{method} {path} HTTP/1.1\r\nHost: {host}\r\n{headers}"
            "Content-Length: 0\r\nConnection: close\r\n\r\n".encode()
        )
        await writer.drain()
        answer = await reader.read()
    finally:
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body) if body.startswith(b"{") else body


def test_path_problem_accepts_plain_paths() -> None:
    for path in ("/", "/api/offer", "/static/vendor/app.js", "/api/sessions/abc-123", "/x/"):
        assert path_problem(path, path) is None, path
    assert path_problem("/api/offer?x=%2F", "/api/offer") is None  # the query is not the path
    assert path_problem("/api%2Foffer", "/api/offer") is not None


def test_static_lookup_of_an_invalid_name_is_no_file(tmp_path: Path) -> None:
    (tmp_path / "app.js").write_text("x")
    assert pages._locate(str(tmp_path), "app.js\x00.png") is None
    assert pages._locate(str(tmp_path), "a" * 5000) is None
    assert pages._locate(str(tmp_path), "app.js") == (tmp_path / "app.js").resolve()


@pytest.mark.parametrize("workers", ["1", "2"])
async def test_paths_that_read_two_ways_are_refused(tmp_path: Path, workers: str) -> None:
    args = ("--workers", workers, "--backend", "echo", "--port", "0")
    metrics_port = str(free_port())
    async with serve_node(tmp_path, *args, "--metrics-port", metrics_port) as node:
        auth = f"Authorization: Bearer {token()}\r\n"
        async with asyncio.timeout(60):
            for method, path in TWO_WAY_PATHS:
                status, body = await raw_request(node.url, method, path, auth)
                assert status == 400, (path, status, body)
                assert "invalid request path" in body["error"], (path, body)
            # The plain spellings still work: metrics elsewhere, the page's files served.
            status, _ = await raw_request(node.url, "GET", "/metrics")
            assert status == 404
            status, _ = await raw_request(node.url, "GET", "/static/app.js")
            assert status == 200
        assert "Traceback" not in node.log.read_text()


def _worker_urls(log: Path) -> list[str]:
    urls = []
    for line in log.read_text().splitlines():
        if '"worker_started"' in line:
            urls.append(json.loads(line)["url"])
    return urls


async def test_worker_ports_serve_only_the_supervisor(tmp_path: Path) -> None:
    turn_file = tmp_path / "turn-secret"
    turn_file.write_text(TURN_SECRET)
    args = ("--workers", "2", "--backend", "echo", "--port", "0")
    extra = ("--turn-url", "turn:127.0.0.1:3478", "--turn-secret-file", str(turn_file))
    async with serve_node(tmp_path, *args, *extra) as node:
        urls = _worker_urls(node.log)
        assert len(urls) == 2, node.log.read_text()[-2000:]
        assert all(re.fullmatch(r"http://127\.0\.0\.1:\d+", u) for u in urls), urls
        headers = {"Authorization": f"Bearer {token()}"}
        async with aiohttp.ClientSession() as http:
            for url in urls:
                for method, path in (("POST", "/api/offer"), ("GET", "/healthz")):
                    forged = {**headers, "X-Voicegate-Worker-Key": "guess"}
                    for sent in (headers, forged):
                        async with http.request(
                            method, url + path, json={"sdp": "v=0", "type": "offer"}, headers=sent
                        ) as resp:
                            assert resp.status == 403, (url, path, resp.status)
                            assert "supervisor" in (await resp.json())["error"]
            # Through the supervisor the same workers answer.
            async with http.get(node.url + "/api/ice-servers", headers=headers) as resp:
                assert resp.status == 200
                assert resp.headers.get("X-Voicegate-Worker-Key") is None
        health = await node.json("/healthz")
        for worker in health["workers"]:
            environ = await asyncio.to_thread(Path(f"/proc/{worker['pid']}/environ").read_bytes)
            assert SECRET.encode() not in environ
            assert TURN_SECRET.encode() not in environ
            assert b"VOICEGATE_AUTH_SECRET=" not in environ
            assert b"VOICEGATE_WORKER_INDEX=" in environ  # it is the worker's environment
