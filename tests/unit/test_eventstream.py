"""The event-stream codec: round trips, wire layout, corruption, limits, incremental decoding."""

from __future__ import annotations

import struct
import uuid
import zlib
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from voicegate.standin.eventstream import (
    ChecksumMismatch,
    EventStreamError,
    HeaderValue,
    Int8,
    Int16,
    Int32,
    Int64,
    Message,
    MessageDecoder,
    decode_headers,
    decode_message,
    encode_header,
    encode_message,
)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

header_values = st.one_of(
    st.booleans(),
    st.integers(-(2**7), 2**7 - 1).map(Int8),
    st.integers(-(2**15), 2**15 - 1).map(Int16),
    st.integers(-(2**31), 2**31 - 1).map(Int32),
    st.integers(-(2**63), 2**63 - 1).map(Int64),
    st.binary(max_size=300),
    st.text(max_size=100),
    st.integers(-(10**13), 10**13).map(lambda ms: EPOCH + timedelta(milliseconds=ms)),
    st.uuids(),
)
header_names = st.text(min_size=1, max_size=40).filter(lambda n: len(n.encode()) <= 255)
headers_st = st.dictionaries(header_names, header_values, max_size=8)


def _same(a: HeaderValue, b: HeaderValue) -> bool:
    return type(a) is type(b) and a == b


@given(headers_st, st.binary(max_size=2000))
def test_round_trip_keeps_values_and_wire_types(
    headers: dict[str, HeaderValue], payload: bytes
) -> None:
    wire = encode_message(headers, payload)
    msg = decode_message(wire)
    assert msg.payload == payload
    assert msg.headers.keys() == headers.keys()
    assert all(_same(msg.headers[k], v) for k, v in headers.items())
    assert msg.encode() == wire  # re-encoding is byte-identical


@given(st.lists(st.tuples(headers_st, st.binary(max_size=500)), max_size=6), st.data())
def test_incremental_decoder_reassembles_any_split(
    messages: list[tuple[dict[str, HeaderValue], bytes]], data: st.DataObject
) -> None:
    stream = b"".join(encode_message(h, p) for h, p in messages)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    decoder = MessageDecoder()
    out: list[Message] = []
    start = 0
    for cut in [*cuts, len(stream)]:
        out += decoder.feed(stream[start:cut])
        start = cut
    assert [(m.headers, m.payload) for m in out] == [(h, p) for h, p in messages]
    assert decoder.at_boundary()


def test_wire_layout_matches_the_spec() -> None:
    wire = encode_message({":event-type": "chunk"}, b"{}")
    total, headers_len, prelude_crc = struct.unpack(">III", wire[:12])
    assert total == len(wire) == 12 + headers_len + 2 + 4
    assert prelude_crc == zlib.crc32(wire[:8])
    assert struct.unpack(">I", wire[-4:])[0] == zlib.crc32(wire[:-4])
    # name length, name, type 7 (string), u16 length, value
    assert wire[12 : 12 + headers_len] == b"\x0b:event-type\x07\x00\x05chunk"


