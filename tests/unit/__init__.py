"""Tests that start nothing: in-process objects only (no sockets, subprocesses or peers)."""
