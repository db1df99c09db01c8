"""Every coturn config voicegate ships, checked against one hardening and attacked.

turn/hardening.conf is the one list of TURN hardening (required flags, limits, denied peer
ranges). Each shipped config is read exactly as coturn will get it: turn/turnserver.conf's lines,
the compose coturn service's command (compose defaults interpolated) and the Kubernetes coturn
Deployment's args (``$(VAR)`` filled from sample values, the pid file moved to a temporary
directory: nothing else changed). The hostNetwork DaemonSet relays through that same Deployment.

The static test checks each config carries every line of the hardening and re-opens at most the
one network its relay must reach. The live test starts a real coturn with each config's exact
options inside a network namespace of the test's own, holding the addresses a deployment has
(the relay's own, voicegate nodes, Redis, cloud metadata 169.254.169.254, a docker bridge
172.17.0.1, loopback), and with a credential voicegate would hand out tries a TCP relay, a
Connect to Redis, and permissions for each internal address: every one refused, while the relay's
own address (how a browser reaches voicegate's relay candidate) is still granted.

Needs root (network namespaces), iproute2, coturn and trustme: missing in CI fails, elsewhere
skips.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.components import missing
from tests.support.coturn import PROD_CONF, REPO, prod_config, require_coturn, stun_answers
from tests.support.deploy import compose, interpolate, one
from tests.support.netns import exec_in, namespace, socket_in
from tests.support.turn_client import IPV4, TCP, Attr, Method, TurnClient
from voicegate.signaling.turn import mint

pytestmark = [pytest.mark.timeout(240)]

HARDENING = REPO / "turn" / "hardening.conf"
SECRET = "turn-configs-secret-5Jx1"
PORT = 3478

# Addresses inside the test's namespace, as a deployment has them.
METADATA, BRIDGE, HOME_LAN, CGNAT = "169.254.169.254", "172.17.0.1", "192.168.1.1", "100.64.0.1"


@dataclass(frozen=True)
class Shipped:
    """One shipped config: where coturn listens, what it may still reach, what it must not."""

    name: str
    relay: str  # coturn's own listening and relay address
    allowed: str | None  # the one allowed-peer-ip the config may carry
    nodes: tuple[str, ...]  # voicegate nodes' addresses (HTTP 8080, media UDP)
    redis: str
    granted: tuple[str, ...]  # peers the relay must still reach


SHIPPED = {
    "turnserver.conf": Shipped(
        "turnserver.conf", "11.199.0.1", None, ("10.199.1.2",), "10.199.1.3", ("11.199.0.1",)
    ),
    "compose": Shipped(
        "compose",
        "172.30.89.10",
        "172.30.89.10",
        ("172.30.89.2", "172.30.89.3"),
        "172.30.89.4",
        ("172.30.89.10",),
    ),
    # The pod network (the CHANGE value 10.0.0.0/8) stays reachable for UDP by design: voicegate
    # pods' media ports live there (the NetworkPolicy "coturn" narrows it to voicegate and coturn
    # pods). Redis lives there too and is refused because no TCP relay exists.
    "kubernetes": Shipped(
        "kubernetes",
        "10.199.0.5",
        "10.0.0.0-10.255.255.255",
        ("10.199.0.7",),
        "10.199.0.9",
        ("10.199.0.5", "10.199.0.7"),
    ),
}


def hardening() -> tuple[list[str], dict[str, int]]:
    """turn/hardening.conf: the lines every config must carry, and the ``name<=N`` limits."""
    lines = [ln for ln in HARDENING.read_text().splitlines() if ln and not ln.startswith("#")]
    limits = {ln.split("<=")[0]: int(ln.split("<=")[1]) for ln in lines if "<=" in ln}
    return [ln for ln in lines if "<=" not in ln], limits


def _k8s_container() -> dict[str, Any]:
    (container,) = one("Deployment", "coturn")["spec"]["template"]["spec"]["containers"]
    return container


def options(name: str, *, workdir: Path | None = None, relay: str = "") -> list[str]:
    """A shipped config's exact options in config-file form (``name`` or ``name=value``)."""
    if name == "turnserver.conf":
        text = PROD_CONF.read_text()
        return [ln for ln in text.splitlines() if ln and not ln.startswith("#")]
    if name == "compose":
        args = [interpolate(str(a)) for a in compose()["services"]["coturn"]["command"]]
    else:
        values = {"POD_IP": relay or SHIPPED["kubernetes"].relay, "TURN_SECRET": SECRET}
        args = [
            re.sub(r"\$\((\w+)\)", lambda m: values[m[1]], str(a)) for a in _k8s_container()["args"]
        ]
        if workdir is not None:
            args = [
                f"--pidfile={workdir}/turn.pid" if a.startswith("--pidfile=") else a for a in args
            ]
    assert all(a.startswith("--") or a == "-n" for a in args), args
    return [a[2:] for a in args if a != "-n"]


