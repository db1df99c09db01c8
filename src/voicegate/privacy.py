"""Redaction of transcript text before it leaves the process (``--redact``).

One set of rules for every way out - webhooks, the call history, logs and traces - so an operator
states once what must never be stored or sent elsewhere (card and phone numbers, e-mail
addresses, their own patterns), and no exit forgets it. Rules are applied to the text as the
model heard or said it; the model itself still receives what the caller said.

Rules (``--redact`` is repeatable, or comma-separated in ``VOICEGATE_REDACT``):
- ``digits``: any run of four or more digits, also when spoken apart ("4 1 1 1 ...") or
  grouped with spaces, dots or dashes (card, phone, account numbers) -> ``[digits]``
- ``email``: e-mail addresses -> ``[email]``
- ``re:PATTERN``: a Python regular expression of the operator's -> ``[redacted]``
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

__all__ = ["BUILTIN_RULES", "Redaction", "parse_rule"]

BUILTIN_RULES: Final = {
    "digits": (re.compile(r"\d(?:[ .\-]?\d){3,}"), "[digits]"),
    "email": (
        re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)+"),
        "[email]",
    ),
}
MAX_PATTERN: Final = 500


def parse_rule(text: str) -> str:
    """A rule as given on the command line, checked (raises ValueError when unusable)."""
    rule = text.strip()
    if rule in BUILTIN_RULES:
        return rule
    if rule.startswith("re:") and 0 < len(rule) - 3 <= MAX_PATTERN:
        try:
            re.compile(rule[3:])
        except re.error as exc:
            raise ValueError(f"{rule!r}: {exc}") from None
        return rule
    raise ValueError(rule)


parse_rule.__name__ = "redaction rule (digits, email or re:PATTERN)"


@dataclass(frozen=True, slots=True)
class Redaction:
    """The compiled rules; ``apply`` is cheap enough to run on every final transcript."""

    rules: Sequence[tuple[re.Pattern[str], str]] = ()

    @classmethod
    def from_rules(cls, names: Iterable[str]) -> Redaction:
        compiled: list[tuple[re.Pattern[str], str]] = []
        for name in names:
            rule = parse_rule(name)
            if rule in BUILTIN_RULES:
                compiled.append(BUILTIN_RULES[rule])
            else:
                compiled.append((re.compile(rule[3:]), "[redacted]"))
        return cls(tuple(compiled))

    def __bool__(self) -> bool:
        return bool(self.rules)

    def apply(self, text: str) -> str:
        for pattern, replacement in self.rules:
            text = pattern.sub(replacement, text)
        return text
