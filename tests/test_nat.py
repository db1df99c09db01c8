"""A caller that can reach voicegate only through the TURN relay: network namespaces, real coturn.

The test builds three network namespaces of its own (nothing on the host's network changes):

    cli 10.199.2.2 ─ veth ─ 10.199.2.1 edge 10.199.1.1 ─ veth ─ 10.199.1.2 srv
                            (the edge's "public" 10.199.0.1 on its lo)

``edge`` is the one host both sides can reach (a route to 10.199.0.1/32 each): coturn listens
and relays there, and a plain TCP forwarder there carries the HTTP signaling, as an HTTPS reverse
proxy would. ``edge`` does not forward packets, and neither side has a route to the other's
subnet, so no UDP path exists between the caller and voicegate except through coturn.

voicegate (``python -m voicegate serve``) runs in ``srv``; the caller is the headless aiortc
client (:mod:`voicegate.client`) run in ``cli`` (``python -m tests.support.nat_caller --client
...``), which prints one JSON line. With the ICE servers voicegate hands out the call connects,
and its selected pair uses a relay candidate; without TURN (a voicegate with no TURN configured,
a caller with no ICE servers) the same call cannot connect at all.

Needs root (CAP_NET_ADMIN + CAP_SYS_ADMIN) and iproute2: missing in CI fails, elsewhere skips.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pytest

from tests.support.components import missing

REPO = Path(__file__).resolve().parents[1]
SECRET = "nat-test-turn-secret-4Hq"
# voicegate off loopback insists on signaling tokens; the caller gets one minted here.
AUTH_SECRET = "nat-test-auth-secret-0123456789"
EDGE_IP = "10.199.0.1"  # private test addresses, only inside namespaces this test creates
SRV_IP, SRV_GW = "10.199.1.2", "10.199.1.1"
CLI_IP, CLI_GW = "10.199.2.2", "10.199.2.1"
WITH_TURN_PORT, NO_TURN_PORT = 8080, 8081  # voicegate in srv, forwarded on edge
CLIENT_TIMEOUT_S = 90.0
NO_TURN_WAIT_S = 8.0  # the relayed call needs < 1 s here; aioice itself gives up after ~40 s

pytestmark = [pytest.mark.timeout(240)]

# One TCP forwarder per (listen port -> target port); it runs inside the edge namespace.
FORWARDER = r"""
import asyncio, sys
host, target = sys.argv[1], sys.argv[2]
ports = [tuple(int(p) for p in pair.split(":")) for pair in sys.argv[3:]]
async def pipe(r, w):
    try:
        while data := await r.read(65536):
            w.write(data)
            await w.drain()
    except OSError:
        pass
    finally:
        w.close()
def serve(dst):
    async def handle(r, w):
        try:
            async with asyncio.timeout(10):
                r2, w2 = await asyncio.open_connection(target, dst)
        except (OSError, TimeoutError):
            w.close()
            return
        await asyncio.gather(pipe(r, w2), pipe(r2, w))
    return handle
async def main():
    servers = [await asyncio.start_server(serve(d), host, s) for s, d in ports]
    print("ready", flush=True)
    await asyncio.gather(*(s.serve_forever() for s in servers))
