"""Where and how voicegate reaches Nova Sonic on Bedrock: region, model id, endpoint, timeouts.

Settings are plain values checked by ``validate()`` (a list of human-readable problems, so the
command line can report every mistake at once); nothing is coerced. The endpoint defaults to
the SDK's own resolution (``AWS_ENDPOINT_URL_BEDROCK_RUNTIME``, ``AWS_ENDPOINT_URL``, the
regional endpoint), which is also how tests point the production path at the stand-in.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from typing import Final

import structlog

from voicegate.backends.bedrock.transport import DEFAULT_TRANSPORT, transport_problem
from voicegate.sonic.events import INPUT_SAMPLE_RATE
from voicegate.sonic.models import (
    DEFAULT_MODEL_ID,
    FAMILIES,
    NOVA_SONIC_V1_MODEL_ID,
    documented_model,
    input_rate_problem,
    input_rate_warning,
    known_model,
    model_of,
)

log = structlog.get_logger(__name__)

AWS_HOST_SUFFIXES: Final = (".amazonaws.com", ".amazonaws.com.cn")
DEFAULT_REGION: Final = "us-east-1"

_BASE_MODELS: Final = frozenset({DEFAULT_MODEL_ID, NOVA_SONIC_V1_MODEL_ID})
_PROFILE_PREFIXES: Final = frozenset({"us", "eu", "apac", "global", "jp", "au", "ca", "us-gov"})
_MODEL_ARN: Final = re.compile(
    r"^arn:aws[a-z-]*:bedrock:[a-z0-9-]+:(\d{12})?:"
    r"(inference-profile|application-inference-profile|provisioned-model|foundation-model)/\S+$"
)
_REGION: Final = re.compile(r"^[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-\d{1,2}$")
_MAX_TIMEOUT: Final = 120.0
DEFAULT_CALLS_PER_CONNECTION: Final = 20
"""Model streams one HTTP/2 connection carries at most: a GOAWAY or a dropped connection ends
this many calls' streams at once, not the hundred a server's SETTINGS would allow."""
MAX_CALLS_PER_CONNECTION: Final = 100


def default_region() -> str:
    """AWS_REGION, AWS_DEFAULT_REGION, the boto3 profile's region, else us-east-1."""
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        value = os.environ.get(name, "").strip()
        if value:
            return value
    try:
        import boto3

        region = boto3.Session().region_name
    except Exception:  # a broken ~/.aws/config must not stop settings from being built
        region = None
    return region or DEFAULT_REGION


