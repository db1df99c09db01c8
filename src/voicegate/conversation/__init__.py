"""One call's conversation with a speech model: what the call layer uses.

``Conversation`` (dialogue.py) runs the dialogue over a sequence of model streams (legs.py,
renewal.py, continuation.py) and reports through ``ConversationListener`` with the events of
events.py; tools.py is the registry of functions the model may call.
"""

from voicegate.conversation.continuation import ContinuationSettings
from voicegate.conversation.dialogue import Conversation
from voicegate.conversation.events import (
    DEFAULT_SYSTEM_PROMPT,
    BotAudioStarted,
    BotInterrupted,
    BotText,
    BotTurnDone,
    ConversationEnded,
    ConversationError,
    ConversationEvent,
    ConversationListener,
    ConversationSettings,
    ConversationStats,
    SessionContinued,
    Tokens,
    ToolCallFinished,
    ToolCallStarted,
    ToolFiller,
    Usage,
    UserTranscript,
)
from voicegate.conversation.tools import Tool, ToolRegistry, default_tools

__all__ = [
    "DEFAULT_SYSTEM_PROMPT",
    "BotAudioStarted",
    "BotInterrupted",
    "BotText",
    "BotTurnDone",
    "ContinuationSettings",
    "Conversation",
    "ConversationEnded",
    "ConversationError",
    "ConversationEvent",
    "ConversationListener",
    "ConversationSettings",
    "ConversationStats",
    "SessionContinued",
    "Tokens",
    "Tool",
    "ToolCallFinished",
    "ToolFiller",
    "ToolCallStarted",
    "ToolRegistry",
    "Usage",
    "UserTranscript",
    "default_tools",
]