asyncio.run(main())
"""


# --------------------------------------------------------------------------------------------
# Namespaces


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True, timeout=15)


@dataclass(frozen=True)
class Topology:
    srv: str
    cli: str
    edge: str

    def exec(self, ns: str) -> list[str]:
        return ["ip", "netns", "exec", ns]


@contextlib.contextmanager
def topology() -> Iterator[Topology]:
    if shutil.which("ip") is None:
        missing("iproute2 is not installed (apt-get install iproute2)")
    _remove_orphans()
    tag = f"vgnat{os.getpid()}"
    topo = Topology(f"{tag}-srv", f"{tag}-cli", f"{tag}-edge")
    created: list[str] = []
    try:
        for ns in (topo.edge, topo.srv, topo.cli):
            done = _ip("netns", "add", ns, check=False)
            if done.returncode != 0:
                missing(f"cannot create a network namespace ({done.stderr.strip()}); needs root")
            created.append(ns)
        e, s, c = topo.edge, topo.srv, topo.cli
        # veths are created straight inside the namespaces, so no name on the host is touched.
        _ip("link", "add", "to-srv", "netns", e, "type", "veth", "peer", "name", "eth0", "netns", s)
        _ip("link", "add", "to-cli", "netns", e, "type", "veth", "peer", "name", "eth0", "netns", c)
        script = {
            e: [
                "link set lo up",
                f"addr add {EDGE_IP}/32 dev lo",
                f"addr add {SRV_GW}/24 dev to-srv",
                "link set to-srv up",
                f"addr add {CLI_GW}/24 dev to-cli",
                "link set to-cli up",
            ],
            s: [
                "link set lo up",
                f"addr add {SRV_IP}/24 dev eth0",
                "link set eth0 up",
                f"route add {EDGE_IP}/32 via {SRV_GW}",
            ],
            c: [
                "link set lo up",
                f"addr add {CLI_IP}/24 dev eth0",
                "link set eth0 up",
                f"route add {EDGE_IP}/32 via {CLI_GW}",
            ],
        }
        for ns, commands in script.items():
            for command in commands:
                _ip("-n", ns, *command.split())
        # The edge must not route between the two sides (a new namespace starts with
        # forwarding off; make sure, since everything below depends on it).
        subprocess.run(
            [*topo.exec(e), "sh", "-c", "echo 0 > /proc/sys/net/ipv4/ip_forward"],
            check=True,
            timeout=15,
        )
        yield topo
    finally:
        for ns in reversed(created):
            _ip("netns", "del", ns, check=False)


def _remove_orphans() -> None:
    """Namespaces an earlier run of this test left behind when it was killed (its pid is gone)."""
    listing = _ip("netns", "list", check=False).stdout
    for name in re.findall(r"(?m)^(vgnat(\d+)-(?:srv|cli|edge))\b", listing):
        try:
            os.kill(int(name[1]), 0)
        except ProcessLookupError:
            _ip("netns", "del", name[0], check=False)
        except PermissionError:
            pass  # alive, someone else's


class Proc:
    """A subprocess inside a namespace with its output in a file; stopped by its own pid."""

    def __init__(self, argv: Sequence[str], log_path: Path, env: dict[str, str]) -> None:
        self.log_path = log_path
        self._log: IO[bytes] = log_path.open("wb")
        self.proc = subprocess.Popen(
            list(argv), stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=REPO
        )

    def text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(15)
        self._log.close()


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO / "src"), str(REPO), env.get("PYTHONPATH")) if p
    )
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    env.update(extra)
    return env


@dataclass(frozen=True)
class Nat:
    topo: Topology
    workdir: Path
    servers: tuple[Proc, ...]
    turn_log: Path

    def logs(self) -> str:
        out = [f"--- {p.log_path.name}\n{p.text()[-3000:]}" for p in self.servers]
        with contextlib.suppress(OSError):
            out.append(f"--- coturn\n{self.turn_log.read_text(errors='replace')[-2000:]}")
        return "\n".join(out)


@pytest.fixture(scope="module")
def nat(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nat]:
    from tests.support.coturn import require_coturn, running_coturn

    require_coturn()
    workdir = tmp_path_factory.mktemp("nat")
    with topology() as topo, contextlib.ExitStack() as stack:
        relay = stack.enter_context(
            running_coturn(
                workdir,
                SECRET,
                listen_ips=(EDGE_IP,),
                relay_ip=EDGE_IP,
                prefix=topo.exec(topo.edge),
                make_socket=lambda: _udp_socket_in(topo.edge),
            )
        )
        serve = [sys.executable, "-m", "voicegate", "serve", "--host", SRV_IP, "--backend", "echo"]
        with_turn = Proc(
            [*topo.exec(topo.srv), *serve, "--port", str(WITH_TURN_PORT),
             "--turn-url", f"turn:{EDGE_IP}:{relay.port}?transport=udp"],
            workdir / "voicegate-turn.log",
            _env(VOICEGATE_TURN_SECRET=SECRET, VOICEGATE_AUTH_SECRET=AUTH_SECRET),
        )  # fmt: skip
        stack.callback(with_turn.stop)
        no_turn = Proc(
            [*topo.exec(topo.srv), *serve, "--port", str(NO_TURN_PORT)],
            workdir / "voicegate-no-turn.log",
            _env(VOICEGATE_AUTH_SECRET=AUTH_SECRET),
        )
        stack.callback(no_turn.stop)
        forwarder = Proc(
            [*topo.exec(topo.edge), sys.executable, "-c", FORWARDER, EDGE_IP, SRV_IP,
             f"{WITH_TURN_PORT}:{WITH_TURN_PORT}", f"{NO_TURN_PORT}:{NO_TURN_PORT}"],
            workdir / "forwarder.log",
            _env(),
        )  # fmt: skip
        stack.callback(forwarder.stop)
        yield Nat(topo, workdir, (with_turn, no_turn, forwarder), relay.log_path)


def _udp_socket_in(ns: str) -> Any:
    """A UDP socket created inside namespace ``ns`` (by a short-lived thread that enters it)."""
    import socket
    import threading

    made: list[socket.socket] = []
    errors: list[BaseException] = []

    def enter_and_make() -> None:
        try:
            with open(f"/run/netns/{ns}") as target:
                os.setns(target.fileno(), os.CLONE_NEWNET)
            # This thread stays in ``ns`` and ends here; the socket keeps its namespace.
            made.append(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
        except BaseException as exc:  # reported to the caller below
            errors.append(exc)

    thread = threading.Thread(target=enter_and_make)
    thread.start()
    thread.join(10)
    if errors:
        raise errors[0]
    return made[0]


def run_client(nat: Nat, port: int, *flags: str) -> dict[str, Any]:
    argv = [
        *nat.topo.exec(nat.topo.cli), sys.executable, "-m", "tests.support.nat_caller",
        "--client", f"http://{EDGE_IP}:{port}", *flags,
    ]  # fmt: skip
    from voicegate.signaling import auth

    env = _env(VG_NAT_TOKEN=auth.mint(AUTH_SECRET, 600, subject="nat-test"))
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=CLIENT_TIMEOUT_S, env=env, cwd=REPO
        )
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"the caller hung: {exc.stdout!r}\n{nat.logs()}") from None
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")]
    assert done.returncode == 0 and lines, (
        f"caller exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}\n"
        f"{nat.logs()}"
    )
    result: dict[str, Any] = json.loads(lines[-1].removeprefix("RESULT "))
    assert "error" not in result, f"{result}\n{nat.logs()}"
    return result


def test_sides_cannot_reach_each_other_directly(nat: Nat) -> None:
    """The topology itself: the caller reaches the edge, never voicegate's subnet."""
    cli = nat.topo.exec(nat.topo.cli)
    ok = subprocess.run([*cli, "ip", "route", "get", EDGE_IP], capture_output=True, timeout=15)
    assert ok.returncode == 0, ok.stderr
    blocked = subprocess.run([*cli, "ip", "route", "get", SRV_IP], capture_output=True, timeout=15)
    assert blocked.returncode != 0, blocked.stdout  # "Network is unreachable"


