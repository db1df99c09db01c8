"""Checks of a whole ``ServeConfig``, each returning the problems it finds, so ``voicegate
serve`` can refuse a bad deployment at start with every problem listed at once (exit 2).

The limits a setting must meet live here, below signaling, and the code that enforces them
again at run time (``signaling.auth`` minting a token) reads them from here: configuration is
checked before any of the layers it configures is imported.
"""

from __future__ import annotations

import importlib.util
import ipaddress
from pathlib import Path
from typing import TYPE_CHECKING, Final
from urllib.parse import urlsplit

from voicegate.audio.chunks import MODEL_CHUNK_MS_CHOICES
from voicegate.backends.bedrock.settings import MAX_CALLS_PER_CONNECTION
from voicegate.config_options import parse_port_range
from voicegate.jwtkeys import keys_from_pem
from voicegate.netaddr import is_loopback_host
from voicegate.sonic import ENDPOINTING
from voicegate.sonic.events import tool_choice_problem
from voicegate.sonic.models import (
    DEFAULT_MODEL_ID,
    STREAM_LIMIT_S,
    input_rate_problem,
    voice_problem,
)

if TYPE_CHECKING:
    from voicegate.config import ServeConfig

__all__ = ["MAX_TTL_S", "MIN_SECRET_CHARS", "RENEW_BY_S", "validate"]

MIN_SECRET_CHARS: Final = 16
"""Shortest signing secret accepted (``--auth-secret``, and ``voicegate token`` minting)."""
MAX_TTL_S: Final = 7 * 86400
"""Longest access-token lifetime anyone may mint or configure (``--max-token-ttl``)."""
RENEW_BY_S: Final = STREAM_LIMIT_S - 10
"""Latest stream age a renewal may be scheduled for: Bedrock's limit less the ~10 s a handover
needs (the next stream opened, the history sent, the first audio chunk through)."""


def validate(c: ServeConfig) -> list[str]:
    problems: list[str] = []
    if not 0 <= c.port <= 65535:
        problems.append(f"port {c.port} is outside 0-65535")
    if not c.host:
        problems.append("host must not be empty")
    if not 1 <= c.max_sessions <= 10000:
        problems.append(f"max_sessions {c.max_sessions} must be between 1 and 10000")
    if not 1024 <= c.max_body_bytes <= 10 * 1024 * 1024:
        problems.append(f"max_body_bytes {c.max_body_bytes} must be between 1024 and 10485760")
    if not 1 <= c.max_call_seconds <= 24 * 3600:
        problems.append(f"max_call_seconds {c.max_call_seconds} must be between 1 and 86400")
    if not (Path(c.web_dir) / "index.html").is_file():
        problems.append(f"web_dir {c.web_dir!r} has no index.html")
    if c.endpointing and c.endpointing not in ENDPOINTING:
        problems.append(f"endpointing {c.endpointing!r} must be HIGH, MEDIUM or LOW")
    if len(c.system_prompt) > 40000:
        problems.append("system_prompt is longer than 40000 characters")
    if len(c.greeting.encode()) > 4000:
        problems.append("greeting is longer than 4000 bytes")
    if not c.voice.isidentifier():
        problems.append(f"voice {c.voice!r} is not a valid voice id")
    elif problem := voice_problem(c.model_id or DEFAULT_MODEL_ID, c.voice):
        problems.append(problem)
    rate = input_rate_problem(c.model_id or DEFAULT_MODEL_ID, c.model_family, c.model_input_rate)
    if rate:
        problems.append(rate)
    for address in c.ice_addresses:
        try:
            ipaddress.ip_address(address)
        except ValueError:
            problems.append(f"ice address {address!r} is not an IP address")
    for url in c.turn_urls:
        problem = _turn_url_problem(url)
        if problem:
            problems.append(f"turn url {problem}")
    if any(u.startswith("turn") for u in c.turn_urls) and not c.turn_secret:
        problems.append("a TURN url needs --turn-secret (coturn's static-auth-secret)")
    if not 60 <= c.turn_ttl <= 7 * 86400:
        problems.append(f"turn_ttl {c.turn_ttl} must be between 60 and 604800 seconds")
    if c.relay_only and not any(u.startswith("turn") for u in c.turn_urls):
        problems.append("relay_only needs a TURN url")
    if c.loop == "uvloop" and importlib.util.find_spec("uvloop") is None:
        problems.append("loop uvloop: uvloop is not installed (pip install 'voicegate[uvloop]')")
    if c.log_level.lower() not in ("debug", "info", "warning", "error"):
        problems.append(f"log_level {c.log_level!r} must be debug, info, warning or error")
    problems += _validate_access(c)
    problems += _validate_recording(c)
    problems += _validate_call_records(c)
    problems += _validate_continuation(c)
    problems += _validate_media(c)
    problems += _validate_cluster(c)
    problems += _validate_agents(c)
    return problems


