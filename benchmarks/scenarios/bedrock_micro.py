"""Per-event CPU of each step of the Bedrock path, in this process, without a network.

voicegate's Nova JSON (+ base64 of the audio), the SDK's publish path without and with the
chained SigV4 event signature, and the SDK's receive path (event-stream decode, JSON, base64)
plus voicegate's decode of an output audio event. ``bedrock_cpu.py`` prints these before its
end-to-end runs; ``python -m benchmarks.bedrock_micro`` prints them alone.

The receive path is driven through the SDK's own output deserializer, which the SDK names
privately (``_InvokeModelWithBidirectionalStreamOutputDeserializer``): it has no public one.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from aws_sdk_bedrock_runtime.models import (
    BidirectionalInputPayloadPart,
    InvokeModelWithBidirectionalStreamInputChunk,
    _InvokeModelWithBidirectionalStreamOutputDeserializer,
)
from aws_sdk_signers import AsyncEventSigner
from smithy_aws_core.aio.protocols import RestJsonClientProtocol
from smithy_aws_core.identity import AWSCredentialsIdentity, StaticCredentialsResolver
from smithy_aws_event_stream.aio import AWSEventPublisher, AWSEventReceiver, SigningConfig
from smithy_aws_event_stream.events import EventHeaderEncoder, EventMessage
from smithy_core.aio.interfaces import ProtocolSettings
from smithy_core.aio.types import AsyncBytesReader

from voicegate import sonic

CHUNK_SAMPLES = 512  # 32 ms at 16 kHz
PROMPT = "p"
AUDIO = "audio"


def pcm(samples: int, seed: int = 1) -> bytes:
    """Deterministic noise-like PCM (base64 cost does not depend on content, JSON's does not)."""
    rng = np.random.default_rng(seed)
    return rng.integers(-3000, 3000, samples, dtype="<i2").tobytes()


def _per_call_us(fn: Callable[[], Any], n: int) -> float:
    fn()
    t0 = time.process_time()
    for _ in range(n):
        fn()
    return (time.process_time() - t0) / n * 1e6


async def _per_call_us_async(fn: Callable[[], Any], n: int) -> float:
    await fn()
    t0 = time.process_time()
    for _ in range(n):
        await fn()
    return (time.process_time() - t0) / n * 1e6


class _Sink:
    """An AsyncWriter that drops bytes (stands in for the HTTP/2 request body)."""

    async def write(self, data: bytes) -> None:
        return None


async def micro(n: int = 5000) -> dict[str, float]:
    """Microseconds of CPU per event for each step of the Bedrock path."""
    codec = RestJsonClientProtocol(
        ProtocolSettings(
            namespace="com.amazonaws.bedrockruntime",
            service_target="AmazonBedrockFrontendService",
        )
    ).payload_codec
    audio_in = sonic.AudioInput(PROMPT, AUDIO, pcm(CHUNK_SAMPLES))
    payload = sonic.dumps(sonic.encode_input(audio_in))
    # What BedrockStream hands the SDK for one audio event.
    chunk = InvokeModelWithBidirectionalStreamInputChunk(
        value=BidirectionalInputPayloadPart(bytes_=payload)
    )

    results: dict[str, float] = {}
    results["voicegate encode (Nova JSON + base64), 32 ms audio"] = _per_call_us(
        lambda: sonic.dumps(sonic.encode_input(audio_in)), n
    )

    results["voicegate encode, templated (what BedrockStream sends)"] = _per_call_us(
        lambda: sonic.audio_input_payload(audio_in), n
    )

    unsigned = AWSEventPublisher[Any](payload_codec=codec, async_writer=_Sink())
    results["SDK publish, unsigned (JSON wrap + base64 + framing)"] = await _per_call_us_async(
        lambda: unsigned.send(chunk), n
    )
    identity = AWSCredentialsIdentity(access_key_id="AKIDBENCH", secret_access_key="x" * 40)
    signed = AWSEventPublisher[Any](
        payload_codec=codec,
        async_writer=_Sink(),
        signing_config=SigningConfig(
            signer=AsyncEventSigner(
                initial_signature=b"0" * 64, event_encoder_cls=EventHeaderEncoder
            ),
            signing_properties={"region": "us-east-1", "service": "bedrock"},
            identity_resolver=StaticCredentialsResolver(identity),
            identity_properties={},
        ),
    )
    results["SDK publish, signed (+ SigV4 event signature)"] = await _per_call_us_async(
        lambda: signed.send(chunk), n
    )
    results["  of which SigV4 event signing"] = (
        results["SDK publish, signed (+ SigV4 event signature)"]
        - results["SDK publish, unsigned (JSON wrap + base64 + framing)"]
    )
    # Imported here: bedrock_cpu's workers import this module, and ``--src`` may point them
    # at a voicegate tree from before the chained signer existed.
    from voicegate.backends.bedrock.event_signer import ChainedEventSigner

    chained = AWSEventPublisher[Any](
        payload_codec=codec,
        async_writer=_Sink(),
        signing_config=SigningConfig(
            signer=ChainedEventSigner(initial_signature=b"0" * 64),
            signing_properties={"region": "us-east-1", "service": "bedrock"},
            identity_resolver=StaticCredentialsResolver(identity),
            identity_properties={},
        ),
    )
    results["SDK publish, signed by voicegate's ChainedEventSigner"] = await _per_call_us_async(
        lambda: chained.send(chunk), n
    )
    results["  of which SigV4 event signing (ChainedEventSigner)"] = (
        results["SDK publish, signed by voicegate's ChainedEventSigner"]
        - results["SDK publish, unsigned (JSON wrap + base64 + framing)"]
    )

    # Receive side: one 40 ms 24 kHz audioOutput, framed the way Bedrock sends it.
    out = sonic.AudioOutput("c", pcm(960, seed=2), sonic.Ids("s", PROMPT, "cmp"))
    nova = sonic.dumps(sonic.encode_output(out))
    frame = EventMessage(
        headers={
            ":message-type": "event",
            ":event-type": "chunk",
            ":content-type": "application/json",
        },
        payload=json.dumps({"bytes": base64.b64encode(nova).decode()}).encode(),
    ).encode()
    frames = frame * n

    receiver = AWSEventReceiver[Any](
        payload_codec=codec,
        source=AsyncBytesReader(frames),
        deserializer=_InvokeModelWithBidirectionalStreamOutputDeserializer().deserialize,
    )
    t0 = time.process_time()
    for _ in range(n):
        await receiver.receive()
    results["SDK receive (framing + JSON + base64), 40 ms audio out"] = (
        (time.process_time() - t0) / n * 1e6
    )
    results["voicegate decode (JSON + base64), 40 ms audio out"] = _per_call_us(
        lambda: sonic.decode_output(json.loads(nova)), n
    )
    return results


def main() -> None:
    for name, value in asyncio.run(micro()).items():
        print(f"{name:60s} {value:8.1f}")


__all__ = ["AUDIO", "CHUNK_SAMPLES", "PROMPT", "main", "micro", "pcm"]
