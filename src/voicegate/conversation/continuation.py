"""What a conversation carries from one model stream to the next: settings, shaped history and
the rolling buffer of the user's latest audio.

A Nova Sonic stream lives about 8 minutes and can die earlier (docs/renewal.md), so one call is
a sequence of streams ("legs"). Moving to a new leg must not
lose or repeat anything the user said, and must not make the model answer old turns again:

- History is replayed as non-interactive text blocks, shaped the way Bedrock accepts it: first
  message USER, roles alternating (same-role neighbours merged), each block and the whole capped.
- Speech the old leg heard but has not turned into a transcript yet is replayed as *audio* to the
  new leg. The buffer keeps the audio since the last final user transcript (minus a short
  pre-roll), so a transcript the old leg already produced is never heard twice, and words spoken
  across the handover reach the new leg in full.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from voicegate.audio.levels import rms
from voicegate.sonic import Role

__all__ = [
    "ContinuationSettings",
    "RENEW_AFTER_S",
    "ReplayBuffer",
    "TRUNCATION_MARK",
    "VOICED_RMS",
    "cap_bytes",
    "history_bytes",
    "shape_history",
]

VOICED_RMS: Final = 150.0
"""RMS (16-bit scale, about -47 dBFS) above which a chunk may hold speech. Only decides where a
replay starts, never what is sent, so it errs towards "voiced"."""
TRUNCATION_MARK: Final = " …"
RENEW_AFTER_S: Final = 360.0
"""Default age of a stream at which the next one is prepared (``--renew-after``): two minutes
before Bedrock's 480 s limit, room for the wait for a natural point (``force_after_s``) and the
handover itself."""


@dataclass(frozen=True, slots=True)
class ContinuationSettings:
    """How a conversation renews its stream and recovers from failures."""

    renew_after_s: float = RENEW_AFTER_S
    """Age of a stream at which the next one is prepared (Nova Sonic ends streams at ~480 s)."""
    force_after_s: float = 60.0
    """After ``renew_after_s``, how long to wait for a natural point before handing over anyway."""
    credential_margin_s: float = 180.0
    """Renew this long before the temporary credentials a stream signs with expire."""
    renew_min_age_s: float = 60.0
    """A renewal for credentials never comes sooner than this into a stream (keys that do not
    get a later expiry on refresh must not turn into a renewal storm)."""
    prepared_max_idle_s: float = 30.0
    """A prepared stream unused this long is replaced (an idle stream may be timed out)."""
    natural_quiet_s: float = 0.5
    """User silence that, with no assistant turn in progress, makes a natural handover point."""
    recovery_attempts: int = 3
    """Reconnect attempts after an unexpected stream failure before the call is given up."""
    recovery_backoff_s: float = 0.25
    """First delay between reconnect attempts; doubled after each."""
    recovery_spread_s: float = 0.5
    """A stream lost with its connection (GOAWAY, reset, dropped) waits a random delay up to
    this before its first reconnect, so the calls that shared the connection do not all open
    their streams (and meet throttling) in the same instant."""
    throttle_attempts: int = 6
    """Attempts when the model service throttles (the first stream of a call included)."""
    throttle_backoff_s: float = 1.0
    """First delay after throttling; doubled after each attempt, with jitter."""
    throttle_backoff_max_s: float = 10.0
    """Longest delay after throttling (per-minute quotas refill within a minute)."""
    recovery_confirm_s: float = 0.5
    """A reconnected stream counts as recovered once it survived this long (Bedrock reports
    throttling and refusals only after the stream was opened)."""
    healthy_after_s: float = 20.0
    """A stream that lived this long resets the attempt count (so a flapping backend is bounded)."""
    replay_max_s: float = 8.0
    """Most user audio kept for replay to the next stream."""
    replay_preroll_s: float = 0.3
    """Audio kept before the first voiced chunk of a replay (word onsets are quiet)."""
    history_max_messages: int = 40
    """voicegate's own bound on replayed messages (no AWS page states one; LiveKit keeps 40)."""
    history_max_message_bytes: int = 16_000
    """A single message longer than this is cut; shorter ones are sent whole, split over
    textInputs of at most 1 KB (AWS's chat-history page)."""
    history_max_bytes: int = 16_000
    """The replayed history's size; AWS's chat-history page allows at most 40 KB."""


# -- history ---------------------------------------------------------------------------------