def test_header_type_codes() -> None:
    assert encode_header("a", True)[2:] == b"\x00"
    assert encode_header("a", False)[2:] == b"\x01"
    assert encode_header("a", Int8(-1))[2:] == b"\x02\xff"
    assert encode_header("a", Int16(2))[2:] == b"\x03\x00\x02"
    assert encode_header("a", 5)[2:] == b"\x04\x00\x00\x00\x05"  # plain int -> int32
    assert encode_header("a", 2**40)[2:3] == b"\x05"  # too big for int32 -> int64
    assert encode_header("a", b"\x01\x02")[2:] == b"\x06\x00\x02\x01\x02"
    when = datetime(2025, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    ms = int((when - EPOCH).total_seconds() * 1000)
    assert encode_header(":date", when)[6:] == b"\x08" + struct.pack(">q", ms)
    u = uuid.UUID(int=1)
    assert encode_header("a", u)[2:] == b"\x09" + u.bytes


def test_naive_datetime_is_utc() -> None:
    naive = datetime(2025, 1, 1, 0, 0, 0)
    assert encode_header("d", naive) == encode_header("d", naive.replace(tzinfo=UTC))


@given(headers_st, st.binary(max_size=200), st.data())
def test_any_flipped_bit_is_detected(
    headers: dict[str, HeaderValue], payload: bytes, data: st.DataObject
) -> None:
    wire = bytearray(encode_message(headers, payload))
    pos = data.draw(st.integers(0, len(wire) - 1))
    wire[pos] ^= 1 << data.draw(st.integers(0, 7))
    with pytest.raises(EventStreamError):
        decode_message(bytes(wire))


def test_crc_failures_name_what_broke() -> None:
    wire = bytearray(encode_message({"a": "b"}, b"payload"))
    bad_prelude = bytearray(wire)
    bad_prelude[8] ^= 0xFF
    with pytest.raises(ChecksumMismatch, match="prelude"):
        decode_message(bytes(bad_prelude))
    wire[-6] ^= 0x01  # inside the payload
    with pytest.raises(ChecksumMismatch, match="message CRC"):
        decode_message(bytes(wire))


def test_decoder_refuses_oversized_messages_before_buffering() -> None:
    decoder = MessageDecoder(max_message_size=1000)
    wire = encode_message({}, b"x" * 2000)
    with pytest.raises(EventStreamError, match="exceeds the limit"):
        decoder.feed(wire[:12])  # the prelude alone is enough to refuse
    assert decoder.buffered == 0
    with pytest.raises(EventStreamError):  # poisoned: the framing is lost
        decoder.feed(encode_message({}, b"ok"))


def test_decoder_reports_partial_message() -> None:
    decoder = MessageDecoder()
    wire = encode_message({"a": 1}, b"abc")
    assert decoder.feed(wire[:-1]) == []
    assert not decoder.at_boundary() and decoder.buffered == len(wire) - 1
    assert [m.payload for m in decoder.feed(wire[-1:])] == [b"abc"]


@pytest.mark.parametrize(
    "raw, why",
    [
        (b"\x00", "truncated or empty header name"),
        (b"\x01a\x0a", "unknown header type"),
        (b"\x01a\x07\x00\x05ab", "truncated"),
        (b"\x01a\x07\x00\x01\xff", "not UTF-8"),
        (b"\x01a\x00\x01a\x01", "duplicate"),
        (b"\x01a\x08" + struct.pack(">q", 2**62), "out of range"),
    ],
)
def test_malformed_headers(raw: bytes, why: str) -> None:
    with pytest.raises(EventStreamError, match=why):
        decode_headers(raw)


def test_message_length_lies() -> None:
    wire = encode_message({}, b"abc")
    with pytest.raises(EventStreamError, match="declares"):
        decode_message(wire + b"\x00")
    short = struct.pack(">II", 10, 0)
    with pytest.raises(EventStreamError, match="shorter than the minimum"):
        decode_message(short + struct.pack(">I", zlib.crc32(short)) + b"\x00" * 4)
    lying = struct.pack(">II", 20, 9)  # headers longer than the message allows
    with pytest.raises(EventStreamError, match="headers length"):
        decode_message(lying + struct.pack(">I", zlib.crc32(lying)) + b"\x00" * 8)


def test_encode_refuses_what_cannot_be_sent() -> None:
    with pytest.raises(EventStreamError):
        encode_header("", "x")
    with pytest.raises(EventStreamError):
        encode_header("a" * 256, "x")
    with pytest.raises(EventStreamError):
        encode_header("a", Int8(200))
    with pytest.raises(EventStreamError):
        encode_header("a", b"x" * 70000)
    with pytest.raises(EventStreamError):
        encode_header("a", 1.5)  # type: ignore[arg-type]
