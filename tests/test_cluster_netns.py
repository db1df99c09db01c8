"""Two nodes as pods would run: each in a network namespace of its own with its own address,
Redis on the cluster network, coturn as the public relay, a relay-only caller.

The node holding the call is killed (-9) mid-conversation; the caller reconnects (``restart_pc``,
same pc_id, its session token) through the load balancer to the other node, which adopts the
call; the next turn is answered, and the Bedrock stand-in (the real SDK talking to it) shows the
history replayed into the adopting node's model stream. tests/support/cluster_netns.py draws the
topology. Needs root, iproute2, redis-server and coturn: missing in CI fails, elsewhere skips.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.cluster import token
from tests.support.cluster_netns import (
    PUBLIC_IP,
    TURN_SECRET,
    LoopIn,
    Topology,
    cluster,
    first_turn,
    history_saved,
    ice_servers,
    reconnect_and_talk,
    relay_caller,
    topology,
)
from tests.support.coturn import require_coturn, running_coturn
from tests.support.netns import exec_in, socket_in
from voicegate.testing.client import CallClient, load_wav

pytestmark = [pytest.mark.timeout(240), pytest.mark.bedrock]


@pytest.fixture
def relay_net(tmp_path: Path) -> Iterator[tuple[Topology, int]]:
    """The namespaces, and coturn on the edge's public address (its port)."""
    require_coturn()
    with topology() as topo:
        edge = topo.ns("edge")
        with running_coturn(
            tmp_path,
            TURN_SECRET,
            listen_ips=(PUBLIC_IP,),
            relay_ip=PUBLIC_IP,
            prefix=exec_in(edge),
            make_socket=lambda: socket_in(edge),
        ) as turn:
            yield topo, turn.port


async def test_killed_node_call_moves_to_the_other_node_through_the_relay(
    tmp_path: Path,
    relay_net: tuple[Topology, int],
    standin: Any,
    speech_wav: Callable[[str], Path],
) -> None:
    topo, turn_port = relay_net
    speech = load_wav(speech_wav("hello, can you hear me"))
    caller = LoopIn(topo.ns("cli"))
    first: CallClient | None = None
    moved: CallClient | None = None
    try:
        async with asyncio.timeout(150), cluster(topo, turn_port, tmp_path, standin) as nodes:
            tok = token()
            servers = await caller.run(ice_servers(topo.lb_url("a"), tok))
            first = relay_caller(topo.lb_url("a"), servers, tok)
            said = await caller.run(first_turn(first, speech))
            assert first.selected_candidate_types() == ("relay", "relay")
            history = await history_saved(topo, first.pc_id, 2)
            assert history[-1] == ["ASSISTANT", said]
            streams_before = len(standin.sessions)

            killed = time.monotonic()
            nodes["a"].kill()
            # The load balancer now sends the page to the node that is alive.
            moved = relay_caller(topo.lb_url("b"), servers, first.session_token)
            sent, heard = await caller.run(reconnect_and_talk(moved, first.pc_id, speech))
            assert moved.pc_id == first.pc_id
            assert moved.selected_candidate_types() == ("relay", "relay")
            assert not moved.of_type("error"), moved.of_type("error")
            assert "adopt" in nodes["b"].log.read_text()

        adopted = list(standin.sessions)[streams_before:]
        assert adopted, "node B opened no model stream"
        texts = [e["textInput"]["content"] for e in adopted[0].events if "textInput" in e]
        assert said in " ".join(texts), texts  # the history was replayed to the model
        names = adopted[0].input_names()
        assert names.index("textInput", 2) < names.index("audioInput")
        print(
            f"netns cluster: kill -9 -> reconnect+turn sent {sent - killed:.2f} s, "
            f"-> first bot audio {heard - killed:.2f} s "
            f"(speech {len(speech) / 48000:.2f} s of it)"
        )
    finally:
        for client in (first, moved):
            if client is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(caller.run(client.close()), 10)
        caller.stop()
