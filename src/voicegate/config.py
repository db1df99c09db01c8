"""``voicegate serve`` configuration: one table of options, read from flags, then VOICEGATE_*
environment variables, then defaults, and validated as a whole at start so a bad deployment
fails at once with every problem listed, not on the first call.
"""

from __future__ import annotations

import argparse
import importlib.util
import ipaddress
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Final

from voicegate.backends.bedrock.transport import TRANSPORTS
from voicegate.sonic.events import ENDPOINTING

BACKENDS: Final = ("auto", "local", "echo", "bedrock")
LOG_FORMATS: Final = ("auto", "json", "console")
LOOPS: Final = ("asyncio", "uvloop", "auto")


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(text)


_bool.__name__ = "boolean"


class ConfigError(ValueError):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid configuration:\n  - " + "\n  - ".join(problems))
        self.problems = problems


def _default_web_dir() -> str:
    here = Path(__file__).resolve().parent
    for candidate in (here / "web", here.parents[1] / "web"):
        if (candidate / "index.html").is_file():
            return str(candidate)
    return str(here.parents[1] / "web")


@dataclass(frozen=True, slots=True)
class ServeConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    backend: str = "auto"
    web_dir: str = ""
    max_sessions: int = 20
    max_body_bytes: int = 64 * 1024
    max_call_seconds: float = 3600.0
    system_prompt: str = ""
    voice: str = "matthew"
    endpointing: str = ""
    model_id: str = "amazon.nova-2-sonic-v1:0"
    region: str = ""
    bedrock_endpoint: str = ""
    bedrock_transport: str = "asyncio"
    loop: str = "asyncio"
    ice_addresses: tuple[str, ...] = ()
    turn_urls: tuple[str, ...] = ()
    turn_secret: str = field(default="", repr=False)
    turn_ttl: int = 3600
    relay_only: bool = False
    log_format: str = "auto"
    log_level: str = "info"
    # issue 7 (access and limits)
    auth_secret: str = field(default="", repr=False)
    allowed_origins: tuple[str, ...] = ()
    offer_rate: float = 60.0
    offer_burst: int = 20
    trust_forwarded_for: bool = False
    idle_timeout: float = 300.0
    drain_timeout: float = 30.0
    # issue 7 (observability and recording)
    record_dir: str = ""
    record_s3_bucket: str = ""
    record_s3_prefix: str = "voicegate/"
    log_transcripts: bool = False
    # issue 4 (calls that never break: stream renewal, recovery, browser reconnect)
    renew_after: float = 360.0
    renew_force_after: float = 60.0
    recovery_attempts: int = 3
    reconnect_grace: float = 30.0
    # issue 5 (media path, capacity)
    rtc_ports: str = ""
    announced_address: str = ""
    max_loop_lag_ms: float = 25.0
    model_chunk_ms: int = 20


@dataclass(frozen=True, slots=True)
class _Opt:
    name: str
    help: str
    parse: Callable[[str], Any] = str
    metavar: str | None = None
    choices: tuple[str, ...] | None = None
    repeat: bool = False  # repeatable flag; env var is comma separated
    flag: str | None = None  # when the flag is not the option name (e.g. --turn-url)
    env: str | None = None


