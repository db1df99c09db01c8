"""Live calls per token subject as one process tells its supervisor: counts keyed by a digest
of the subject (HMAC with the auth secret), so the figures name nobody, and a supervisor that
verifies the same token computes the same digest. The supervisor sums its workers' counts to
keep ``--max-calls-per-subject`` for the node, not for each worker (``cluster.subject_limit``).
"""

from __future__ import annotations

import hashlib
import hmac
from collections import Counter
from collections.abc import Iterable

from aiohttp import web

__all__ = ["SUBJECTS_IN_HEALTH", "counts", "digest"]

SUBJECTS_IN_HEALTH = web.AppKey("subjects_in_health", bool)
"""Set on a worker's app: its /healthz (which only its supervisor can reach) adds the counts."""


def digest(secret: str, subject: str) -> str:
    return hmac.new(secret.encode(), b"subject\n" + subject.encode(), hashlib.sha256).hexdigest()[
        :32
    ]


def counts(secret: str, subjects: Iterable[str]) -> dict[str, int]:
    return dict(Counter(digest(secret, s) for s in subjects))
