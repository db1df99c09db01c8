"""Audio on the wire, WebRTC's part: the aiortc patches, the receive and encode paths, the
libopus binding, the playout track, RTP statistics, ICE addresses and ports. Audio as numbers
(levels, resampling, model chunks, PCM) is ``voicegate.audio``'s, below this package.

Some of it is process-wide by nature (aiortc and aioice keep module-level state: the codec
table, the host-address lookup, the gathering function), so it is set up once per process, by
whoever owns the process, through the one function here: ``configure(MediaSetup)``, which also
sets the process-wide model chunk length (``audio.chunks``) and the inbound decode rate, so a
process is set up by one call.
The CLI calls it before it builds the signaling app; tests and benchmarks that build apps call
it too. The aiortc modules are imported inside ``configure`` so that importing a light piece of
the package (``media.rtp_stats`` from the call) does not pull in aiortc.
"""

from __future__ import annotations

from dataclasses import dataclass

from voicegate.audio import chunks

__all__ = ["MediaSetup", "configure"]


@dataclass(frozen=True, slots=True)
class MediaSetup:
    """The process-wide media choices (named so, not ``MediaSettings``, which is the aiortc
    patch's own decode/encode settings in ``media.patch``)."""

    host_addresses: tuple[str, ...] | None = None
    """Addresses offered as ICE host candidates (None: every interface, aioice's lookup)."""
    port_range: tuple[int, int] | None = None
    """UDP ports for host candidates (None: any free port)."""
    announced_address: str | None = None
    """Address announced instead of the bound one (a 1:1 NAT), or None."""
    model_chunk_ms: int = chunks.DEFAULT_CHUNK_MS
    """Caller audio per model event."""
    decode_rate: int = 16000
    """Rate inbound Opus is decoded to (natively by libopus): 16 kHz, what the speaking detector
    and the recording take, or the model's input rate when that is higher (24 kHz), so the
    model gets the band the browser sent rather than 16 kHz audio resampled up."""


def configure(setup: MediaSetup) -> None:
    """Apply ``setup`` to this process: the aiortc patches, ICE addresses and ports, and the
    model chunk length. Idempotent; a later call replaces the earlier choices."""
    from dataclasses import replace

    from voicegate.media import ice
    from voicegate.media import patch as rtcpatch

    rtcpatch.apply(replace(rtcpatch.settings(), decode_rate=setup.decode_rate))
    ice.configure_host_addresses(
        list(setup.host_addresses) if setup.host_addresses is not None else None
    )
    ice.configure_host_candidates(setup.port_range, setup.announced_address)
    chunks.configure_chunks(setup.model_chunk_ms)
