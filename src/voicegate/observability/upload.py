"""Recording uploads to S3: multipart, one whole file at a time, retried with backoff.

Runs only on the recorder's uploader thread (blocking boto3 calls are fine there, never on the
event loop). A failed file aborts its multipart upload so no orphaned parts are billed.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Any, Final

import structlog

log = structlog.get_logger(__name__)

PART_BYTES: Final = 8 * 1024 * 1024
"""Multipart part size (S3's minimum is 5 MiB for every part but the last)."""


def default_s3_client() -> Any:
    """A boto3 S3 client from the standard chain (credentials, region, AWS_ENDPOINT_URL_S3)."""
    import boto3

    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or None
    return boto3.session.Session().client("s3", region_name=region)


def upload_with_retries(
    client: Any, path: Path, bucket: str, key: str, attempts: int, backoff: float
) -> None:
    """Upload one file with S3's multipart API, retrying the whole file with backoff."""
    delay = backoff
    for attempt in range(1, attempts + 1):
        try:
            multipart_upload(client, path, bucket, key)
            return
        except Exception as exc:
            if attempt == attempts:
                raise
            log.warning("recording_upload_retry", key=key, attempt=attempt, error=str(exc))
            time.sleep(delay)
            delay *= 2


def multipart_upload(client: Any, path: Path, bucket: str, key: str) -> None:
    upload = client.create_multipart_upload(Bucket=bucket, Key=key)
    upload_id = upload["UploadId"]
    try:
        parts = []
        with open(path, "rb") as f:
            number = 1
            while True:
                data = f.read(PART_BYTES)
                if not data and number > 1:
                    break
                part = client.upload_part(
                    Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=data
                )
                parts.append({"ETag": part["ETag"], "PartNumber": number})
                number += 1
                if len(data) < PART_BYTES:
                    break
        client.complete_multipart_upload(
            Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
        )
    except BaseException:
        with contextlib.suppress(Exception):
            client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
        raise
