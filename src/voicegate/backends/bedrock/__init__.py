"""The Bedrock backend: Nova Sonic through the real AWS SDK (see docs/bedrock.md).

``client`` opens streams with one SDK client per process, ``stream`` is one session,
``settings`` says where calls go, ``transport`` is the SDK's HTTP/2 transport on the event loop,
``errors`` maps failures to typed errors, ``credentials`` bridges boto3's credential chain into
the SDK. Using it needs the ``bedrock`` extra (``voicegate.backends.make_backend`` reports its
absence). The names below load on first use, so the options table can name the transports
without importing the SDK.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = [
    "DEFAULT_MODEL_ID",
    "NOVA_SONIC_V1_MODEL_ID",
    "BedrockBackend",
    "BedrockSettings",
    "BedrockStream",
    "StreamStats",
    "credentials_status",
    "default_region",
    "map_error",
]

_HOMES = {
    "BedrockBackend": "voicegate.backends.bedrock.client",
    "credentials_status": "voicegate.backends.bedrock.credentials",
    "map_error": "voicegate.backends.bedrock.errors",
    "DEFAULT_MODEL_ID": "voicegate.backends.bedrock.settings",
    "NOVA_SONIC_V1_MODEL_ID": "voicegate.backends.bedrock.settings",
    "BedrockSettings": "voicegate.backends.bedrock.settings",
    "default_region": "voicegate.backends.bedrock.settings",
    "BedrockStream": "voicegate.backends.bedrock.stream",
    "StreamStats": "voicegate.backends.bedrock.stream",
}

if TYPE_CHECKING:
    from voicegate.backends.bedrock.client import BedrockBackend
    from voicegate.backends.bedrock.credentials import credentials_status
    from voicegate.backends.bedrock.errors import map_error
    from voicegate.backends.bedrock.settings import (
        DEFAULT_MODEL_ID,
        NOVA_SONIC_V1_MODEL_ID,
        BedrockSettings,
        default_region,
    )
    from voicegate.backends.bedrock.stream import BedrockStream, StreamStats


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
