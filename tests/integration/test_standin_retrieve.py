"""Bedrock Knowledge Bases Retrieve: voicegate's boto3 client against the stand-in's listener."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from voicegate.agents.knowledge import BedrockKnowledge, knowledge_tool
from voicegate.agents.spec import KnowledgeDef
from voicegate.conversation.tools import ToolRegistry
from voicegate.standin import StandIn

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "kb"
KB = "KB12345678"


@pytest.fixture
async def kb_standin(
    clean_aws_env: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> AsyncIterator[Any]:
    async with StandIn("scripted", cert_dir=tmp_path / "certs", knowledge={KB: EXAMPLES}) as s:
        for name, value in s.client_env().items():
            monkeypatch.setenv(name, value)
        yield s


def _def(standin: Any, kb: str = KB) -> KnowledgeDef:
    return KnowledgeDef(
        name="handbook",
        knowledge_base_id=kb,
        region=standin.region,
        endpoint_url=standin.retrieve_endpoint,
        ca_bundle=str(standin.ca_file),
    )


async def test_search_knowledge_through_boto3_retrieve(kb_standin: Any) -> None:
    registry = ToolRegistry()
    # boto3 builds its client for seconds: off the loop, as voicegate does at start.
    source = await asyncio.to_thread(BedrockKnowledge, _def(kb_standin))
    registry.add(knowledge_tool([source]))
    text, ok = await registry.run("search_knowledge", json.dumps({"query": "express shipping"}))
    assert ok, text
    passages = json.loads(text)["passages"]
    assert passages[0]["source"] == "shipping.md"
    assert "Express shipping" in passages[0]["text"]
    assert 0 < passages[0]["score"] < 1


async def test_unknown_knowledge_base_is_an_error_result(kb_standin: Any) -> None:
    registry = ToolRegistry()
    source = await asyncio.to_thread(BedrockKnowledge, _def(kb_standin, "NOSUCHKB"))
    registry.add(knowledge_tool([source]))
    text, _ok = await registry.run("search_knowledge", json.dumps({"query": "refunds"}))
    assert "error" in json.loads(text)


async def test_bad_signature_is_refused(kb_standin: Any) -> None:
    client = await asyncio.to_thread(
        boto3.client,
        "bedrock-agent-runtime",
        region_name=kb_standin.region,
        endpoint_url=kb_standin.retrieve_endpoint,
        verify=str(kb_standin.ca_file),
        aws_access_key_id=kb_standin.access_key,
        aws_secret_access_key="not-the-secret",
    )
    with pytest.raises(ClientError) as caught:
        # In a thread: the stand-in answers on this test's event loop.
        await asyncio.to_thread(
            client.retrieve, knowledgeBaseId=KB, retrievalQuery={"text": "refunds"}
        )
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert caught.value.response["Error"]["Code"] == "InvalidSignatureException"
