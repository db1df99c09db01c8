"""The production coturn config, attacked: turn/turnserver.conf run by a real coturn.

coturn runs inside a network namespace of the test's own with addresses a deployment has: a
public relay address (v4 and v6; nothing sent there can leave the namespace) and voicegate on a
private address beside it. The config file is the shipped one with only its CHANGE values
(realm, secret, certificate) and the listening/relay addresses filled in.

What a browser's TURN credential must not do, each asked of coturn directly with a tiny TURN
client (tests/turn_client.py) so the exact refusal is checked: relay to voicegate's own address,
to loopback, private, link-local and other internal ranges, v4 or v6, including IPv4 hidden in
IPv6 (v4-mapped, NAT64, 6to4, Teredo); open a TCP relay (RFC 6062) or Connect; exceed the
bandwidth cap (checked to be bytes, not bits, per second); exceed the per-user allocation quota
with voicegate's own credentials. What it must still do: a relay-only call of the headless
aiortc caller to voicegate through it, and an allocation over TLS.

Needs root (network namespaces), iproute2, coturn and trustme: missing in CI fails, elsewhere
skips.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import re
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.components import missing
from tests.support.coturn import PROD_CONF, prod_config, require_coturn, running_coturn
from tests.support.netns import exec_in, namespace, socket_in
from tests.support.turn_client import IPV4, IPV6, TCP, Attr, Method, TurnClient
from voicegate.signaling import auth
from voicegate.signaling.turn import TurnConfig, mint

pytestmark = [pytest.mark.timeout(240)]

SECRET = "prod-conf-turn-secret-8Wq2"
AUTH_SECRET = "prod-conf-auth-secret-0123456789"
REALM = "turn.voicegate.test"
# Inside the test's own namespace only. Any globally routable address would do for the relay's
# "public" side; these two are outside every denied range (3fff::/20 is IPv6 documentation
# space, deliberately not denied; 11.0.0.0/8 is routable but reaches nothing from here).
PUBLIC4, PUBLIC6 = "11.199.0.1", "3fff:0:199::1"
VOICEGATE = "10.199.1.2"  # voicegate's private address beside the relay
VOICEGATE_PORT = 8080
PORT, TLS_PORT = 3478, 5349  # the shipped ports: every port is free in a fresh namespace
QUOTA = 12
CAP_BPS = 16000

# Peer -> coturn's answer to CreatePermission (None: granted).
V4_PEERS: dict[str, int | None] = {
    PUBLIC4: None,  # the relay's own address: relay-to-relay, how voicegate is reached
    "11.1.2.3": None,  # anyone on the internet
    VOICEGATE: 403,
    "127.0.0.1": 403,
    "127.255.255.254": 403,
    "0.0.0.0": 403,
    "10.0.0.1": 403,
    "172.16.0.1": 403,
    "172.31.255.255": 403,
    "192.168.1.1": 403,
    "100.64.0.1": 403,
    "169.254.169.254": 403,  # cloud metadata
    "192.0.0.8": 403,
    "198.18.0.1": 403,
    "224.0.0.1": 403,
    "255.255.255.255": 403,
}
V6_PEERS: dict[str, int | None] = {
    PUBLIC6: None,
    "2a00:1450::1": None,
    "::1": 403,
    "::": 403,
    "::ffff:127.0.0.1": 403,  # IPv4-mapped: the IPv4 ranges, again
    "::ffff:10.199.1.2": 403,
    "::ffff:11.1.2.3": 403,
    "::ffff:0:7f00:1": 403,  # IPv4-translated
    "64:ff9b::7f00:1": 403,  # NAT64
    "64:ff9b:1::a00:1": 403,
    "2002:7f00:1::1": 403,  # 6to4
    "2002:a00:1::1": 403,
    "2001:0:4136:e378::1": 403,  # Teredo
    "2001:db8::1": 403,
    "100::1": 403,
    "fc00::1": 403,
    "fd12:3456::1": 403,
    "fe80::1": 403,
    "febf:ffff::1": 403,
    "fec0::1": 403,
    "ff02::1": 403,
}


@dataclass(frozen=True)
class Relay:
    ns: str
    workdir: Path
    ca: Path
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def client(self, username: str, password: str, *, tcp: bool = False) -> TurnClient:
        kind = socket.SOCK_STREAM if tcp else socket.SOCK_DGRAM
        sock = socket_in(self.ns, socket.AF_INET, kind)
        return TurnClient((PUBLIC4, PORT), username, password, tcp=tcp, sock=sock)


def _certificate(workdir: Path) -> tuple[Path, Path, Path]:
    try:
        import trustme
    except ImportError:
        missing("trustme is not installed (pip install voicegate[standin])")
    ca = trustme.CA(organization_name="voicegate TURN test CA")
    leaf = ca.issue_cert(REALM, PUBLIC4)
    paths = workdir / "ca.pem", workdir / "cert.pem", workdir / "key.pem"
    ca.cert_pem.write_to_path(str(paths[0]))
    paths[1].write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(paths[2]))
    return paths


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Relay]:
    require_coturn()
    workdir = tmp_path_factory.mktemp("turnprod")
    ca, cert, key = _certificate(workdir)
    setup = [
        "link set lo up",
        f"addr add {PUBLIC4}/32 dev lo",
        f"addr add {PUBLIC6}/128 dev lo",
        f"addr add {VOICEGATE}/32 dev lo",
    ]
    with namespace("vgturn", setup) as ns:
        text = prod_config(
            SECRET,
            realm=REALM,
            listen_ips=(PUBLIC4, PUBLIC6),
            relay_ips=(PUBLIC4, PUBLIC6),
            cert=cert,
            pkey=key,
        )
        with running_coturn(
            workdir,
            SECRET,
            listen_ips=(PUBLIC4,),
            prefix=exec_in(ns),
            make_socket=lambda: socket_in(ns),
            config=(text, PORT),
        ) as coturn:
            yield Relay(ns, workdir, ca, coturn.log_path)


def test_config_values_carry_no_comments() -> None:
    """coturn keeps a trailing "# ..." as part of the value (a realm or secret with a comment
    in it), so comments stand on their own lines."""
    for number, line in enumerate(PROD_CONF.read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        assert "#" not in line and line == line.strip(), f"line {number}: {line!r}"
        assert '"' not in line, f"line {number}: coturn keeps quotes too: {line!r}"
    settings = [ln for ln in PROD_CONF.read_text().splitlines() if ln and not ln.startswith("#")]
    assert "no-tcp-relay" in settings
    assert f"max-bps={CAP_BPS}" in settings
    assert f"user-quota={QUOTA}" in settings
    assert not [ln for ln in settings if ln.startswith("allowed-peer-ip")]
    # coturn reads an all-zero bound as "any" (see the config's own comment): never list one.
    for line in settings:
        if line.startswith("denied-peer-ip="):
            low = line.split("=", 1)[1].split("-")[0]
            assert low not in ("::", "0::", "::0", "0:0:0:0:0:0:0:0"), line


async def _permissions(relay: Relay, family: int, peers: dict[str, int | None]) -> dict[str, Any]:
    username, password = mint(SECRET, "prober", 600)
    async with relay.client(username, password) as turn:
        allocated = await turn.allocate(family=family)
        assert allocated.error is None, allocated.attrs
        relayed = allocated.address(Attr.XOR_RELAYED_ADDRESS)[0]
        assert relayed == (PUBLIC6 if family == IPV6 else PUBLIC4)
        return {peer: await turn.permit(peer) for peer in peers}


async def test_relay_refuses_internal_peers_v4(relay: Relay) -> None:
    async with asyncio.timeout(60):
        answers = await _permissions(relay, IPV4, V4_PEERS)
    assert answers == V4_PEERS
    # The 403s are the denied ranges (or coturn's own loopback rule), not some other failure.
    assert f"A peer IP {VOICEGATE} denied in the range" in relay.log()


async def test_relay_refuses_internal_peers_v6(relay: Relay) -> None:
    """IPv6 allocations, and IPv4 ranges reached through IPv6 address forms."""
    async with asyncio.timeout(60):
        answers = await _permissions(relay, IPV6, V6_PEERS)
    assert answers == V6_PEERS
    assert "A peer IP ::ffff:127.0.0.1 denied in the range" in relay.log()


async def test_tcp_relay_and_connect_are_refused(relay: Relay) -> None:
    """RFC 6062: no TCP allocation (442), and Connect on the allocation there is fails (403):
    so no credential can open a TCP connection from the relay host, to voicegate's HTTP port or
    anywhere else."""
    username, password = mint(SECRET, "tcp-prober", 600)
    async with asyncio.timeout(30):
        async with relay.client(username, password, tcp=True) as turn:
            tcp_relay = await turn.allocate(transport=TCP)
            assert tcp_relay.error == 442, tcp_relay.attrs
        async with relay.client(username, password, tcp=True) as turn:
            assert (await turn.allocate()).error is None  # UDP relay over a TCP control link
            connect = await turn.request(Method.CONNECT, peer_at=(VOICEGATE, VOICEGATE_PORT))
            assert connect.error == 403, connect.attrs
            connect = await turn.request(Method.CONNECT, peer_at=(PUBLIC4, VOICEGATE_PORT))
            assert connect.error == 403, connect.attrs


async def test_allocation_over_tls(relay: Relay) -> None:
    """turns: works with the shipped TLS settings: TLS 1.2 or newer, an AEAD cipher."""
    username, password = mint(SECRET, "tls-prober", 600)
    context = ssl.create_default_context(cafile=str(relay.ca))
    sock = socket_in(relay.ns, socket.AF_INET, socket.SOCK_STREAM)
    turn = TurnClient(
        (PUBLIC4, TLS_PORT), username, password, tls=context, server_hostname=REALM, sock=sock
    )
    async with asyncio.timeout(30), turn:
        assert (await turn.allocate()).error is None
    assert turn.tls_version in ("TLSv1.2", "TLSv1.3"), turn.tls_version
    assert turn.tls_cipher is not None and re.search(r"GCM|CHACHA20", turn.tls_cipher)


async def _relay_through(
    sender: TurnClient, receiver: TurnClient, target: tuple[str, int], rate: int, total: int
) -> tuple[int, float]:
    """Sends ``total`` bytes (1000-byte datagrams) at ``rate`` B/s from one allocation to the
    other; the bytes that arrived and the seconds the sending took."""
    size = 1000
    start = time.monotonic()
    for i in range(total // size):
        sender.send_to(target, bytes(size))
        # Pacing of the test's own sender, not an audio path.
        await asyncio.sleep(max(0.0, start + (i + 1) * size / rate - time.monotonic()))
    took = time.monotonic() - start
    await asyncio.sleep(1.0)  # stragglers
    got = 0
    while not receiver.indications.empty():
        got += len(receiver.indications.get_nowait().attrs.get(Attr.DATA, b""))
    return got, took


async def test_bandwidth_cap_is_bytes_per_second(relay: Relay) -> None:
    """max-bps=16000: below it everything is relayed, above it coturn drops the excess.

    Under the cap: 12 kB at 6 kB/s (less than one second's allowance in total, so even a
    stalled sender cannot trip it); had coturn read the value as bits (2 kB/s), most of it
    would be lost. Over the cap: 128 kB at 64 kB/s; at most the cap's worth per second window
    touched arrives (coturn counts per second: sending for t seconds touches up to ceil(t) + 1
    windows; one more for the packet that crosses each window's limit)."""
    a_user, a_pass = mint(SECRET, "bw-a", 600)
    b_user, b_pass = mint(SECRET, "bw-b", 600)
    async with asyncio.timeout(60):
        async with relay.client(a_user, a_pass) as a, relay.client(b_user, b_pass) as b:
            a_relay = (await a.allocate()).address(Attr.XOR_RELAYED_ADDRESS)
            b_relay = (await b.allocate()).address(Attr.XOR_RELAYED_ADDRESS)
            assert await a.permit(b_relay[0]) is None and await b.permit(a_relay[0]) is None
            got, _ = await _relay_through(a, b, b_relay, 6000, 12_000)
            assert got >= 11_000, f"only {got} of 12000 bytes under the cap"
            got, took = await _relay_through(a, b, b_relay, 64_000, 128_000)
    limit = CAP_BPS * (math.ceil(took) + 2)
    print(f"over the cap: {got} of 128000 bytes relayed in {took:.1f} s (limit {limit})")
    assert 0 < got <= limit, (got, took)


async def test_user_quota_counts_per_token_subject(relay: Relay) -> None:
    """voicegate's browser credentials name the token subject, so user-quota limits a user
    across calls; calls without a subject count per session."""
    turn = TurnConfig((f"turn:{PUBLIC4}:{PORT}",), SECRET, 3600)
    not_after = time.time() + 300

    def credentials(session: str, subject: str | None) -> tuple[str, str]:
        entry = turn.browser_servers(session, subject=subject, not_after=not_after)[0]
        return str(entry["username"]), str(entry["credential"])

    async with contextlib.AsyncExitStack() as stack, asyncio.timeout(60):

        async def allocate(session: str, subject: str | None) -> int | None:
            client = await stack.enter_async_context(relay.client(*credentials(session, subject)))
            return (await client.allocate()).error

        # One user, many calls (each its own session): the quota is the user's.
        answers = [await allocate(f"pc-{i}", "alice@example.com") for i in range(QUOTA + 1)]
        assert answers == [None] * QUOTA + [486], answers
        assert await allocate("pc-other", "bob") is None  # another user is not affected
        # A subject coturn's log should not see verbatim counts the same way.
        odd = "Mallory \n<script>"
        answers = [await allocate(f"pc-m{i}", odd) for i in range(QUOTA + 1)]
        assert answers == [None] * QUOTA + [486], answers
        # No subject: each session is its own quota holder.
        assert [await allocate(f"pc-anon-{i}", None) for i in range(3)] == [None] * 3
    assert "Mallory" not in relay.log()


def test_relay_only_call_through_production_config(relay: Relay) -> None:
    """voicegate on its private address, relay-only, and the headless aiortc caller relay-only:
    the call connects over relay <-> relay with no allowed-peer-ip exception for voicegate
    (its own relay allocation is how the caller reaches it), audio flows under the cap."""
    env = dict(os.environ)
    repo = Path(__file__).resolve().parents[1]
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(repo / "src"), str(repo), env.get("PYTHONPATH")) if p
    )
    env.update(
        VOICEGATE_TURN_SECRET=SECRET,
        VOICEGATE_AUTH_SECRET=AUTH_SECRET,
        AWS_EC2_METADATA_DISABLED="true",
        VG_NAT_TOKEN=auth.mint(AUTH_SECRET, 600, subject="prod-call"),
    )
    serve = [
        *exec_in(relay.ns), sys.executable, "-m", "voicegate", "serve", "--backend", "echo",
        "--host", VOICEGATE, "--port", str(VOICEGATE_PORT), "--relay-only",
        "--turn-url", f"turn:{PUBLIC4}:{PORT}?transport=udp",
    ]  # fmt: skip
    log_path = relay.workdir / "voicegate.log"
    with log_path.open("wb") as log:
        server = subprocess.Popen(serve, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=repo)
        try:
            caller = [
                *exec_in(relay.ns), sys.executable, "-m", "tests.support.nat_caller",
                "--client", f"http://{VOICEGATE}:{VOICEGATE_PORT}", "--relay-only",
            ]  # fmt: skip
            done = subprocess.run(
                caller, capture_output=True, text=True, timeout=120, env=env, cwd=repo
            )
        finally:
            server.terminate()
            try:
                server.wait(15)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(15)
    context = (
        f"{done.stdout[-2000:]}\n{done.stderr[-2000:]}\n--- voicegate\n"
        f"{log_path.read_text(errors='replace')[-3000:]}\n--- coturn\n{relay.log()[-3000:]}"
    )
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")]
    assert done.returncode == 0 and lines, context
    result = json.loads(lines[-1].removeprefix("RESULT "))
    assert "connect_ms" in result, f"{result}\n{context}"
    assert result["state"] == "connected", result
    assert result["pair"] == ["relay", "relay"], result
    assert result["frames"] >= 25, result
    print(f"production relay: offer -> bot-ready {result['connect_ms']} ms, pair {result['pair']}")
