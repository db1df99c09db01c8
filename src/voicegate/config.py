"""``voicegate serve`` configuration: one table of options, read from flags, then VOICEGATE_*
environment variables, then defaults, and validated as a whole at start so a bad deployment
fails at once with every problem listed, not on the first call.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from voicegate.backends.bedrock.transport import DEFAULT_TRANSPORT, TRANSPORTS
from voicegate.config_checks import validate

if TYPE_CHECKING:
    from voicegate.media import MediaSetup

__all__ = [
    "OPTIONS",
    "ConfigError",
    "ServeConfig",
    "media_setup",
    "resolve",
    "validate",
    "worker_count",
]

BACKENDS: Final = ("auto", "local", "echo", "bedrock")
LOG_FORMATS: Final = ("auto", "json", "console")
LOOPS: Final = ("asyncio", "uvloop", "auto")


def _number(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(text)
    return value


_number.__name__ = "finite number"


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(text)


_bool.__name__ = "boolean"


def _workers(text: str) -> str:
    """``auto`` or a positive whole number (kept as text; ``worker_count`` resolves it)."""
    value = text.strip().lower()
    if value == "auto":
        return value
    if not value.isdigit() or int(value) < 1:
        raise ValueError(text)
    return str(int(value))


_workers.__name__ = "worker count (a positive number or auto)"


def worker_count(config: ServeConfig) -> int:
    """Worker processes of this node: ``auto`` is one per core this process may run on."""
    if config.workers != "auto":
        return int(config.workers)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


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
    greeting: str = ""
    model_id: str = "amazon.nova-2-sonic-v1:0"
    region: str = ""
    bedrock_endpoint: str = ""
    bedrock_transport: str = DEFAULT_TRANSPORT
    loop: str = "asyncio"
    ice_addresses: tuple[str, ...] = ()
    turn_urls: tuple[str, ...] = ()
    turn_secret: str = field(default="", repr=False)
    turn_ttl: int = 3600
    relay_only: bool = False
    log_format: str = "auto"
    log_level: str = "info"
    # access and limits
    auth_secret: str = field(default="", repr=False)
    allowed_origins: tuple[str, ...] = ()
    offer_rate: float = 60.0
    offer_burst: int = 20
    trust_forwarded_for: bool = False
    idle_timeout: float = 300.0
    drain_timeout: float = 30.0
    connect_timeout: float = 15.0
    auth_secret_file: str = ""
    turn_secret_file: str = ""
    max_token_ttl: float = 7 * 86400.0
    token_audience: str = ""
    max_calls_per_subject: int = 3
    request_timeout: float = 10.0
    max_connections_per_ip: int = 32
    allow_private_candidates: bool = False
    allow_mdns_candidates: bool = False
    metrics_token: str = field(default="", repr=False)
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 0
    # observability and recording
    record_dir: str = ""
    record_s3_bucket: str = ""
    record_s3_prefix: str = "voicegate/"
    log_transcripts: bool = False
    # calls that never break: stream renewal, recovery, browser reconnect
    renew_after: float = 360.0
    renew_force_after: float = 60.0
    recovery_attempts: int = 3
    reconnect_grace: float = 30.0
    # media path, capacity
    rtc_ports: str = ""
    announced_address: str = ""
    max_loop_lag_ms: float = 25.0
    model_chunk_ms: int = 20
    # many cores, many machines (docs/cluster.md)
    workers: str = "auto"
    cluster_redis: str = field(default="", repr=False)
    node_id: str = ""
    node_url: str = ""


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
    _Opt("max_call_seconds", "maximum call duration in seconds (default 3600)", _number),
    _Opt("system_prompt", "system prompt for the model"),
    _Opt("voice", "Nova Sonic voice id (default matthew)"),
    _Opt("endpointing", "Nova 2 endpointing sensitivity: HIGH, MEDIUM or LOW"),
    _Opt(
        "greeting",
        "instruction sent as the caller's first turn so the assistant speaks first",
        metavar="TEXT",
    ),
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
    # access control and limits (docs/security.md)
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
    _Opt("offer_rate", "call offers per minute per client address (default 60; 0: off)", _number),
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
        _number,
    ),
    _Opt(
        "drain_timeout",
        "on SIGTERM, seconds calls may go on before they are ended (default 30)",
        _number,
    ),
    _Opt("auth_secret_file", "file holding the auth secret (instead of --auth-secret)"),
    _Opt("turn_secret_file", "file holding the TURN secret (instead of --turn-secret)"),
    _Opt(
        "max_token_ttl",
        "refuse access tokens valid for longer than this many seconds (default 604800: 7 days)",
        _number,
    ),
    _Opt("token_audience", "require this audience (claim aud) in access tokens (default: none)"),
    _Opt(
        "max_calls_per_subject",
        "live calls one token subject may hold at once (default 3; 0: no limit)",
        int,
    ),
    _Opt(
        "request_timeout",
        "seconds a client has to send a whole request (headers, and an API body); also how "
        "long an idle connection stays open (default 10)",
        _number,
    ),
    _Opt(
        "max_connections_per_ip",
        "open HTTP connections one client address may hold (default 32; 0: no limit)",
        int,
    ),
    _Opt(
        "allow_private_candidates",
        "use callers' ICE candidates in private ranges the server has no address in (LAN)",
        _bool,
    ),
    _Opt("allow_mdns_candidates", "resolve callers' mDNS (.local) ICE candidates", _bool),
    _Opt("metrics_token", "require Authorization: Bearer <this> on /metrics (default: open)"),
    _Opt("metrics_host", "address of the separate metrics listener (default 127.0.0.1)"),
    _Opt(
        "metrics_port",
        "serve /metrics on its own listener at this port, not on the main one (default: off)",
        int,
    ),
    _Opt(
        "connect_timeout",
        "end a call whose media (ICE + DTLS) is not connected this many seconds after the "
        "answer, freeing its slot and model stream (default 15)",
        float,
    ),
    # recording and logs (docs/observability.md)
    _Opt(
        "record_dir",
        "directory for call recordings; calls are recorded only when their offer asks for it "
        '("record": true) and a destination is set (default: none)',
    ),
    _Opt("record_s3_bucket", "S3 bucket recordings are uploaded to after each recorded call"),
    _Opt("record_s3_prefix", "key prefix of recordings in the S3 bucket (default voicegate/)"),
    _Opt("log_transcripts", "write transcript text to the logs (default: never)", _bool),
    # calls that never break (docs/renewal.md)
    _Opt(
        "renew_after",
        "seconds after which a model stream is renewed at the next natural point (default 360; "
        "Bedrock ends streams at ~480)",
        _number,
    ),
    _Opt(
        "renew_force_after",
        "seconds past renew_after after which the renewal happens even mid-turn (default 60)",
        _number,
    ),
    _Opt("recovery_attempts", "reconnects after a model stream fails (default 3; 0: none)", int),
    _Opt(
        "reconnect_grace",
        "seconds a call waits for its browser to reconnect after the connection drops (default 30)",
        _number,
    ),
    # media path and capacity (benchmarks/README.md)
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
        _number,
    ),
    _Opt(
        "model_chunk_ms",
        "caller audio per model event in ms, a multiple of 20 (default 20: lowest latency; "
        "40 halves the Bedrock events per call)",
        int,
    ),
    # many cores, many machines (docs/cluster.md)
    _Opt(
        "workers",
        "worker processes, each with its own event loop, calls and media ports: a number or "
        "auto (default: one per usable core; 1: a single process as before)",
        _workers,
        metavar="N|auto",
    ),
    _Opt(
        "cluster_redis",
        "Redis URL of the cluster directory (redis://host:6379/0): nodes register there, "
        "forward each request to the node that owns its call, and adopt calls of dead or "
        "draining nodes (default: none, a single node)",
        metavar="URL",
    ),
    _Opt("node_id", "this node's name in the cluster (default: the host name)"),
    _Opt(
        "node_url",
        "the HTTP address other nodes use to reach this node, e.g. http://10.0.0.5:8080 "
        "(default: http://HOST:PORT when HOST is a specific address)",
        metavar="URL",
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
    if not config.node_id:
        import socket

        config = _replace(config, node_id=socket.gethostname() or "voicegate")
    config = _read_secret_files(config, problems)
    problems += validate(config)
    if problems:
        raise ConfigError(problems)
    return config


def _read_secret_files(config: ServeConfig, problems: list[str]) -> ServeConfig:
    """Secrets from files (a mounted secret), so they need not sit in flags or the env."""
    changes: dict[str, str] = {}
    for name in ("auth_secret", "turn_secret"):
        path = getattr(config, f"{name}_file")
        if not path:
            continue
        if getattr(config, name):
            problems.append(f"give {name} or {name}_file, not both")
            continue
        try:
            changes[name] = Path(path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            problems.append(f"{name}_file {path!r} cannot be read: {exc.strerror or exc}")
            continue
        except UnicodeDecodeError:
            problems.append(f"{name}_file {path!r} is not UTF-8 text")
            continue
        if not changes[name]:
            problems.append(f"{name}_file {path!r} is empty")
    return _replace(config, **changes) if changes else config


def _replace(config: ServeConfig, **changes: Any) -> ServeConfig:
    data = {f.name: getattr(config, f.name) for f in fields(config)}
    data.update(changes)
    return ServeConfig(**data)


def media_setup(c: ServeConfig) -> MediaSetup:
    """The process-wide media choices of this configuration (``voicegate.media.configure``)."""
    from voicegate.media import MediaSetup
    from voicegate.media.ice import default_host_addresses, parse_port_range

    addresses = list(c.ice_addresses) or default_host_addresses(c.host)
    return MediaSetup(
        host_addresses=tuple(addresses) if addresses is not None else None,
        port_range=parse_port_range(c.rtc_ports),
        announced_address=c.announced_address or None,
        model_chunk_ms=c.model_chunk_ms,
    )
