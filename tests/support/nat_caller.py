"""The caller of the NAT and TURN tests, run as ``python -m tests.support.nat_caller --client
URL [--no-turn] [--relay-only] [--wait S]`` inside the caller's network namespace: it fetches
voicegate's ICE servers, calls, and prints one ``RESULT {json}`` line (connect time, candidate
pair, frames heard, or how long it waited without connecting). ``VG_NAT_TOKEN`` is its token."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

CONNECT_TIMEOUT_S = 20.0  # the caller's own wait for the data channel


async def call(
    base: str, use_turn: bool, relay_only: bool, wait_s: float, token: str
) -> dict[str, Any]:
    import aiohttp

    from voicegate.testing.client import CallClient

    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        deadline = time.monotonic() + 60
        while True:  # voicegate in the other namespace is still loading
            try:
                async with http.get(f"{base}/healthz") as resp:
                    if resp.status == 200:
                        break
            except (aiohttp.ClientError, OSError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                return {"error": "voicegate never answered /healthz through the edge"}
            await asyncio.sleep(0.2)  # start-up wait for another process, not an audio path
        headers = {"Authorization": f"Bearer {token}"}
        async with http.get(f"{base}/api/ice-servers", headers=headers) as resp:
            body = await resp.json()
            if resp.status != 200:
                return {"error": f"/api/ice-servers answered {resp.status}: {body}"}
        servers = CallClient.ice_servers_from_json(body["iceServers"]) if use_turn else []
        client = CallClient(base, ice_servers=servers, relay_only=relay_only, token=token)
        result: dict[str, Any] = {"ice_servers": len(servers)}
        try:
            t0 = time.monotonic()
            async with asyncio.timeout(20):
                answer = await client.connect(http)
            result["offer_sdp_relay"] = "typ relay" in client.pc.localDescription.sdp
            result["answer_sdp_relay"] = "typ relay" in answer["sdp"]
            failed = asyncio.Event()

            @client.pc.on("connectionstatechange")
            def _state() -> None:
                if client.pc.connectionState == "failed":
                    failed.set()

            ready = asyncio.ensure_future(client.wait_for("bot-ready", wait_s))
            gave_up = asyncio.ensure_future(failed.wait())
            await asyncio.wait({ready, gave_up}, return_when=asyncio.FIRST_COMPLETED)
            gave_up.cancel()
            if ready.done() and ready.exception() is None:
                result["connect_ms"] = round((time.monotonic() - t0) * 1000)
                await client.wait_frames(25, 10)
                result["frames"] = len(client.audio.frames)
            else:
                ready.cancel()
                await asyncio.gather(ready, return_exceptions=True)
                result["not_connected_after_ms"] = round((time.monotonic() - t0) * 1000)
            result["state"] = client.pc.connectionState
            result["pair"] = client.selected_candidate_types()
        finally:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5):
                    await client.hangup(http)
            await client.close()
    return result


def main(argv: Sequence[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--client", required=True, help="voicegate base URL")
    parser.add_argument("--no-turn", action="store_true")
    parser.add_argument("--relay-only", action="store_true")
    parser.add_argument("--wait", type=float, default=CONNECT_TIMEOUT_S)
    args = parser.parse_args(argv)
    token = os.environ["VG_NAT_TOKEN"]
    result = asyncio.run(call(args.client, not args.no_turn, args.relay_only, args.wait, token))
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
