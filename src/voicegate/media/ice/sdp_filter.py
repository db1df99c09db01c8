"""An offer's SDP without the remote candidates the server refuses to send to.

Signaling runs every offer through ``filter_sdp`` before aiortc parses it, so a refused
candidate never reaches aioice; what was left out (and why) goes back in the answer, and every
distinct candidate named counts against the call's limit whether it was used or not.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiortc.sdp import candidate_from_sdp

from voicegate.media.ice.candidate_policy import CandidatePolicy, candidate_key

__all__ = ["FilteredSdp", "filter_sdp"]


@dataclass(frozen=True, slots=True)
class FilteredSdp:
    sdp: str
    keys: frozenset[tuple[str, int, str]]
    """Every distinct candidate the SDP named, used or not (they count against the limit)."""
    ignored: tuple[tuple[str, str], ...]
    """(address, reason) of each candidate left out."""


def filter_sdp(sdp: str, policy: CandidatePolicy) -> FilteredSdp:
    """``sdp`` without the ``a=candidate`` lines ``policy`` refuses. Lines that do not parse
    are left for aiortc's own parser to refuse."""
    lines = sdp.splitlines(keepends=True)
    kept: list[str] = []
    keys: set[tuple[str, int, str]] = set()
    ignored: dict[tuple[str, int, str], tuple[str, str]] = {}
    for line in lines:
        if line.startswith("a=candidate:"):
            try:
                candidate = candidate_from_sdp(line.strip().removeprefix("a=candidate:"))
            except (ValueError, IndexError, KeyError, AssertionError):
                kept.append(line)
                continue
            key = candidate_key(candidate)
            keys.add(key)
            reason = policy.refusal(candidate.ip)
            if reason is not None:
                ignored[key] = (candidate.ip, reason)
                continue
        kept.append(line)
    return FilteredSdp("".join(kept), frozenset(keys), tuple(ignored.values()))
