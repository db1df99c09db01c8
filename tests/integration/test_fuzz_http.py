"""Hypothesis fuzzing of every HTTP route: odd methods, paths (huge, dotted, encoded), headers,
bodies and JSON shapes, and bearer tokens. Whatever arrives: no 5xx, JSON errors on the API,
the server keeps serving, and a live call on the same server keeps receiving audio throughout.

The server runs on its own event loop in a thread so that Hypothesis (synchronous) can drive it
with raw HTTP/1.1 over a socket: that lets requests be malformed in ways no HTTP client library
would send.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.server import running_server
from voicegate.backends.echo import EchoBackend
from voicegate.signaling import auth
from voicegate.signaling.app import SESSIONS
from voicegate.testing.client import CallClient

T = TypeVar("T")
# The server thread uses `random` (aioice, uuid) while Hypothesis generates; Hypothesis takes that
# for strategy code touching global randomness. It is not: the strategies here never do.
pytestmark = pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning")
SECRET = "fuzz-secret-0123456789abcdef"
REQUEST_TIMEOUT = 10.0
FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    derandomize=True,  # the same inputs every run: a failure here is reproducible, not flaky
)


class ServerThread:
    """A voicegate server (and a live call into it) on an event loop in a background thread."""

    def __init__(self, **overrides: Any) -> None:
        self.overrides = overrides
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self.app: Any = None
        self.client: CallClient | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="fuzz-server", daemon=True)

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._serve())
        # aiortc leaves its connect task running after close() while ICE checks are pending.
        leftover = asyncio.all_tasks(self.loop)
        for task in leftover:
            task.cancel()
        if leftover:
            self.loop.run_until_complete(asyncio.gather(*leftover, return_exceptions=True))
        self.loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        try:
            async with running_server(EchoBackend(), **self.overrides) as (url, app):
                self.port = int(url.rsplit(":", 1)[1])
                self.app = app
                self.url = url
                self._ready.set()
                await self._stop.wait()
                if self.client is not None:
                    await self.client.close()
        except BaseException as exc:
            self._error = exc
            self._ready.set()

    def __enter__(self) -> ServerThread:
        self._thread.start()
        assert self._ready.wait(30), "fuzz server did not start"
        if self._error is not None:
            raise self._error
        return self

    def __exit__(self, *exc: object) -> None:
        stop = self._stop
        assert stop is not None
        self.loop.call_soon_threadsafe(stop.set)
        self._thread.join(30)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start_call(self, token: str | None = None) -> CallClient:
        async def call() -> CallClient:
            client = CallClient(self.url, token=token)
            async with asyncio.timeout(20):
                await client.connect()
                await client.wait_for("bot-ready", 10)
                await client.wait_frames(10, 5)
            return client

        self.client = self.run(call())
        return self.client

    def real_offer(self) -> str:
        async def offer() -> str:
            client = CallClient(self.url)
            client.pc.addTrack(client.mic)
            await client.pc.setLocalDescription(await client.pc.createOffer())
            sdp: str = client.pc.localDescription.sdp
            await client.close()
            return sdp

        return self.run(offer())

    def assert_call_alive(self) -> None:
        client = self.client
        assert client is not None
        self.run(client.wait_frames(25, 5))  # still ~50 frames/s
        assert client.pc.connectionState == "connected"
        assert client.pc_id in self.app[SESSIONS]
        assert not client.of_type("error")

    def request(self, raw: bytes) -> tuple[int | None, dict[str, str], bytes]:
        """Send raw bytes, read until the server closes: (status or None, headers, body)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=REQUEST_TIMEOUT) as s:
            # The server may refuse early (e.g. 413) and close while we are still writing.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                s.sendall(raw)
            chunks = []
            deadline = time.monotonic() + REQUEST_TIMEOUT
            while time.monotonic() < deadline:
                try:
                    data = s.recv(65536)
                except ConnectionResetError:
                    break
                if not data:
                    break
                chunks.append(data)
            else:
                raise AssertionError("the server neither answered nor closed the connection")
        response = b"".join(chunks)
        if not response:
            return None, {}, b""
        head, _, body = response.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        return status, headers, body


