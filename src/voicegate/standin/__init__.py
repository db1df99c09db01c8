"""The Bedrock stand-in: Bedrock's bidirectional-stream wire protocol, served locally.

See docs/standin.md. ``StandIn`` is the in-process API; ``voicegate standin`` the command.
The stand-in shares no code with the production client (``voicegate.backends.bedrock``): it has
its own SigV4 verifier and event-stream codec, so a client bug cannot hide behind a shared one.
"""

from voicegate.standin.factories import BRAINS, BrainUnavailable
from voicegate.standin.records import Rejection, SessionRecord
from voicegate.standin.scenarios import Scenario
from voicegate.standin.server import TEST_ACCESS_KEY, TEST_SECRET_KEY, StandIn
from voicegate.standin.sigv4 import Credentials

__all__ = [
    "BRAINS",
    "TEST_ACCESS_KEY",
    "TEST_SECRET_KEY",
    "BrainUnavailable",
    "Credentials",
    "Rejection",
    "Scenario",
    "SessionRecord",
    "StandIn",
]
