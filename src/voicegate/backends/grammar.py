"""Nova Sonic's session grammar: which input event may come when, checked the way Bedrock does.

Every in-process brain (echo, local, the stand-in's scripted brain) runs its input through one
``SessionGrammar``, so a client that passes voicegate's tests sends what real Bedrock accepts.
The rules are the documented ones (docs/standin.md lists each with its source):

* order: sessionStart, promptStart, the system prompt (TEXT, role SYSTEM, not interactive),
  optionally Nova 2's speech prompt (SYSTEM_SPEECH), optional history (once, before audio), one
  AUDIO content, then tool results and interactive USER text, then the orderly close: audio
  contentEnd, promptEnd, sessionEnd; nothing after promptEnd but sessionEnd, nothing at all
  after sessionEnd;
* history: USER first, USER/ASSISTANT alternating, 1 KB per textInput and
  40 KB in all;
* roles: the AUDIO content is USER; tool results answer a toolUse the model issued, once, with a
  JSON object.

Wire-level rules (field names, configuration blocks, voices, sample rates, interactive flags of
AUDIO and TOOL contents) need the JSON and live in the stand-in's schema check.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Final

from voicegate.backends.base import ValidationFailed
from voicegate.sonic import (
    AudioContentStart,
    AudioInput,
    ContentEnd,
    InputEvent,
    PromptEnd,
    PromptStart,
    Role,
    SessionEnd,
    SessionStart,
    TextContentStart,
    TextInput,
    ToolResult,
    ToolResultContentStart,
)

MAX_HISTORY_TEXT_BYTES: Final = 1024
"""One history textInput: about 1 KB (split longer messages over several textInputs)."""
MAX_HISTORY_BYTES: Final = 40 * 1024
HISTORY_ROLES: Final = frozenset({"USER", "ASSISTANT"})
HISTORY_BEFORE_AUDIO: Final = "Chat history should be sent completely before streaming audio."


def invalid(reason: str) -> ValidationFailed:
    """A refusal worded like Bedrock's ValidationException."""
    return ValidationFailed(
        f"Invalid input request: {reason}. Please fix your input and try again."
    )


def tool_error(reason: str) -> ValidationFailed:
    return ValidationFailed(f"Tool Response parsing error: {reason}.")


@dataclass(slots=True)
class OpenContent:
    name: str
    kind: str  # "TEXT" | "AUDIO" | "TOOL"
    role: Role
    interactive: bool = False
    history: bool = False
    tool_use_id: str = ""
    parts: list[str] = field(default_factory=list)
    results: int = 0


