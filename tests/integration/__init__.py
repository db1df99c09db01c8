"""Tests on loopback: voicegate servers, aiortc peers, the Bedrock stand-in, subprocesses."""
