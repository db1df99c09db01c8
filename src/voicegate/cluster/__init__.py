"""Workers and nodes: the supervisor of a node's worker processes, the Redis directory of
nodes, calls and their stored conversation state, forwarding a request to the node or worker
that owns its call, adoption of a call whose node died, and drain that moves calls.

This package sits above ``signaling`` (it wires into the signaling app through its small
``CallStore`` hook and a middleware) and is used by ``cli``. docs/cluster.md describes it.
"""

from voicegate.cluster.directory import Directory, NodeInfo
from voicegate.cluster.router import NodeRouter, Placement

__all__ = ["Directory", "NodeInfo", "NodeRouter", "Placement"]
