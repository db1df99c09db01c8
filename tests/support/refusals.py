"""What a refused HTTP request must look like: its status and a JSON body with a reason."""

from __future__ import annotations

from typing import Any

import aiohttp


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def refusal(resp: aiohttp.ClientResponse, status: int, reason: str) -> dict[str, Any]:
    """The refusal's JSON body, once its status, content type, reason and message are checked."""
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/json"
    body: dict[str, Any] = await resp.json()
    assert body["reason"] == reason, body
    assert isinstance(body["error"], str) and body["error"]
    return body