@pytest.mark.parametrize("name", list(SHIPPED))
def test_shipped_config_carries_the_whole_hardening(name: str) -> None:
    opts = options(name)
    required, limits = hardening()
    assert [ln for ln in required if ln not in opts] == [], f"{name} lacks these hardening lines"
    for key, limit in limits.items():
        (value,) = [o.split("=", 1)[1] for o in opts if o.startswith(key + "=")]
        assert int(value) <= limit, f"{name}: {key}={value}, at most {limit}"
    allowed = [o.split("=", 1)[1] for o in opts if o.startswith("allowed-peer-ip=")]
    expected = SHIPPED[name].allowed
    assert allowed == ([expected] if expected else []), f"{name} re-opens {allowed}"
    # coturn reads an all-zero bound as "any" (turn/turnserver.conf explains): never list one.
    for opt in opts:
        if opt.startswith("denied-peer-ip="):
            assert opt.split("=", 1)[1].split("-")[0] not in ("::", "0::", "::0"), opt
    assert not [o for o in opts if o in ("allow-loopback-peers", "tcp-proxy-port")], name


def test_hardening_check_can_fail() -> None:
    """The static check notices a config without the TCP-relay ban (the old compose file)."""
    required, _ = hardening()
    assert "no-tcp-relay" in required
    assert "denied-peer-ip=169.254.0.0-169.254.255.255" in required
    old_compose = [o for o in options("compose") if o != "no-tcp-relay"]
    assert [ln for ln in required if ln not in old_compose] == ["no-tcp-relay"]


def test_kubernetes_coturn_egress_is_only_udp_to_voicegate_and_coturn_pods() -> None:
    """Inside the pod network coturn may re-open, only UDP to voicegate and coturn pods."""
    policy = one("NetworkPolicy", "coturn")["spec"]
    assert policy["podSelector"]["matchLabels"]["app.kubernetes.io/name"] == "coturn"
    assert policy["policyTypes"] == ["Egress"]
    inside, outside = policy["egress"]
    names = {p["podSelector"]["matchLabels"]["app.kubernetes.io/name"] for p in inside["to"]}
    assert names == {"voicegate", "coturn"}
    assert {p["protocol"] for rule in policy["egress"] for p in rule["ports"]} == {"UDP"}
    (block,) = outside["to"]
    assert {"10.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12"} <= set(block["ipBlock"]["except"])


# -- live: coturn with each config's exact options, attacked ---------------------------------


@dataclass(frozen=True)
class Relay:
    ns: str
    shipped: Shipped
    secret: str  # the config's own static-auth-secret (compose ships a default)
    log_path: Path

    def client(self, *, tcp: bool = False) -> TurnClient:
        username, password = mint(self.secret, "attacker", 600)
        kind = socket.SOCK_STREAM if tcp else socket.SOCK_DGRAM
        sock = socket_in(self.ns, socket.AF_INET, kind)
        return TurnClient((self.shipped.relay, PORT), username, password, tcp=tcp, sock=sock)


