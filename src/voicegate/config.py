"""``voicegate serve`` configuration: one table of options, read from flags, then VOICEGATE_*
environment variables, then defaults, and validated as a whole at start so a bad deployment
fails at once with every problem listed, not on the first call.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from voicegate.audio.chunks import DEFAULT_CHUNK_MS
from voicegate.backends.bedrock.settings import DEFAULT_CALLS_PER_CONNECTION
from voicegate.backends.bedrock.transport import DEFAULT_TRANSPORT
from voicegate.config_checks import validate
from voicegate.config_options import BACKENDS, OPTIONS, Option, parse_bool, parse_port_range
from voicegate.conversation.continuation import RENEW_AFTER_S
from voicegate.media import MediaSetup
from voicegate.sonic.events import INPUT_SAMPLE_RATE
from voicegate.sonic.models import DEFAULT_MODEL_ID, DEFAULT_VOICE

__all__ = [
    "BACKENDS",
    "OPTIONS",
    "ConfigError",
    "ServeConfig",
    "env_name",
    "media_setup",
    "resolve",
    "validate",
    "worker_count",
]


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
    agents: str = ""
    system_prompt: str = ""
    system_speech: str = ""
    tool_choice: str = ""
    voice: str = DEFAULT_VOICE
    endpointing: str = ""
    greeting: str = ""
    model_id: str = DEFAULT_MODEL_ID
    region: str = ""
    bedrock_endpoint: str = ""
    bedrock_transport: str = DEFAULT_TRANSPORT
    bedrock_calls_per_connection: int = DEFAULT_CALLS_PER_CONNECTION
    model_family: str = ""
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
    trusted_proxies: tuple[str, ...] = ()
    idle_timeout: float = 300.0
    drain_timeout: float = 30.0
    connect_timeout: float = 15.0
    auth_secret_file: str = ""
    turn_secret_file: str = ""
    metrics_token_file: str = ""
    max_token_ttl: float = 7 * 86400.0
    token_audience: str = ""
    jwt_public_key_file: str = ""
    jwks_url: str = ""
    max_calls_per_subject: int = 3
    max_pending_offers: int = 32
    """Calls answered but not connected yet (ICE + DTLS under way) this process holds at once:
    a flood of offers that never connect holds at most this many slots, not every one."""
    max_pending_per_subject: int = 8
    """Of those, per token subject (per client address when the call has no token)."""
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
    redact: tuple[str, ...] = ()
    webhook_url: tuple[str, ...] = ()
    webhook_secret_file: str = ""
    webhook_timeout: float = 10.0
    webhook_retry_seconds: float = 300.0
    call_store: str = "sqlite"
    call_retention_days: float = 30.0
    call_store_text: str = "full"
    admin_token_file: str = ""
    # calls that never break: stream renewal, recovery, browser reconnect
    renew_after: float = RENEW_AFTER_S
    renew_force_after: float = 60.0
    recovery_attempts: int = 3
    reconnect_grace: float = 30.0
    # media path, capacity
    rtc_ports: str = ""
    announced_address: str = ""
    max_loop_lag_ms: float = 25.0
    model_chunk_ms: int = DEFAULT_CHUNK_MS
    model_input_rate: int = INPUT_SAMPLE_RATE
    # many cores, many machines (docs/cluster.md)
    workers: str = "auto"
    cluster_redis: str = field(default="", repr=False)
    cluster_redis_password_file: str = ""
    node_id: str = ""
    node_url: str = ""


def env_name(opt: str | Option) -> str:
    if isinstance(opt, Option):
        return opt.env or "VOICEGATE_" + opt.name.upper()
    return "VOICEGATE_" + opt.upper()


def _flag(opt: Option) -> str:
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
        elif opt.parse is parse_bool:
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
        config = replace(config, web_dir=_default_web_dir())
    if not config.node_id:
        import socket

        config = replace(config, node_id=socket.gethostname() or "voicegate")
    config = _read_secret_files(config, problems)
    problems += validate(config)
    if problems:
        raise ConfigError(problems)
    return config


def _read_secret_files(config: ServeConfig, problems: list[str]) -> ServeConfig:
    """Secrets from files (a mounted secret), so they need not sit in flags or the env."""
    changes: dict[str, Any] = {}
    for name in ("auth_secret", "turn_secret", "metrics_token"):
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
    return replace(config, **changes) if changes else config


def media_setup(c: ServeConfig, input_rate: int = INPUT_SAMPLE_RATE) -> MediaSetup:
    """The process-wide media choices of this configuration (``voicegate.media.configure``);
    ``input_rate``: the chosen backend's (``Backend.input_rate``), which sets the decode rate."""
    # Here, not at the top: the ICE module loads aioice and aiortc (~0.4 s), which `voicegate
    # token` and `--help` never need.
    from voicegate.media.ice import default_host_addresses

    addresses = list(c.ice_addresses) or default_host_addresses(c.host)
    return MediaSetup(
        host_addresses=tuple(addresses) if addresses is not None else None,
        port_range=parse_port_range(c.rtc_ports),
        announced_address=c.announced_address or None,
        model_chunk_ms=c.model_chunk_ms,
        decode_rate=max(INPUT_SAMPLE_RATE, input_rate),
    )
