"""Short-lived TURN credentials for coturn's REST API scheme (use-auth-secret).

voicegate and coturn share one secret; voicegate mints a username ``<expiry unix time>:<who>``
and the password base64(HMAC-SHA1(secret, username)). coturn recomputes the same HMAC and
refuses to start an allocation with an expired username, so a leaked credential is worthless
after its expiry and the secret itself never leaves the server (never sent to a browser, never
logged).

``<who>`` is what coturn's ``user-quota`` counts: coturn strips the leading ``<digits>:`` of a
REST-API username and counts allocations per rest (measured with coturn 4.6.1,
tests/system/test_turn_prod.py). A browser's credential therefore names the access token's subject
when there is one, so the quota is per user of the app, however many calls or sessions that
user opens; without a subject (open dev mode, tokens without ``sub``) it names the session.
A browser's credential never outlives the access token that asked for it (``not_after``).

coturn checks the expiry only when an allocation starts: an allocation made in time lives on
through its refreshes, so a call is not cut at the expiry, but a new peer connection (a
reconnect) needs fresh credentials, which every offer answer carries.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
from dataclasses import dataclass, field
from typing import Any

from aiortc import RTCIceServer

__all__ = ["SAFE_SUBJECT", "TurnConfig", "mint", "quota_name"]

SAFE_SUBJECT = re.compile(r"[A-Za-z0-9._@+-]{1,64}")
"""Subjects shown to coturn as they are; anything else (spaces, control characters that would
land in coturn's log, long ids) is replaced by a digest, which counts the same way."""


def mint(
    secret: str, session: str, ttl: int, now: float | None = None, not_after: float | None = None
) -> tuple[str, str]:
    """(username, credential) valid for ``ttl`` seconds from ``now``, and not after
    ``not_after`` (Unix time) when given. ``session`` is the part after the expiry."""
    expiry = int((time.time() if now is None else now) + ttl)
    if not_after is not None:
        expiry = min(expiry, int(not_after))
    username = f"{expiry}:{session}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode("ascii")


def quota_name(subject: str) -> str:
    """How a token subject appears in a TURN username (coturn's per-user quota key)."""
    if SAFE_SUBJECT.fullmatch(subject):
        return subject
    return "sub-" + hashlib.sha256(subject.encode()).hexdigest()[:24]


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
        """RTCIceServer dicts for a browser: every URL, one credential. With the access token's
        ``subject`` the username is ``<expiry>:<subject>`` (coturn's user-quota then counts per
        user), else ``<expiry>:<session>``; the expiry is ``ttl`` from now but never later than
        ``not_after`` (the token's own expiry)."""
        if not self.urls:
            return []
        entry: dict[str, Any] = {"urls": list(self.urls)}
        if any(u.startswith("turn") for u in self.urls) and self.secret:
            who = session if subject is None else quota_name(subject)
            entry["username"], entry["credential"] = mint(
                self.secret, who, self.ttl, not_after=not_after
            )
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
