"""The RTVI version a call speaks, from what its client-ready says (anything odd is 1.0)."""

from __future__ import annotations

from typing import Any

import pytest

from voicegate.call.rtvi import LEGACY_VERSION, PROTOCOL_VERSION, negotiate


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"version": "2.1.0"}, PROTOCOL_VERSION),
        ({"version": "2.0.0"}, PROTOCOL_VERSION),
        ({"version": "3"}, PROTOCOL_VERSION),
        ({"version": "1.0.0"}, LEGACY_VERSION),
        ({"version": "0.3.1"}, LEGACY_VERSION),
        ({"version": "v2.1"}, LEGACY_VERSION),
        ({"version": "2" * 40}, LEGACY_VERSION),  # longer than any version: not read
        ({"version": 2}, LEGACY_VERSION),
        ({}, LEGACY_VERSION),
        (None, LEGACY_VERSION),
        ("2.1.0", LEGACY_VERSION),
    ],
)
def test_the_version_follows_client_ready(data: Any, expected: str) -> None:
    assert negotiate({"type": "client-ready", "data": data}) == expected
