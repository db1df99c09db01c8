"""voicegate: a self-hosted WebRTC gateway between browsers and Amazon Nova Sonic.

The packages, by role (docs/architecture.md): ``signaling`` (HTTP face), ``cluster`` (workers
and nodes), ``call`` (one browser call), ``media`` (audio on the wire), ``conversation`` (one
call's dialogue with a model), ``backends`` (Bedrock, the offline brain, echo), ``sonic`` (Nova
Sonic's events), ``observability`` (metrics, recording), ``standin`` (the Bedrock stand-in) and
``testing`` (the headless caller and load tester).
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