@dataclass(slots=True)
class SessionGrammar:
    """The state of one session's input; ``accept`` raises ValidationFailed on a violation.

    ``accept`` returns the content a ``contentEnd`` closed (so the stream can hand its text to
    the brain), else None.
    """

    session: SessionStart | None = None
    prompt: PromptStart | None = None
    system_prompt: str | None = None
    history: list[tuple[Role, str]] = field(default_factory=list)
    history_bytes: int = 0
    history_over: bool = False
    speech_prompt: bool = False
    audio_started: bool = False
    audio_rate: int = 0
    """The audio content's sampleRateHertz (0 before it opens)."""
    audio_ended: bool = False
    prompt_ended: bool = False
    session_ended: bool = False
    contents: dict[str, OpenContent] = field(default_factory=dict)
    used_names: set[str] = field(default_factory=set)
    issued_tool_uses: set[str] = field(default_factory=set)
    answered_tool_uses: set[str] = field(default_factory=set)

    def tool_use_issued(self, tool_use_id: str) -> None:
        """The model asked for a tool: a result for this id may now arrive (once)."""
        self.issued_tool_uses.add(tool_use_id)

    def accept(self, event: InputEvent) -> OpenContent | None:
        if self.session_ended:
            raise invalid("no event may follow sessionEnd")
        match event:
            case SessionStart():
                if self.session is not None:
                    raise invalid("sessionStart may be sent only once")
                self.session = event
            case PromptStart():
                self._require_session(event)
                if self.prompt is not None:
                    raise invalid("a session takes one promptStart (one prompt per session)")
                self.prompt = event
            case TextContentStart() | AudioContentStart() | ToolResultContentStart():
                self._content_start(event)
            case TextInput():
                self._text_input(event)
            case ToolResult():
                content = self._content(event.prompt_name, event.content_name, "toolResult")
                if content.kind != "TOOL":
                    raise invalid(f"toolResult sent into a {content.kind} content")
                _require_json_object(event.content)
                content.results += 1
                content.parts.append(event.content)
            case AudioInput():
                self._audio_input(event)
            case ContentEnd():
                return self._content_end(event)
            case PromptEnd():
                self._check_prompt(event.prompt_name, "promptEnd")
                if self.contents:
                    open_names = ", ".join(sorted(self.contents))
                    raise invalid(f"promptEnd sent while contents are still open ({open_names})")
                self.prompt_ended = True
            case SessionEnd():
                self._require_session(event)
                if self.prompt is not None and not self.prompt_ended:
                    raise invalid(
                        "sessionEnd must follow promptEnd (close the audio content, then "
                        "promptEnd, then sessionEnd)"
                    )
                self.session_ended = True
        return None

    # -- contents ----------------------------------------------------------------------------

    def _content_start(
        self, event: TextContentStart | AudioContentStart | ToolResultContentStart
    ) -> None:
        self._check_prompt(event.prompt_name, "contentStart")
        name = event.content_name
        if name in self.used_names:
            raise invalid(f"contentName {name!r} is already in use; each content needs its own")
        if any(c.kind != "AUDIO" for c in self.contents.values()):
            busy = next(c.name for c in self.contents.values() if c.kind != "AUDIO")
            raise invalid(f"contentStart {name!r} while content {busy!r} is still open")
        if isinstance(event, TextContentStart):
            content = self._text_start(event)
        elif isinstance(event, AudioContentStart):
            if self.system_prompt is None:
                raise invalid("the system prompt must come before the audio content")
            if self.audio_started:
                raise invalid("a prompt takes one audio content")
            if event.role != "USER":
                raise invalid(f"the AUDIO content must have role USER, not {event.role}")
            self.audio_started = True
            self.audio_rate = event.sample_rate
            self.history_over = True
            content = OpenContent(name, "AUDIO", "USER", interactive=True)
        else:
            if self.system_prompt is None:
                raise invalid("the system prompt must come before any tool result")
            use = event.tool_use_id
            if use not in self.issued_tool_uses:
                raise tool_error(f"toolUseId {use!r} does not match a toolUse of this session")
            if use in self.answered_tool_uses:
                raise tool_error(f"toolUseId {use!r} was already answered")
            self.answered_tool_uses.add(use)
            self.history_over = True
            content = OpenContent(name, "TOOL", "TOOL", tool_use_id=use)
        self.used_names.add(name)
        self.contents[name] = content

    def _text_start(self, event: TextContentStart) -> OpenContent:
        name, role = event.content_name, event.role
        if self.system_prompt is None:
            if role != "SYSTEM" or event.interactive:
                raise invalid(
                    "the first content must be the system prompt (TEXT, role SYSTEM, "
                    "interactive false)"
                )
            return OpenContent(name, "TEXT", role)
        if role == "SYSTEM":
            raise invalid("the system prompt may be sent only once, first")
        if role == "SYSTEM_SPEECH":
            # Nova 2's speech prompt: right after the system prompt, before history and audio.
            if self.speech_prompt or self.history or self.history_over:
                raise invalid(
                    "the speech prompt (SYSTEM_SPEECH) may be sent once, right after the "
                    "system prompt"
                )
            self.speech_prompt = True
            return OpenContent(name, "TEXT", role, interactive=event.interactive)
        if self.audio_started:
            if role == "USER" and event.interactive:
                if self.audio_ended:
                    raise invalid("interactive text needs the audio content to be streaming")
                return OpenContent(name, "TEXT", role, interactive=True)  # cross-modal input
            if event.interactive:
                raise invalid(f"interactive text must have role USER, not {role}")
        if self.history_over:
            raise invalid(
                "chat history may be sent only once, after the system prompt and before the "
                "audio content starts"
            )
        if role not in HISTORY_ROLES:
            raise invalid(f"history messages must have role USER or ASSISTANT, not {role}")
        if not self.history and role != "USER":
            raise invalid("the chat history must start with a USER message")
        if self.history and self.history[-1][0] == role:
            raise invalid("chat history roles must alternate between USER and ASSISTANT")
        self.history.append((role, ""))
        return OpenContent(name, "TEXT", role, interactive=event.interactive, history=True)

    def _text_input(self, event: TextInput) -> None:
        content = self._content(event.prompt_name, event.content_name, "textInput")
        if content.kind != "TEXT":
            raise invalid(f"textInput sent into a {content.kind} content")
        if content.history:
            size = len(event.content.encode())
            if size > MAX_HISTORY_TEXT_BYTES:
                raise invalid(
                    f"a chat history textInput may hold at most {MAX_HISTORY_TEXT_BYTES} bytes "
                    f"(got {size}); split longer messages"
                )
            self.history_bytes += size
            if self.history_bytes > MAX_HISTORY_BYTES:
                raise invalid(f"chat history may hold at most {MAX_HISTORY_BYTES} bytes in all")
        content.parts.append(event.content)

    def _audio_input(self, event: AudioInput) -> None:
        content = self._content(event.prompt_name, event.content_name, "audioInput")
        if content.kind != "AUDIO":
            raise invalid(f"audioInput sent into a {content.kind} content")
        if any(c.history for c in self.contents.values()):
            raise ValidationFailed(HISTORY_BEFORE_AUDIO)
        if not event.content or len(event.content) % 2:
            raise invalid("audioInput must hold whole 16-bit samples (and at least one)")

    def _content_end(self, event: ContentEnd) -> OpenContent:
        content = self._content(event.prompt_name, event.content_name, "contentEnd")
        del self.contents[event.content_name]
        text = "".join(content.parts)
        if content.kind == "TOOL" and not content.results:
            raise tool_error("the tool result content ended without a toolResult")
        if content.kind == "AUDIO":
            self.audio_ended = True
        elif content.kind == "TEXT" and content.role == "SYSTEM" and self.system_prompt is None:
            self.system_prompt = text
        elif content.history:
            self.history[-1] = (content.role, text)
        return content

    # -- helpers -----------------------------------------------------------------------------

    def _require_session(self, event: InputEvent) -> None:
        if self.session is None:
            raise invalid(f"the first event must be sessionStart, not {_name(event)}")

    def _check_prompt(self, prompt_name: str, what: str) -> None:
        if self.session is None:
            raise invalid(f"the first event must be sessionStart, not {what}")
        if self.prompt is None:
            raise invalid(f"{what} sent before promptStart")
        if self.prompt_ended:
            raise invalid(f"{what} sent after promptEnd")
        if prompt_name != self.prompt.prompt_name:
            raise invalid(f"unknown promptName {prompt_name!r}")

    def _content(self, prompt_name: str, content_name: str, what: str) -> OpenContent:
        self._check_prompt(prompt_name, what)
        content = self.contents.get(content_name)
        if content is None:
            raise invalid(f"{what} for content {content_name!r}, which is not open")
        return content


def _require_json_object(text: str) -> None:
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        raise tool_error("the toolResult content is not JSON") from None
    if not isinstance(value, dict):
        raise tool_error("the toolResult content must be a JSON object")


_NAMES: Final[dict[type, str]] = {
    SessionStart: "sessionStart",
    PromptStart: "promptStart",
    TextContentStart: "contentStart",
    AudioContentStart: "contentStart",
    ToolResultContentStart: "contentStart",
    TextInput: "textInput",
    AudioInput: "audioInput",
    ToolResult: "toolResult",
    ContentEnd: "contentEnd",
    PromptEnd: "promptEnd",
    SessionEnd: "sessionEnd",
}


def _name(event: InputEvent) -> str:
    return _NAMES.get(type(event), type(event).__name__)


__all__ = [
    "HISTORY_BEFORE_AUDIO",
    "MAX_HISTORY_BYTES",
    "MAX_HISTORY_TEXT_BYTES",
    "OpenContent",
    "SessionGrammar",
    "invalid",
    "tool_error",
]
