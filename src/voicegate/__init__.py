"""voicegate: a self-hosted WebRTC gateway between browsers and Amazon Nova Sonic."""

__version__ = "0.1.0"
