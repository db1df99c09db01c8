"""ICE, the parts aioice does not let voicegate choose, and the remote candidates it accepts.

Four jobs, one module each:

- ``host_addresses``: which local addresses are offered as host candidates (an aioice patch:
  aioice enumerates every interface and has no option, aiortc/aioice#2).
- ``host_candidates``: the UDP port range host candidates bind in and the address announced
  for them behind a 1:1 NAT (a second aioice patch, aiortc/aioice#47).
- ``candidate_policy``: which remote candidates the server may be made to send to, judged by
  its own addresses, and how many one call may name.
- ``sdp_filter``: an offer's SDP without the candidates that policy refuses.

The two patches are process-wide, as aioice's module state is; ``voicegate.media.configure``
applies both at start-up. This package's namespace is the interface callers use
(``ice.candidate_policy(...)``, ``ice.filter_sdp(...)``); each name is defined in one module.
"""

from __future__ import annotations

from voicegate.media.ice.candidate_policy import (
    MAX_REMOTE_CANDIDATES,
    CandidatePolicy,
    candidate_key,
    candidate_policy,
    own_addresses,
)
from voicegate.media.ice.host_addresses import configure_host_addresses, default_host_addresses
from voicegate.media.ice.host_candidates import PortRangeExhausted, configure_host_candidates
from voicegate.media.ice.sdp_filter import FilteredSdp, filter_sdp

__all__ = [
    "MAX_REMOTE_CANDIDATES",
    "CandidatePolicy",
    "FilteredSdp",
    "PortRangeExhausted",
    "candidate_key",
    "candidate_policy",
    "configure_host_addresses",
    "configure_host_candidates",
    "default_host_addresses",
    "filter_sdp",
    "own_addresses",
]
