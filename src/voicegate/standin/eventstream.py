"""AWS event-stream framing (``application/vnd.amazon.eventstream``): encode and decode messages.

Bedrock's bidirectional stream carries every event, in both directions, in this binary framing,
so the stand-in needs an independent implementation of it: one that shares no code with the SDK
is what lets the stand-in catch framing and signing regressions in the client.

A message is a 12-byte prelude (total length, headers length, CRC32 of those 8 bytes), the
headers, the payload and a CRC32 of everything before it. Header values are typed; the wire type
is chosen from the Python type of the value:

========  =====================  ===========================================
wire      Python (encode)        Python (decode)
========  =====================  ===========================================
0 / 1     ``bool``               ``bool``
2         ``Int8``               ``Int8``
3         ``Int16``              ``Int16``
4         ``Int32`` or ``int``   ``Int32``
5         ``Int64`` (or an int   ``Int64``
          too big for int32)
6         ``bytes``              ``bytes``
7         ``str``                ``str``
8         ``datetime`` (ms)      ``datetime`` (UTC, millisecond precision)
9         ``uuid.UUID``          ``uuid.UUID``
========  =====================  ===========================================

Pure functions and one small incremental decoder, no I/O. Everything a peer sends is bounded:
the decoder refuses a message whose declared length exceeds ``max_message_size`` before
buffering it.
"""

from __future__ import annotations

import struct
import uuid
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Final

__all__ = [
    "ChecksumMismatch",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "EventStreamError",
    "HeaderValue",
    "Headers",
    "Int16",
    "Int32",
    "Int64",
    "Int8",
    "MAX_HEADERS_LENGTH",
    "MESSAGE_CRC_LENGTH",
    "MIN_MESSAGE_LENGTH",
    "Message",
    "MessageDecoder",
    "PRELUDE_LENGTH",
    "decode_headers",
    "decode_message",
    "encode_header",
    "encode_headers",
    "encode_message",
    "timestamp_ms",
]

PRELUDE_LENGTH: Final = 12
MESSAGE_CRC_LENGTH: Final = 4
MIN_MESSAGE_LENGTH: Final = PRELUDE_LENGTH + MESSAGE_CRC_LENGTH
MAX_HEADERS_LENGTH: Final = 128 * 1024
"""The AWS limit on the encoded headers of one message."""
DEFAULT_MAX_MESSAGE_SIZE: Final = 16 * 1024 * 1024
"""The AWS limit on one whole message."""

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MS: Final = timedelta(milliseconds=1)


class EventStreamError(ValueError):
    """The bytes are not a valid event-stream message."""


class ChecksumMismatch(EventStreamError):
    """A prelude or message CRC32 does not match (corruption or a framing bug)."""


class Int8(int):
    """A header integer sent as wire type 2."""


class Int16(int):
    """A header integer sent as wire type 3."""


class Int32(int):
    """A header integer sent as wire type 4 (what a plain ``int`` becomes when it fits)."""


class Int64(int):
    """A header integer sent as wire type 5."""


HeaderValue = bool | int | bytes | str | datetime | uuid.UUID
Headers = Mapping[str, HeaderValue]

_INT_TYPES: Final[tuple[tuple[type[int], int, str], ...]] = (
    (Int8, 2, ">b"),
    (Int16, 3, ">h"),
    (Int64, 5, ">q"),
    (Int32, 4, ">i"),
)
_INT_DECODERS: Final[dict[int, tuple[type[int], struct.Struct]]] = {
    2: (Int8, struct.Struct(">b")),
    3: (Int16, struct.Struct(">h")),
    4: (Int32, struct.Struct(">i")),
    5: (Int64, struct.Struct(">q")),
}
_PRELUDE: Final = struct.Struct(">II")
_U32: Final = struct.Struct(">I")
_U16: Final = struct.Struct(">H")
_I64: Final = struct.Struct(">q")


@dataclass(frozen=True, slots=True)
class Message:
    """One event-stream message: typed headers and an opaque payload."""

    headers: dict[str, HeaderValue] = field(default_factory=dict)
    payload: bytes = b""

    def text(self, name: str) -> str | None:
        """A string header's value, or None when absent or not a string."""
        value = self.headers.get(name)
        return value if isinstance(value, str) else None

    def encode(self) -> bytes:
        return encode_message(self.headers, self.payload)


