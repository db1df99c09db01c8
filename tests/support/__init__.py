"""What tests and benchmarks share: servers, callers, namespaces, relays, the stand-in."""
