"""Short-lived TURN credentials for coturn's REST API scheme (use-auth-secret).

voicegate and coturn share one secret; voicegate mints, per session, a username
``<expiry unix time>:<session id>`` and the password base64(HMAC-SHA1(secret, username)). coturn
recomputes the same HMAC and refuses expired usernames, so a leaked credential is worthless after
its TTL and the secret itself never leaves the server (never sent to a browser, never logged).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from aiortc import RTCIceServer


def mint(secret: str, session: str, ttl: int, now: float | None = None) -> tuple[str, str]:
    """(username, credential) valid for ``ttl`` seconds from ``now``."""
    expiry = int((time.time() if now is None else now) + ttl)
    username = f"{expiry}:{session}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode("ascii")


def check_url(url: str) -> str | None:
    """A problem with a TURN/STUN URL, or None if it is usable."""
    scheme, _, rest = url.partition(":")
    if scheme not in ("turn", "turns", "stun", "stuns") or not rest:
        return f"{url!r} must start with turn:, turns:, stun: or stuns:"
    host = urlsplit(f"//{rest.split('?')[0]}").hostname
    if not host:
        return f"{url!r} has no host"
    return None


@dataclass(frozen=True, slots=True)
class TurnConfig:
    urls: tuple[str, ...] = ()
    secret: str = field(default="", repr=False)
    ttl: int = 3600

    @property
    def enabled(self) -> bool:
        return bool(self.urls)

    def browser_servers(
        self, session: str, *, subject: str | None = None, not_after: float | None = None
    ) -> list[dict[str, Any]]:
        """RTCIceServer dicts for a browser: every URL, one credential, named after the token
        ``subject`` when there is one and expiring no later than ``not_after`` (the token's)."""
        if not self.urls:
            return []
        entry: dict[str, Any] = {"urls": list(self.urls)}
        if any(u.startswith("turn") for u in self.urls) and self.secret:
            ttl = self.ttl
            if not_after is not None:
                ttl = max(0, min(ttl, int(not_after - time.time())))
            name = subject if subject is not None else session
            entry["username"], entry["credential"] = mint(self.secret, name, ttl)
        return [entry]

    def server_servers(self, session: str) -> list[RTCIceServer]:
        """What aiortc gets: it uses only the first STUN and the first TURN URL it is given
        (aiortc rtcicetransport.connection_kwargs), and `turns:` only over TCP, so pick them
        deliberately: a plain UDP `turn:` URL first, since the relay sits beside the server."""
        turn = sorted(
            (u for u in self.urls if u.startswith("turn:") or u.startswith("turns:")),
            key=lambda u: (u.startswith("turns:"), "transport=tcp" in u),
        )
        stun = [u for u in self.urls if u.startswith("stun:")]
        servers: list[RTCIceServer] = []
        if stun:
            servers.append(RTCIceServer(urls=stun[0]))
        if turn and self.secret:
            username, credential = mint(self.secret, f"server-{session}", self.ttl)
            servers.append(RTCIceServer(urls=turn[0], username=username, credential=credential))
        return servers
