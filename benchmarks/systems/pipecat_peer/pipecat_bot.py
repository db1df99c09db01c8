"""The peer: Pipecat's SmallWebRTC transport + its AWS Nova Sonic service, pointed at the
same Bedrock stand-in. Runs inside the benchmark's own virtualenv (.bench/pipecat, created by
``systems/pipecat.py`` from PyPI: ``pipecat-ai[aws-nova-sonic,webrtc]==1.14.0``), never with
voicegate code.

    .bench/pipecat/bin/python benchmarks/systems/pipecat_peer/pipecat_bot.py --port 8095

Environment: AWS_ENDPOINT_URL_BEDROCK_RUNTIME, SSL_CERT_FILE, AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY (what ``benchmarks/systems/standin_proc.py`` prints).

Set up for latency the way Pipecat documents it (``SETTINGS`` below, recorded with every result):
``TransportParams.audio_out_10ms_chunks=2`` (20 ms, one WebRTC packet; the default is 4, and
Pipecat's TransportParams reference says higher values increase latency), the context aggregator
pair in ``realtime_service_mode`` and no local VAD (Nova Sonic endpoints server-side), as in
Pipecat's own Nova Sonic example; metrics off; session continuation left at its default (its
360 s threshold is never reached in a benchmark run).

Two shims, both outside Pipecat's code:
- Pipecat 1.14's ``AWSNovaSonicLLMService.create_client`` hard-codes
  ``https://bedrock-runtime.{region}.amazonaws.com`` and ignores
  ``AWS_ENDPOINT_URL_BEDROCK_RUNTIME``; a subclass returns the same client with the stand-in's
  endpoint instead.
- aioice never offers 127.0.0.1 as a host candidate (aiortc/aioice#2); the benchmark is
  loopback-only, so the module function is replaced, as voicegate's ice.py and the stock
  gateway do.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

import aioice.ice
from aiohttp import web

aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]

from loguru import logger  # noqa: E402
from pipecat.frames.frames import LLMRunFrame  # noqa: E402
from pipecat.pipeline.pipeline import Pipeline  # noqa: E402
from pipecat.pipeline.runner import PipelineRunner  # noqa: E402
from pipecat.pipeline.task import PipelineParams, PipelineTask  # noqa: E402
from pipecat.processors.aggregators.llm_context import LLMContext  # noqa: E402
from pipecat.processors.aggregators.llm_response_universal import (  # noqa: E402
    LLMContextAggregatorPair,
)
from pipecat.services.aws.nova_sonic.llm import AWSNovaSonicLLMService  # noqa: E402
from pipecat.transports.base_transport import TransportParams  # noqa: E402
from pipecat.transports.smallwebrtc.connection import SmallWebRTCConnection  # noqa: E402
from pipecat.transports.smallwebrtc.request_handler import (  # noqa: E402
    SmallWebRTCRequest,
    SmallWebRTCRequestHandler,
)
from pipecat.transports.smallwebrtc.transport import SmallWebRTCTransport  # noqa: E402

SETTINGS = {
    "audio_out_10ms_chunks": 2,
    "realtime_service_mode": True,
    "local_vad": None,
    "enable_metrics": False,
    "session_continuation": "default (360 s threshold)",
}

logger.remove()
logger.add(sys.stderr, level=os.environ.get("PIPECAT_LOG_LEVEL", "WARNING"))


class StandInNovaSonic(AWSNovaSonicLLMService):
    def create_client(self):  # type: ignore[no-untyped-def]
        from aws_sdk_bedrock_runtime.client import BedrockRuntimeClient
        from aws_sdk_bedrock_runtime.config import Config
        from smithy_aws_core.identity.static import StaticCredentialsResolver

        client = super().create_client()
        config = client._config
        endpoint = os.environ["AWS_ENDPOINT_URL_BEDROCK_RUNTIME"]
        return BedrockRuntimeClient(
            config=Config(
                endpoint_uri=endpoint,
                region=config.region,
                aws_access_key_id=config.aws_access_key_id,
                aws_secret_access_key=config.aws_secret_access_key,
                aws_session_token=config.aws_session_token,
                aws_credentials_identity_resolver=StaticCredentialsResolver(),
                auth_schemes=config.auth_schemes,
            )
        )


async def run_bot(connection: SmallWebRTCConnection) -> None:
    transport = SmallWebRTCTransport(
        webrtc_connection=connection,
        params=TransportParams(
            audio_in_enabled=True,
            audio_out_enabled=True,
            audio_out_10ms_chunks=SETTINGS["audio_out_10ms_chunks"],
        ),
    )
    llm = StandInNovaSonic(
        access_key_id=os.environ["AWS_ACCESS_KEY_ID"],
        secret_access_key=os.environ["AWS_SECRET_ACCESS_KEY"],
        region="us-east-1",
        model="amazon.nova-2-sonic-v1:0",
        system_instruction="You are a benchmark.",
    )
    # The shape of Pipecat's own Nova Sonic examples: a context aggregator pair around the
    # service, and an LLMRunFrame once the client is there (the service opens its Bedrock
    # stream only when it has a context).
    user, assistant = LLMContextAggregatorPair(
        LLMContext(), realtime_service_mode=SETTINGS["realtime_service_mode"]
    )
    task = PipelineTask(
        Pipeline([transport.input(), user, llm, transport.output(), assistant]),
        params=PipelineParams(enable_metrics=False),
    )

    @transport.event_handler("on_client_connected")
    async def _connected(transport, client) -> None:  # type: ignore[no-untyped-def]
        await task.queue_frames([LLMRunFrame()])

    @transport.event_handler("on_client_disconnected")
    async def _gone(transport, client) -> None:  # type: ignore[no-untyped-def]
        await task.cancel()

    await PipelineRunner(handle_sigint=False).run(task)


async def main(port: int) -> None:
    handler = SmallWebRTCRequestHandler()
    tasks: set[asyncio.Task[None]] = set()

    async def offer(request: web.Request) -> web.Response:
        body = await request.json()

        async def started(connection: SmallWebRTCConnection) -> None:
            task = asyncio.create_task(run_bot(connection))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

        answer = await handler.handle_web_request(
            SmallWebRTCRequest(sdp=body["sdp"], type=body["type"]), started
        )
        return web.json_response(answer)

    async def hangup(request: web.Request) -> web.Response:
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/api/offer", offer)
    app.router.add_delete("/api/sessions/{pc_id}", hangup)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    print("READY", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=8095)
    parser.add_argument("--settings", action="store_true", help="print SETTINGS as JSON, exit")
    cli = parser.parse_args()
    if cli.settings:
        import json

        print(json.dumps(SETTINGS))
    else:
        asyncio.run(main(cli.port))
