"""A direct libopus binding (ctypes) for the media path: encode, decode, conceal, recover.

Why not PyAV, which aiortc uses: FFmpeg's libopus wrapper exposes neither packet-loss
concealment nor in-band FEC decoding (``opus_decode`` is always called with ``decode_fec=0`` and
an empty packet means "flush"), and its encoder exposes no DTX/FEC/signal controls per stream.
Those are exactly what a loss-tolerant, cheap voice path needs. libopus itself is already on the
machine: PyAV's wheel ships it next to libavcodec (``av.libs``), and Debian's ``libopus0`` is the
fallback. ctypes releases the GIL around each call, and a call costs a few microseconds of
overhead, far below the codec work itself.

Only the stable libopus API is used (``opus_encoder_*``, ``opus_decoder_*``,
``opus_packet_get_nb_samples``), so any libopus >= 1.1 works. ``opus_packet_has_lbrr`` (libopus
>= 1.5; PyAV's wheel ships 1.6) is used when present; with an older library (Debian bookworm's
libopus0 is 1.3.1) the same flag is read from the packet here (``_has_lbrr_parsed``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import os
from typing import Final

__all__ = [
    "APPLICATION_AUDIO",
    "APPLICATION_VOIP",
    "Decoder",
    "Encoder",
    "MAX_PACKET",
    "OPUS_OK",
    "OpusError",
    "RATES",
    "RTP_RATE",
    "SET_BITRATE",
    "SET_COMPLEXITY",
    "SET_DTX",
    "SET_INBAND_FEC",
    "SET_PACKET_LOSS_PERC",
    "SET_SIGNAL",
    "SIGNAL_VOICE",
    "lib",
    "packet_has_lbrr",
    "packet_samples",
    "version",
]

OPUS_OK: Final = 0
APPLICATION_VOIP: Final = 2048
APPLICATION_AUDIO: Final = 2049
SET_BITRATE: Final = 4002
SET_COMPLEXITY: Final = 4010
SET_INBAND_FEC: Final = 4012
SET_PACKET_LOSS_PERC: Final = 4014
SET_DTX: Final = 4016
SET_SIGNAL: Final = 4024
SIGNAL_VOICE: Final = 3001
MAX_PACKET: Final = 1500
RTP_RATE: Final = 48000
"""Opus's RTP clock (RFC 7587), whatever the rate of the audio inside."""
RATES: Final = (8000, 12000, 16000, 24000, 48000)
"""Sample rates libopus encodes from and decodes to natively (no resampler needed)."""


class OpusError(RuntimeError):
    pass


def _find_library() -> str:
    import av

    here = os.path.dirname(os.path.abspath(av.__file__))
    bundled = sorted(glob.glob(os.path.join(here, os.pardir, "av.libs", "libopus*.so*")))
    if bundled:
        return bundled[0]
    found = ctypes.util.find_library("opus")
    if found is None:
        raise OpusError("libopus not found (neither in PyAV's wheel nor as libopus0)")
    return found


def _load() -> ctypes.CDLL:
    lib = ctypes.CDLL(_find_library())
    vp, ip, cp = ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p
    i16p = ctypes.POINTER(ctypes.c_int16)
    lib.opus_get_version_string.restype = cp
    lib.opus_encoder_create.restype = vp
    lib.opus_encoder_create.argtypes = [ctypes.c_int32, ip, ip, ctypes.POINTER(ip)]
    lib.opus_encoder_destroy.argtypes = [vp]
    lib.opus_encode.restype = ctypes.c_int32
    lib.opus_encode.argtypes = [vp, i16p, ip, ctypes.c_char_p, ctypes.c_int32]
    # opus_encoder_ctl is variadic; every request used here takes one int.
    lib.opus_encoder_ctl.restype = ip
    lib.opus_decoder_create.restype = vp
    lib.opus_decoder_create.argtypes = [ctypes.c_int32, ip, ctypes.POINTER(ip)]
    lib.opus_decoder_destroy.argtypes = [vp]
    lib.opus_decode.restype = ip
    lib.opus_decode.argtypes = [vp, ctypes.c_char_p, ctypes.c_int32, i16p, ip, ip]
    lib.opus_packet_get_nb_samples.restype = ip
    lib.opus_packet_get_nb_samples.argtypes = [ctypes.c_char_p, ctypes.c_int32, ctypes.c_int32]
    if hasattr(lib, "opus_packet_has_lbrr"):
        lib.opus_packet_has_lbrr.restype = ip
        lib.opus_packet_has_lbrr.argtypes = [ctypes.c_char_p, ctypes.c_int32]
    return lib


