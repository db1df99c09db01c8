"""A tiny TURN client for attacking our own relay in tests: raw requests, raw answers.

aioice's TURN client does what a WebRTC stack needs and hides the rest; the hardening tests need
the opposite: ask coturn for things a browser never would (a permission for ``::1``, a TCP
allocation, an IPv6 relay, a thirteenth allocation) and see the exact error code it answers.
Addresses are packed by aioice's stun module; the messages themselves (any method, any
attribute, long-term credentials per RFC 8489 section 9.2) are assembled here.

Sockets may be made elsewhere (inside a network namespace) and handed in: see ``sock``.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import hashlib
import hmac
import os
import socket
import ssl
import struct
from dataclasses import dataclass, field

from aioice import stun

MAGIC = 0x2112A442
HEADER = struct.Struct("!HHI12s")
REQUEST_TIMEOUT_S = 3.0
UDP, TCP = 17, 6
IPV4, IPV6 = 0x01, 0x02


class Method(enum.IntEnum):
    ALLOCATE = 0x003
    REFRESH = 0x004
    SEND = 0x006
    DATA = 0x007
    CREATE_PERMISSION = 0x008
    CHANNEL_BIND = 0x009
    CONNECT = 0x00A  # RFC 6062: a TCP connection from the relay to a peer


class Attr(enum.IntEnum):
    USERNAME = 0x0006
    MESSAGE_INTEGRITY = 0x0008
    ERROR_CODE = 0x0009
    LIFETIME = 0x000D
    XOR_PEER_ADDRESS = 0x0012
    DATA = 0x0013
    REALM = 0x0014
    NONCE = 0x0015
    XOR_RELAYED_ADDRESS = 0x0016
    REQUESTED_ADDRESS_FAMILY = 0x0017
    REQUESTED_TRANSPORT = 0x0019
    XOR_MAPPED_ADDRESS = 0x0020


REQUEST, INDICATION, SUCCESS, ERROR = 0x000, 0x010, 0x100, 0x110


def _padded(value: bytes) -> bytes:
    return value + bytes(-len(value) % 4)


def encode(
    method: int, cls: int, tid: bytes, attrs: list[tuple[int, bytes]], key: bytes | None = None
) -> bytes:
    """One STUN message; with ``key``, MESSAGE-INTEGRITY over everything before it."""
    body = b"".join(struct.pack("!HH", t, len(v)) + _padded(v) for t, v in attrs)
    if key is None:
        return HEADER.pack(method | cls, len(body), MAGIC, tid) + body
    length = len(body) + 24  # the MESSAGE-INTEGRITY attribute counts in the length it covers
    digest = hmac.new(key, HEADER.pack(method | cls, length, MAGIC, tid) + body, "sha1").digest()
    body += struct.pack("!HH", Attr.MESSAGE_INTEGRITY, 20) + digest
    return HEADER.pack(method | cls, length, MAGIC, tid) + body


@dataclass
class Message:
    method: int
    cls: int
    tid: bytes
    attrs: dict[int, bytes] = field(default_factory=dict)

    @property
    def error(self) -> int | None:
        """The ERROR-CODE number, or None for a success (or an indication)."""
        raw = self.attrs.get(Attr.ERROR_CODE)
        return None if raw is None else stun.unpack_error_code(raw)[0]

    def address(self, attr: Attr) -> tuple[str, int]:
        return stun.unpack_xor_address(self.attrs[attr], self.tid)

    def lifetime(self) -> int:
        return int(struct.unpack("!I", self.attrs[Attr.LIFETIME])[0])


def decode(data: bytes) -> Message:
    kind, length, magic, tid = HEADER.unpack_from(data)
    if magic != MAGIC or len(data) < HEADER.size + length:
        raise ValueError("not a STUN message")
    attrs: dict[int, bytes] = {}
    pos = HEADER.size
    while pos + 4 <= HEADER.size + length:
        t, n = struct.unpack_from("!HH", data, pos)
        attrs.setdefault(t, data[pos + 4 : pos + 4 + n])
        pos += 4 + n + (-n % 4)
    return Message(kind & 0x3EEF, kind & 0x0110, tid, attrs)


def peer(address: tuple[str, int], tid: bytes) -> tuple[int, bytes]:
    return Attr.XOR_PEER_ADDRESS, stun.pack_xor_address(address, tid)


def u32(attr: int, value: int) -> tuple[int, bytes]:
    return attr, struct.pack("!I", value)


class TurnClient:
    """Long-term-credential TURN requests over one UDP, TCP or TLS connection to the server."""

    def __init__(
        self,
        server: tuple[str, int],
        username: str,
        password: str,
        *,
        tcp: bool = False,
        tls: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        sock: socket.socket | None = None,
    ) -> None:
        self.server = server
        self.username = username
        self.password = password
        self.tcp = tcp or tls is not None
        self.tls = tls
        self.server_hostname = server_hostname
        self.tls_version: str | None = None
        self.tls_cipher: str | None = None
        self._sock = sock
        self.realm: bytes | None = None
        self.nonce: bytes | None = None
        self.indications: asyncio.Queue[Message] = asyncio.Queue(maxsize=10_000)
        self._waiting: dict[bytes, asyncio.Future[Message]] = {}
        self._udp: asyncio.DatagramTransport | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> TurnClient:
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in self.server[0] else socket.AF_INET
        kind = socket.SOCK_STREAM if self.tcp else socket.SOCK_DGRAM
        sock = self._sock or socket.socket(family, kind)
        sock.setblocking(False)
        await loop.sock_connect(sock, self.server)  # a socket keeps the namespace it was made in
        if self.tcp:
            reader, self._writer = await asyncio.open_connection(
                sock=sock, ssl=self.tls, server_hostname=self.server_hostname if self.tls else None
            )
            tls = self._writer.get_extra_info("ssl_object")
            if tls is not None:
                self.tls_version, self.tls_cipher = tls.version(), tls.cipher()[0]
            self._reader_task = asyncio.create_task(self._read_stream(reader))
        else:
            client = self

            class Protocol(asyncio.DatagramProtocol):
                def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
                    client._received(data)

            self._udp, _ = await loop.create_datagram_endpoint(Protocol, sock=sock)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._reader_task is not None:
            self._reader_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader_task
        if self._writer is not None:
            self._writer.close()
        if self._udp is not None:
            self._udp.close()

    def _received(self, data: bytes) -> None:
        with contextlib.suppress(ValueError, struct.error):
            msg = decode(data)
            waiter = self._waiting.get(msg.tid)
            if waiter is not None and not waiter.done():
                waiter.set_result(msg)
            elif msg.cls == INDICATION:
                with contextlib.suppress(asyncio.QueueFull):
                    self.indications.put_nowait(msg)

    async def _read_stream(self, reader: asyncio.StreamReader) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                head = await reader.readexactly(HEADER.size)
                length = struct.unpack_from("!H", head, 2)[0]
                self._received(head + await reader.readexactly(length))

    def _send(self, data: bytes) -> None:
        if self._writer is not None:
            self._writer.write(data)
        else:
            assert self._udp is not None
            self._udp.sendto(data)

    def _key(self) -> bytes:
        assert self.realm is not None
        text = f"{self.username}:{self.realm.decode()}:{self.password}"
        return hashlib.md5(text.encode(), usedforsecurity=False).digest()

    async def _transact(self, method: int, attrs: list[tuple[int, bytes]], tid: bytes) -> Message:
        auth: list[tuple[int, bytes]] = []
        if self.nonce is not None and self.realm is not None:
            auth = [
                (Attr.USERNAME, self.username.encode()),
                (Attr.REALM, self.realm),
                (Attr.NONCE, self.nonce),
            ]
        key = self._key() if auth else None
        data = encode(method, REQUEST, tid, attrs + auth, key)
        waiter = asyncio.get_running_loop().create_future()
        self._waiting[tid] = waiter
        try:
            # UDP: resend until answered (RFC 8489's retransmissions, simplified).
            for attempt in range(1 if self.tcp else 4):
                self._send(data)
                done, _ = await asyncio.wait({waiter}, timeout=REQUEST_TIMEOUT_S / (4 - attempt))
                if done:
                    return waiter.result()
            raise TimeoutError(f"no answer to TURN method {method:#x} from {self.server}")
        finally:
            del self._waiting[tid]

    async def request(
        self,
        method: int,
        attrs: list[tuple[int, bytes]] | None = None,
        *,
        peer_at: tuple[str, int] | None = None,
    ) -> Message:
        """One request, authenticated once the server has challenged (401) or renewed its nonce
        (438). ``peer_at`` adds XOR-PEER-ADDRESS, which depends on the transaction id."""
        for _ in range(3):
            tid = os.urandom(12)
            full = list(attrs or [])
            if peer_at is not None:
                full.append(peer(peer_at, tid))
            answer = await self._transact(method, full, tid)
            if answer.error in (401, 438) and Attr.NONCE in answer.attrs:
                stale = answer.error == 438 or self.nonce is None
                self.nonce = answer.attrs[Attr.NONCE]
                self.realm = answer.attrs.get(Attr.REALM, self.realm)
                if stale:
                    continue
            return answer
        return answer

    async def allocate(
        self, transport: int = UDP, family: int | None = None, lifetime: int | None = None
    ) -> Message:
        attrs = [u32(Attr.REQUESTED_TRANSPORT, transport << 24)]
        if family is not None:
            attrs.append(u32(Attr.REQUESTED_ADDRESS_FAMILY, family << 24))
        if lifetime is not None:
            attrs.append(u32(Attr.LIFETIME, lifetime))
        return await self.request(Method.ALLOCATE, attrs)

    async def permit(self, ip: str) -> int | None:
        """CreatePermission for ``ip``: None when granted, else coturn's error code."""
        return (await self.request(Method.CREATE_PERMISSION, peer_at=(ip, 0))).error

    async def refresh(self, lifetime: int) -> Message:
        return await self.request(Method.REFRESH, [u32(Attr.LIFETIME, lifetime)])

    def send_to(self, address: tuple[str, int], data: bytes) -> None:
        """A Send indication: ``data`` relayed to ``address`` (needs a permission)."""
        tid = os.urandom(12)
        self._send(encode(Method.SEND, INDICATION, tid, [peer(address, tid), (Attr.DATA, data)]))
