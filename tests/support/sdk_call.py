"""One bidirectional stream of the real AWS SDK (aws_sdk_bedrock_runtime) to the stand-in, as a
test drives it: events sent in production's order, output collected by a background task."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from typing import Any

import numpy as np
from aws_sdk_bedrock_runtime import models as m

from voicegate import sonic

P = "prompt-1"
AUDIO = "audio-1"
CHUNK = 512  # samples, 32 ms at 16 kHz


def tone(samples: int = CHUNK, amp: float = 8000.0, freq: float = 300.0) -> bytes:
    t = np.arange(samples) / 16000
    return (amp * np.sin(2 * np.pi * freq * t)).astype("<i2").tobytes()


SILENCE = bytes(2 * CHUNK)


class Call:
    """One SDK stream, with output collected by a background receive task."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.events: list[sonic.OutputEvent] = []
        self.error: BaseException | None = None
        self.ended = asyncio.Event()
        self._arrived = asyncio.Event()
        self._receiver: asyncio.Task[None] | None = None

    async def send(self, event: sonic.InputEvent) -> None:
        await self.send_bytes(json.dumps(sonic.encode_input(event)).encode())

    async def send_bytes(self, data: bytes) -> None:
        chunk = m.InvokeModelWithBidirectionalStreamInputChunk(
            value=m.BidirectionalInputPayloadPart(bytes_=data)
        )
        async with asyncio.timeout(5):
            await self.stream.input_stream.send(chunk)

    async def start(self) -> None:
        """Await the response headers (raises a modelled pre-stream error) and start reading."""
        _, receiver = await self.stream.await_output()
        self._receiver = asyncio.create_task(self._receive(receiver))

    async def _receive(self, receiver: Any) -> None:
        try:
            while True:
                out = await receiver.receive()
                if out is None:
                    return
                self.events.append(sonic.decode_output(json.loads(out.value.bytes_)))
                self._arrived.set()
        except Exception as exc:
            self.error = exc
        finally:
            self.ended.set()
            self._arrived.set()

    async def wait_for(
        self, pred: Callable[[sonic.OutputEvent], bool], nth: int = 1
    ) -> sonic.OutputEvent:
        """The ``nth`` collected event matching ``pred`` (waits for it; fails if output ends)."""
        seen = 0
        found = 0
        while True:
            for event in self.events[seen:]:
                if pred(event):
                    found += 1
                    if found == nth:
                        return event
            seen = len(self.events)
            if self.ended.is_set():
                raise AssertionError(f"output ended ({self.error!r}) before the expected event")
            self._arrived.clear()
            await self._arrived.wait()

    async def setup(self, system: str, tools: tuple[sonic.ToolSpec, ...] = ()) -> None:
        await self.send(sonic.SessionStart())
        await self.send(sonic.PromptStart(P, tools=tools))
        await self.send(sonic.TextContentStart(P, "system", "SYSTEM"))
        await self.send(sonic.TextInput(P, "system", system))
        await self.send(sonic.ContentEnd(P, "system"))
        await self.send(sonic.AudioContentStart(P, AUDIO))

    async def audio(self, pcm: bytes, chunks: int = 1) -> None:
        for _ in range(chunks):
            await self.send(sonic.AudioInput(P, AUDIO, pcm))

    async def utterance(self, speech_chunks: int = 10, silence_chunks: int = 12) -> None:
        await self.audio(tone(), speech_chunks)
        await self.audio(SILENCE, silence_chunks)

    async def finish(self) -> None:
        """The orderly close production code does, then wait for the end of the output."""
        await self.send(sonic.ContentEnd(P, AUDIO))
        await self.send(sonic.PromptEnd(P))
        await self.send(sonic.SessionEnd())
        async with asyncio.timeout(5):
            await self.stream.input_stream.close()
            await self.ended.wait()

    async def abort(self) -> None:
        """Tear down a stream the server killed, without the SDK's hanging close().

        Workaround for the SDK blocking forever in input_stream.close() after RST_STREAM
        (docs/bedrock.md; related: aws/aws-sdk-python#13): close the body provider unflushed.
        """
        writer = getattr(self.stream.input_stream, "_writer", None)
        if writer is not None:
            with contextlib.suppress(Exception):
                await writer.close(flush=False)
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2):
                await self.stream.input_stream.close()
        if self._receiver is not None:
            self._receiver.cancel()
            with contextlib.suppress(BaseException):
                await self._receiver

    def of(self, cls: type[Any]) -> list[Any]:
        return [e for e in self.events if isinstance(e, cls)]

    def texts(self, role: str) -> list[str]:
        return [e.content for e in self.of(sonic.TextOutput) if e.role == role]
