"""What a call remembers across its model streams: the history, the user's latest audio and
whether the newest user turn is still unanswered.

One owner for these, shared by the dialogue (which adds to them), renewal and recovery (which
replay them to a new stream) and the cluster (which copies the history to adopt a call).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from voicegate.conversation.continuation import (
    ContinuationSettings,
    ReplayBuffer,
    history_bytes,
    shape_history,
)
from voicegate.conversation.events import MAX_HISTORY, ConversationStats
from voicegate.sonic import Role
from voicegate.sonic.events import INPUT_SAMPLE_RATE

__all__ = [
    "CallMemory",
    "History",
]

History = list[tuple[Role, str]]


class CallMemory:
    """The history (in ``stats.history``, read by /metrics and the recorder), its version, the
    replay buffer and the unanswered-turn flag of one call."""

    def __init__(
        self,
        continuation: ContinuationSettings,
        stats: ConversationStats,
        rate: int = INPUT_SAMPLE_RATE,
    ) -> None:
        """``rate``: of the user audio kept (the backend's input rate)."""
        self.settings = continuation
        self.stats = stats
        self.replay = ReplayBuffer(continuation.replay_max_s, continuation.replay_preroll_s, rate)
        self.version = 0
        """Bumped on every change of the history: a history preloaded to a prepared stream is
        usable only while the version it was taken at is current."""
        self.unanswered = False
        """The newest user turn (spoken or typed) got no final answer yet: a recovery re-sends
        it as interactive text."""
        self.on_history: Callable[[], None] | None = None
        """Told after every change of the history (the cluster keeps a copy elsewhere)."""
        self.max_messages = continuation.history_max_messages
        """Lowered when the service refuses a history (``refused``): shorter, then none."""

    @property
    def history(self) -> History:
        return self.stats.history

    def seed(self, history: Iterable[tuple[Role, str]]) -> None:
        """The history of a call adopted from another node."""
        self.stats.history = list(history)[-MAX_HISTORY:]
        self.version += 1

    def remember(self, role: Role, text: str) -> None:
        """Add a message; same-role neighbours are merged, the oldest dropped beyond the cap."""
        self.version += 1
        history = self.stats.history
        if history and history[-1][0] == role:
            history[-1] = (role, f"{history[-1][1]} {text}")
        else:
            history.append((role, text))
        if len(history) > MAX_HISTORY:
            del history[:-MAX_HISTORY]
        if self.on_history is not None:
            self.on_history()

    def shaped(self, history: Iterable[tuple[Role, str]] | None = None) -> History:
        """The history as the next model stream would get it (Nova Sonic's limits applied)."""
        c = self.settings
        return shape_history(
            self.stats.history if history is None else history,
            self.max_messages,
            c.history_max_message_bytes,
            c.history_max_bytes,
        )

    def refused(self, sent: int) -> bool:
        """The service refused a history of ``sent`` messages: the next streams get at most
        half as many (then none). False when there is nothing left to take away."""
        if sent <= 0 or self.max_messages <= 0:
            return False
        self.max_messages = min(self.max_messages, sent // 2)
        self.version += 1  # a history preloaded at the old size is stale
        return True

    def payload(self) -> tuple[History, list[bytes]]:
        """What a renewal gives the next stream: the shaped history and the replay."""
        return self.shaped(), self.replay.replay()

    def recovery_payload(self) -> tuple[History, list[bytes], str | None]:
        """What a replacement stream is given: as for a renewal, except for a user turn the
        failed stream never answered. That one is taken out of the history and returned to be
        re-sent as interactive USER text once the audio content is open (as Pipecat and LiveKit
        do): as non-interactive history the model would stay silent until the user repeated
        it."""
        past = self.stats.history
        last = next((i for i in range(len(past) - 1, -1, -1) if past[i][0] == "USER"), None)
        if not self.unanswered or last is None:
            history, audio = self.payload()
            return history, audio, None
        return self.shaped(past[:last] + past[last + 1 :]), self.replay.replay(), past[last][1]

    def account(self, history: History, audio: list[bytes]) -> tuple[int, float]:
        """Count what was replayed to a new stream; returns (history bytes, audio ms)."""
        size = history_bytes(history)
        self.stats.history_bytes_replayed += size
        self.stats.history_messages_replayed += len(history)
        self.stats.audio_chunks_replayed += len(audio)
        return size, sum(len(a) for a in audio) / 2 / self.replay.rate * 1000
