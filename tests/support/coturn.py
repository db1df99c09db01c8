"""A real coturn for tests: the repository's own configs with only their placeholders filled.

The dev config (loopback, a free port, a secret) serves the browser relay tests and the NAT test
(which runs coturn inside a network namespace the test creates); the production config (realm,
secret, certificate and addresses filled in, nothing else changed) serves the hardening test.
Both start the relay exactly the way turn/README.md tells people to.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import struct
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.support.components import missing

REPO = Path(__file__).resolve().parents[2]
DEV_CONF = REPO / "turn" / "turnserver-dev.conf"
PROD_CONF = REPO / "turn" / "turnserver.conf"
START_TIMEOUT_S = 10.0
START_ATTEMPTS = 3


def free_port_pair() -> int:
    """A port free for both UDP and TCP on 127.0.0.1: coturn listens on both, and a port picked
    for UDP alone is sometimes some TCP connection's ephemeral port (then coturn retries the
    bind for ever instead of exiting)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind(("127.0.0.1", 0))
            port = int(u.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                try:
                    t.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port


def require_coturn() -> str:
    binary = shutil.which("turnserver")
    if binary is None:
        missing("coturn is not installed (apt-get install coturn)")
    return binary


def dev_config(
    port: int, secret: str, listen_ips: Sequence[str] = ("127.0.0.1",), relay_ip: str = "127.0.0.1"
) -> str:
    """turn/turnserver-dev.conf with this port, secret, addresses and a relay range of its own."""
    conf = DEV_CONF.read_text()
    low = 40000 + (port % 200) * 100  # disjoint relay ranges for coturns running side by side
    conf = conf.replace("listening-port=3478", f"listening-port={port}")
    conf = re.sub(r"min-port=\d+", f"min-port={low}", conf)
    conf = re.sub(r"max-port=\d+", f"max-port={low + 99}", conf)
    conf = re.sub(r"static-auth-secret=\S+", f"static-auth-secret={secret}", conf)
    conf = re.sub(r"(?m)^listening-ip=.*\n", "", conf)
    conf = re.sub(r"(?m)^relay-ip=.*$", f"relay-ip={relay_ip}", conf)
    return "".join(f"listening-ip={ip}\n" for ip in listen_ips) + conf


def prod_config(
    secret: str,
    *,
    realm: str,
    listen_ips: Sequence[str],
    relay_ips: Sequence[str],
    cert: Path,
    pkey: Path,
) -> str:
    """turn/turnserver.conf with its CHANGE values and the addresses filled in; ports, quotas,
    denied ranges and every other line exactly as shipped."""
    conf = PROD_CONF.read_text()
    values = {
        "realm": realm,
        "server-name": realm,
        "static-auth-secret": secret,
        "cert": str(cert),
        "pkey": str(pkey),
    }
    for key, value in values.items():
        conf, found = re.subn(rf"(?m)^{key}=.*$", f"{key}={value}", conf)
        assert found == 1, f"turn/turnserver.conf has {found} lines {key}=, expected one"
    head = [f"listening-ip={ip}" for ip in listen_ips] + [f"relay-ip={ip}" for ip in relay_ips]
    return "\n".join(head) + "\n" + conf


def stun_answers(
    address: tuple[str, int], timeout: float, make_socket: Callable[[], socket.socket] | None = None
) -> bool:
    """Send STUN binding requests until coturn answers (it prints no reliable ready line)."""
    request = struct.pack("!HHI12s", 0x0001, 0, 0x2112A442, os.urandom(12))
    deadline = time.monotonic() + timeout
    sock = make_socket() if make_socket else socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sock:
        sock.settimeout(0.2)
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):  # ECONNREFUSED until coturn has bound its port
                sock.sendto(request, address)
                if sock.recv(2048)[:2] == b"\x01\x01":  # binding success response
                    return True
            time.sleep(0.05)  # start-up wait for a separate process, not an audio path
    return False


@dataclass(frozen=True, slots=True)
class Coturn:
    port: int
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextlib.contextmanager
def running_coturn(
    workdir: Path,
    secret: str,
    *,
    listen_ips: Sequence[str] = ("127.0.0.1",),
    relay_ip: str = "127.0.0.1",
    prefix: Sequence[str] = (),
    make_socket: Callable[[], socket.socket] | None = None,
    config: tuple[str, int] | None = None,
) -> Iterator[Coturn]:
    """coturn with the dev config on a free port, or with ``config`` = (text, its port), e.g.
    :func:`prod_config` inside a namespace of the test's own where every port is free.
    ``prefix`` wraps the command (e.g. ``ip netns exec NS``), ``make_socket`` makes the
    readiness probe's socket there too."""
    binary = require_coturn()
    for attempt in range(1 if config else START_ATTEMPTS):
        port = config[1] if config else free_port_pair()
        text = config[0] if config else dev_config(port, secret, listen_ips, relay_ip)
        path = workdir / f"turnserver-{port}.conf"
        pidfile = workdir / f"turn-{port}.pid"
        path.write_text(text + f"pidfile={pidfile}\n")
        log_path = workdir / f"turnserver-{port}.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [*prefix, binary, "-c", str(path)], stdout=log, stderr=subprocess.STDOUT
            )
            try:
                if not stun_answers((listen_ips[0], port), START_TIMEOUT_S, make_socket):
                    if attempt + 1 < START_ATTEMPTS and "Address already in use" in log_text(
                        log_path
                    ):
                        continue  # another process took the port meanwhile: pick a new one
                    raise AssertionError("coturn did not answer STUN:\n" + log_text(log_path))
                yield Coturn(port, log_path)
                return
            finally:
                _stop(proc)


def log_text(path: Path, chars: int = 3000) -> str:
    return path.read_text(errors="replace")[-chars:]


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
