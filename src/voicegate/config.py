"""``voicegate serve`` configuration: one table of options, read from flags, then VOICEGATE_*
environment variables, then defaults, and validated as a whole at start so a bad deployment
fails at once with every problem listed, not on the first call.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Final

from voicegate.sonic import ENDPOINTING

BACKENDS: Final = ("auto", "local", "echo", "bedrock")
LOG_FORMATS: Final = ("auto", "json", "console")


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
    ice_addresses: tuple[str, ...] = ()
    turn_urls: tuple[str, ...] = ()
    turn_secret: str = field(default="", repr=False)
    turn_ttl: int = 3600
    relay_only: bool = False
    log_format: str = "auto"
    log_level: str = "info"


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
    from voicegate.turn import check_url

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
    if c.log_level.lower() not in ("debug", "info", "warning", "error"):
        problems.append(f"log_level {c.log_level!r} must be debug, info, warning or error")
    return problems