def _validate_agents(c: ServeConfig) -> list[str]:
    """The agents file, read whole (its Python tools imported) so a mistake stops the start;
    each agent's voice is judged against the configured model like ``--voice``."""
    if not c.agents:
        return []
    from voicegate.agents.file import parse_file

    spec, problems = parse_file(c.agents)
    if spec is not None:
        for agent in spec.agents.values():
            if agent.voice and agent.voice.isidentifier():
                problem = voice_problem(c.model_id or DEFAULT_MODEL_ID, agent.voice)
                if problem:
                    problems.append(f"agents file: [agents.{agent.name}]: {problem}")
        hooked = [a.name for a in spec.agents.values() if a.webhook_url]
        if hooked and not c.webhook_secret_file:
            problems.append(
                f"agents file: webhook_url of {', '.join(hooked)} needs --webhook-secret-file "
                "(receivers verify every event's signature)"
            )
    return problems


def _turn_url_problem(url: str) -> str | None:
    """A problem with a TURN/STUN URL (``--turn-url``), or None if it is usable."""
    scheme, _, rest = url.partition(":")
    if scheme not in ("turn", "turns", "stun", "stuns") or not rest:
        return f"{url!r} must start with turn:, turns:, stun: or stuns:"
    host = urlsplit(f"//{rest.split('?')[0]}").hostname
    if not host:
        return f"{url!r} has no host"
    return None


