"""``--trusted-proxies``: ``X-Forwarded-For`` counts only when a listed proxy sent it, and then
only the entries our proxies appended (the rightmost address outside the list is the client).

The attack: a caller that reaches the server directly (bypassing the proxy) sends a fresh
``X-Forwarded-For`` on every offer to get a fresh rate-limit bucket each time. With
``--trust-forwarded-for`` alone it works (documented: only when the proxy cannot be bypassed);
with ``--trusted-proxies`` it does not - the 429 comes as for any one address."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from tests.support.server import running_server
from voicegate.backends.echo import EchoBackend
from voicegate.config import ConfigError, resolve
from voicegate.signaling import auth
from voicegate.signaling.proxies import ProxyTrust

BAD_OFFER: dict[str, Any] = {"sdp": "hello", "type": "offer"}
SECRET = "proxies-secret-0123456789abcdef"


def test_rightmost_untrusted_address_is_the_client() -> None:
    trust = ProxyTrust(False, ("10.0.0.0/8", "2001:db8::/32"))
    # From a trusted proxy: skip our own hops from the right, stop at the first stranger.
    assert trust.client("10.1.1.1", "6.6.6.6, 203.0.113.5, 10.2.2.2") == "203.0.113.5"
    assert trust.client("10.1.1.1", "203.0.113.5") == "203.0.113.5"
    assert trust.client("2001:db8::1", "198.51.100.1, 2001:db8::9") == "198.51.100.1"
    # Every hop is ours: the leftmost one.
    assert trust.client("10.1.1.1", "10.3.3.3, 10.2.2.2") == "10.3.3.3"
    # No header, or garbage where only our proxies write: the peer itself.
    assert trust.client("10.1.1.1", "") == "10.1.1.1"
    assert trust.client("10.1.1.1", "6.6.6.6, not-an-address") == "10.1.1.1"
    # Not from a trusted proxy: the header is the caller's word, ignored.
    assert trust.client("203.0.113.7", "6.6.6.6") == "203.0.113.7"
    # --trust-forwarded-for alone: the last entry from anyone (unchanged); with a list, the
    # list decides.
    assert ProxyTrust(True, ()).client("203.0.113.7", "1.1.1.1, 6.6.6.6") == "6.6.6.6"
    assert ProxyTrust(True, ("10.0.0.0/8",)).client("203.0.113.7", "6.6.6.6") == "203.0.113.7"
    assert ProxyTrust(False, ()).client("203.0.113.7", "6.6.6.6") == "203.0.113.7"


def test_trusted_proxies_are_validated_at_start() -> None:
    env = {"VOICEGATE_TRUSTED_PROXIES": "10.0.0.0/8, 192.0.2.7", "VOICEGATE_AUTH_SECRET": SECRET}
    assert resolve(None, env).trusted_proxies == ("10.0.0.0/8", "192.0.2.7/32")
    with pytest.raises(ConfigError) as bad:
        resolve(None, {"VOICEGATE_TRUSTED_PROXIES": "10.0.0.0/33,proxy.example"})
    assert "VOICEGATE_TRUSTED_PROXIES" in str(bad.value)
    with pytest.raises(ConfigError) as open_mode:
        resolve(None, {"VOICEGATE_TRUSTED_PROXIES": "10.0.0.0/8"})
    assert "--trusted-proxies (requests come through a proxy) needs --auth-secret" in str(
        open_mode.value
    )


async def _statuses(url: str, forwarded: list[str]) -> list[int]:
    token = {"Authorization": f"Bearer {auth.mint(SECRET, 60)}"}
    got = []
    async with aiohttp.ClientSession() as http:
        for value in forwarded:
            headers = {"X-Forwarded-For": value, **token}
            async with http.post(f"{url}/api/offer", json=BAD_OFFER, headers=headers) as r:
                got.append(r.status)
                if r.status == 429:
                    assert "error" in await r.json()
    return got


async def test_a_direct_caller_cannot_choose_its_address() -> None:
    spoofed = [f"203.0.113.{i}" for i in range(1, 5)]
    # The weakness --trusted-proxies closes: trusting any peer's header, each spoof is new.
    common = {"offer_rate": 1, "offer_burst": 2, "auth_secret": SECRET}
    async with running_server(EchoBackend(), trust_forwarded_for=True, **common) as (url, _):
        assert await _statuses(url, spoofed) == [400, 400, 400, 400]
    # The proxy is elsewhere (192.0.2.0/24): the loopback caller is its own address, and its
    # third offer is refused whatever it claims; both settings together: the list decides.
    for flag in (False, True):
        server = running_server(
            EchoBackend(), trust_forwarded_for=flag, trusted_proxies=("192.0.2.0/24",), **common
        )
        async with server as (url, _):
            assert await _statuses(url, spoofed) == [400, 400, 429, 429]


async def test_through_a_trusted_proxy_only_its_entry_counts() -> None:
    common = {"offer_rate": 1, "offer_burst": 2, "auth_secret": SECRET}
    server = running_server(EchoBackend(), trusted_proxies=("127.0.0.0/8",), **common)
    async with server as (url, _):
        # The client's own entries (left of what our proxy appended) change nothing: all four
        # count against 198.51.100.9, the address the proxy saw.
        forged = [f"203.0.113.{i}, 198.51.100.9" for i in range(1, 5)]
        assert await _statuses(url, forged) == [400, 400, 429, 429]
        # Another client behind the same proxy has its own bucket.
        assert await _statuses(url, ["198.51.100.10"]) == [400]