def cap_bytes(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` UTF-8 bytes on a character boundary, marked when cut."""
    raw = text.encode()
    if len(raw) <= limit:
        return text
    mark = TRUNCATION_MARK.encode()
    return raw[: max(0, limit - len(mark))].decode(errors="ignore") + TRUNCATION_MARK


def shape_history(
    history: Iterable[tuple[Role, str]],
    max_messages: int = 40,
    max_message_bytes: int = 16_000,
    max_bytes: int = 16_000,
) -> list[tuple[Role, str]]:
    """The history a new stream can take: USER/ASSISTANT only, consecutive same-role messages
    merged, the newest messages kept within the caps, and leading ASSISTANT messages dropped
    (Nova Sonic wants the first message from the USER)."""
    merged: list[tuple[Role, str]] = []
    for role, text in history:
        if role not in ("USER", "ASSISTANT"):
            continue
        text = " ".join(text.split())
        if not text:
            continue
        if merged and merged[-1][0] == role:
            merged[-1] = (role, f"{merged[-1][1]} {text}")
        else:
            merged.append((role, text))
    kept: list[tuple[Role, str]] = []
    total = 0
    for role, text in reversed(merged):
        if len(kept) >= max_messages:
            break
        text = cap_bytes(text, max_message_bytes)
        size = len(text.encode())
        if total + size > max_bytes:
            break
        kept.append((role, text))
        total += size
    kept.reverse()
    while kept and kept[0][0] != "USER":
        kept.pop(0)
    return kept


def history_bytes(history: Iterable[tuple[Role, str]]) -> int:
    return sum(len(text.encode()) for _, text in history)


# -- user audio ------------------------------------------------------------------------------


class ReplayBuffer:
    """The user's latest audio, kept so the next stream hears what the current one has not
    transcribed yet. Bounded by duration (``max_s`` seconds of samples, whatever the chunk
    length fed), so the bound stays true when the caller's chunk length is configured."""

    def __init__(self, max_s: float = 8.0, preroll_s: float = 0.3, rate: int = 16000) -> None:
        self.rate = rate
        self._max_bytes = round(max_s * rate) * 2
        self._preroll_bytes = round(preroll_s * rate) * 2
        self._chunks: deque[tuple[bytes, bool]] = deque()
        self._bytes = 0
        self.quiet_samples = 0
        """Unvoiced samples at the end (how long the user has been silent)."""

    def add(self, pcm: bytes) -> None:
        voiced = _voiced(pcm)
        self._chunks.append((pcm, voiced))
        self._bytes += len(pcm)
        while self._bytes > self._max_bytes and len(self._chunks) > 1:
            self._bytes -= len(self._chunks.popleft()[0])
        self.quiet_samples = 0 if voiced else self.quiet_samples + len(pcm) // 2

    @property
    def seconds(self) -> float:
        """Audio held now."""
        return self._bytes / 2 / self.rate

    @property
    def quiet_s(self) -> float:
        return self.quiet_samples / self.rate

    @property
    def untranscribed(self) -> bool:
        """Speech the live stream heard but has not transcribed yet (none since the last
        ``commit``, within the buffer's window)."""
        return any(voiced for _, voiced in self._chunks)

    def _preroll_start(self, end: int) -> int:
        """Index from which the chunks before ``end`` cover the pre-roll."""
        start, covered = end, 0
        while start > 0 and covered < self._preroll_bytes:
            start -= 1
            covered += len(self._chunks[start][0])
        return start

    def commit(self) -> None:
        """The live stream produced a final user transcript: what it heard so far is in the
        history now. Only a pre-roll stays, marked unvoiced, so it is replayed only in front of
        new speech."""
        tail = list(self._chunks)[self._preroll_start(len(self._chunks)) :]
        self._chunks.clear()
        self._chunks.extend((pcm, False) for pcm, _ in tail)
        self._bytes = sum(len(pcm) for pcm, _ in tail)

    def replay(self) -> list[bytes]:
        """Chunks to send to a new stream: from the pre-roll before the first voiced chunk to
        now; nothing when there was no speech since the last transcript."""
        first = next((i for i, (_, voiced) in enumerate(self._chunks) if voiced), None)
        if first is None:
            return []
        return [pcm for pcm, _ in list(self._chunks)[self._preroll_start(first) :]]


def _voiced(pcm: bytes) -> bool:
    return rms(pcm) >= VOICED_RMS
