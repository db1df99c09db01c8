"""A browser's SDP offer: checked before aiortc sees it, then answered, so a bad offer is a 400.

aiortc's parser and ``setRemoteDescription`` report malformed SDP with bare asserts and assorted
exceptions, some of them only later in a background task; everything that can be checked up
front is checked here (``check_offer``), and ``answer`` turns what aiortc still raises into
``OfferError``. An accepted offer also has to be useful: it must send audio, or the call would
hold a slot (and a paid model stream) for a microphone that never arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Final

from aiortc import RTCPeerConnection, RTCSessionDescription, sdp
from aiortc.mediastreams import MediaStreamTrack

__all__ = ["OfferError", "SENDING", "answer", "check_offer", "session_direction"]

SENDING: Final = ("sendrecv", "sendonly")
"""Directions of an offer's m-line in which the browser sends media (RFC 3264 6.1)."""


class OfferError(ValueError):
    """The offer cannot be accepted; the message is shown to the client."""


def check_offer(text: str) -> sdp.SessionDescription:
    """The parsed offer, or ``OfferError`` saying what is wrong with it."""
    if "m=audio" not in text:
        raise OfferError("the offer has no audio section (m=audio)")
    try:
        parsed = sdp.SessionDescription.parse(text)
    except Exception as exc:
        raise OfferError(f"the offer SDP could not be parsed ({type(exc).__name__})") from exc
    audio = [m for m in parsed.media if m.kind == "audio"]
    if not audio:
        raise OfferError("the offer has no audio section (m=audio)")
    # Mandatory per RFC 8829 5.8.3; aiortc dereferences them unchecked and fails with an
    # AttributeError, in setRemoteDescription or later in a background task
    # (aiortc/aiortc#391, aiortc/aiortc#255). Found by tests/integration/test_fuzz_http.py.
    for i, media in enumerate(parsed.media):
        if media.dtls is None or not media.dtls.fingerprints:
            raise OfferError(f"media section {i} of the offer has no DTLS fingerprint")
        if media.ice is None or not media.ice.usernameFragment or not media.ice.password:
            raise OfferError(f"media section {i} of the offer has no ICE ufrag/pwd")
    default = session_direction(text)
    directions = [m.direction or default for m in audio]
    if not any(d in SENDING for d in directions):
        raise OfferError(
            "the offer's audio is " + "/".join(sorted(set(directions))) + ": the browser must "
            "send its microphone (an audio section with direction sendrecv or sendonly)"
        )
    return parsed


def session_direction(text: str) -> str:
    """The session-level direction attribute (before the first m-line), which media sections
    without their own inherit (RFC 4566 6); sendrecv when there is none. aiortc ignores it."""
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("m="):
            break
        if line.startswith("a=") and line[2:] in sdp.DIRECTIONS:
            return line[2:]
    return "sendrecv"


async def answer(
    pc: RTCPeerConnection,
    offer: RTCSessionDescription,
    track: MediaStreamTrack,
    alongside: Callable[[], Awaitable[None]],
) -> RTCSessionDescription:
    """Apply ``offer``, send ``track`` and answer, while ``alongside`` (the conversation's start,
    which opens the model stream) runs concurrently once the offer is known to be usable. Both
    must succeed: an error from ``alongside`` propagates after the answer is made."""
    try:
        await pc.setRemoteDescription(offer)
    except (ValueError, TypeError, KeyError, IndexError, AssertionError, AttributeError) as exc:
        raise OfferError(f"the offer SDP could not be used: {exc or type(exc).__name__}") from exc
    audio = [t for t in pc.getTransceivers() if t.kind == "audio"]
    if not audio:
        raise OfferError("the offer has no audio transceiver")
    pc.addTrack(track)
    started = asyncio.ensure_future(alongside())
    try:
        await pc.setLocalDescription(await pc.createAnswer())
    except BaseException as exc:
        started.cancel()
        with contextlib.suppress(BaseException):
            await started
        # Offers aiortc accepted but cannot answer (e.g. a section left without a transport
        # by odd BUNDLE groups) end in AttributeError inside aiortc; same family as
        # aiortc/aiortc#391. Found by tests/integration/test_fuzz_http.py.
        if isinstance(exc, ValueError | TypeError | KeyError | IndexError | AttributeError):
            raise OfferError(
                f"no answer is possible for this offer ({type(exc).__name__})"
            ) from exc
        raise
    await started
    desc = pc.localDescription
    return RTCSessionDescription(sdp=desc.sdp, type=desc.type)
