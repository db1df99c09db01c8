"""The agent of a call travels with the call's state in a cluster, so an adopting node gives
the call the same agent."""

from __future__ import annotations

import json

from voicegate.cluster import state


def test_the_stored_state_keeps_the_agent() -> None:
    text = json.dumps({"v": state.VERSION, "history": [["USER", "hi"]], "agent": "support"})
    stored = state.decode(text)
    assert stored is not None and stored.agent == "support"
    older = state.decode(json.dumps({"v": state.VERSION, "history": []}))
    assert older is not None and older.agent is None  # a state written before agents existed
    odd = state.decode(json.dumps({"v": state.VERSION, "history": [], "agent": 7}))
    assert odd is not None and odd.agent is None
