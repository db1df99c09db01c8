"""A network namespace of the test's own, and sockets made inside it.

Tests that need addresses a real deployment has (a public relay address, a private one for
voicegate, IPv6) make them up inside a namespace of their own: nothing on the host's network
changes, and nothing sent there can leave it. Needs root (CAP_NET_ADMIN + CAP_SYS_ADMIN) and
iproute2: missing in CI fails, elsewhere skips.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator, Sequence

from tests.support.components import missing


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True, timeout=15)


def exec_in(ns: str) -> list[str]:
    """The command prefix that runs a program inside ``ns``."""
    return ["ip", "netns", "exec", ns]


@contextlib.contextmanager
def namespace(prefix: str, commands: Sequence[str]) -> Iterator[str]:
    """A fresh namespace ``<prefix><pid>`` set up with ``ip -n NS <command>`` for each command;
    deleted afterwards (and any left by a killed earlier run of the same prefix)."""
    if shutil.which("ip") is None:
        missing("iproute2 is not installed (apt-get install iproute2)")
    _remove_orphans(prefix)
    name = f"{prefix}{os.getpid()}"
    done = ip("netns", "add", name, check=False)
    if done.returncode != 0:
        missing(f"cannot create a network namespace ({done.stderr.strip()}); needs root")
    try:
        for command in commands:
            ip("-n", name, *command.split())
        yield name
    finally:
        ip("netns", "del", name, check=False)


def _remove_orphans(prefix: str) -> None:
    listing = ip("netns", "list", check=False).stdout
    for name, pid in re.findall(rf"(?m)^({re.escape(prefix)}(\d+))\b", listing):
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            ip("netns", "del", name, check=False)
        except PermissionError:
            pass  # alive, someone else's


def socket_in(
    ns: str, family: int = socket.AF_INET, kind: int = socket.SOCK_DGRAM
) -> socket.socket:
    """A socket created inside namespace ``ns`` (by a short-lived thread that enters it); it
    stays in that namespace wherever it is used, e.g. handed to asyncio."""
    made: list[socket.socket] = []
    errors: list[BaseException] = []

    def enter_and_make() -> None:
        try:
            with open(f"/run/netns/{ns}") as target:
                os.setns(target.fileno(), os.CLONE_NEWNET)
            made.append(socket.socket(family, kind))  # the thread ends here, in ``ns``
        except BaseException as exc:  # reported to the caller below
            errors.append(exc)

    thread = threading.Thread(target=enter_and_make)
    thread.start()
    thread.join(10)
    if errors:
        raise errors[0]
    return made[0]
