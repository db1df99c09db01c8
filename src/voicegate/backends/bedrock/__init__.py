"""The Bedrock backend: Nova Sonic through the real AWS SDK (see docs/bedrock.md).

``client`` opens streams with one SDK client per process, ``stream`` is one session,
``settings`` says where calls go, ``errors`` maps failures to typed errors, ``credentials``
bridges boto3's credential chain into the SDK. Importing it needs the ``bedrock`` extra
(``voicegate.backends.make_backend`` reports its absence).
"""

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
