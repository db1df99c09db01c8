"""Mint a voicegate access token in your own backend: a standard HS256 JWT (PyJWT), signed with
the same secret the server has in --auth-secret / --auth-secret-file.

    pip install pyjwt
    VOICEGATE_AUTH_SECRET=... python examples/mint_token.py user-42 support
    # -> prints a token; open https://voice.example.com/#token=<token>

Keep the lifetime short (minutes) and within the server's --max-token-ttl; add "aud" if the
server runs with --token-audience.
"""

from __future__ import annotations

import os
import sys
import time

import jwt


def voicegate_token(
    secret: str,
    subject: str,
    agent: str | None = None,
    ttl: int = 300,
    max_call_seconds: float | None = None,
    audience: str | None = None,
) -> str:
    now = int(time.time())
    claims: dict[str, object] = {"sub": subject, "iat": now, "nbf": now, "exp": now + ttl}
    if agent is not None:
        claims["agent"] = agent  # the one agent this caller may talk to
    if max_call_seconds is not None:
        claims["max_call_seconds"] = max_call_seconds
    if audience is not None:
        claims["aud"] = audience
    return jwt.encode(claims, secret, algorithm="HS256")


if __name__ == "__main__":
    args = sys.argv[1:]
    print(voicegate_token(os.environ["VOICEGATE_AUTH_SECRET"], *args[:2]))
