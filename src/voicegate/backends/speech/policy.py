"""What the offline brain answers: a small rule-based reply policy over a user transcript.

A greeting, the time (through a real ``get_current_time`` tool call), a goodbye, an answer from
the agent's knowledge (through a real ``search_knowledge`` call, for a question no rule answers,
when the session offers that tool), or a quote of what it heard. Rules, not a language model:
the brain is there to exercise the whole call path
(turns, tools, barge-in) offline, and its answers must be predictable enough to test.
"""

from __future__ import annotations

import json
import re
from typing import Final

MAX_QUOTE_WORDS: Final = 40
TIME_TOOL: Final = "get_current_time"
"""The clock tool's name (conversation/tools.py's default tool)."""
KNOWLEDGE_TOOL: Final = "search_knowledge"
"""The knowledge tool's name: agents/knowledge.py builds it under this name."""
MAX_ANSWER_CHARS: Final = 400


_TIME = re.compile(
    r"\bwhat(?: is|'s|s)? the time\b|\bwhat time(?: is it)?\b|\btime is it\b|"
    r"\b(?:tell|give) me the time\b|\bcurrent time\b"
)
_GREETING = re.compile(r"\b(?:hello|hi|hey|greet\w*|good (?:morning|afternoon|evening))\b")
_GOODBYE = re.compile(r"\b(?:good ?bye|bye|see you|farewell)\b")
_QUESTION_START = re.compile(
    r"^(?:what|whats|what's|when|where|which|who|whom|whose|why|how|is|are|am|can|could|do|"
    r"does|did|will|would|should|shall|may|might|have|has|tell me|explain|i want to know)\b"
)


def is_question(transcript: str) -> bool:
    """A question by its mark or by how it starts (Whisper does not always add the mark)."""
    text = transcript.strip().lower()
    if text.endswith("?"):
        return True
    words = re.sub(r"[^a-z' ]+", " ", text).strip()
    return bool(_QUESTION_START.match(words))


def knowledge_reply(result_json: str) -> str | None:
    """The best passage of a search_knowledge result, to be spoken; None when nothing matched."""
    try:
        result = json.loads(result_json)
    except json.JSONDecodeError:
        return None
    passages = result.get("passages") if isinstance(result, dict) else None
    if not isinstance(passages, list) or not passages or not isinstance(passages[0], dict):
        return None
    text = passages[0].get("text")
    if not isinstance(text, str) or not text.strip():
        return None
    text = text.strip()
    if len(text) > MAX_ANSWER_CHARS:
        text = text[:MAX_ANSWER_CHARS].rsplit(" ", 1)[0] + " ..."
    return text


def intent(transcript: str) -> str:
    """``time`` | ``goodbye`` | ``greeting`` | ``echo`` for a user transcript."""
    text = re.sub(r"[^a-z' ]+", " ", transcript.lower())
    if _TIME.search(text):
        return "time"
    if _GOODBYE.search(text):
        return "goodbye"
    if _GREETING.search(text):
        return "greeting"
    return "echo"


def quote_reply(transcript: str) -> str:
    words = transcript.split()
    quoted = " ".join(words[:MAX_QUOTE_WORDS]) + (" ..." if len(words) > MAX_QUOTE_WORDS else "")
    quoted = quoted.rstrip(" .!?,;:")
    return f"You said: {quoted}."


def time_reply(result_json: str) -> str:
    """What to say about a get_current_time result (or its error)."""
    try:
        result = json.loads(result_json)
    except json.JSONDecodeError:
        result = None
    if isinstance(result, dict):
        spoken = result.get("spoken") or result.get("time")
        if isinstance(spoken, str) and spoken:
            zone = result.get("timezone")
            # "in UTC", not "p.m. UTC.": a capital after "p.m." would start a new sentence.
            place = zone.rsplit("/", 1)[-1].replace("_", " ") if isinstance(zone, str) else ""
            where = f" in {place}" if place else ""
            return f"It is {spoken}{where}."
    return "Sorry, I could not get the time."


def late_result_reply(tool: str, result_json: str) -> str:
    """What to say about a result that came in after the stream that asked for it was
    replaced (``sonic.late_result_instruction``): the clock and the knowledge search as when
    they answer in time, any other tool by name."""
    if tool == TIME_TOOL:
        return time_reply(result_json)
    if tool == KNOWLEDGE_TOOL:
        return knowledge_reply(result_json) or "Sorry, I found nothing on that."
    return f"The {tool} tool has finished."


REPLIES: Final = {
    "greeting": "Hello! I am the offline voicegate assistant. How can I help you?",
    "goodbye": "Goodbye! Talk to you soon.",
    "no_clock": "Sorry, I have no clock tool to tell the time with.",
    "tool_timeout": "Sorry, the clock did not answer in time.",
}


__all__ = [
    "KNOWLEDGE_TOOL",
    "REPLIES",
    "TIME_TOOL",
    "intent",
    "is_question",
    "knowledge_reply",
    "late_result_reply",
    "quote_reply",
    "time_reply",
]