def http_request(
    method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if body or method in ("POST", "PATCH", "PUT"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape") + body


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    # Random offers may be valid SDP; they must not fill the call limit (a fair 503) nor trip
    # the rate limit or the bound on calls still connecting (fair 429/503), so those are out
    # of the way. The idle timeout is off: the live call is silent on purpose.
    with ServerThread(
        max_sessions=10000,
        offer_rate=0,
        idle_timeout=0,
        max_pending_offers=0,
        max_pending_per_subject=0,
    ) as srv:
        srv.start_call()
        yield srv
        srv.assert_call_alive()


@pytest.fixture(scope="module")
def auth_server() -> Iterator[ServerThread]:
    with ServerThread(auth_secret=SECRET, offer_rate=0, idle_timeout=0) as srv:
        srv.start_call(token=auth.mint(SECRET, 600))
        yield srv
        srv.assert_call_alive()


ROUTES = [
    "/",
    "/healthz",
    "/readyz",
    "/metrics",
    "/api/ice-servers",
    "/api/offer",
    "/api/sessions/pc-x",
    "/static/app.js",
    "/static/style.css",
]
METHODS = ["GET", "POST", "PATCH", "DELETE", "PUT", "HEAD", "OPTIONS", "TRACE", "PROPFIND"]
PATH_CHARS = st.sampled_from(list("abcXYZ019-._~/%?#&=+;:@!$'()*,[]") + ["..", "%2e%2e", "%00"])
paths = st.one_of(
    st.sampled_from(ROUTES),
    st.builds(
        lambda base, tail: base + tail,
        st.sampled_from([*ROUTES, "/static/", "/api/sessions/", "/api/", "//"]),
        st.lists(PATH_CHARS, max_size=40).map("".join),
    ),
    st.integers(1000, 20000).map(lambda n: "/api/sessions/" + "a" * n),  # huge paths
    st.text(st.characters(codec="utf-8", exclude_categories=["Cc", "Cs", "Zs", "Zl", "Zp"]))
    .filter(lambda t: "\x85" not in t)
    .map(lambda t: "/" + t),
)
header_names = st.sampled_from(
    [
        "Content-Type",
        "Authorization",
        "Origin",
        "Accept",
        "X-Forwarded-For",
        "Access-Control-Request-Method",
        "Range",
        "If-Modified-Since",
        "Transfer-Encoding",
        "Expect",
        "X-Anything",
    ]
)
header_values = st.one_of(
    st.sampled_from(
        ["application/json", "text/plain", "Bearer x", "null", "chunked", "100-continue", "*"]
    ),
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=200),  # printable ASCII
)
json_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=50))
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5)
    ),
    max_leaves=20,
)


def _check(
    status: int | None, headers: dict[str, str], body: bytes, method: str, api: bool
) -> None:
    assert status is not None, "the server closed the connection without answering"
    assert status < 500, (status, body[:300])
    if api and status >= 400 and method != "HEAD":
        assert headers.get("content-type", "").startswith("application/json"), (status, body)
        assert isinstance(json.loads(body)["error"], str)


@FUZZ
@given(
    method=st.sampled_from(METHODS),
    path=paths,
    headers=st.dictionaries(header_names, header_values, max_size=4),
    body=st.binary(max_size=2000),
)
def test_any_method_path_headers_and_body(
    server: ServerThread, method: str, path: str, headers: dict[str, str], body: bytes
) -> None:
    if headers.get("Transfer-Encoding") is not None or headers.get("Expect") is not None:
        # Framing headers that contradict Content-Length make the request itself malformed:
        # the HTTP parser answers 400 (or closes) before any route sees it; that is fine.
        status, _, _ = server.request(http_request(method, path, body, headers))
        assert status is None or status < 500
        return
    status, rheaders, rbody = server.request(http_request(method, path, body, headers))
    if status is None:
        return  # e.g. a request line over the parser's limit: the connection is dropped
    assert status < 500, (method, path[:100], status, rbody[:300])


@FUZZ
@given(
    body=st.one_of(
        json_values,
        st.fixed_dictionaries(
            {},
            optional={
                "sdp": st.one_of(
                    json_values,
                    st.lists(
                        st.sampled_from(
                            [
                                "v=0",
                                "o=- 1 1 IN IP4 127.0.0.1",
                                "s=-",
                                "t=0 0",
                                "m=audio 9 UDP/TLS/RTP/SAVPF 111",
                                "c=IN IP4 0.0.0.0",
                                "a=rtpmap:111 opus/48000/2",
                                "a=mid:0",
                                "a=fingerprint:sha-256 00:11",
                                "a=ice-ufrag:x",
                                "a=ice-pwd:y",
                                "a=setup:actpass",
                                "m=application 9 UDP/DTLS/SCTP webrtc-datachannel",
                                "a=candidate:1 1 udp 1 127.0.0.1 9 typ host",
                                "garbage",
                            ]
                        ),
                        max_size=16,
                    ).map(lambda lines: "\r\n".join(["v=0", *lines]) + "\r\n"),
                ),
                "type": st.one_of(st.just("offer"), json_values),
                "pc_id": st.one_of(st.text(max_size=200), json_values),
                "restart_pc": st.one_of(st.booleans(), json_values),
                "candidates": st.one_of(
                    json_values,
                    st.lists(
                        st.fixed_dictionaries(
                            {},
                            optional={
                                "candidate": st.one_of(
                                    st.text(max_size=100),
                                    st.just("candidate:1 1 udp 2122260223 127.0.0.1 1 typ host"),
                                ),
                                "sdp_mid": json_values,
                                "sdpMid": json_values,
                                "sdp_mline_index": json_values,
                                "sdpMLineIndex": json_values,
                            },
                        ),
                        max_size=70,
                    ),
                ),
            },
        ),
    ),
    method=st.sampled_from(["POST", "PATCH"]),
)
def test_json_shapes_on_the_offer_routes(server: ServerThread, body: Any, method: str) -> None:
    raw = json.dumps(body).encode()
    status, headers, rbody = server.request(
        http_request(method, "/api/offer", raw, {"Content-Type": "application/json"})
    )
    _check(status, headers, rbody, method, api=True)