OPTIONS: Final = (
    _Opt("host", "address to listen on (default 127.0.0.1)"),
    _Opt("port", "TCP port (default 8080; 0 picks a free one)", int),
    _Opt(
        "backend",
        "speech backend: auto (bedrock when AWS credentials resolve, else local), local, echo, "
        "bedrock",
        choices=BACKENDS,
    ),
    _Opt("web_dir", "directory served at / (default: the bundled web/)"),
    _Opt("max_sessions", "maximum concurrent calls (default 20)", int),
    _Opt("max_body_bytes", "maximum HTTP request body in bytes (default 65536)", int),
    _Opt("max_call_seconds", "maximum call duration in seconds (default 3600)", float),
    _Opt("system_prompt", "system prompt for the model"),
    _Opt("voice", "Nova Sonic voice id (default matthew)"),
    _Opt("endpointing", "Nova 2 endpointing sensitivity: HIGH, MEDIUM or LOW"),
    _Opt("model_id", "Bedrock model id (default amazon.nova-2-sonic-v1:0; v1 supported)"),
    _Opt("region", "AWS region for Bedrock (default: AWS_REGION, the profile's, else us-east-1)"),
    _Opt(
        "bedrock_endpoint",
        "Bedrock runtime endpoint URL (default: AWS_ENDPOINT_URL_BEDROCK_RUNTIME or the region's)",
    ),
    _Opt(
        "bedrock_transport",
        "HTTP/2 transport of the Bedrock SDK: asyncio (default, on the event loop) or crt (awscrt)",
        choices=TRANSPORTS,
    ),
    _Opt(
        "loop",
        "event loop: asyncio (default), uvloop (needs voicegate[uvloop]), or auto (uvloop when "
        "installed)",
        choices=LOOPS,
    ),
    _Opt(
        "ice_addresses",
        "local address to offer as ICE host candidate (repeatable; default: 127.0.0.1 when "
        "bound to loopback, else every interface)",
        repeat=True,
        metavar="ADDR",
    ),
    _Opt(
        "turn_urls",
        "TURN/STUN URL announced to browsers (repeatable), e.g. turn:turn.example.com:3478",
        repeat=True,
        metavar="URL",
        flag="--turn-url",
    ),
    _Opt("turn_secret", "coturn static-auth-secret used to mint TURN credentials"),
    _Opt("turn_ttl", "lifetime of minted TURN credentials in seconds (default 3600)", int),
    _Opt("relay_only", "server side uses only TURN relay candidates", _bool),
    _Opt(
        "log_format",
        "log format: auto (pretty on a terminal, else JSON), json, console",
        choices=LOG_FORMATS,
    ),
    _Opt("log_level", "log level: debug, info, warning, error"),
    # issue 7: access control and limits (docs/security.md)
    _Opt(
        "auth_secret",
        "HMAC secret for signaling access tokens (>= 16 chars; required unless host is "
        "loopback); mint tokens with `voicegate token`",
    ),
    _Opt(
        "allowed_origins",
        "origin allowed to call the API cross-origin (repeatable), e.g. https://app.example.com, "
        "or * for any; default: same origin only",
        repeat=True,
        metavar="ORIGIN",
        flag="--allowed-origin",
    ),
    _Opt("offer_rate", "call offers per minute per client address (default 60; 0: off)", float),
    _Opt("offer_burst", "call offers a client address may make at once (default 20)", int),
    _Opt(
        "trust_forwarded_for",
        "take the client address from X-Forwarded-For (only behind a reverse proxy that sets it)",
        _bool,
    ),
    _Opt(
        "idle_timeout",
        "end a call after this many seconds without speech from the browser or the bot "
        "(default 300; 0: never)",
        float,
    ),
    _Opt(
        "drain_timeout",
        "on SIGTERM, seconds calls may go on before they are ended (default 30)",
        float,
    ),
    # issue 7: recording and logs (docs/observability.md)
    _Opt(
        "record_dir",
        "directory for call recordings; calls are recorded only when their offer asks for it "
        '("record": true) and a destination is set (default: none)',
    ),
    _Opt("record_s3_bucket", "S3 bucket recordings are uploaded to after each recorded call"),
    _Opt("record_s3_prefix", "key prefix of recordings in the S3 bucket (default voicegate/)"),
    _Opt("log_transcripts", "write transcript text to the logs (default: never)", _bool),
    # issue 4: calls that never break (docs/renewal.md)
    _Opt(
        "renew_after",
        "seconds after which a model stream is renewed at the next natural point (default 360; "
        "Bedrock ends streams at ~480)",
        float,
    ),
    _Opt(
        "renew_force_after",
        "seconds past renew_after after which the renewal happens even mid-turn (default 60)",
        float,
    ),
    _Opt("recovery_attempts", "reconnects after a model stream fails (default 3; 0: none)", int),
    _Opt(
        "reconnect_grace",
        "seconds a call waits for its browser to reconnect after the connection drops (default 30)",
        float,
    ),
    # issue 5: media path and capacity (benchmarks/README.md)
    _Opt(
        "rtc_ports",
        "UDP port range for media host candidates, MIN-MAX (e.g. 40000-40999; default: any)",
        metavar="MIN-MAX",
    ),
    _Opt(
        "announced_address",
        "public address announced in host candidates instead of the bound one (1:1 NAT)",
        metavar="IP",
    ),
    _Opt(
        "max_loop_lag_ms",
        "refuse new calls (503) while the event loop runs this many ms late (default 25; 0: off)",
        float,
    ),
    _Opt(
        "model_chunk_ms",
        "caller audio per model event in ms, a multiple of 20 (default 20: lowest latency; "
        "40 halves the Bedrock events per call)",
        int,
    ),
)


def env_name(opt: str | _Opt) -> str:
    if isinstance(opt, _Opt):
        return opt.env or "VOICEGATE_" + opt.name.upper()
    return "VOICEGATE_" + opt.upper()


