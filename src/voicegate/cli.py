"""The ``voicegate`` command: ``serve`` runs the gateway, ``standin`` the Bedrock stand-in,
``loadtest`` calls a running gateway with N real WebRTC callers (testing/loadtest.py)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import signal
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import structlog

from voicegate import __version__

if TYPE_CHECKING:
    from voicegate.backends.base import Backend
    from voicegate.config import ServeConfig

__all__ = ["build_parser", "loop_factory", "main"]


def _serve(args: argparse.Namespace) -> int:
    from voicegate import config as cfg
    from voicegate import logs

    if args.check_config:
        from voicegate.preflight import check_config

        return check_config(args)
    import os

    from voicegate.cluster.workers import WORKER_ENV

    worker = os.environ.get(WORKER_ENV)
    env, worker_key = _worker_handoff() if worker is not None else (None, "")
    try:
        conf = cfg.resolve(args, env)
    except cfg.ConfigError as exc:
        print(f"voicegate: {exc}", file=sys.stderr)
        return 2
    logs.configure(
        conf.log_format, conf.log_level, transcripts=conf.log_transcripts, redact=conf.redact
    )
    count = cfg.worker_count(conf)
    if worker is None and count > 1:
        # A node of several workers: this process only supervises and routes (docs/cluster.md).
        from voicegate.cluster.supervisor import run_supervisor

        return asyncio.run(run_supervisor(conf, count))
    from voicegate.backends import BackendUnavailable, make_backend

    try:
        backend, why = make_backend(
            conf.backend,
            conf.model_id,
            conf.region,
            conf.bedrock_endpoint,
            conf.bedrock_transport,
            conf.bedrock_calls_per_connection,
            conf.model_family,
            conf.model_input_rate,
        )
    except BackendUnavailable as exc:
        print(f"voicegate: {exc}", file=sys.stderr)
        return 2
    structlog.get_logger("voicegate").info("backend_selected", backend=backend.name, why=why)
    return asyncio.run(
        _run_server(conf, backend, None if worker is None else int(worker), worker_key),
        loop_factory=loop_factory(conf.loop),
    )


def loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop for ``--loop``: None is asyncio's own; uvloop when asked (or for auto,
    when installed). aiortc, aioice, aiohttp and the Bedrock SDK all run on both."""
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def _worker_handoff() -> tuple[dict[str, str], str]:
    """A worker's environment plus the secrets its supervisor wrote to stdin (kept in memory,
    never in the process environment), and its worker key."""
    import os

    from voicegate.cluster.handoff import receive

    secrets, key = receive(sys.stdin.buffer)
    return {**os.environ, **secrets}, key


async def _run_server(
    conf: ServeConfig, backend: Backend, worker: int | None = None, worker_key: str = ""
) -> int:
    """One process serving calls: the whole node (``--workers 1``) or worker ``worker`` of a
    supervised node, which listens on a private loopback port."""
    from voicegate import gcpolicy, media
    from voicegate.config import media_setup
    from voicegate.signaling.app import create_app
    from voicegate.signaling.listener import serve

    log = structlog.get_logger("voicegate")
    media.configure(media_setup(conf, backend.input_rate))
    warm = getattr(backend, "warm", None)
    if warm is not None:
        from voicegate.backends.base import BackendError

        try:
            await warm()
        except BackendError as exc:
            print(
                f"voicegate: the {backend.name} backend cannot start: {exc.message}",
                file=sys.stderr,
            )
            return 2
    app = create_app(conf, backend)
    if worker is not None:
        from voicegate.cluster.handoff import supervisor_only
        from voicegate.signaling.subjects import SUBJECTS_IN_HEALTH

        app.middlewares.insert(0, supervisor_only(worker_key))
        app[SUBJECTS_IN_HEALTH] = True  # the supervisor keeps the per-subject limit
    if conf.cluster_redis:
        from voicegate.cluster.node import join_cluster

        join_cluster(app, conf, worker)
    if worker is None:
        listener = await serve(app, conf)
    else:
        # A worker listens on a private loopback port; the supervisor owns the public one and
        # serves the node's /metrics.
        listener = await serve(app, dataclasses.replace(conf, metrics_port=0), "127.0.0.1", 0)
    if conf.cluster_redis:
        from voicegate.cluster.node import start_cluster

        await start_cluster(app, conf.node_url or listener.url)
    # Start-up is over (imports, warm-up, the app's own start): out of every later collection
    # with it, so no full collection stops the calls' audio for 100 ms and more.
    frozen = gcpolicy.freeze()
    log.info(
        "listening",
        url=listener.url,
        backend=backend.name,
        metrics=listener.metrics_url,
        gc_frozen_objects=frozen,
    )
    print(f"voicegate {__version__} listening on {listener.url}", flush=True)
    # The first SIGTERM/SIGINT drains (no new calls, running ones may finish up to
    # --drain-timeout, then end with a message); a second one cuts the drain short.
    stop = asyncio.Event()
    cut = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        if stop.is_set():
            cut.set()
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, on_signal)
    await stop.wait()
    from voicegate.signaling.app import drain

    log.info("shutting_down", drain_timeout_s=conf.drain_timeout)
    if conf.cluster_redis:
        from voicegate.cluster.node import move_calls

        await move_calls(app, conf.drain_timeout, cut)
    ended = await drain(app, conf.drain_timeout, cut)
    log.info("drained", calls_ended=ended)
    await listener.close()
    return 0


