"""``voicegate standin``: run the Bedrock stand-in until interrupted.

On start it prints, on stdout, ``KEY=VALUE`` lines a person can paste into a shell and a program
can parse (lines starting with ``#`` are comments); logs go to stderr::

    AWS_ENDPOINT_URL_BEDROCK_RUNTIME=https://127.0.0.1:8443
    SSL_CERT_FILE=/abs/path/standin-ca.pem
    AWS_ACCESS_KEY_ID=AKIDVOICEGATESTANDIN
    AWS_SECRET_ACCESS_KEY=voicegate-standin-test-secret-key-not-for-aws
    AWS_REGION=us-east-1
    # voicegate stand-in ready (brain=scripted)

The secret is printed only when it is the stand-in's built-in test key: a secret key or session
token taken from the environment is never printed or logged (the user already has it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import signal
import sys
from typing import Any

from voicegate.sonic.models import STREAM_LIMIT_S
from voicegate.standin.factories import BRAINS, BrainUnavailable
from voicegate.standin.scenarios import Scenario

__all__ = ["add_parser", "printable_env", "run"]


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return value


def _scenario(text: str) -> str:
    try:
        Scenario.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
    return text


def _quirks(text: str) -> frozenset[str]:
    from voicegate.standin.quirks import parse_quirks

    try:
        return parse_quirks(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def add_parser(subparsers: Any) -> None:
    """Add the ``standin`` subcommand to an argparse subparsers object."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "standin",
        help="run a local stand-in for Bedrock's Nova Sonic stream (HTTP/2 + TLS, SigV4)",
        description=(
            "Serve Bedrock's InvokeModelWithBidirectionalStream on 127.0.0.1 with a test CA, "
            "so the real AWS SDK (voicegate serve --backend bedrock) can run without AWS. "
            "Signatures are verified against AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY when set, "
            "else against the documented test keys."
        ),
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8443, help="TCP port, 0 picks a free one")
    p.add_argument(
        "--cert-dir", required=True, help="directory for the test CA and server certificate"
    )
    p.add_argument("--brain", choices=BRAINS, default="scripted", help="who answers")
    p.add_argument(
        "--session-limit",
        type=_positive,
        default=STREAM_LIMIT_S,
        metavar="SECONDS",
        help="end every session after this long with ModelTimeoutException (default "
        f"{STREAM_LIMIT_S:g}, Bedrock's 8 minutes)",
    )
    p.add_argument(
        "--scenario",
        type=_scenario,
        default="reply",
        help="scripted brain's scenario when the system prompt names none (default reply)",
    )
    p.add_argument(
        "--idle-timeout",
        type=_positive,
        default=60.0,
        metavar="SECONDS",
        help="end a session that sends no audio (before audio: no event) for this long with "
        "ValidationException (default 60)",
    )
    p.add_argument(
        "--max-sessions", type=_positive_int, default=64, help="concurrent sessions (429 above)"
    )
    p.add_argument(
        "--region",
        default="us-east-1",
        help="the endpoint's region: signatures scoped to another region are refused",
    )
    p.add_argument(
        "--credentials-file",
        metavar="FILE",
        help="JSON list of {access_key_id, secret_access_key, session_token (optional)}: a "
        "request signed with any of them is accepted (rotating credentials); a stream's events "
        "must still be signed with its request's key",
    )
    p.add_argument(
        "--quirks",
        type=_quirks,
        default=frozenset(),
        metavar="LIST",
        help="comma-separated irregular behaviours Bedrock shows (audio-contents, partial-turn, "
        "usage-mid-turn, one-completion, transient-errors, goaway, throttle-opens) or 'all'",
    )
    p.add_argument(
        "--knowledge-dir",
        metavar="KBID=DIR",
        action="append",
        default=[],
        help="serve the Knowledge Bases Retrieve API for knowledge base KBID from the .md/.txt "
        "files of DIR (repeatable), on its own HTTPS/1.1 port (logged at start)",
    )
    p.add_argument("--log-level", default="info", help="log level (stderr)")
    p.set_defaults(func=run)


def _knowledge_dirs(values: list[str]) -> dict[str, str]:
    """``KBID=DIR`` pairs; a malformed one, a bad id or a missing folder is a ValueError."""
    dirs: dict[str, str] = {}
    for value in values:
        kb, sep, folder = value.partition("=")
        if not sep or not re.fullmatch(r"[0-9a-zA-Z]{1,10}", kb):
            raise ValueError(f"{value!r}: expected KBID=DIR with KBID of 1-10 letters/digits")
        if not os.path.isdir(folder):
            raise ValueError(f"{value!r}: {folder!r} is not a folder")
        dirs[kb] = folder
    return dirs


def run(args: argparse.Namespace) -> int:
    from voicegate import logs

    logs.configure("auto", args.log_level)
    if args.credentials_file is not None:
        from voicegate.standin.server import load_credentials_file

        try:
            args.accepted = load_credentials_file(args.credentials_file)
        except ValueError as exc:
            print(f"voicegate standin: --credentials-file: {exc}", file=sys.stderr)
            return 2
    try:
        args.knowledge = _knowledge_dirs(args.knowledge_dir)
    except ValueError as exc:
        print(f"voicegate standin: --knowledge-dir: {exc}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_main(args))
    except BrainUnavailable as exc:
        print(f"voicegate standin: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(
            f"voicegate standin: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr
        )
        return 2


def printable_env(standin: Any) -> list[str]:
    """The ``KEY=VALUE`` lines for clients, without secrets that came from the environment."""
    from voicegate.standin.server import TEST_SECRET_KEY

    lines = []
    hidden = []
    for key, value in standin.client_env().items():
        secret = key in ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
        if secret and value != TEST_SECRET_KEY:
            hidden.append(key)
            continue
        lines.append(f"{key}={value}")
    if hidden:
        lines.append(f"# {' and '.join(hidden)}: the values in your environment (not printed)")
    return lines


async def _main(args: argparse.Namespace) -> int:
    from voicegate.standin.server import StandIn

    standin = StandIn(
        args.brain,
        args.cert_dir,
        host=args.host,
        port=args.port,
        region=args.region,
        session_limit=args.session_limit,
        scenario=args.scenario,
        max_sessions=args.max_sessions,
        idle_timeout=args.idle_timeout,
        accepted=getattr(args, "accepted", ()),
        quirks=args.quirks,
        knowledge=getattr(args, "knowledge", None),
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await standin.start()
    try:
        # Printed only once listening, so a reader of these lines can connect at once.
        for line in printable_env(standin):
            print(line)
        print(f"# voicegate stand-in ready (brain={args.brain})", flush=True)
        await stop.wait()
    finally:
        await standin.stop()
    return 0