def _validate_cluster(c: ServeConfig) -> list[str]:
    """Workers, the Redis directory and how other nodes reach this one."""
    problems: list[str] = []
    if c.workers != "auto" and int(c.workers) > 256:
        problems.append(f"workers {c.workers} must be between 1 and 256 (or auto)")
    try:
        ports = parse_port_range(c.rtc_ports)
    except ValueError:
        ports = None
    if ports is not None and c.workers != "auto" and ports[1] - ports[0] + 1 < 2 * int(c.workers):
        problems.append(f"rtc_ports {c.rtc_ports!r} is too small to give each worker 2 ports")
    if c.cluster_redis:
        scheme = urlsplit(c.cluster_redis).scheme
        if scheme not in ("redis", "rediss", "unix"):
            problems.append(
                f"cluster_redis {_shown_url(c.cluster_redis)!r} must be a redis://, rediss:// "
                "or unix:// URL"
            )
    if c.cluster_redis_password_file:
        problems += _password_file_problems(c.cluster_redis_password_file)
    if len(c.node_id) > 128 or not all(ch.isalnum() or ch in "-_." for ch in c.node_id):
        problems.append(f"node_id {c.node_id!r} must be 1-128 letters, digits, '-', '_' or '.'")
    if c.node_url:
        parts = urlsplit(c.node_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            problems.append(f"node_url {c.node_url!r} must look like http://host:port")
    elif c.cluster_redis and c.host in ("0.0.0.0", "::", ""):
        problems.append(
            f"with --cluster-redis and host {c.host!r}, set --node-url: other nodes need an "
            "address they can reach this node at"
        )
    return problems


def _validate_media(c: ServeConfig) -> list[str]:
    """The media port range, announced address and lag limit."""
    problems: list[str] = []
    try:
        parse_port_range(c.rtc_ports)
    except ValueError:
        problems.append(f"rtc_ports {c.rtc_ports!r} must be MIN-MAX within 1024-65535")
    if c.announced_address:
        try:
            ipaddress.ip_address(c.announced_address)
        except ValueError:
            problems.append(f"announced_address {c.announced_address!r} is not an IP address")
    if not 0 <= c.max_loop_lag_ms <= 10000:
        problems.append(f"max_loop_lag_ms {c.max_loop_lag_ms} must be between 0 and 10000")
    if c.model_chunk_ms not in MODEL_CHUNK_MS_CHOICES:
        choices = ", ".join(str(ms) for ms in MODEL_CHUNK_MS_CHOICES)
        problems.append(f"model_chunk_ms {c.model_chunk_ms} must be one of {choices}")
    return problems


def _validate_continuation(c: ServeConfig) -> list[str]:
    """A renewal must come before Bedrock's stream limit (``RENEW_BY_S``)."""
    problems: list[str] = []
    limit = RENEW_BY_S
    if not 5 <= c.renew_after <= limit:
        problems.append(f"renew_after {c.renew_after} must be between 5 and {limit:g} seconds")
    if not 0 <= c.renew_force_after <= limit - min(c.renew_after, limit):
        problems.append(
            f"renew_force_after {c.renew_force_after} must be >= 0 and end before {limit:g} s "
            f"(renew_after + renew_force_after <= {limit:g})"
        )
    if not 0 <= c.recovery_attempts <= 10:
        problems.append(f"recovery_attempts {c.recovery_attempts} must be between 0 and 10")
    if not 0 <= c.reconnect_grace <= 600:
        problems.append(f"reconnect_grace {c.reconnect_grace} must be between 0 and 600 seconds")
    return problems


def _validate_access(c: ServeConfig) -> list[str]:
    """An exposed gateway without a secret would let anyone spend Bedrock money."""
    problems: list[str] = []
    if c.auth_secret and len(c.auth_secret) < MIN_SECRET_CHARS:
        problems.append(f"auth_secret must have at least {MIN_SECRET_CHARS} characters")
    if not c.auth_secret and not is_loopback_host(c.host):
        problems.append(
            f"host {c.host!r} is not a loopback address: set --auth-secret (or "
            "VOICEGATE_AUTH_SECRET) so that only callers with a token can start calls"
        )
    for origin in c.allowed_origins:
        if origin == "*":
            continue
        try:
            parts = urlsplit(origin)
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError:
            parts = urlsplit("")
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("",):
            problems.append(f"allowed origin {origin!r} must look like https://host[:port]")
    if not 0 <= c.offer_rate <= 100000:
        problems.append(f"offer_rate {c.offer_rate} must be between 0 and 100000 per minute")
    if not 1 <= c.offer_burst <= 10000:
        problems.append(f"offer_burst {c.offer_burst} must be between 1 and 10000")
    if c.idle_timeout != 0 and not 1 <= c.idle_timeout <= 86400:
        problems.append(f"idle_timeout {c.idle_timeout} must be 0 (off) or 1-86400 seconds")
    if not 0 <= c.drain_timeout <= 3600:
        problems.append(f"drain_timeout {c.drain_timeout} must be between 0 and 3600 seconds")
    if not 0.5 <= c.connect_timeout <= 300:
        problems.append(f"connect_timeout {c.connect_timeout} must be between 0.5 and 300 seconds")
    return problems + _validate_exposure(c) + _validate_jwt_keys(c)


def _validate_jwt_keys(c: ServeConfig) -> list[str]:
    """Keys for identity-provider JWTs: readable and usable now, not at the first call."""
    problems: list[str] = []
    if (c.jwt_public_key_file or c.jwks_url) and not c.auth_secret:
        problems.append(
            "--jwt-public-key-file and --jwks-url need --auth-secret too: voicegate signs each "
            "call's own session token with it"
        )
    if c.jwt_public_key_file:
        text = _read_text(c.jwt_public_key_file, "jwt_public_key_file", problems)
        if text is not None:
            try:
                keys_from_pem(text)
            except ValueError as exc:
                problems.append(f"jwt_public_key_file {c.jwt_public_key_file!r}: {exc}")
    if c.jwks_url:
        try:
            parts = urlsplit(c.jwks_url)
            host = parts.hostname or ""
        except ValueError:
            parts, host = urlsplit(""), ""
        plain_ok = parts.scheme == "http" and is_loopback_host(host)
        if len(c.jwks_url) > 2048 or not host or not (parts.scheme == "https" or plain_ok):
            problems.append(
                f"jwks_url {c.jwks_url[:100]!r} must be an https:// URL (http only on loopback)"
            )
    return problems


def _validate_exposure(c: ServeConfig) -> list[str]:
    """Settings that open the server wider need tokens; limits that keep one caller small."""
    problems: list[str] = []
    for wide, name in (
        ("*" in c.allowed_origins, "--allowed-origin '*' (any web page may call the API)"),
        (c.trust_forwarded_for, "--trust-forwarded-for (requests come through a proxy)"),
        (bool(c.trusted_proxies), "--trusted-proxies (requests come through a proxy)"),
    ):
        if wide and not c.auth_secret:
            problems.append(
                f"{name} needs --auth-secret: without one, only requests made on this machine "
                "are served, and these settings would let others in"
            )
    if not 60 <= c.max_token_ttl <= MAX_TTL_S:
        problems.append(f"max_token_ttl {c.max_token_ttl} must be between 60 and {MAX_TTL_S} s")
    if len(c.token_audience) > 256 or not c.token_audience.isprintable():
        problems.append("token_audience must be at most 256 printable characters")
    if problem := tool_choice_problem(c.tool_choice):
        problems.append(problem)
    if not 1 <= c.bedrock_calls_per_connection <= MAX_CALLS_PER_CONNECTION:
        problems.append(
            f"bedrock_calls_per_connection {c.bedrock_calls_per_connection} must be between 1 "
            f"and {MAX_CALLS_PER_CONNECTION}"
        )
    if not 0 <= c.max_calls_per_subject <= 10000:
        problems.append(
            f"max_calls_per_subject {c.max_calls_per_subject} must be between 0 and 10000"
        )
    for name in ("max_pending_offers", "max_pending_per_subject"):
        if not 0 <= getattr(c, name) <= 10000:
            problems.append(f"{name} {getattr(c, name)} must be between 0 and 10000")
    if not 1 <= c.request_timeout <= 300:
        problems.append(f"request_timeout {c.request_timeout} must be between 1 and 300 seconds")
    if not 0 <= c.max_connections_per_ip <= 100000:
        problems.append(
            f"max_connections_per_ip {c.max_connections_per_ip} must be between 0 and 100000"
        )
    if c.metrics_token and len(c.metrics_token) < MIN_SECRET_CHARS:
        problems.append(f"metrics_token must have at least {MIN_SECRET_CHARS} characters")
    if not 0 <= c.metrics_port <= 65535:
        problems.append(f"metrics_port {c.metrics_port} is outside 0-65535")
    elif c.metrics_port and c.metrics_port == c.port:
        problems.append("metrics_port must differ from port")
    if c.metrics_port and not c.metrics_host:
        problems.append("metrics_host must not be empty")
    return problems


def _validate_recording(c: ServeConfig) -> list[str]:
    """Recording destinations (the directory is created on the first recorded call)."""
    problems: list[str] = []
    if c.record_dir and Path(c.record_dir).exists() and not Path(c.record_dir).is_dir():
        problems.append(f"record_dir {c.record_dir!r} exists and is not a directory")
    bucket = c.record_s3_bucket
    if bucket and not (
        3 <= len(bucket) <= 63 and all(ch.islower() or ch.isdigit() or ch in ".-" for ch in bucket)
    ):
        problems.append(f"record_s3_bucket {bucket!r} is not a valid S3 bucket name")
    if len(c.record_s3_prefix) > 512:
        problems.append("record_s3_prefix is longer than 512 characters")
    return problems


def _validate_call_records(c: ServeConfig) -> list[str]:
    """Webhooks, the call history and the admin token (files are read here so a bad one stops
    the start, not the first call)."""
    from urllib.parse import urlsplit

    from voicegate.signing import parse_secrets

    problems: list[str] = []
    for url in c.webhook_url:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            problems.append(f"webhook_url {url[:100]!r} is not an http(s) URL")
    if c.webhook_url and not c.webhook_secret_file:
        problems.append(
            "webhook_url needs --webhook-secret-file (receivers verify every event's signature)"
        )
    if c.webhook_secret_file:
        text = _read_text(c.webhook_secret_file, "webhook_secret_file", problems)
        if text is not None:
            try:
                parse_secrets(text)
            except ValueError as exc:
                problems.append(f"webhook_secret_file {c.webhook_secret_file!r}: {exc}")
    if not 0.5 <= c.webhook_timeout <= 60:
        problems.append(f"webhook_timeout {c.webhook_timeout} must be between 0.5 and 60 s")
    if not 0 <= c.webhook_retry_seconds <= 86400:
        problems.append(
            f"webhook_retry_seconds {c.webhook_retry_seconds} must be between 0 and 86400"
        )
    if not 0 <= c.call_retention_days <= 36500:
        problems.append(f"call_retention_days {c.call_retention_days} must be 0-36500")
    if c.admin_token_file:
        token = _read_text(c.admin_token_file, "admin_token_file", problems)
        if token is not None and len(token.strip()) < 16:
            problems.append(f"admin_token_file {c.admin_token_file!r}: use 16 or more characters")
    return problems


def _read_text(path: str, name: str, problems: list[str]) -> str | None:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        problems.append(f"{name} {path!r} cannot be read: {exc.strerror or exc}")
        return None
    except UnicodeDecodeError:
        problems.append(f"{name} {path!r} is not UTF-8 text")
        return None
    if not text.strip():
        problems.append(f"{name} {path!r} is empty")
        return None
    return text


def _shown_url(url: str) -> str:
    """``url`` with any password in it replaced by ``***``: a refused URL is printed, and the
    cluster URL may carry the Redis password."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=f"{user}:***@{host}").geturl()


def _password_file_problems(path: str) -> list[str]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        return [f"cluster_redis_password_file {path!r} cannot be read: {exc.strerror or exc}"]
    except UnicodeDecodeError:
        return [f"cluster_redis_password_file {path!r} is not UTF-8 text"]
    return [] if text.strip() else [f"cluster_redis_password_file {path!r} is empty"]
