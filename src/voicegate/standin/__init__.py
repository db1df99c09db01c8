"""The Bedrock stand-in: Bedrock's bidirectional-stream wire protocol, served locally.

See docs/standin.md. ``StandIn`` is the in-process API; ``voicegate standin`` the command.
"""

from voicegate.standin.server import (
    TEST_ACCESS_KEY,
    TEST_SECRET_KEY,
    Rejection,
    SessionRecord,
    StandIn,
)

__all__ = ["TEST_ACCESS_KEY", "TEST_SECRET_KEY", "Rejection", "SessionRecord", "StandIn"]
