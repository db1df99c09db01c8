"""The registry of live calls: the one owner of the pc_id -> call map.

A call enters when its offer is being answered, leaves when its session closes (hang-up, error,
time limit, end of its reconnect grace), and is handed from one connection to the next on a
browser restart (``restart_pc``) without leaving. Nothing else adds or removes calls, so the
count that admission, readiness, metrics and drain read is always the same count. For everyone
else the registry is a read-only ``Mapping[str, PeerSession]``.

Beside each call it keeps what limits that call's caller: the token subject that started it
(one subject holds only so many live calls), the key its offer counts against while its media
has not connected yet (pending offers are bounded per subject or address), and the distinct
remote ICE candidates its current connection was given (offer and trickle together are
bounded).
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

import structlog

from voicegate.call import PeerSession
from voicegate.conversation import Conversation
from voicegate.sonic import Role

__all__ = [
    "CALL_COUNTED",
    "CALL_SEQ_HEADER",
    "CallRegistry",
    "CallStore",
    "CandidateKey",
    "StoredCall",
]

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class StoredCall:
    """What another node kept of a call this process is about to adopt."""

    history: Sequence[tuple[Role, str]]
    system_prompt: str | None = None
    voice_id: str | None = None
    subject: str | None = None
    agent: str | None = None
    """The agent the call talked to (an adopting node gives it the same agent's tools)."""


class CallStore(Protocol):
    """Where a cluster keeps calls beyond this process (``voicegate.cluster``): told when a
    call starts here and ends here, and asked for a call this process does not have."""

    def call_started(self, session: PeerSession, subject: str | None) -> None: ...

    def call_ended(self, session: PeerSession) -> None: ...

    async def adopt(self, pc_id: str) -> StoredCall | None: ...

    async def subject_calls(self, subject: str) -> int | None:
        """Live calls ``subject`` holds in the whole cluster (None: not known now)."""
        ...


CandidateKey = tuple[str, int, str]

CALL_SEQ_HEADER: Final = "Voicegate-Call-Seq"
"""Header of an offer's answer: the registry's ``registered`` count once this call was added.
A supervisor that polls its workers' /healthz (``calls_registered``) knows from it whether the
poll already counted the call, instead of counting it twice or not at all until the next poll."""

CALL_COUNTED: Final = "voicegate.call_counted"
"""Request key the offer handler sets once its call is in the registry: until then a front that
is still waiting for that request counts it itself (``cluster.node``), so that a burst of offers
is not all placed on a node whose registry has not caught up."""

MAX_ENDED_REMEMBERED = 4096
"""Ended calls whose pc_id a restart offer is refused for (the most recent ones)."""


class CallRegistry(Mapping[str, PeerSession]):
    def __init__(self) -> None:
        self._calls: dict[str, PeerSession] = {}
        # pc_id -> why it ended: a client that re-offers an ended call (small-webrtc-transport
        # retries with its old pc_id) is told so instead of getting a new, silent call.
        self._ended: OrderedDict[str, str] = OrderedDict()
        self.store: CallStore | None = None
        self._subjects: dict[str, str] = {}
        self._candidates: dict[str, set[CandidateKey]] = {}
        self._pending_keys: dict[str, str] = {}
        self.registered = 0
        """Calls ever added (a restarted connection replacing its call adds none): with the
        ``CALL_SEQ_HEADER`` of an answer, it tells a supervisor whether a poll of this process
        already counted the call that answer started."""

    # -- the read-only mapping ----------------------------------------------------------------

    def __getitem__(self, pc_id: str) -> PeerSession:
        return self._calls[pc_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._calls)

    def __len__(self) -> int:
        return len(self._calls)

    # -- changes ------------------------------------------------------------------------------

    def add(
        self,
        session: PeerSession,
        subject: str | None = None,
        candidates: frozenset[CandidateKey] = frozenset(),
        pending_key: str | None = None,
    ) -> int:
        """Count ``session`` as a live call from now on (it replaces a restarted connection),
        held by token ``subject`` (None: open dev mode), its offer naming ``candidates``, and
        counted as a pending offer of ``pending_key`` until its media connects. Returns
        ``registered`` as of this call."""
        if session.pc_id not in self._calls:
            self.registered += 1
        self._calls[session.pc_id] = session
        if subject is not None:
            self._subjects[session.pc_id] = subject
        if pending_key is not None:
            self._pending_keys[session.pc_id] = pending_key
        else:
            self._pending_keys.pop(session.pc_id, None)
        self._candidates[session.pc_id] = set(candidates)
        return self.registered

    def ended(self, pc_id: str) -> str | None:
        """Why the call ``pc_id`` ended on this node (None: live, never seen, or long ago)."""
        return None if pc_id in self._calls else self._ended.get(pc_id)

    def subject(self, pc_id: str) -> str | None:
        return self._subjects.get(pc_id)

    def subjects(self) -> list[str]:
        """The subject of each live call that has one."""
        return list(self._subjects.values())

    def held_by(self, subject: str) -> int:
        """Live calls held by ``subject``."""
        return sum(1 for s in self._subjects.values() if s == subject)

    def pending(self, key: str | None = None) -> tuple[int, int]:
        """(offers not connected yet, of them counted against ``key``). A connected call stops
        counting for good, so the map shrinks as calls connect."""
        total = mine = 0
        for pc_id, k in list(self._pending_keys.items()):
            session = self._calls.get(pc_id)
            if session is None or session.ever_connected:
                del self._pending_keys[pc_id]
                continue
            total += 1
            mine += k == key
        return total, mine

    def add_candidates(self, pc_id: str, keys: set[CandidateKey], limit: int) -> int:
        """Count trickled candidates against the call's connection; returns the new total, or
        leaves the count unchanged and returns what it would have been if over ``limit``."""
        seen = self._candidates.setdefault(pc_id, set())
        total = len(seen | keys)
        if total <= limit:
            seen |= keys
        return total

    async def detach(self, pc_id: str) -> Conversation | None:
        """A restart: release the call's current connection, keep its conversation (model
        stream, history) for the next one. None when there is no live call or it has ended."""
        previous = self._calls.get(pc_id)
        return await previous.detach() if previous is not None else None

    def forget(self, session: PeerSession) -> None:
        """The session's ``on_closed``: drop it, unless a newer connection already took its
        place. (The call's end is counted by the metrics observer, from the call's events.)"""
        if self._calls.get(session.pc_id) is session:
            del self._calls[session.pc_id]
            if session.close_reason != "restart":
                if self.store is not None:
                    self.store.call_ended(session)
                self._ended[session.pc_id] = session.close_reason
                while len(self._ended) > MAX_ENDED_REMEMBERED:
                    self._ended.popitem(last=False)
            self._subjects.pop(session.pc_id, None)
            self._candidates.pop(session.pc_id, None)
            self._pending_keys.pop(session.pc_id, None)

    # -- ending many ----------------------------------------------------------------------------

    async def drain(self, timeout: float, cut: asyncio.Event | None = None) -> int:
        """Let the live calls finish for up to ``timeout`` seconds (or until ``cut`` is set),
        then end the rest with a message to the browser. Returns how many were ended."""
        log.info("draining", calls=len(self), timeout_s=timeout)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        cut_wait = asyncio.ensure_future((cut or asyncio.Event()).wait())
        try:
            while self._calls and not cut_wait.done():
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                waits = [asyncio.ensure_future(s.closed.wait()) for s in self._calls.values()]
                try:
                    await asyncio.wait(
                        [*waits, cut_wait], timeout=remaining, return_when=asyncio.FIRST_COMPLETED
                    )
                finally:
                    for w in waits:
                        w.cancel()
                    await asyncio.gather(*waits, return_exceptions=True)
        finally:
            cut_wait.cancel()
            await asyncio.gather(cut_wait, return_exceptions=True)
        left = list(self._calls.values())
        if left:
            log.info("draining_ends_calls", calls=len(left))
            await asyncio.gather(
                *(s.end("the server is shutting down", "shutdown", "shutdown") for s in left),
                return_exceptions=True,
            )
        return len(left)

    async def close_all(self, reason: str) -> None:
        """Close every call at once (server shutdown after the drain)."""
        sessions = list(self._calls.values())
        if sessions:
            await asyncio.gather(*(s.close(reason) for s in sessions), return_exceptions=True)