def _command(name: str, workdir: Path, shipped: Shipped) -> list[str]:
    if name != "turnserver.conf":
        return [f"--{o}" for o in options(name, workdir=workdir, relay=shipped.relay)]
    try:
        import trustme
    except ImportError:
        missing("trustme is not installed (pip install voicegate[standin])")
    ca = trustme.CA()
    leaf = ca.issue_cert("turn.voicegate.test", shipped.relay)
    cert, key = workdir / "cert.pem", workdir / "key.pem"
    cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(key))
    text = prod_config(
        SECRET,
        realm="turn.voicegate.test",
        listen_ips=(shipped.relay,),
        relay_ips=(shipped.relay,),
        cert=cert,
        pkey=key,
    )
    path = workdir / "turnserver.conf"
    path.write_text(text + f"pidfile={workdir}/turn.pid\n")
    return ["-c", str(path)]


@pytest.fixture(scope="module", params=list(SHIPPED))
def relay(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Relay]:
    binary = require_coturn()
    shipped = SHIPPED[request.param]
    workdir = tmp_path_factory.mktemp(f"turnconf-{shipped.name.replace('.', '-')}")
    addresses = {shipped.relay, *shipped.nodes, shipped.redis, METADATA, BRIDGE, HOME_LAN, CGNAT}
    setup = ["link set lo up", *(f"addr add {a}/32 dev lo" for a in sorted(addresses))]
    with namespace("vgtconf", setup) as ns:
        log_path = workdir / "coturn.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [*exec_in(ns), binary, *_command(shipped.name, workdir, shipped)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            try:
                ready = stun_answers((shipped.relay, PORT), 10.0, lambda: socket_in(ns))
                assert ready, log_path.read_text(errors="replace")[-3000:]
                (secret,) = [
                    o.split("=", 1)[1]
                    for o in options(shipped.name)
                    if o.startswith("static-auth-secret=")
                ]
                yield Relay(ns, shipped, SECRET if "CHANGE" in secret else secret, log_path)
            finally:
                proc.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(5)
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(5)


async def test_tcp_relay_and_connect_to_redis_are_refused(relay: Relay) -> None:
    """RFC 6062: no TCP allocation, and no Connect to Redis, a node's HTTP port or the relay."""
    shipped = relay.shipped
    async with asyncio.timeout(30):
        async with relay.client(tcp=True) as turn:
            tcp_relay = await turn.allocate(transport=TCP)
            assert tcp_relay.error == 442, tcp_relay.attrs
        async with relay.client(tcp=True) as turn:
            assert (await turn.allocate()).error is None  # a UDP relay over a TCP control link
            for target in [(shipped.redis, 6379), (shipped.nodes[0], 8080), (shipped.relay, 8080)]:
                connect = await turn.request(Method.CONNECT, peer_at=target)
                assert connect.error == 403, (target, connect.attrs)


async def test_relay_refuses_every_internal_peer(relay: Relay) -> None:
    """Metadata, docker bridge, private, carrier-grade NAT, loopback, link-local, the node
    addresses and Redis (unless the config's one allowed network is the pod network, where only
    UDP reaches and Redis listens on TCP): 403. The relay's own address: granted."""
    shipped = relay.shipped
    refused = {
        METADATA,
        BRIDGE,
        HOME_LAN,
        CGNAT,
        "127.0.0.1",
        "127.0.0.53",
        "0.0.0.0",
        "169.254.0.1",
        "172.31.255.254",
        "224.0.0.1",
    }
    if shipped.name != "kubernetes":  # there the pod network is the one allowed, UDP only
        refused |= {*shipped.nodes, shipped.redis, "10.0.0.1", "10.96.0.10"}
    async with asyncio.timeout(60):
        async with relay.client() as turn:
            allocated = await turn.allocate(family=IPV4)
            assert allocated.error is None, allocated.attrs
            assert allocated.address(Attr.XOR_RELAYED_ADDRESS)[0] == shipped.relay
            answers = {peer: await turn.permit(peer) for peer in sorted(refused)}
            granted = {peer: await turn.permit(peer) for peer in shipped.granted}
    assert answers == dict.fromkeys(sorted(refused), 403)
    assert granted == dict.fromkeys(shipped.granted, None)