# --------------------------------------------------------------------------------------------
# Encoding
# --------------------------------------------------------------------------------------------


def timestamp_ms(value: datetime) -> int:
    """Milliseconds since the epoch, exactly (naive datetimes are taken as UTC)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return (value - _EPOCH) // _MS


def encode_header(name: str, value: HeaderValue) -> bytes:
    """One header: name length (u8), name, wire type (u8), value."""
    raw_name = name.encode("utf-8")
    if not 1 <= len(raw_name) <= 255:
        raise EventStreamError(f"header name must be 1-255 bytes: {name!r}")
    head = bytes((len(raw_name),)) + raw_name
    if isinstance(value, bool):
        return head + (b"\x00" if value else b"\x01")
    if isinstance(value, int):
        for cls, wire, fmt in _INT_TYPES:
            if isinstance(value, cls):
                return head + bytes((wire,)) + _pack_int(fmt, value, name)
        fmt, wire = (">i", 4) if -(2**31) <= value < 2**31 else (">q", 5)
        return head + bytes((wire,)) + _pack_int(fmt, value, name)
    if isinstance(value, bytes):
        if len(value) > 0xFFFF:
            raise EventStreamError(f"bytes header {name!r} longer than 65535")
        return head + b"\x06" + _U16.pack(len(value)) + value
    if isinstance(value, str):
        raw = value.encode("utf-8")
        if len(raw) > 0xFFFF:
            raise EventStreamError(f"string header {name!r} longer than 65535 bytes")
        return head + b"\x07" + _U16.pack(len(raw)) + raw
    if isinstance(value, datetime):
        return head + b"\x08" + _pack_int(">q", timestamp_ms(value), name)
    if isinstance(value, uuid.UUID):
        return head + b"\x09" + value.bytes
    raise EventStreamError(f"unsupported header value type for {name!r}: {type(value)!r}")


def _pack_int(fmt: str, value: int, name: str) -> bytes:
    try:
        return struct.pack(fmt, value)
    except struct.error as exc:
        raise EventStreamError(f"integer header {name!r} out of range: {value}") from exc


def encode_headers(headers: Headers) -> bytes:
    return b"".join(encode_header(name, value) for name, value in headers.items())


def encode_message(headers: Headers, payload: bytes) -> bytes:
    """The complete wire form of one message."""
    raw_headers = encode_headers(headers)
    if len(raw_headers) > MAX_HEADERS_LENGTH:
        raise EventStreamError("headers exceed 128 KiB")
    total = MIN_MESSAGE_LENGTH + len(raw_headers) + len(payload)
    prelude = _PRELUDE.pack(total, len(raw_headers))
    head = prelude + _U32.pack(zlib.crc32(prelude))
    crc = zlib.crc32(payload, zlib.crc32(raw_headers, zlib.crc32(head)))
    return b"".join((head, raw_headers, payload, _U32.pack(crc)))


# --------------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------------


def decode_headers(raw: bytes | memoryview) -> dict[str, HeaderValue]:
    """Parse an encoded header block; every byte must belong to a header."""
    view = memoryview(raw)
    headers: dict[str, HeaderValue] = {}
    pos = 0
    end = len(view)
    while pos < end:
        name_len = view[pos]
        pos += 1
        if name_len == 0 or pos + name_len + 1 > end:
            raise EventStreamError("truncated or empty header name")
        try:
            name = bytes(view[pos : pos + name_len]).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise EventStreamError("header name is not UTF-8") from exc
        pos += name_len
        wire = view[pos]
        pos += 1
        value: HeaderValue
        if wire == 0:
            value = True
        elif wire == 1:
            value = False
        elif wire in _INT_DECODERS:
            cls, codec = _INT_DECODERS[wire]
            if pos + codec.size > end:
                raise EventStreamError(f"truncated integer header {name!r}")
            value = cls(codec.unpack_from(view, pos)[0])
            pos += codec.size
        elif wire in (6, 7):
            if pos + 2 > end:
                raise EventStreamError(f"truncated header {name!r}")
            (length,) = _U16.unpack_from(view, pos)
            pos += 2
            if pos + length > end:
                raise EventStreamError(f"truncated header {name!r}")
            data = bytes(view[pos : pos + length])
            pos += length
            if wire == 6:
                value = data
            else:
                try:
                    value = data.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise EventStreamError(f"string header {name!r} is not UTF-8") from exc
        elif wire == 8:
            if pos + 8 > end:
                raise EventStreamError(f"truncated timestamp header {name!r}")
            (ms,) = _I64.unpack_from(view, pos)
            pos += 8
            try:
                value = _EPOCH + ms * _MS
            except OverflowError as exc:
                raise EventStreamError(f"timestamp header {name!r} out of range") from exc
        elif wire == 9:
            if pos + 16 > end:
                raise EventStreamError(f"truncated uuid header {name!r}")
            value = uuid.UUID(bytes=bytes(view[pos : pos + 16]))
            pos += 16
        else:
            raise EventStreamError(f"unknown header type {wire} for {name!r}")
        if name in headers:
            raise EventStreamError(f"duplicate header {name!r}")
        headers[name] = value
    return headers


def _check_prelude(view: memoryview, max_message_size: int) -> tuple[int, int]:
    total, headers_len = _PRELUDE.unpack_from(view, 0)
    (crc,) = _U32.unpack_from(view, 8)
    if zlib.crc32(view[:8]) != crc:
        raise ChecksumMismatch("prelude CRC mismatch")
    if total < MIN_MESSAGE_LENGTH:
        raise EventStreamError(f"message length {total} is shorter than the minimum")
    if total > max_message_size:
        raise EventStreamError(f"message length {total} exceeds the limit of {max_message_size}")
    if headers_len > MAX_HEADERS_LENGTH or headers_len > total - MIN_MESSAGE_LENGTH:
        raise EventStreamError(f"headers length {headers_len} is invalid")
    return total, headers_len


def _decode_body(view: memoryview, total: int, headers_len: int) -> Message:
    (crc,) = _U32.unpack_from(view, total - MESSAGE_CRC_LENGTH)
    if zlib.crc32(view[: total - MESSAGE_CRC_LENGTH]) != crc:
        raise ChecksumMismatch("message CRC mismatch")
    headers = decode_headers(view[PRELUDE_LENGTH : PRELUDE_LENGTH + headers_len])
    payload = bytes(view[PRELUDE_LENGTH + headers_len : total - MESSAGE_CRC_LENGTH])
    return Message(headers, payload)


def decode_message(data: bytes, max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE) -> Message:
    """Decode exactly one complete message (no bytes before or after it)."""
    view = memoryview(data)
    if len(view) < MIN_MESSAGE_LENGTH:
        raise EventStreamError("shorter than a message prelude")
    total, headers_len = _check_prelude(view, max_message_size)
    if total != len(view):
        raise EventStreamError(f"message declares {total} bytes but {len(view)} were given")
    return _decode_body(view, total, headers_len)


class MessageDecoder:
    """Split a byte stream (arriving in arbitrary pieces) into messages.

    Holds at most one partial message, whose size the prelude declares and which is checked
    against ``max_message_size`` before any of it is buffered beyond the prelude. After an
    error the decoder is poisoned: the framing is lost and every later ``feed`` raises again.
    """

    def __init__(self, max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE) -> None:
        if max_message_size < MIN_MESSAGE_LENGTH:
            raise ValueError("max_message_size is below the minimum message length")
        self.max_message_size = max_message_size
        self._buf = bytearray()
        self._need = 0  # declared length of the partial message, 0 while reading a prelude
        self._headers_len = 0
        self._error: EventStreamError | None = None

    @property
    def buffered(self) -> int:
        """Bytes of a partial message held."""
        return len(self._buf)

    def feed(self, data: bytes | bytearray | memoryview) -> list[Message]:
        """Append bytes; return every message they complete, in order."""
        if self._error is not None:
            raise self._error
        self._buf += data
        out: list[Message] = []
        try:
            while True:
                if self._need == 0:
                    if len(self._buf) < PRELUDE_LENGTH:
                        break
                    with memoryview(self._buf) as view:
                        self._need, self._headers_len = _check_prelude(view, self.max_message_size)
                if len(self._buf) < self._need:
                    break
                with memoryview(self._buf) as view:
                    out.append(_decode_body(view, self._need, self._headers_len))
                del self._buf[: self._need]
                self._need = 0
        except EventStreamError as exc:
            self._error = exc
            self._buf.clear()
            raise
        return out

    def at_boundary(self) -> bool:
        """True when no partial message is pending (a clean place for the stream to end)."""
        return not self._buf and self._error is None
