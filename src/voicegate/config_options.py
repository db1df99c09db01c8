"""The one table of ``voicegate serve`` options: each option's name, help, how its text is
parsed, its flag and its ``VOICEGATE_*`` variable. ``config`` reads and validates them into a
``ServeConfig``; the CLI, the worker supervisor and the deployment checks read this table too, so
an option is added in one place.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from voicegate.backends.bedrock.settings import (
    DEFAULT_CALLS_PER_CONNECTION,
    MAX_CALLS_PER_CONNECTION,
)
from voicegate.backends.bedrock.transport import TRANSPORTS
from voicegate.conversation.continuation import RENEW_AFTER_S
from voicegate.netaddr import network
from voicegate.privacy import parse_rule
from voicegate.sonic.models import DEFAULT_MODEL_ID, DEFAULT_VOICE, STREAM_LIMIT_S
from voicegate.store import check_store_url

__all__ = [
    "BACKENDS",
    "LOG_FORMATS",
    "LOOPS",
    "OPTIONS",
    "Option",
    "parse_bool",
    "parse_port_range",
]

BACKENDS: Final = ("auto", "local", "echo", "bedrock")
LOG_FORMATS: Final = ("auto", "json", "console")
LOOPS: Final = ("asyncio", "uvloop", "auto")


def parse_port_range(text: str) -> tuple[int, int] | None:
    """ "40000-40199" -> (40000, 40199); "" -> None. ValueError for anything else."""
    text = text.strip()
    if not text:
        return None
    low, sep, high = text.partition("-")
    if not sep:
        raise ValueError(text)
    first, last = int(low), int(high)
    if not 1024 <= first <= last <= 65535:
        raise ValueError(text)
    return first, last


def _number(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(text)
    return value


_number.__name__ = "finite number"


def parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(text)


parse_bool.__name__ = "boolean"


def _workers(text: str) -> str:
    """``auto`` or a positive whole number (kept as text; ``worker_count`` resolves it)."""
    value = text.strip().lower()
    if value == "auto":
        return value
    if not value.isdigit() or int(value) < 1:
        raise ValueError(text)
    return str(int(value))


_workers.__name__ = "worker count (a positive number or auto)"


@dataclass(frozen=True, slots=True)
class Option:
    name: str
    help: str
    parse: Callable[[str], Any] = str
    metavar: str | None = None
    choices: tuple[str, ...] | None = None
    repeat: bool = False  # repeatable flag; env var is comma separated
    flag: str | None = None  # when the flag is not the option name (e.g. --turn-url)
    env: str | None = None


OPTIONS: Final = (
    Option("host", "address to listen on (default 127.0.0.1)"),
    Option("port", "TCP port (default 8080; 0 picks a free one)", int),
    Option(
        "backend",
        "speech backend: auto (bedrock when AWS credentials resolve, else local), local, echo, "
        "bedrock",
        choices=BACKENDS,
    ),
    Option("web_dir", "directory served at / (default: the bundled web/)"),
    Option("max_sessions", "maximum concurrent calls (default 20)", int),
    Option("max_body_bytes", "maximum HTTP request body in bytes (default 65536)", int),
    Option("max_call_seconds", "maximum call duration in seconds (default 3600)", _number),
    Option(
        "agents",
        "TOML file of agents (prompt, voice, tools, MCP servers, knowledge; see docs/agents.md); "
        "without it the flags below make one agent named default",
        metavar="FILE",
    ),
    Option("system_prompt", "system prompt for the model"),
    Option(
        "system_speech",
        "Nova 2 speech prompt (SYSTEM_SPEECH role): how the assistant speaks and transcribes, "
        "e.g. the script of Hindi transcripts; ignored for Nova Sonic v1",
    ),
    Option(
        "tool_choice",
        "how the model picks tools: auto (its default), any (at least one tool first) or "
        "tool:NAME (that tool first); checked against the configured tools",
    ),
    Option("voice", f"Nova Sonic voice id (default {DEFAULT_VOICE})"),
    Option("endpointing", "Nova 2 endpointing sensitivity: HIGH, MEDIUM or LOW"),
    Option(
        "greeting",
        "instruction sent as the caller's first turn so the assistant speaks first",
        metavar="TEXT",
    ),
    Option("model_id", f"Bedrock model id (default {DEFAULT_MODEL_ID}; v1 supported)"),
    Option(
        "model_family",
        "for a model id voicegate's capability table does not name: nova2 gives it Nova 2's "
        "features (endpointing, SYSTEM_SPEECH, toolChoice); default: Nova 1's, with a warning",
        choices=("nova1", "nova2"),
    ),
    Option("region", "AWS region for Bedrock (default: AWS_REGION, the profile's, else us-east-1)"),
    Option(
        "bedrock_endpoint",
        "Bedrock runtime endpoint URL (default: AWS_ENDPOINT_URL_BEDROCK_RUNTIME or the region's)",
    ),
    Option(
        "bedrock_transport",
        "HTTP/2 transport of the Bedrock SDK: asyncio (default, on the event loop) or crt (awscrt)",
        choices=TRANSPORTS,
    ),
    Option(
        "bedrock_calls_per_connection",
        f"most calls on one HTTP/2 connection to Bedrock (asyncio transport; default "
        f"{DEFAULT_CALLS_PER_CONNECTION}, 1 to {MAX_CALLS_PER_CONNECTION}): a GOAWAY or a lost "
        "connection ends at most this many calls' streams at once",
        int,
    ),
    Option(
        "loop",
        "event loop: asyncio (default), uvloop (needs voicegate[uvloop]), or auto (uvloop when "
        "installed)",
        choices=LOOPS,
    ),
    Option(
        "ice_addresses",
        "local address to offer as ICE host candidate (repeatable; default: 127.0.0.1 when "
        "bound to loopback, else every interface)",
        repeat=True,
        metavar="ADDR",
    ),
    Option(
        "turn_urls",
        "TURN/STUN URL announced to browsers (repeatable), e.g. turn:turn.example.com:3478",
        repeat=True,
        metavar="URL",
        flag="--turn-url",
    ),
    Option("turn_secret", "coturn static-auth-secret used to mint TURN credentials"),
    Option("turn_ttl", "lifetime of minted TURN credentials in seconds (default 3600)", int),
    Option("relay_only", "server side uses only TURN relay candidates", parse_bool),
    Option(
        "log_format",
        "log format: auto (pretty on a terminal, else JSON), json, console",
        choices=LOG_FORMATS,
    ),
    Option("log_level", "log level: debug, info, warning, error"),
    # access control and limits (docs/security.md)
    Option(
        "auth_secret",
        "HMAC secret for signaling access tokens (>= 16 chars; required unless host is "
        "loopback); mint tokens with `voicegate token`",
    ),
    Option(
        "allowed_origins",
        "origin allowed to call the API cross-origin (repeatable), e.g. https://app.example.com, "
        "or * for any; default: same origin only",
        repeat=True,
        metavar="ORIGIN",
        flag="--allowed-origin",
    ),
    Option("offer_rate", "call offers per minute per client address (default 60; 0: off)", _number),
    Option("offer_burst", "call offers a client address may make at once (default 20)", int),
    Option(
        "trust_forwarded_for",
        "take the client address from X-Forwarded-For (only behind a reverse proxy that sets it)",
        parse_bool,
    ),
    Option(
        "trusted_proxies",
        "reverse proxy network (CIDR, repeatable): X-Forwarded-For is honoured only from these "
        "peers, the client being its rightmost address outside them",
        network,
        repeat=True,
        metavar="CIDR",
    ),
    Option(
        "idle_timeout",
        "end a call after this many seconds without speech from the browser or the bot "
        "(default 300; 0: never)",
        _number,
    ),
    Option(
        "drain_timeout",
        "on SIGTERM, seconds calls may go on before they are ended (default 30)",
        _number,
    ),
    Option("auth_secret_file", "file holding the auth secret (instead of --auth-secret)"),
    Option("turn_secret_file", "file holding the TURN secret (instead of --turn-secret)"),
    Option(
        "max_token_ttl",
        "refuse access tokens valid for longer than this many seconds (default 604800: 7 days)",
        _number,
    ),
    Option("token_audience", "require this audience (claim aud) in access tokens (default: none)"),
    Option(
        "jwt_public_key_file",
        "PEM file of the public keys (RSA for RS256, EC P-256 for ES256; several blocks allowed) "
        "that verify JWT access tokens an identity provider signs",
    ),
    Option(
        "jwks_url",
        "JWKS URL of an identity provider whose RS256/ES256 JWTs are accepted (https, or http "
        "on loopback); fetched, cached and refreshed when a new kid appears",
    ),
    Option(
        "max_calls_per_subject",
        "live calls one token subject may hold at once (default 3; 0: no limit)",
        int,
    ),
    Option(
        "max_pending_offers",
        "calls answered but not connected yet this node holds at once; more offers get 503 "
        "(default 32; 0: no limit)",
        int,
    ),
    Option(
        "max_pending_per_subject",
        "of those, per token subject (per client address without a token); more get 429 "
        "(default 8; 0: no limit)",
        int,
    ),
    Option(
        "request_timeout",
        "seconds a client has to send a whole request (headers, and an API body); also how "
        "long an idle connection stays open (default 10)",
        _number,
    ),
    Option(
        "max_connections_per_ip",
        "open HTTP connections one client address may hold (default 32; 0: no limit)",
        int,
    ),
    Option(
        "allow_private_candidates",
        "use callers' ICE candidates in private ranges the server has no address in (LAN)",
        parse_bool,
    ),
    Option("allow_mdns_candidates", "resolve callers' mDNS (.local) ICE candidates", parse_bool),
    Option("metrics_token", "require Authorization: Bearer <this> on /metrics (default: open)"),
    Option("metrics_token_file", "file holding the metrics token (instead of --metrics-token)"),
    Option("metrics_host", "address of the separate metrics listener (default 127.0.0.1)"),
    Option(
        "metrics_port",
        "serve /metrics on its own listener at this port, not on the main one (default: off)",
        int,
    ),
    Option(
        "connect_timeout",
        "end a call whose media (ICE + DTLS) is not connected this many seconds after the "
        "answer, freeing its slot and model stream (default 15)",
        float,
    ),
    # recording and logs (docs/observability.md)
    Option(
        "record_dir",
        "directory for call recordings; calls are recorded only when their offer asks for it "
        '("record": true) and a destination is set (default: none)',
    ),
    Option("record_s3_bucket", "S3 bucket recordings are uploaded to after each recorded call"),
    Option("record_s3_prefix", "key prefix of recordings in the S3 bucket (default voicegate/)"),
    Option("log_transcripts", "write transcript text to the logs (default: never)", parse_bool),
    # what the team's systems see of each call (docs/observability.md)
    Option(
        "redact",
        "redact transcript text before it leaves the process (webhooks, call history, logs, "
        "traces): digits (runs of 4+ digits), email, or re:PATTERN; repeatable",
        parse_rule,
        metavar="RULE",
        repeat=True,
    ),
    Option(
        "webhook_url",
        "POST call.started / call.ended / call.failed events to this URL, signed per the "
        "Standard Webhooks spec (needs --webhook-secret-file); repeatable",
        metavar="URL",
        repeat=True,
    ),
    Option(
        "webhook_secret_file",
        "file holding the webhook signing secret(s), whsec_<base64> one per line (each signs)",
    ),
    Option("webhook_timeout", "seconds one webhook delivery may take (default 10)", _number),
    Option(
        "webhook_retry_seconds",
        "a failed delivery is retried with backoff, same webhook-id, for this long (default 300)",
        _number,
    ),
    Option(
        "call_store",
        "the call history: sqlite (default: a file in $VOICEGATE_STATE_DIR or "
        "~/.local/state/voicegate), sqlite:PATH, postgresql://... (one store for a cluster), "
        "or none",
        check_store_url,
        metavar="URL",
    ),
    Option(
        "call_retention_days",
        "calls older than this are deleted from the history (default 30; 0: kept forever)",
        _number,
    ),
    Option(
        "call_store_text",
        "full: the history keeps transcripts and tool arguments; none: timings and counts only",
        choices=("full", "none"),
    ),
    Option(
        "admin_token_file",
        "file holding the bearer token of the operator's API and pages (/api/calls, /calls)",
    ),
    # calls that never break (docs/renewal.md)
    Option(
        "renew_after",
        "seconds after which a model stream is renewed at the next natural point (default "
        f"{RENEW_AFTER_S:g}; Bedrock ends streams at {STREAM_LIMIT_S:g})",
        _number,
    ),
    Option(
        "renew_force_after",
        "seconds past renew_after after which the renewal happens even mid-turn (default 60)",
        _number,
    ),
    Option("recovery_attempts", "reconnects after a model stream fails (default 3; 0: none)", int),
    Option(
        "reconnect_grace",
        "seconds a call waits for its browser to reconnect after the connection drops (default 30)",
        _number,
    ),
    # media path and capacity (benchmarks/README.md)
    Option(
        "rtc_ports",
        "UDP port range for media host candidates, MIN-MAX (e.g. 40000-40999; default: any)",
        metavar="MIN-MAX",
    ),
    Option(
        "announced_address",
        "public address announced in host candidates instead of the bound one (1:1 NAT)",
        metavar="IP",
    ),
    Option(
        "max_loop_lag_ms",
        "refuse new calls (503) while the event loop runs this many ms late (default 25; 0: off)",
        _number,
    ),
    Option(
        "model_chunk_ms",
        "caller audio per model event in ms: 20, 32 (AWS's samples), 40, 60, 80 or 100 "
        "(default 20: lowest latency; 40 halves the Bedrock events per call)",
        int,
    ),
    Option(
        "model_input_rate",
        "sample rate in Hz of the caller audio streamed to Bedrock: 8000, 16000 (default) or "
        "24000, one the model documents (Nova 2 Sonic: all three; v1: 16000); the echo and "
        "local backends take 16000 whatever this says",
        int,
        metavar="HZ",
    ),
    # many cores, many machines (docs/cluster.md)
    Option(
        "workers",
        "worker processes, each with its own event loop, calls and media ports: a number or "
        "auto (default: one per usable core; 1: a single process as before)",
        _workers,
        metavar="N|auto",
    ),
    Option(
        "cluster_redis",
        "Redis URL of the cluster directory (redis://host:6379/0): nodes register there, "
        "forward each request to the node that owns its call, and adopt calls of dead or "
        "draining nodes (default: none, a single node)",
        metavar="URL",
    ),
    Option(
        "cluster_redis_password_file",
        "file holding the cluster Redis password (AUTH; instead of a password in the URL)",
    ),
    Option("node_id", "this node's name in the cluster (default: the host name)"),
    Option(
        "node_url",
        "the HTTP address other nodes use to reach this node, e.g. http://10.0.0.5:8080 "
        "(default: http://HOST:PORT when HOST is a specific address)",
        metavar="URL",
    ),
)
