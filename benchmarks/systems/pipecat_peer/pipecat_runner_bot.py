"""``pipecat_bot.py``'s bot behind Pipecat's own development runner, which also serves Pipecat's
prebuilt web client (the ``pipecat-ai-prebuilt`` wheel) at ``/client/``: what a Pipecat user
opens in a browser. Runs inside .bench/pipecat, never with voicegate code.

    .bench/pipecat/bin/python benchmarks/systems/pipecat_peer/pipecat_runner_bot.py -t webrtc \
        --port 7860

Environment: as ``pipecat_bot.py`` (the Bedrock stand-in's endpoint, CA and keys).
"""

from __future__ import annotations

from pipecat.runner.run import main
from pipecat.runner.types import SmallWebRTCRunnerArguments
from pipecat_bot import run_bot  # this directory is on sys.path (the script's own)


async def bot(runner_args: SmallWebRTCRunnerArguments) -> None:
    """The runner calls this once per browser connection (``POST /api/offer``)."""
    await run_bot(runner_args.webrtc_connection)


if __name__ == "__main__":
    main()