@pytest.mark.parametrize("policy", ["all", "relay-only"])
def test_call_connects_through_the_relay(nat: Nat, policy: str) -> None:
    """With voicegate's ICE servers the call connects, and only ever over a relayed pair.

    Policy ``all`` lets ICE pick any pair that works: the relay is on one side or the other
    (typically the caller's host candidate to voicegate's relay candidate, since voicegate
    allocates on the same coturn). ``relay-only`` is the page's ``?relay=1``: the caller's own
    allocation carries the call.
    """
    flags = ["--relay-only"] if policy == "relay-only" else []
    result = run_client(nat, WITH_TURN_PORT, *flags)
    assert "connect_ms" in result, f"{result}\n{nat.logs()}"
    assert result["state"] == "connected", result
    assert result["ice_servers"] == 1 and result["offer_sdp_relay"], result
    assert result["answer_sdp_relay"], result  # voicegate gathered through the relay too
    local, remote = result["pair"]
    assert "relay" in (local, remote), result  # no direct path exists between the namespaces
    if policy == "relay-only":
        assert local == "relay", result
    assert result["frames"] >= 25, result
    print(f"NAT {policy}: offer -> bot-ready {result['connect_ms']} ms, pair {result['pair']}")


def test_call_without_turn_cannot_connect(nat: Nat) -> None:
    result = run_client(nat, NO_TURN_PORT, "--no-turn", "--wait", str(NO_TURN_WAIT_S))
    assert result["ice_servers"] == 0 and not result["offer_sdp_relay"], result
    assert not result["answer_sdp_relay"], result
    assert "connect_ms" not in result, result
    assert result["state"] in ("failed", "connecting", "new"), result
    assert result["pair"] is None, result
    print(f"NAT without TURN: {result}")