@dataclass(frozen=True, slots=True)
class BedrockSettings:
    """Where and how to reach Nova Sonic. ``validate()`` before use; values are not coerced."""

    region: str = field(default_factory=default_region)
    model_id: str = DEFAULT_MODEL_ID
    endpoint: str | None = None
    """None: the SDK's choice (AWS_ENDPOINT_URL_BEDROCK_RUNTIME, AWS_ENDPOINT_URL, the config
    file's ``services`` section, else the regional endpoint)."""
    profile: str | None = None
    """A shared-config profile for boto3 (None: AWS_PROFILE or the default chain)."""
    send_timeout: float = 5.0
    """Seconds one send may take before the stream is declared lost. A healthy send does not
    wait at all; it blocks only when 16 chunks are stuck in the SDK's buffer."""
    open_timeout: float = 10.0
    """Seconds to resolve credentials and start the HTTP/2 request."""
    close_timeout: float = 2.0
    """Seconds an orderly close may take before the stream is abandoned."""
    transport: str = DEFAULT_TRANSPORT
    """The SDK's HTTP/2 transport: ``asyncio`` (voicegate's, on the event loop) or ``crt``."""
    model_family: str = ""
    """For a model id the capability table does not name: ``nova2`` gives it Nova 2's features
    (endpointing, SYSTEM_SPEECH, toolChoice); otherwise it gets Nova 1's, with a warning."""
    input_rate: int = INPUT_SAMPLE_RATE
    """Sample rate of the caller audio streamed to the model (audioInputConfiguration's
    sampleRateHertz): 8000, 16000 or 24000, as the model documents (``input_rate_problem``)."""
    calls_per_connection: int = DEFAULT_CALLS_PER_CONNECTION
    """Most model streams (calls) on one HTTP/2 connection of the ``asyncio`` transport; more
    calls open more connections. CRT pools on its own terms (one connection per concurrent
    first request), so it needs no bound here."""

    def validate(self) -> list[str]:
        """Human-readable problems with these settings; empty when they are usable."""
        errors: list[str] = []
        if not _REGION.match(self.region):
            errors.append(f"region {self.region!r} is not an AWS region name (e.g. us-east-1)")
        if not self.model_id.strip() or any(ch.isspace() for ch in self.model_id):
            errors.append(f"model id {self.model_id!r} is empty or has white space")
        endpoint = self.endpoint
        source = "endpoint"
        if endpoint is None:
            for name in ("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", "AWS_ENDPOINT_URL"):
                if os.environ.get(name):
                    endpoint, source = os.environ[name], name
                    break
        if endpoint is not None:
            problem = _endpoint_problem(endpoint)
            if problem:
                errors.append(f"{source} {endpoint!r}: {problem}")
        transport = transport_problem(self.transport)
        if transport:
            errors.append(transport)
        if self.model_family not in FAMILIES:
            errors.append(f"model_family {self.model_family!r} must be nova1 or nova2")
        if isinstance(self.input_rate, bool) or not isinstance(self.input_rate, int):
            errors.append(f"input_rate {self.input_rate!r} must be a whole number of Hz")
        elif rate := input_rate_problem(self.model_id, self.model_family, self.input_rate):
            errors.append(rate)
        per = self.calls_per_connection
        if (
            isinstance(per, bool)
            or not isinstance(per, int)
            or not 1 <= per <= MAX_CALLS_PER_CONNECTION
        ):
            errors.append(
                f"calls_per_connection {per!r} must be a whole number from 1 to "
                f"{MAX_CALLS_PER_CONNECTION}"
            )
        for name in ("send_timeout", "open_timeout", "close_timeout"):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not math.isfinite(value)
                or not 0 < value <= _MAX_TIMEOUT
            ):
                errors.append(f"{name} must be a number of seconds in (0, {_MAX_TIMEOUT:g}]")
        return errors

    @property
    def is_nova2(self) -> bool:
        """True for Nova 2 Sonic (endpointing sensitivity, SYSTEM_SPEECH, toolChoice, async
        tools): by the capability table, or ``model_family`` for an id it does not name."""
        return model_of(self.model_id, self.model_family).nova2

    def describe(self) -> str:
        """One line for logs and the CLI: where calls go (never credentials)."""
        return f"{self.model_id} in {self.region} via {self.effective_endpoint()}"

    def effective_endpoint(self) -> str:
        return self._endpoint_and_source()[0]

    def _endpoint_and_source(self) -> tuple[str, str]:
        if self.endpoint:
            return self.endpoint, "setting"
        for name in ("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", "AWS_ENDPOINT_URL"):
            if os.environ.get(name):
                return os.environ[name], name
        return f"https://bedrock-runtime.{self.region}.amazonaws.com", "regional default"

    def is_aws_endpoint(self) -> bool:
        """True when calls go to an AWS host (``*.amazonaws.com``, or ``.com.cn`` in China)."""
        from urllib.parse import urlsplit

        try:
            host = (urlsplit(self.effective_endpoint()).hostname or "").lower()
        except ValueError:
            return False
        return host.endswith(AWS_HOST_SUFFIXES)

    def announce(self) -> None:
        """Log, once at start, the endpoint calls will use; warn when it is not AWS's, since
        then audio and signed requests go to someone else (a stand-in, a proxy, a typo)."""
        endpoint, source = self._endpoint_and_source()
        log.info(
            "bedrock_endpoint",
            endpoint=endpoint,
            source=source,
            model=self.model_id,
            region=self.region,
        )
        if not self.is_aws_endpoint():
            log.warning(
                "bedrock_endpoint_not_aws",
                endpoint=endpoint,
                source=source,
                note="not an *.amazonaws.com host: calls go to this endpoint, not to AWS",
            )
        for warning in self.warnings():
            log.warning("bedrock_settings_unusual", note=warning)

    def warnings(self) -> list[str]:
        """What is allowed but likely wrong: a model id Nova Sonic's documentation does not
        name (accepted, for models released later), a region the model is not offered in."""
        found: list[str] = []
        if not _valid_model_id(self.model_id):
            found.append(
                f"model id {self.model_id!r} is not a documented Nova Sonic model "
                f"({DEFAULT_MODEL_ID}, {NOVA_SONIC_V1_MODEL_ID}, with 'us.' or 'global.', or an "
                "inference-profile ARN); using it as given"
            )
        if documented_model(self.model_id) is None:
            family = "Nova 2" if self.model_family == "nova2" else "Nova 1"
            found.append(
                f"model id {self.model_id!r} is not in the capability table: it gets {family} "
                "behaviour" + ("" if self.model_family else " (model_family nova2 to change)")
            )
        if rate := input_rate_warning(self.model_id, self.model_family, self.input_rate):
            found.append(rate)
        if documented_model(self.model_id) is not None and known_model(self.model_id):
            model = model_of(self.model_id)
            if self.region not in model.regions:
                found.append(
                    f"{model.name} is documented in {', '.join(sorted(model.regions))}, not in "
                    f"{self.region}: the stream may be refused (the model's region must match)"
                )
        return found


def _valid_model_id(model_id: str) -> bool:
    if model_id in _BASE_MODELS:
        return True
    prefix, _, base = model_id.partition(".")
    if prefix in _PROFILE_PREFIXES and base in _BASE_MODELS:
        return True
    return bool(_MODEL_ARN.match(model_id)) and "sonic" in model_id


def _endpoint_problem(endpoint: str) -> str | None:
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(endpoint)
        port = parts.port
    except ValueError as exc:
        return f"not a URL ({exc})"
    if parts.scheme != "https":
        return (
            "must be an https:// URL: the bidirectional stream needs HTTP/2, which the AWS CRT "
            "transport only negotiates over TLS"
        )
    if not parts.hostname:
        return "has no host"
    if port is not None and not 0 < port < 65536:
        return "has an invalid port"
    return None


__all__ = [
    "AWS_HOST_SUFFIXES",
    "DEFAULT_CALLS_PER_CONNECTION",
    "DEFAULT_MODEL_ID",
    "DEFAULT_REGION",
    "MAX_CALLS_PER_CONNECTION",
    "NOVA_SONIC_V1_MODEL_ID",
    "BedrockSettings",
    "default_region",
]
