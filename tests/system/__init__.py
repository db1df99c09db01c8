"""Tests with daemons and processes beside voicegate: coturn, redis-server, voicegate nodes
and workers, network namespaces (root)."""
