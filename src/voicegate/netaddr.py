"""What kind of network address a host string names, for the few places that must know:
whether the server listens on loopback only (open dev mode, default ICE addresses). One
definition, imported by configuration, signaling and media alike; it imports nothing of
voicegate, so every layer may use it."""

from __future__ import annotations

import ipaddress

__all__ = ["is_loopback_host"]


def is_loopback_host(host: str) -> bool:
    """True for ``localhost`` and any loopback IP address (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
