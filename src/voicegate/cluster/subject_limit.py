"""``--max-calls-per-subject`` for the whole node, not for each worker.

Each worker counts only its own calls, so with N workers one subject could hold N times the
limit. The supervisor, which every offer passes, keeps the node's count: what its workers
reported (``/healthz``: live calls per subject digest), plus the offers it has sent them and
not heard back from, plus the calls answered since a worker's last report began. A new call
over the limit is refused here with the same 429 a single process gives.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import Iterator, Sequence

from aiohttp import web

from voicegate.cluster.workers import Worker
from voicegate.config import ServeConfig
from voicegate.signaling import auth
from voicegate.signaling.access import authenticate, subject_key
from voicegate.signaling.errors import ApiError
from voicegate.signaling.subjects import digest

__all__ = ["NodeSubjects"]

RETRY_AFTER_S = 5


class NodeSubjects:
    def __init__(self, config: ServeConfig) -> None:
        self.config = config
        self._inflight: Counter[str] = Counter()
        self._answered: list[tuple[str, int, float]] = []
        """(subject digest, worker index, when) of calls answered, until that worker reports."""

    def _subject(self, request: web.Request) -> str | None:
        try:
            claims = authenticate(request, self.config)
        except auth.AuthError:
            return None  # the worker refuses it with 401, as it always has
        if claims is None:
            return None
        token = auth.bearer(request.headers.get("Authorization"))
        return digest(self.config.auth_secret, subject_key(claims, token))

    def held(self, subject: str, workers: Sequence[Worker]) -> int:
        by_index = {w.index: w for w in workers}
        self._answered = [
            (s, i, at)
            for s, i, at in self._answered
            if i in by_index and by_index[i].alive and by_index[i].polled_at <= at
        ]
        reported = sum(w.subjects.get(subject, 0) for w in workers if w.alive)
        recent = sum(1 for s, _, _ in self._answered if s == subject)
        return reported + recent + self._inflight[subject]

    @contextlib.contextmanager
    def new_call(self, request: web.Request, workers: Sequence[Worker]) -> Iterator[Placed]:
        """Hold a place for the new call of ``request``'s subject while it is set up (ApiError
        429 when the subject has no room); ``placed.answered(worker)`` once it is live."""
        limit = self.config.max_calls_per_subject
        subject = self._subject(request) if limit else None
        if subject is None:
            yield Placed(self, None)
            return
        if self.held(subject, workers) >= limit:
            raise ApiError(
                429,
                f"this token's subject already holds {limit} live calls (the server's limit per "
                "subject); hang one up first",
                reason="subject_limit",
                retry_after=RETRY_AFTER_S,
            )
        self._inflight[subject] += 1
        try:
            yield Placed(self, subject)
        finally:
            self._inflight[subject] -= 1
            if self._inflight[subject] <= 0:
                del self._inflight[subject]


class Placed:
    def __init__(self, owner: NodeSubjects, subject: str | None) -> None:
        self._owner = owner
        self._subject = subject

    def answered(self, worker: Worker | None, response: web.StreamResponse) -> None:
        if self._subject is not None and worker is not None and response.status == 200:
            self._owner._answered.append((self._subject, worker.index, time.monotonic()))
