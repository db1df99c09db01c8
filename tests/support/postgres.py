"""A throwaway PostgreSQL server (Debian's postgresql package) for the call-history tests.

initdb into a temporary directory, a server on 127.0.0.1 and a free port with trust auth for
the one local user, stopped and deleted afterwards. PostgreSQL refuses to run as root, so as root
the server runs as the ``postgres`` system user the package creates."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from tests.support.components import require


def _bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """Yields ``postgresql://voicegate@127.0.0.1:PORT/postgres``."""
    initdb, pg_ctl = _bin("initdb"), _bin("pg_ctl")
    require(bool(initdb and pg_ctl), "PostgreSQL server binaries (apt-get install postgresql)")
    assert initdb is not None and pg_ctl is not None
    as_user: list[str] = []
    owner: pwd.struct_passwd | None = None
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            require(False, "the postgres system user (apt-get install postgresql)")
        as_user = ["runuser", "-u", "postgres", "--"]
    base = Path(tempfile.mkdtemp(prefix="vg-pg-"))
    data, sockets = base / "data", base / "run"
    sockets.mkdir()
    if owner is not None:
        for path in (base, sockets):
            os.chown(path, owner.pw_uid, owner.pw_gid)
    port = _free_port()
    try:
        subprocess.run(
            [*as_user, initdb, "-D", str(data), "-A", "trust", "-U", "voicegate", "-E", "UTF8"],
            check=True,
            capture_output=True,
        )
        subprocess.run(
            [*as_user, pg_ctl, "-D", str(data), "-l", str(base / "log"), "-w", "-t", "60",
             "-o", f"-h 127.0.0.1 -p {port} -k {sockets} -c fsync=off", "start"],
            check=True,
            capture_output=True,
        )  # fmt: skip
        yield f"postgresql://voicegate@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            [*as_user, pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop"],
            capture_output=True,
        )
        shutil.rmtree(base, ignore_errors=True)
