"""What a team makes its own: agents (prompt, voice, tools, knowledge) declared in a file.

The spec dataclasses (``spec.py``) are the shape every part reads: the agents file parser fills
them, the tool runners (HTTP, Python, MCP) and the knowledge indexes consume them, and signaling
picks one agent per call. The package sits above the conversation (it builds the ToolRegistry a
conversation runs) and below the call (which asks it for an agent's tools).
"""
