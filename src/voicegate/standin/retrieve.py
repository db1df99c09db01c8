"""The stand-in's Amazon Bedrock Knowledge Bases Retrieve API, answered from local folders.

``POST /knowledgebases/{id}/retrieve`` on its own HTTPS listener: the real service
(``bedrock-agent-runtime``) is another endpoint than the speech one, and botocore speaks
HTTP/1.1 while the speech listener is HTTP/2 only. Requests are SigV4-checked with the same
rules as the rest of the stand-in (``sigv4.verify_request``, payload signed by its SHA-256) and
answered in the service's shape from a ``LocalIndex`` per knowledge base id, so voicegate's
knowledge client is tested through the real boto3 SDK.
"""

from __future__ import annotations

import json
import re
import ssl
from collections.abc import Callable, Mapping
from typing import Any, Final

import structlog
from aiohttp import web

from voicegate.agents.knowledge_local import LocalIndex
from voicegate.standin.sigv4 import Credentials, SignatureError, verify_request

__all__ = ["MAX_RETRIEVE_BODY", "http1_context", "retrieve_app"]

log = structlog.get_logger(__name__)

MAX_RETRIEVE_BODY: Final = 64 * 1024
_KB_ID = re.compile(r"^[0-9a-zA-Z]{1,10}$")


def _error(status: int, kind: str, message: str) -> web.Response:
    # botocore's rest-json parser reads the error code from this header.
    return web.json_response(
        {"message": message}, status=status, headers={"x-amzn-ErrorType": kind}
    )


def retrieve_app(
    indexes: Mapping[str, LocalIndex],
    credentials_for: Callable[[Mapping[str, str]], Credentials],
    region: str,
) -> web.Application:
    async def retrieve(request: web.Request) -> web.Response:
        body = await request.read()
        headers = {k.lower(): v for k, v in request.headers.items()}
        try:
            verify_request(
                credentials_for(headers),
                "POST",
                request.raw_path.partition("?")[0],
                request.query_string,
                headers,
                region=region,
                body=body,
            )
        except SignatureError as exc:
            log.info("standin_retrieve_refused", code=exc.code)
            return _error(403, exc.code, exc.message)
        kb_id = request.match_info["kb"]
        index = indexes.get(kb_id)
        if not _KB_ID.match(kb_id) or index is None:
            return _error(404, "ResourceNotFoundException", f"Knowledge base {kb_id} not found")
        try:
            payload = json.loads(body)
            query = payload["retrievalQuery"]["text"]
            config = payload.get("retrievalConfiguration", {}).get("vectorSearchConfiguration", {})
            limit = int(config.get("numberOfResults", 5))
        except (ValueError, KeyError, TypeError, AttributeError):
            return _error(400, "ValidationException", "retrievalQuery.text is required")
        if not isinstance(query, str) or not 0 < len(query) <= 1000 or not 1 <= limit <= 100:
            return _error(400, "ValidationException", "a query of 1-1000 characters, 1-100 results")
        passages = await request.app.loop.run_in_executor(None, index.search, query, limit)
        results: list[dict[str, Any]] = [
            {
                "content": {"type": "TEXT", "text": p.text},
                "location": {"type": "CUSTOM", "customDocumentLocation": {"id": p.source}},
                # The service scores in [0, 1]; BM25's positive score folded into it.
                "score": p.score / (1.0 + p.score) if p.score > 0 else 0.0,
            }
            for p in passages
        ]
        return web.json_response({"retrievalResults": results})

    app = web.Application(client_max_size=MAX_RETRIEVE_BODY)
    app.router.add_post("/knowledgebases/{kb}/retrieve", retrieve)
    return app


def http1_context(base: ssl.SSLContext) -> ssl.SSLContext:
    """``base``'s certificate with ALPN ``http/1.1`` (the speech listener offers only ``h2``)."""
    base.set_alpn_protocols(["http/1.1"])
    return base