def _flag(opt: _Opt) -> str:
    return opt.flag or "--" + opt.name.replace("_", "-")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    for opt in OPTIONS:
        flag = _flag(opt)
        help_text = f"{opt.help} [env {env_name(opt)}]"
        if opt.repeat:
            parser.add_argument(
                flag,
                dest=opt.name,
                action="append",
                default=None,
                metavar=opt.metavar,
                help=help_text,
            )
        elif opt.parse is _bool:
            parser.add_argument(
                flag,
                dest=opt.name,
                action="store_const",
                const="true",
                default=None,
                help=help_text,
            )
        else:
            parser.add_argument(
                flag,
                dest=opt.name,
                default=None,
                choices=opt.choices,
                metavar=opt.metavar,
                help=help_text,
            )


def resolve(args: argparse.Namespace | None, env: Mapping[str, str] | None = None) -> ServeConfig:
    """Flags over environment over defaults; raises ConfigError listing every problem."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    problems: list[str] = []
    for opt in OPTIONS:
        raw: Any = getattr(args, opt.name, None) if args is not None else None
        source = _flag(opt)
        if raw is None and env.get(env_name(opt)) not in (None, ""):
            raw = env[env_name(opt)]
            source = env_name(opt)
            if opt.repeat:
                raw = [part.strip() for part in raw.split(",") if part.strip()]
        if raw is None:
            continue
        try:
            if opt.repeat:
                values[opt.name] = tuple(opt.parse(v) for v in raw)
            else:
                values[opt.name] = opt.parse(raw)
        except ValueError:
            problems.append(f"{source}: {raw!r} is not a valid {opt.parse.__name__}")
            continue
        if opt.choices and values[opt.name] not in opt.choices:
            problems.append(f"{source}: {raw!r} must be one of {', '.join(opt.choices)}")
    config = ServeConfig(**values)
    if not config.web_dir:
        config = _replace(config, web_dir=_default_web_dir())
    problems += validate(config)
    if problems:
        raise ConfigError(problems)
    return config


def _replace(config: ServeConfig, **changes: Any) -> ServeConfig:
    data = {f.name: getattr(config, f.name) for f in fields(config)}
    data.update(changes)
    return ServeConfig(**data)


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
    if not c.voice.isidentifier():
        problems.append(f"voice {c.voice!r} is not a valid voice id")
    for address in c.ice_addresses:
        try:
            ipaddress.ip_address(address)
        except ValueError:
            problems.append(f"ice address {address!r} is not an IP address")
    from voicegate.signaling.turn import check_url

    for url in c.turn_urls:
        problem = check_url(url)
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
    problems += _validate_continuation(c)
    problems += _validate_media(c)
    return problems


def _validate_media(c: ServeConfig) -> list[str]:
    """issue 5: the media port range, announced address and lag limit."""
    from voicegate.media.ice import parse_port_range

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
    if c.model_chunk_ms not in (20, 40, 60, 80, 100):
        problems.append(f"model_chunk_ms {c.model_chunk_ms} must be 20, 40, 60, 80 or 100")
    return problems


def _validate_continuation(c: ServeConfig) -> list[str]:
    """issue 4: a renewal must come before Bedrock's ~480 s stream limit."""
    problems: list[str] = []
    if not 5 <= c.renew_after <= 470:
        problems.append(f"renew_after {c.renew_after} must be between 5 and 470 seconds")
    if not 0 <= c.renew_force_after <= 470 - min(c.renew_after, 470):
        problems.append(
            f"renew_force_after {c.renew_force_after} must be >= 0 and end before 470 s "
            "(renew_after + renew_force_after <= 470)"
        )
    if not 0 <= c.recovery_attempts <= 10:
        problems.append(f"recovery_attempts {c.recovery_attempts} must be between 0 and 10")
    if not 0 <= c.reconnect_grace <= 600:
        problems.append(f"reconnect_grace {c.reconnect_grace} must be between 0 and 600 seconds")
    return problems


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _validate_access(c: ServeConfig) -> list[str]:
    """issue 7: an exposed gateway without a secret would let anyone spend Bedrock money."""
    from urllib.parse import urlsplit

    from voicegate.signaling.auth import MIN_SECRET_CHARS

    problems: list[str] = []
    if c.auth_secret and len(c.auth_secret) < MIN_SECRET_CHARS:
        problems.append(f"auth_secret must have at least {MIN_SECRET_CHARS} characters")
    if not c.auth_secret and not is_loopback(c.host):
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
    return problems


def _validate_recording(c: ServeConfig) -> list[str]:
    """issue 7: recording destinations (the directory is created on the first recorded call)."""
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
