"""Every change voicegate makes to aiortc's media path is installed here, by ``apply()``.

Pinned: aiortc==1.16.0. aiortc is a fine signaling/transport stack, but its audio media path
costs latency, loss tolerance and CPU that a voice gateway cannot afford (measured in
benchmarks/). ``apply()`` replaces, process-wide and once at start-up, exactly these pieces;
each is tied to the upstream report it works around, and each lives in its own module:

1. **Receive path** (aiortc#543, no jitter-buffer prefetch, FEC/PLC): ``receive.AudioReceivePath``
   takes the place of the audio ``JitterBuffer`` of every audio ``RTCRtpReceiver``.
2. **Decoder thread** (aiortc#505/#744): audio receivers start no decoder thread; the receive
   path decodes inline with libopus (``opus``), straight to 16 kHz mono for the model.
3. **Encoder** (aiortc#1155, 96 kbit/s stereo in a thread pool): ``encode.SpeechEncoder``,
   inline, mono, configured for speech, RTP timestamps from the frames' pts.
4. **Audio level** (``rtp.compute_audio_level_dbov`` loops over every sample in Python):
   ``levels.audio_level_dbov``, the same RFC 6465 formula with numpy.
5. **SDP**: opus is announced with ``useinbandfec=1`` so browsers send the FEC that (1) uses.

This module is the only one that replaces aiortc attributes; the hooks below touch aiortc
privates (name-mangled attributes), so ``apply()`` checks the pinned version and refuses
anything else, and tests/integration/test_rtcpatch.py exercises each piece on a real pair of peers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, cast

import aiortc
import av
import structlog
from aiortc import rtp as aiortc_rtp
from aiortc.codecs import CODECS, get_encoder
from aiortc.rtcrtpreceiver import RTCRtpReceiver
from aiortc.rtcrtpsender import RTCEncodedFrame, RTCRtpSender

from voicegate.audio.levels import audio_level_dbov
from voicegate.media import opus
from voicegate.media.encode import OutboundOpus, SpeechEncoder
from voicegate.media.receive import AudioReceivePath, receive_path

__all__ = [
    "AIORTC_VERSION",
    "AudioReceivePath",
    "MediaSettings",
    "OutboundOpus",
    "SpeechEncoder",
    "applied",
    "apply",
    "audio_level_dbov",
    "receive_path",
    "settings",
]
"""The pieces ``apply()`` installs are re-exported so ``patch.receive_path`` and friends keep
working; their owners are ``receive``, ``encode`` and ``levels``."""

log = structlog.get_logger(__name__)

AIORTC_VERSION: Final = "1.16.0"


@dataclass(slots=True)
class MediaSettings:
    decode_rate: int = 16000
    """Rate of the mono frames inbound audio tracks yield (16 kHz: what the model takes)."""
    outbound: OutboundOpus = field(default_factory=OutboundOpus)


_settings = MediaSettings()
_applied = False
_originals: dict[str, Any] = {}


# --------------------------------------------------------------------------------------------
# receiver hooks (1, 2)
# --------------------------------------------------------------------------------------------


def _receiver_init(self: RTCRtpReceiver, kind: str, transport: Any) -> None:
    _originals["receiver_init"](self, kind, transport)
    if kind == "audio":
        self._RTCRtpReceiver__jitter_buffer = AudioReceivePath(self, _settings.decode_rate)  # type: ignore[attr-defined]


async def _receiver_receive(self: RTCRtpReceiver, parameters: Any) -> None:
    """aiortc's ``receive`` without the decoder thread for audio (decoding is inline)."""
    if receive_path(self) is None:
        await _originals["receiver_receive"](self, parameters)
        return
    if self._RTCRtpReceiver__started:  # type: ignore[attr-defined]
        return
    codecs = self._RTCRtpReceiver__codecs  # type: ignore[attr-defined]
    for codec in parameters.codecs:
        codecs[codec.payloadType] = codec
    rtx = self._RTCRtpReceiver__rtx_ssrc  # type: ignore[attr-defined]
    for encoding in parameters.encodings:
        if encoding.rtx:
            rtx[encoding.rtx.ssrc] = encoding.ssrc
    self._RTCRtpReceiver__transport._register_rtp_receiver(self, parameters)  # type: ignore[attr-defined]
    self._RTCRtpReceiver__rtcp_task = asyncio.ensure_future(self._run_rtcp())  # type: ignore[attr-defined]
    self._RTCRtpReceiver__started = True  # type: ignore[attr-defined]


