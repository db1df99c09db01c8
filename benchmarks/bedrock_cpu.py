"""CPU cost of the Bedrock path per call: SigV4 per event, base64, JSON, TLS + HTTP/2 (CRT).

Two measurements:

1. ``micro``: the per-event steps in isolation, in this process, no network:
   voicegate's Nova JSON (+ base64 of the audio), the SDK's publish path without and with the
   chained SigV4 event signature, and the SDK's receive path (event-stream decode, JSON, base64)
   plus voicegate's decode of an output audio event.
2. ``e2e``: real calls through ``BedrockBackend`` (aws-sdk-bedrock-runtime 0.12 over CRT HTTP/2
   and TLS) to the stand-in's ``echo`` brain running in a *separate process*, so only the
   client's CPU is counted. Each call sends the conversation's real sequence, then 32 ms chunks
   of 16 kHz audio paced in real time, and consumes the echoed 24 kHz audio. Reported as process
   CPU seconds (all threads, including CRT's event-loop thread) per call-second.

Usage::

    PYTHONPATH=src .venv/bin/python benchmarks/bedrock_cpu.py [--seconds 20] [--calls 1 4]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from voicegate import sonic
from voicegate.backends.bedrock.client import BedrockBackend, BedrockSettings, BedrockStream

CHUNK_SAMPLES = 512  # 32 ms at 16 kHz, what the conversation layer sends
CHUNK_S = CHUNK_SAMPLES / 16000
PROMPT = "p"
AUDIO = "audio"


def _pcm(samples: int, seed: int = 1) -> bytes:
    # Deterministic noise-like PCM (base64 cost does not depend on content, JSON's does not).
    import numpy as np

    rng = np.random.default_rng(seed)
    return rng.integers(-3000, 3000, samples, dtype="<i2").tobytes()


# --------------------------------------------------------------------------------------------
# micro
# --------------------------------------------------------------------------------------------


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
    from aws_sdk_bedrock_runtime.models import (
        _InvokeModelWithBidirectionalStreamOutputDeserializer,
    )
    from aws_sdk_signers import AsyncEventSigner
    from smithy_aws_core.aio.protocols import RestJsonClientProtocol
    from smithy_aws_core.identity import AWSCredentialsIdentity, StaticCredentialsResolver
    from smithy_aws_event_stream.aio import AWSEventPublisher, AWSEventReceiver, SigningConfig
    from smithy_aws_event_stream.events import EventHeaderEncoder, EventMessage
    from smithy_core.aio.interfaces import ProtocolSettings
    from smithy_core.aio.types import AsyncBytesReader

    from voicegate.backends.bedrock.stream import _input_chunk

    codec = RestJsonClientProtocol(
        ProtocolSettings(
            namespace="com.amazonaws.bedrockruntime",
            service_target="AmazonBedrockFrontendService",
        )
    ).payload_codec
    audio_in = sonic.AudioInput(PROMPT, AUDIO, _pcm(CHUNK_SAMPLES))
    payload = sonic.dumps(sonic.encode_input(audio_in))
    chunk = _input_chunk(payload)

    results: dict[str, float] = {}
    results["voicegate encode (Nova JSON + base64), 32 ms audio"] = _per_call_us(
        lambda: sonic.dumps(sonic.encode_input(audio_in)), n
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

    # Receive side: one 40 ms 24 kHz audioOutput, framed the way Bedrock sends it.
    out = sonic.AudioOutput("c", _pcm(960, seed=2), sonic.Ids("s", PROMPT, "cmp"))
    nova = sonic.dumps(sonic.encode_output(out))
    import base64

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


# --------------------------------------------------------------------------------------------
# e2e against the stand-in (separate process)
# --------------------------------------------------------------------------------------------


def start_standin(cert_dir: Path) -> tuple[subprocess.Popen[str], dict[str, str]]:
    """Run the echo stand-in in a child process; returns it and its connection details."""
    code = (
        "import asyncio, json, sys\n"
        "from voicegate.standin.server import StandIn\n"
        "async def main():\n"
        f"    async with StandIn(brain='echo', cert_dir={str(cert_dir)!r}) as s:\n"
        "        print('STANDIN', json.dumps({'endpoint': s.endpoint, 'ca_file': str(s.ca_file),\n"
        "                          'access_key': s.access_key, 'secret_key': s.secret_key}),\n"
        "              flush=True)\n"
        "        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)\n"
        "asyncio.run(main())\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert proc.stdout is not None
    for _ in range(100):  # its log lines share stdout; the details are marked
        line = proc.stdout.readline()
        if not line:
            break
        if line.startswith("STANDIN "):
            return proc, json.loads(line.removeprefix("STANDIN "))
    proc.kill()
    raise RuntimeError("the stand-in did not start")


async def _one_call(backend: BedrockBackend, seconds: float, start_at: float) -> BedrockStream:
    loop = asyncio.get_running_loop()
    stream = await backend.open()
    received = 0

    async def consume() -> None:
        nonlocal received
        async for event in stream.events():
            if isinstance(event, sonic.AudioOutput):
                received += len(event.content)

    consumer = asyncio.create_task(consume())
    try:
        await stream.send(sonic.SessionStart())
        await stream.send(sonic.PromptStart(PROMPT))
        await stream.send(sonic.TextContentStart(PROMPT, "sys", "SYSTEM"))
        await stream.send(sonic.TextInput(PROMPT, "sys", "You are a benchmark."))
        await stream.send(sonic.ContentEnd(PROMPT, "sys"))
        await stream.send(sonic.AudioContentStart(PROMPT, AUDIO))
        pcm = _pcm(CHUNK_SAMPLES)
        chunks = round(seconds / CHUNK_S)
        for i in range(chunks):
            # Real-time pacing: each chunk leaves at its own deadline (no drift accumulates).
            delay = start_at + i * CHUNK_S - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            await stream.send(sonic.AudioInput(PROMPT, AUDIO, pcm))
        await stream.send(sonic.ContentEnd(PROMPT, AUDIO))
        await stream.send(sonic.PromptEnd(PROMPT))
        await stream.send(sonic.SessionEnd())
        async with asyncio.timeout(10):
            await consumer
    finally:
        consumer.cancel()
        await stream.close()
    expected = chunks * CHUNK_SAMPLES * 2 * 3 // 2
    if received < expected * 0.95:
        raise RuntimeError(f"echo returned {received} of ~{expected} audio bytes")
    return stream


def _thread_cpu() -> dict[str, float]:
    """CPU seconds per thread name of this process (Linux /proc), to split out CRT's threads."""
    out: dict[str, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return out
    for tid in tasks:
        try:
            with open(f"/proc/self/task/{tid}/comm") as f:
                name = f.read().strip()
            with open(f"/proc/self/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        kind = "CRT threads" if name.startswith("Aws") else "Python threads"
        out[kind] = out.get(kind, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out


async def e2e(seconds: float, calls: int, standin: dict[str, str]) -> dict[str, float]:
    os.environ["AWS_ENDPOINT_URL_BEDROCK_RUNTIME"] = standin["endpoint"]
    os.environ["SSL_CERT_FILE"] = standin["ca_file"]
    os.environ["AWS_ACCESS_KEY_ID"] = standin["access_key"]
    os.environ["AWS_SECRET_ACCESS_KEY"] = standin["secret_key"]
    os.environ.pop("AWS_SESSION_TOKEN", None)
    backend = BedrockBackend(BedrockSettings(region="us-east-1"))
    try:
        # Warm up: client setup, credentials, TLS connection, imports.
        await _one_call(backend, 0.5, asyncio.get_running_loop().time())
        loop = asyncio.get_running_loop()
        start_at = loop.time() + 0.2
        cpu0 = time.process_time()
        threads0 = _thread_cpu()
        wall0 = time.perf_counter()
        streams = await asyncio.gather(
            *(_one_call(backend, seconds, start_at + i * CHUNK_S / calls) for i in range(calls))
        )
        cpu = time.process_time() - cpu0
        wall = time.perf_counter() - wall0
        threads = {k: v - threads0.get(k, 0.0) for k, v in _thread_cpu().items()}
    finally:
        await backend.aclose()
    events = sum(s.stats.events_sent for s in streams)
    received = sum(s.stats.events_received for s in streams)
    call_seconds = calls * seconds
    return {
        "calls": calls,
        "seconds per call": seconds,
        "wall s": wall,
        "process CPU s": cpu,
        "CPU s per call-second": cpu / call_seconds,
        "CPU % of one core per call": 100 * cpu / call_seconds,
        **{
            f"  {kind} CPU s per call-second": value / call_seconds
            for kind, value in sorted(threads.items())
        },
        "events sent per call-second": events / call_seconds,
        "events received per call-second": received / call_seconds,
        "counted encode us/event": 1e6 * sum(s.stats.encode_cpu_s for s in streams) / events,
        "counted SDK send us/event": 1e6 * sum(s.stats.sdk_send_cpu_s for s in streams) / events,
        "counted decode us/event": 1e6
        * sum(s.stats.decode_cpu_s for s in streams)
        / max(1, received),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="audio seconds per call")
    parser.add_argument("--calls", type=int, nargs="+", default=[1, 4], help="concurrent calls")
    parser.add_argument("--micro-n", type=int, default=5000)
    parser.add_argument("--skip-e2e", action="store_true")
    args = parser.parse_args()

    print("# micro: CPU microseconds per event")
    for name, value in asyncio.run(micro(args.micro_n)).items():
        print(f"{name:60s} {value:8.1f}")
    if args.skip_e2e:
        return
    with tempfile.TemporaryDirectory() as cert_dir:
        proc, standin = start_standin(Path(cert_dir))
        try:
            for calls in args.calls:
                print(f"\n# e2e: {calls} concurrent call(s), echo stand-in in another process")
                result = asyncio.run(e2e(args.seconds, calls, standin))
                for name, value in result.items():
                    print(f"{name:40s} {value:10.4g}")
        finally:
            if proc.stdin is not None:
                proc.stdin.close()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
    print(f"\nmax RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
