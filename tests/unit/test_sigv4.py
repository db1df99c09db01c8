"""SigV4 for Bedrock's bidirectional stream: the seed signature and the event chain.

Checked against vectors computed elsewhere: the worked example in AWS's SigV4 documentation
(IAM ListUsers, 2015-08-30), botocore's signer (an independent implementation) for the seed, and
the SDK's own event signer (aws_sdk_signers) for the chain, plus one event recomputed by hand.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from datetime import UTC, datetime, timedelta

import pytest

from voicegate.standin.event_chain import EventSigner, EventVerifier, event_signature
from voicegate.standin.eventstream import Message, decode_message, encode_message
from voicegate.standin.sigv4 import (
    STREAMING_PAYLOAD,
    Credentials,
    SeedVerified,
    SignatureError,
    canonical_request,
    canonical_uri,
    parse_authorization,
    sign_request,
    signing_key,
    string_to_sign,
    verify_request,
)

AWS_DOC_SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
CREDS = Credentials("AKIDEXAMPLE", AWS_DOC_SECRET)
PATH = "/model/amazon.nova-2-sonic-v1%3A0/invoke-with-bidirectional-stream"
WHEN = datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC)
AMZ_DATE = WHEN.strftime("%Y%m%dT%H%M%SZ")


# --------------------------------------------------------------------------------------------
# AWS's documented example
# --------------------------------------------------------------------------------------------


def test_signing_key_matches_aws_documentation() -> None:
    assert (
        signing_key(AWS_DOC_SECRET, "20120215", "us-east-1", "iam").hex()
        == "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d"
    )
    assert (
        signing_key(AWS_DOC_SECRET, "20150830", "us-east-1", "iam").hex()
        == "c4afb1cc5771d871763a393e44b703571b55cc28424d1a5e86da6ed3c154a4b9"
    )


def test_request_signature_matches_aws_documentation() -> None:
    headers = {
        "content-type": "application/x-www-form-urlencoded; charset=utf-8",
        "host": "iam.amazonaws.com",
        "x-amz-date": "20150830T123600Z",
    }
    canonical = canonical_request(
        "GET",
        "/",
        "Version=2010-05-08&Action=ListUsers",  # canonical form sorts the parameters
        headers,
        ("content-type", "host", "x-amz-date"),
        hashlib.sha256(b"").hexdigest(),
    )
    assert (
        hashlib.sha256(canonical.encode()).hexdigest()
        == "f536975d06c0309214f805bb90ccff089219ecd68b2577efef23edd43b7e1a59"
    )
    to_sign = string_to_sign("20150830T123600Z", "20150830/us-east-1/iam/aws4_request", canonical)
    key = signing_key(AWS_DOC_SECRET, "20150830", "us-east-1", "iam")
    assert (
        hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
        == "5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"
    )


def test_canonical_uri_double_encodes() -> None:
    assert canonical_uri(PATH) == (
        "/model/amazon.nova-2-sonic-v1%253A0/invoke-with-bidirectional-stream"
    )
    assert canonical_uri("") == "/"


# --------------------------------------------------------------------------------------------
# The seed signature
# --------------------------------------------------------------------------------------------


def _headers(token: str | None = None) -> dict[str, str]:
    headers = {
        "content-type": "application/vnd.amazon.eventstream",
        "host": "127.0.0.1:8443",
        "x-amz-content-sha256": STREAMING_PAYLOAD,
        "x-amz-date": AMZ_DATE,
    }
    if token is not None:
        headers["x-amz-security-token"] = token
    return headers


def _botocore_authorization(
    creds: Credentials, headers: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> str:
    import botocore.auth
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials as BotoCredentials

    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: WHEN)
    request = AWSRequest(
        method="POST", url=f"https://127.0.0.1:8443{PATH}", headers=dict(headers), data=b""
    )
    boto_creds = BotoCredentials(creds.access_key, creds.secret_key, creds.session_token)
    auth = SigV4Auth(boto_creds, "bedrock", "us-east-1")
    # Keep our headers as they are (botocore would re-add x-amz-date and the token itself).
    auth._modify_request_before_signing = lambda r: None  # type: ignore[method-assign]
    auth.add_auth(request)
    return str(request.headers["Authorization"])


@pytest.mark.parametrize("token", [None, "FQoGZXIvYXdzEXAMPLE"])
def test_seed_signature_agrees_with_botocore(
    token: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    creds = Credentials(CREDS.access_key, CREDS.secret_key, token)
    headers = _headers(token)
    ours = sign_request(creds, "POST", PATH, "", headers, "us-east-1")
    theirs = _botocore_authorization(creds, headers, monkeypatch)
    assert ours == theirs
    seed = verify_request(
        Credentials(CREDS.access_key, CREDS.secret_key),
        "POST",
        PATH,
        "",
        {**headers, "authorization": theirs},
        now=WHEN,
    )
    assert seed.signature == parse_authorization(theirs).signature
    assert seed.region == "us-east-1" and seed.session_token == token


def _signed(creds: Credentials = CREDS, **override: str) -> dict[str, str]:
    headers = _headers()
    headers["authorization"] = sign_request(creds, "POST", PATH, "", headers, "us-east-1")
    headers.update(override)
    return headers


def test_single_encoded_canonical_path_is_refused() -> None:
    headers = _headers()
    # A signer that forgot the second encoding: sign the decoded path as if it were the wire one.
    headers["authorization"] = sign_request(
        CREDS, "POST", PATH.replace("%3A", ":"), "", headers, "us-east-1"
    )
    with pytest.raises(SignatureError, match="does not match"):
        verify_request(CREDS, "POST", PATH, "", headers, now=WHEN)


@pytest.mark.parametrize(
    "creds, override, code",
    [
        (Credentials("AKIDEXAMPLE", "wrong"), {}, "InvalidSignatureException"),
        (Credentials("AKIDOTHER", AWS_DOC_SECRET), {}, "UnrecognizedClientException"),
        (CREDS, {"host": "127.0.0.1:9999"}, "InvalidSignatureException"),
        (CREDS, {"content-type": "text/plain"}, "InvalidSignatureException"),
        (CREDS, {"x-amz-content-sha256": "UNSIGNED-PAYLOAD"}, "InvalidSignatureException"),
        (CREDS, {"authorization": "Bearer abc"}, "IncompleteSignatureException"),
        (CREDS, {"authorization": ""}, "MissingAuthenticationTokenException"),
    ],
)
def test_bad_seed_signatures_are_refused(
    creds: Credentials, override: dict[str, str], code: str
) -> None:
    with pytest.raises(SignatureError) as info:
        verify_request(CREDS, "POST", PATH, "", _signed(creds, **override), now=WHEN)
    assert info.value.code == code


def test_tampered_path_is_refused() -> None:
    with pytest.raises(SignatureError, match="does not match"):
        verify_request(
            CREDS,
            "POST",
            PATH.replace("nova-2-sonic", "nova-sonic"),
            "",
            _signed(),
            now=WHEN,
        )


def test_clock_skew_is_refused() -> None:
    verify_request(CREDS, "POST", PATH, "", _signed(), now=WHEN + timedelta(minutes=4))
    with pytest.raises(SignatureError, match="Signature expired"):
        verify_request(CREDS, "POST", PATH, "", _signed(), now=WHEN + timedelta(minutes=6))


def test_session_token_must_be_signed_and_may_be_pinned() -> None:
    headers = _signed()
    headers["x-amz-security-token"] = "added-after-signing"
    with pytest.raises(SignatureError, match="must be signed"):
        verify_request(CREDS, "POST", PATH, "", headers, now=WHEN)
    with_token = Credentials(CREDS.access_key, CREDS.secret_key, "tok")
    headers = _headers("tok")
    headers["authorization"] = sign_request(with_token, "POST", PATH, "", headers, "us-east-1")
    verify_request(with_token, "POST", PATH, "", headers, now=WHEN)
    pinned = Credentials(CREDS.access_key, CREDS.secret_key, "another")
    with pytest.raises(SignatureError, match="security token"):
        verify_request(pinned, "POST", PATH, "", headers, now=WHEN)


# --------------------------------------------------------------------------------------------
# The event chain
# --------------------------------------------------------------------------------------------

SEED = SeedVerified("AKIDEXAMPLE", "us-east-1", "bedrock", AMZ_DATE, "ab" * 32, None)


def test_event_signature_recomputed_by_hand() -> None:
    date = datetime(2025, 6, 1, 12, 0, 1, 250000, tzinfo=UTC)
    payload = b"inner message bytes"
    # :date header: name length 5, ":date", type 8, int64 milliseconds since the epoch.
    date_header = b"\x05:date\x08" + (1748779201250).to_bytes(8, "big")
    to_sign = (
        "AWS4-HMAC-SHA256-PAYLOAD\n20250601T120001Z\n20250601/us-east-1/bedrock/aws4_request\n"
        + "ab" * 32
        + "\n"
        + hashlib.sha256(date_header).hexdigest()
        + "\n"
        + hashlib.sha256(payload).hexdigest()
    )
    k = hmac.new(b"AWS4" + AWS_DOC_SECRET.encode(), b"20250601", hashlib.sha256).digest()
    for part in (b"us-east-1", b"bedrock", b"aws4_request"):
        k = hmac.new(k, part, hashlib.sha256).digest()
    expected = hmac.new(k, to_sign.encode(), hashlib.sha256).digest()
    assert event_signature(AWS_DOC_SECRET, "us-east-1", "bedrock", "ab" * 32, date, payload) == (
        expected
    )
    envelope = decode_message(EventSigner(CREDS, "us-east-1", "ab" * 32).sign(payload, date))
    assert envelope.headers[":chunk-signature"] == expected


def test_chain_signed_by_the_sdk_verifies() -> None:
    from aws_sdk_signers import AsyncEventSigner, AWSCredentialIdentity
    from smithy_aws_event_stream.events import EventHeaderEncoder, EventMessage

    async def sdk_sign() -> list[bytes]:
        signer = AsyncEventSigner(
            initial_signature=SEED.signature.encode(), event_encoder_cls=EventHeaderEncoder
        )
        identity = AWSCredentialIdentity(
            access_key_id=CREDS.access_key, secret_access_key=CREDS.secret_key
        )
        props = {"region": "us-east-1", "service": "bedrock"}
        out = []
        for i in range(3):
            inner = EventMessage(headers={":event-type": "chunk"}, payload=b"event %d" % i)
            signed = await signer.sign(event=inner, identity=identity, properties=props)  # type: ignore[arg-type]
            out.append(signed.encode())
        end = await signer.sign_empty(event=EventMessage(), identity=identity, properties=props)  # type: ignore[arg-type]
        out.append(end.encode())
        return out

    frames = asyncio.run(sdk_sign())
    verifier = EventVerifier(CREDS.secret_key, SEED)
    payloads = [verifier.verify(decode_message(f)) for f in frames]
    assert [decode_message(p).payload for p in payloads[:3]] == [b"event 0", b"event 1", b"event 2"]
    assert payloads[3] == b"" and verifier.ended and verifier.verified == 4


def _chain(n: int) -> list[Message]:
    signer = EventSigner(CREDS, "us-east-1", SEED.signature)
    start = datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC)
    return [
        decode_message(signer.sign(b"payload %d" % i, start + timedelta(milliseconds=i)))
        for i in range(n)
    ]


def test_chain_verifies_in_order() -> None:
    verifier = EventVerifier(CREDS.secret_key, SEED)
    assert [verifier.verify(m) for m in _chain(4)] == [b"payload %d" % i for i in range(4)]
    assert verifier.verified == 4


@pytest.mark.parametrize(
    "order",
    [
        [1, 0, 2],  # reordered
        [0, 2],  # one dropped
        [0, 0],  # replayed
    ],
)
def test_chain_breaks_are_refused(order: list[int]) -> None:
    chain = _chain(3)
    verifier = EventVerifier(CREDS.secret_key, SEED)
    with pytest.raises(SignatureError):
        for i in order:
            verifier.verify(chain[i])
    with pytest.raises(SignatureError, match="broken"):  # and the chain stays broken
        verifier.verify(chain[min(order)])


def test_wrong_secret_or_tampered_payload_is_refused() -> None:
    chain = _chain(1)
    with pytest.raises(SignatureError):
        EventVerifier("not-the-secret", SEED).verify(chain[0])
    tampered = Message(chain[0].headers, b"payload X")
    with pytest.raises(SignatureError):
        EventVerifier(CREDS.secret_key, SEED).verify(tampered)
    moved = Message({**chain[0].headers, ":date": WHEN + timedelta(seconds=1)}, chain[0].payload)
    with pytest.raises(SignatureError):
        EventVerifier(CREDS.secret_key, SEED).verify(moved)


def test_nothing_after_the_end_frame() -> None:
    signer = EventSigner(CREDS, "us-east-1", SEED.signature)
    verifier = EventVerifier(CREDS.secret_key, SEED)
    assert verifier.verify(decode_message(signer.sign(b""))) == b""
    with pytest.raises(SignatureError, match="after the end frame"):
        verifier.verify(decode_message(signer.sign(b"late")))


def test_envelope_needs_exactly_date_and_signature() -> None:
    chain = _chain(1)
    extra = Message({**chain[0].headers, "x": "y"}, chain[0].payload)
    with pytest.raises(SignatureError, match="exactly"):
        EventVerifier(CREDS.secret_key, SEED).verify(extra)
    unsigned = decode_message(encode_message({":date": WHEN}, b"p"))
    with pytest.raises(SignatureError, match="exactly"):
        EventVerifier(CREDS.secret_key, SEED).verify(unsigned)