def _receiver_stop_decoder(self: RTCRtpReceiver) -> None:
    _originals["receiver_stop_decoder"](self)
    path = receive_path(self)
    if path is not None:
        path.close()


# --------------------------------------------------------------------------------------------
# sender hooks (3, 4)
# --------------------------------------------------------------------------------------------


def make_encoder(codec: Any) -> Any:
    if codec.mimeType.lower() == "audio/opus":
        return SpeechEncoder(_settings.outbound)
    return get_encoder(codec)


async def _sender_next_encoded_frame(self: RTCRtpSender, codec: Any) -> RTCEncodedFrame | None:
    """aiortc's ``_next_encoded_frame`` with inline audio encoding, voicegate's opus encoder
    and the numpy audio level (video keeps aiortc's executor path)."""
    data = await self._RTCRtpSender__track.recv()  # type: ignore[attr-defined]
    if not self._enabled:
        return None
    encoder = self._RTCRtpSender__encoder  # type: ignore[attr-defined]
    if encoder is None:
        encoder = self._RTCRtpSender__encoder = make_encoder(codec)  # type: ignore[attr-defined]
    audio_level = None
    if isinstance(data, av.AudioFrame):
        audio_level = audio_level_dbov(data)
        payloads, timestamp = encoder.encode(data, False)
    elif isinstance(data, av.frame.Frame):
        force = self._RTCRtpSender__force_keyframe  # type: ignore[attr-defined]
        self._RTCRtpSender__force_keyframe = False  # type: ignore[attr-defined]
        payloads, timestamp = await asyncio.get_running_loop().run_in_executor(
            None, encoder.encode, data, force
        )
    else:
        payloads, timestamp = encoder.pack(data)
    if not payloads:
        return None
    # aiortc itself passes None for "no level" (its annotation says int).
    return RTCEncodedFrame(payloads, timestamp, cast(int, audio_level))


# --------------------------------------------------------------------------------------------
# apply
# --------------------------------------------------------------------------------------------


def _patch(owner: Any, name: str, key: str, replacement: Callable[..., Any]) -> None:
    _originals[key] = getattr(owner, name)
    setattr(owner, name, replacement)


def apply(settings: MediaSettings | None = None) -> None:
    """Install every patch (idempotent; later calls only change the settings)."""
    global _applied, _settings
    if settings is not None:
        if settings.decode_rate not in opus.RATES:
            raise ValueError(f"decode_rate must be one of {opus.RATES}")
        _settings = settings
    if _applied:
        return
    if aiortc.__version__ != AIORTC_VERSION:
        raise RuntimeError(
            f"voicegate's aiortc patches are written for aiortc {AIORTC_VERSION}, "
            f"found {aiortc.__version__}; re-check voicegate.media.patch before changing the pin"
        )
    opus.lib()  # fail at start-up, not on the first call, when libopus is missing
    _patch(RTCRtpReceiver, "__init__", "receiver_init", _receiver_init)
    _patch(RTCRtpReceiver, "receive", "receiver_receive", _receiver_receive)
    _patch(
        RTCRtpReceiver,
        "_RTCRtpReceiver__stop_decoder",
        "receiver_stop_decoder",
        _receiver_stop_decoder,
    )
    _patch(RTCRtpSender, "_next_encoded_frame", "sender_next", _sender_next_encoded_frame)
    _patch(aiortc_rtp, "compute_audio_level_dbov", "audio_level", audio_level_dbov)
    for codec in CODECS["audio"]:
        if codec.mimeType.lower() == "audio/opus":
            codec.parameters.setdefault("useinbandfec", 1)
            codec.parameters.setdefault("minptime", 10)
    _applied = True
    log.debug("aiortc_patched", aiortc=aiortc.__version__, libopus=opus.version())


def applied() -> bool:
    return _applied


def settings() -> MediaSettings:
    return _settings