_lib: ctypes.CDLL | None = None


def lib() -> ctypes.CDLL:
    global _lib
    if _lib is None:
        _lib = _load()
    return _lib


def version() -> str:
    raw: bytes = lib().opus_get_version_string()
    return raw.decode()


def packet_samples(packet: bytes, rate: int = 48000) -> int:
    """Samples (per channel, at ``rate``) that ``packet`` decodes to; <= 0 if it is invalid."""
    if not packet:
        return 0
    n: int = lib().opus_packet_get_nb_samples(packet, len(packet), rate)
    return n


def packet_has_lbrr(packet: bytes) -> bool:
    """True when ``packet`` carries in-band FEC (SILK LBRR) data for the frame before it, i.e.
    when ``Decoder.recover`` would rebuild that frame rather than conceal it."""
    if not packet:
        return False
    fn = getattr(lib(), "opus_packet_has_lbrr", None)
    if fn is None:
        return _has_lbrr_parsed(packet)
    result: int = fn(packet, len(packet))
    return result > 0


def _has_lbrr_parsed(packet: bytes) -> bool:
    """``opus_packet_has_lbrr`` for libopus < 1.5, from the packet itself (RFC 6716).

    The TOC byte (3.1) gives the mode, the frame size and the stereo flag; the framing code
    (3.2) locates the first Opus frame. That frame begins with the SILK header flags (4.2.3):
    one VAD flag per 20 ms SILK frame, then the LBRR flag, for the mid channel, then the same
    for the side channel in stereo. They are range-coded with probability one half each, which
    makes them exactly the leading bits of the frame's first byte."""
    toc = packet[0]
    config = toc >> 3
    if config >= 16:  # CELT-only: no SILK layer, no LBRR
        return False
    stereo = bool(toc & 0x04)
    # SILK and hybrid configs cycle through 10/20/40/60 ms (SILK) or 10/20 ms (hybrid).
    ms = (10, 20, 40, 60)[config & 3] if config < 12 else (10, 20)[config & 1]
    silk_frames = max(1, ms // 20)
    first = _first_frame_offset(packet)
    if first is None or first >= len(packet):
        return False
    flags = packet[first]
    lbrr = (flags >> (7 - silk_frames)) & 1
    if stereo:
        lbrr |= (flags >> (6 - 2 * silk_frames)) & 1
    return bool(lbrr)


def _length(packet: bytes, pos: int) -> tuple[int, int] | None:
    """A frame length (RFC 6716 3.2.1: one byte, or two from 252 up) and where it ends."""
    if pos >= len(packet):
        return None
    b0 = packet[pos]
    if b0 < 252:
        return b0, pos + 1
    if pos + 1 >= len(packet):
        return None
    return b0 + 4 * packet[pos + 1], pos + 2


def _first_frame_offset(packet: bytes) -> int | None:
    """Where the first frame's data starts (RFC 6716 3.2); None when that frame is empty (DTX)
    or the packet is malformed."""
    n = len(packet)
    code = packet[0] & 3
    if code == 0:
        return 1 if n > 1 else None
    if code == 1:
        return 1 if (n - 1) // 2 > 0 else None
    if code == 2:
        got = _length(packet, 1)
        return got[1] if got is not None and got[0] > 0 and got[1] < n else None
    if n < 2:
        return None
    vbr, padded, count = bool(packet[1] & 0x80), bool(packet[1] & 0x40), packet[1] & 0x3F
    if count == 0:
        return None
    pos, padding = 2, 0
    if padded:  # each byte of 255 adds 254 bytes of padding; the first byte below 255 ends it
        while pos < n and packet[pos] == 255:
            padding += 254
            pos += 1
        if pos >= n:
            return None
        padding += packet[pos]
        pos += 1
    if vbr:
        first = -1
        for _ in range(count - 1):  # every frame's length but the last's
            got = _length(packet, pos)
            if got is None:
                return None
            if first < 0:
                first = got[0]
            pos = got[1]
        if first < 0:  # a single frame: everything but the padding
            first = n - pos - padding
    else:
        first = (n - pos - padding) // count
    return pos if first > 0 and pos < n else None


class Encoder:
    """One mono libopus encoder. ``encode`` takes exactly one packet's worth of s16 samples."""

    def __init__(
        self,
        rate: int = 24000,
        bitrate: int = 32000,
        complexity: int = 5,
        fec: bool = False,
        loss_percent: int = 0,
        dtx: bool = False,
        application: int = APPLICATION_VOIP,
    ) -> None:
        if rate not in RATES:
            raise ValueError(f"libopus cannot encode at {rate} Hz (one of {RATES})")
        self.rate = rate
        self._lib = lib()
        err = ctypes.c_int(0)
        self._st = self._lib.opus_encoder_create(rate, 1, application, ctypes.byref(err))
        if err.value != OPUS_OK or not self._st:
            raise OpusError(f"opus_encoder_create failed ({err.value})")
        for request, value in (
            (SET_BITRATE, bitrate),
            (SET_COMPLEXITY, complexity),
            (SET_INBAND_FEC, int(fec)),
            (SET_PACKET_LOSS_PERC, loss_percent),
            (SET_DTX, int(dtx)),
            (SET_SIGNAL, SIGNAL_VOICE),
        ):
            rc = self._lib.opus_encoder_ctl(ctypes.c_void_p(self._st), request, ctypes.c_int(value))
            if rc != OPUS_OK:
                raise OpusError(f"opus_encoder_ctl({request}, {value}) failed ({rc})")
        self._out = ctypes.create_string_buffer(MAX_PACKET)

    def encode(self, pcm: bytes) -> bytes:
        """One Opus packet from mono s16 ``pcm`` (2.5/5/10/20/40/60 ms at ``rate``)."""
        samples = len(pcm) // 2
        buf = (ctypes.c_int16 * samples).from_buffer_copy(pcm)
        n = self._lib.opus_encode(self._st, buf, samples, self._out, MAX_PACKET)
        if n < 0:
            raise OpusError(f"opus_encode failed ({n})")
        return self._out.raw[:n]

    def __del__(self) -> None:
        st = getattr(self, "_st", None)
        if st:
            self._lib.opus_encoder_destroy(st)
            self._st = None


class Decoder:
    """One mono libopus decoder at ``rate`` (it downmixes stereo packets by itself)."""

    MAX_FRAME_MS: Final = 120

    def __init__(self, rate: int = 48000) -> None:
        if rate not in RATES:
            raise ValueError(f"libopus cannot decode to {rate} Hz (one of {RATES})")
        self.rate = rate
        self._lib = lib()
        err = ctypes.c_int(0)
        self._st = self._lib.opus_decoder_create(rate, 1, ctypes.byref(err))
        if err.value != OPUS_OK or not self._st:
            raise OpusError(f"opus_decoder_create failed ({err.value})")
        self._max = rate * self.MAX_FRAME_MS // 1000
        self._pcm = (ctypes.c_int16 * self._max)()

    def _run(self, data: bytes | None, samples: int, fec: int) -> bytes:
        n = self._lib.opus_decode(
            self._st, data, len(data) if data else 0, self._pcm, min(samples, self._max), fec
        )
        if n < 0:
            raise OpusError(f"opus_decode failed ({n})")
        return ctypes.string_at(self._pcm, n * 2)

    def decode(self, packet: bytes) -> bytes:
        """Mono s16 PCM of one packet."""
        return self._run(packet, self._max, 0)

    def conceal(self, samples: int) -> bytes:
        """Packet-loss concealment: ``samples`` (a multiple of 2.5 ms) of extrapolated audio."""
        return self._run(None, samples, 0)

    def recover(self, next_packet: bytes, samples: int) -> bytes:
        """The lost packet before ``next_packet`` from that packet's in-band FEC (LBRR) data;
        libopus falls back to concealment when ``next_packet`` carries none."""
        return self._run(next_packet, samples, 1)

    def __del__(self) -> None:
        st = getattr(self, "_st", None)
        if st:
            self._lib.opus_decoder_destroy(st)
            self._st = None
