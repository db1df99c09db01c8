"""The ``voicegate`` command: ``serve`` runs the gateway, ``standin`` the Bedrock stand-in."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import structlog

from voicegate import __version__

if TYPE_CHECKING:
    from voicegate.backends.base import Backend
    from voicegate.config import ServeConfig


def _serve(args: argparse.Namespace) -> int:
    from voicegate import config as cfg
    from voicegate import logs

    try:
        conf = cfg.resolve(args)
    except cfg.ConfigError as exc:
        print(f"voicegate: {exc}", file=sys.stderr)
        return 2
    logs.configure(conf.log_format, conf.log_level, transcripts=conf.log_transcripts)
    from voicegate.backends import BackendUnavailable, make_backend

    try:
        backend, why = make_backend(
            conf.backend,
            conf.model_id,
            conf.region,
            conf.bedrock_endpoint,
            conf.bedrock_transport,
        )
    except BackendUnavailable as exc:
        print(f"voicegate: {exc}", file=sys.stderr)
        return 2
    structlog.get_logger("voicegate").info("backend_selected", backend=backend.name, why=why)
    return asyncio.run(_run_server(conf, backend), loop_factory=loop_factory(conf.loop))


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


async def _run_server(conf: ServeConfig, backend: Backend) -> int:
    from aiohttp import web

    from voicegate.media import ice
    from voicegate.signaling.app import create_app

    log = structlog.get_logger("voicegate")
    ice.configure_host_addresses(list(conf.ice_addresses) or ice.default_host_addresses(conf.host))
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
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, conf.host, conf.port)
    await site.start()
    port = conf.port
    # aiohttp exposes no public way to learn the port picked for --port 0.
    sockets = getattr(site._server, "sockets", None)
    if sockets:
        port = sockets[0].getsockname()[1]
    url = f"http://{conf.host}:{port}"
    log.info("listening", url=url, backend=backend.name)
    print(f"voicegate {__version__} listening on {url}", flush=True)
    # issue 7: the first SIGTERM/SIGINT drains (no new calls, running ones may finish up to
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
    ended = await drain(app, conf.drain_timeout, cut)
    log.info("drained", calls_ended=ended)
    await runner.cleanup()
    return 0


def _token(args: argparse.Namespace) -> int:
    """Print one access token, alone on stdout, so scripts can capture it with $(...)."""
    import os

    from voicegate.signaling import auth

    secret = args.secret or os.environ.get("VOICEGATE_AUTH_SECRET", "")
    if not secret:
        print("voicegate: no secret: pass --secret or set VOICEGATE_AUTH_SECRET", file=sys.stderr)
        return 2
    try:
        token = auth.mint(
            secret, args.ttl, subject=args.subject, max_call_seconds=args.max_call_seconds
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
        "--ttl", type=float, default=300.0, help="seconds the token is valid (default 300)"
    )
    token.add_argument("--subject", default=None, help="who the token is for (shown in logs)")
    token.add_argument(
        "--max-call-seconds",
        type=float,
        default=None,
        help="cap on the length of calls this token starts (default: the server's limit)",
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
    serve.set_defaults(func=_serve)
    _add_token_parser(sub)
    try:
        from voicegate.standin.cli import add_parser as add_standin
    except ImportError:
        pass
    else:
        add_standin(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result