@settings(FUZZ, max_examples=60)
@given(data=st.data())
def test_mutated_real_offers(server: ServerThread, data: st.DataObject) -> None:
    """A real offer with lines dropped, repeated or corrupted: some are still usable (a call
    starts and later fails ICE on its own), the rest get a 400; none may hurt the server."""
    if not hasattr(server, "offer_lines"):
        server.offer_lines = server.real_offer().splitlines()  # type: ignore[attr-defined]
    lines: list[str] = list(server.offer_lines)  # type: ignore[attr-defined]
    for _ in range(data.draw(st.integers(0, 4))):
        i = data.draw(st.integers(0, len(lines) - 1))
        action = data.draw(st.sampled_from(["drop", "repeat", "corrupt", "truncate"]))
        if action == "drop":
            del lines[i]
        elif action == "repeat":
            lines.insert(i, lines[i])
        elif action == "corrupt":
            pos = data.draw(st.integers(0, max(0, len(lines[i]) - 1)))
            char = data.draw(st.characters(min_codepoint=0x20, max_codepoint=0x7E))
            lines[i] = lines[i][:pos] + char + lines[i][pos + 1 :]
        else:
            lines[i] = lines[i][: data.draw(st.integers(0, len(lines[i])))]
        if not lines:
            break
    body = json.dumps({"sdp": "\r\n".join(lines) + "\r\n", "type": "offer"}).encode()
    status, headers, rbody = server.request(
        http_request("POST", "/api/offer", body, {"Content-Type": "application/json"})
    )
    _check(status, headers, rbody, "POST", api=True)
    assert status in (200, 400), (status, rbody[:300])


def _token_variants() -> st.SearchStrategy[str]:
    good = auth.mint(SECRET, 600)
    expired = auth.mint(SECRET, 60, now=time.time() - 3600)
    other = auth.mint("other-secret-0123456789abcdef", 600)

    def mutate(token: str, index: int, char: str) -> str:
        i = index % len(token)
        return token[:i] + char + token[i + 1 :]

    printable = st.characters(min_codepoint=0x21, max_codepoint=0x7E)
    return st.one_of(
        st.text(printable, max_size=300),
        st.sampled_from([expired, other, good + "x", good[:-1], "vg1..", "vg1.e30.", good * 2]),
        st.builds(mutate, st.just(good), st.integers(0, 10_000), printable).filter(
            lambda t: t != good
        ),
        st.builds(
            lambda a, b, c: f"{a}.{b}.{c}",
            st.sampled_from(["vg1", "vg0", ""]),
            st.text(printable, max_size=80),
            st.text(printable, max_size=60),
        ),
    )


@FUZZ
@given(
    token=_token_variants(),
    scheme=st.sampled_from(["Bearer ", "bearer ", "Basic ", "", "Bearer  "]),
    route=st.sampled_from(
        [
            ("POST", "/api/offer"),
            ("PATCH", "/api/offer"),
            ("GET", "/api/ice-servers"),
            ("DELETE", "/api/sessions/pc-1"),
        ]
    ),
)
def test_tokens_are_refused_cleanly(
    auth_server: ServerThread, token: str, scheme: str, route: tuple[str, str]
) -> None:
    method, path = route
    headers = {"Authorization": scheme + token, "Content-Type": "application/json"}
    status, rheaders, rbody = auth_server.request(
        http_request(method, path, b'{"sdp": "v=0\\r\\n", "type": "offer"}', headers)
    )
    _check(status, rheaders, rbody, method, api=True)
    assert status == 401, (status, rbody[:200])
    assert json.loads(rbody)["reason"] in ("missing", "malformed", "forged", "expired")


def test_the_servers_survived(server: ServerThread, auth_server: ServerThread) -> None:
    """After everything above, both still answer and their live calls are still up."""
    print("calls created by fuzzed offers:", len(server.app[SESSIONS]) - 1)
    for srv in (server, auth_server):
        status, _, body = srv.request(http_request("GET", "/healthz"))
        assert status == 200 and json.loads(body)["status"] == "ok"
        srv.assert_call_alive()
