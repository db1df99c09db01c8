"""``voicegate serve --check-config``: the whole configuration checked, nothing started.

A deployment (a container's environment, a Kubernetes manifest, a compose file) can be checked
before it is rolled out: the same flags and VOICEGATE_* variables ``serve`` reads, the same
validation it runs at start (``config.resolve``), plus what ``serve`` would only find out later,
each without loading a model, opening a socket or asking AWS anything:

- the chosen backend's packages are installed (``local``: the offline brain's extra; ``bedrock``:
  the SDK) and the Bedrock model id, region and endpoint are well formed;
- a ``--cluster-redis`` URL has the Redis client (the ``cluster`` extra) to use it.

Exit 0 with a summary on stdout (never a secret), or 2 with every problem on stderr. A
VOICEGATE_* variable that is no option (a typo ``serve`` would silently ignore) is a warning.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from collections.abc import Mapping
from typing import Final, TextIO

from voicegate import config as cfg

__all__ = ["check_config", "problems_and_summary", "unknown_variables"]

OTHER_VARIABLES: Final = frozenset({"VOICEGATE_WORKER_INDEX", "VOICEGATE_TOKEN"})
"""VOICEGATE_* names that are not ``serve`` options but are read elsewhere: a supervised
worker's index (voicegate.cluster.workers) and the load generator's access token."""


def unknown_variables(env: Mapping[str, str]) -> list[str]:
    """VOICEGATE_* variables in ``env`` that no option reads, sorted."""
    known = {cfg.env_name(opt) for opt in cfg.OPTIONS} | OTHER_VARIABLES
    return sorted(k for k in env if k.startswith("VOICEGATE_") and k not in known)


def _raw(args: argparse.Namespace | None, env: Mapping[str, str], name: str) -> str:
    """An option's text as ``resolve`` would read it (flag over environment), or ""."""
    value = getattr(args, name, None) if args is not None else None
    if value is None:
        value = env.get(cfg.env_name(name), "")
    return str(value)


def _backend_problems(
    backend: str, args: argparse.Namespace | None, env: Mapping[str, str]
) -> list[str]:
    problems: list[str] = []
    if backend == "local":
        from voicegate.backends.speech import SpeechModelError, check_installed

        try:
            check_installed()
        except SpeechModelError as exc:
            problems.append(f"backend local: {exc}")
    if backend in ("bedrock", "auto"):
        has_sdk = importlib.util.find_spec("aws_sdk_bedrock_runtime") is not None
        if not has_sdk and backend == "bedrock":
            problems.append(
                "backend bedrock: the 'bedrock' extra is not installed "
                "(pip install 'voicegate[bedrock]')"
            )
        if has_sdk:
            from voicegate.backends.bedrock.client import BedrockSettings

            overrides = {
                key: value for key in ("model_id", "region") if (value := _raw(args, env, key))
            }
            for name in ("AWS_REGION", "AWS_DEFAULT_REGION"):  # the environment checked
                if "region" not in overrides and env.get(name):
                    overrides["region"] = env[name]
            endpoint = _raw(args, env, "bedrock_endpoint")
            settings = BedrockSettings(**overrides, endpoint=endpoint or None)  # type: ignore[arg-type]
            problems += [f"bedrock: {problem}" for problem in settings.validate()]
    return problems


def problems_and_summary(
    args: argparse.Namespace | None, env: Mapping[str, str] | None = None
) -> tuple[list[str], list[str]]:
    """(every problem, summary lines of a valid configuration)."""
    env = os.environ if env is None else env
    problems: list[str] = []
    conf: cfg.ServeConfig | None = None
    try:
        conf = cfg.resolve(args, env)
    except cfg.ConfigError as exc:
        problems += exc.problems
    backend = conf.backend if conf is not None else _raw(args, env, "backend") or "auto"
    if backend in cfg.BACKENDS:
        problems += _backend_problems(backend, args, env)
    cluster_redis = conf.cluster_redis if conf is not None else _raw(args, env, "cluster_redis")
    if cluster_redis and importlib.util.find_spec("redis") is None:
        problems.append("cluster_redis needs the Redis client: pip install 'voicegate[cluster]'")
    if problems or conf is None:
        return problems, []
    summary = [
        f"listen: http://{conf.host}:{conf.port}",
        f"backend: {conf.backend}"
        + (
            " (bedrock when AWS credentials resolve at start, else local)"
            if backend == "auto"
            else ""
        ),
        f"workers: {conf.workers} ({cfg.worker_count(conf)} here)",
        f"max_sessions: {conf.max_sessions} per node",
        f"auth: {'token required' if conf.auth_secret else 'off (loopback only)'}"
        + (" (JWT public keys from a file)" if conf.jwt_public_key_file else "")
        + (f" (JWKS {conf.jwks_url})" if conf.jwks_url else ""),
        f"turn: {', '.join(conf.turn_urls) or 'none'}",
        f"rtc_ports: {conf.rtc_ports or 'any'}",
        "cluster: "
        + (f"redis directory, node {conf.node_id}" if conf.cluster_redis else "single node")
        + (f" at {conf.node_url}" if conf.node_url else ""),
        f"drain_timeout: {conf.drain_timeout:g} s",
        f"agents: {_agents_summary(conf)}",
    ]
    return [], summary


def check_config(
    args: argparse.Namespace | None,
    env: Mapping[str, str] | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Print the verdict; 0 when the configuration is valid, 2 otherwise."""
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    env = os.environ if env is None else env
    for name in unknown_variables(env):
        print(f"voicegate: warning: {name} is not a voicegate serve option (ignored)", file=err)
    problems, summary = problems_and_summary(args, env)
    if problems:
        print("voicegate: invalid configuration:", file=err)
        for problem in problems:
            print(f"  - {problem}", file=err)
        return 2
    print("voicegate: configuration OK", file=out)
    for line in summary:
        print(f"  {line}", file=out)
    return 0


def _agents_summary(conf: cfg.ServeConfig) -> str:
    if not conf.agents:
        return "one, default (from the flags)"
    from voicegate.agents.file import load_agents

    spec = load_agents(conf.agents)  # resolve() checked it: no problems left
    return f"{', '.join(spec.agents)} from {conf.agents} (default {spec.default_agent})"
