"""Configuration: flags over VOICEGATE_* env over defaults; every problem reported at once."""

from __future__ import annotations

import argparse

import pytest

from voicegate import config
from voicegate.cli import main


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    config.add_arguments(parser)
    return parser.parse_args(argv)


def test_defaults() -> None:
    c = config.resolve(_args(), env={})
    assert (c.host, c.port, c.backend) == ("127.0.0.1", 8080, "auto")
    assert c.max_body_bytes == 65536


def test_env_and_flag_precedence() -> None:
    env = {
        "VOICEGATE_PORT": "9000",
        "VOICEGATE_BACKEND": "echo",
        "VOICEGATE_ICE_ADDRESSES": "127.0.0.1, ::1",
    }
    c = config.resolve(_args(), env=env)
    assert c.port == 9000 and c.backend == "echo" and c.ice_addresses == ("127.0.0.1", "::1")
    c = config.resolve(_args("--port", "9100"), env=env)
    assert c.port == 9100


def test_all_problems_listed() -> None:
    env = {
        "VOICEGATE_PORT": "http",
        "VOICEGATE_MAX_SESSIONS": "0",
        "VOICEGATE_BACKEND": "gpt",
        "VOICEGATE_ENDPOINTING": "FAST",
        "VOICEGATE_ICE_ADDRESSES": "eth0",
    }
    with pytest.raises(config.ConfigError) as err:
        config.resolve(_args(), env=env)
    text = str(err.value)
    for needle in ("VOICEGATE_PORT", "max_sessions", "VOICEGATE_BACKEND", "endpointing", "eth0"):
        assert needle in text
    assert len(err.value.problems) == 5


def test_serve_refuses_bad_config_with_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--port", "70000"]) == 2
    assert "port 70000" in capsys.readouterr().err


def test_help_lists_env_vars(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    out = capsys.readouterr().out
    assert "VOICEGATE_BACKEND" in out and "--max-sessions" in out