def _token_secret(args: argparse.Namespace) -> str:
    import os
    from pathlib import Path

    if args.secret:
        return str(args.secret)
    path = args.secret_file or os.environ.get("VOICEGATE_AUTH_SECRET_FILE", "")
    if path:
        return Path(path).read_text(encoding="utf-8").strip()
    return os.environ.get("VOICEGATE_AUTH_SECRET", "")


def _token(args: argparse.Namespace) -> int:
    """Print one access token, alone on stdout, so scripts can capture it with $(...)."""
    from voicegate.signaling import auth, jwt_access

    if args.agent is not None and args.format == "vg1":
        print("voicegate: --agent needs --format jwt (vg1 tokens name no agent)", file=sys.stderr)
        return 2
    try:
        secret = _token_secret(args)
    except (OSError, UnicodeDecodeError) as exc:
        print(f"voicegate: cannot read the secret file: {exc}", file=sys.stderr)
        return 2
    if not secret:
        print(
            "voicegate: no secret: pass --secret or --secret-file, or set VOICEGATE_AUTH_SECRET "
            "or VOICEGATE_AUTH_SECRET_FILE",
            file=sys.stderr,
        )
        return 2
    try:
        if args.format == "jwt":
            token = jwt_access.mint(
                secret,
                args.ttl,
                subject=args.subject,
                agent=args.agent,
                max_call_seconds=args.max_call_seconds,
                audience=args.audience,
            )
        else:
            token = auth.mint(
                secret,
                args.ttl,
                subject=args.subject,
                max_call_seconds=args.max_call_seconds,
                audience=args.audience,
            )
    except ValueError as exc:
        print(f"voicegate: {exc}", file=sys.stderr)
        return 2
    print(token)
    return 0


def _add_token_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    token = sub.add_parser(
        "token",
        help="print a signed signaling access token (for scripts and testing)",
        description="Mint one short-lived access token with the server's auth secret and print "
        "it alone on stdout. App backends normally mint tokens themselves (docs/security.md).",
    )
    token.add_argument(
        "--secret", default=None, help="the server's auth secret [env VOICEGATE_AUTH_SECRET]"
    )
    token.add_argument(
        "--secret-file",
        default=None,
        help="file holding the auth secret [env VOICEGATE_AUTH_SECRET_FILE]",
    )
    token.add_argument(
        "--ttl", type=float, default=300.0, help="seconds the token is valid (default 300)"
    )
    token.add_argument("--subject", default=None, help="who the token is for (shown in logs)")
    token.add_argument(
        "--max-call-seconds",
        type=float,
        default=None,
        help="cap on the length of calls this token starts (default: the server's limit)",
    )
    token.add_argument(
        "--audience",
        default=None,
        help="audience claim (aud), for a server started with --token-audience",
    )
    token.add_argument(
        "--agent", default=None, help="the one agent this token may call (claim agent)"
    )
    token.add_argument(
        "--format",
        choices=("jwt", "vg1"),
        default="jwt",
        help="jwt (default: an HS256 JWT, RFC 7519) or vg1 (voicegate's own format)",
    )
    token.set_defaults(func=_token)


def build_parser() -> argparse.ArgumentParser:
    from voicegate import config as cfg

    parser = argparse.ArgumentParser(
        prog="voicegate",
        description="Self-hosted WebRTC gateway between browsers and Amazon Nova Sonic.",
    )
    parser.add_argument("--version", action="version", version=f"voicegate {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the gateway (signaling, media, web page)")
    cfg.add_arguments(serve)
    serve.add_argument(
        "--check-config",
        action="store_true",
        help="validate the whole configuration (flags and VOICEGATE_* environment) and exit: "
        "0 when it is valid, 2 listing every problem; starts nothing",
    )
    serve.set_defaults(func=_serve)
    _add_token_parser(sub)
    try:
        from voicegate.standin.cli import add_parser as add_standin
    except ImportError:
        pass
    else:
        add_standin(sub)
    from voicegate.testing.loadtest import add_parser as add_loadtest

    add_loadtest(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result
