"""How a node connects to the cluster's Redis: its URL (``redis://``, ``rediss://`` for TLS,
``unix://``), the password from a file, and the key its records are sealed with.

The password is read from ``--cluster-redis-password-file`` (a mounted secret) by each process
itself, so it is in no URL, flag or environment variable. TLS is redis-py's: ``rediss://``
verifies the server's certificate against the system's CAs, or against the file named by the
URL's ``ssl_ca_certs`` query parameter (``rediss://redis:6380/0?ssl_ca_certs=/etc/ca.pem``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from voicegate.cluster.record_mac import RecordSeal

if TYPE_CHECKING:
    from voicegate.config import ServeConfig

__all__ = ["RedisOptions", "read_password"]


def read_password(path: str) -> str:
    """The password in ``path`` (one line, surrounding whitespace dropped). OSError /
    UnicodeDecodeError when it cannot be read; ValueError when it is empty."""
    password = Path(path).read_text(encoding="utf-8").strip()
    if not password:
        raise ValueError(f"{path} is empty")
    return password


@dataclass(frozen=True, slots=True)
class RedisOptions:
    """What ``Directory`` needs beyond the URL."""

    password: str | None = None
    seal: RecordSeal | None = None
    """None: records are written and read unsealed (only for tools and tests that stand for
    something other than a node)."""

    @classmethod
    def for_node(cls, config: ServeConfig) -> RedisOptions:
        password = None
        if config.cluster_redis_password_file:
            password = read_password(config.cluster_redis_password_file)
        return cls(password=password, seal=RecordSeal(config.auth_secret))

    def client_kwargs(self) -> dict[str, Any]:
        return {} if self.password is None else {"password": self.password}
