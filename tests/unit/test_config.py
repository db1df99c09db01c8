"""Configuration: flags over VOICEGATE_* env over defaults; every problem reported at once."""

from __future__ import annotations

import argparse

import pytest

from voicegate import config
from voicegate.cli import main
from voicegate.config import ConfigError, resolve


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


V1 = "amazon.nova-sonic-v1:0"


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"VOICEGATE_VOICE": "greta"}, "not a documented voice of Nova 2 Sonic"),
        (
            {"VOICEGATE_VOICE": "kiara", "VOICEGATE_MODEL_ID": "amazon.nova-sonic-v1:0"},
            "Nova Sonic v1",
        ),
    ],
)
def test_a_voice_the_model_does_not_have_is_refused_at_start(
    env: dict[str, str], fragment: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        resolve(None, env=env)
    assert any(fragment in p for p in caught.value.problems)


def test_documented_voices_and_unknown_models_pass() -> None:
    assert resolve(None, env={"VOICEGATE_VOICE": "kiara"}).voice == "kiara"
    assert resolve(
        None, env={"VOICEGATE_VOICE": "greta", "VOICEGATE_MODEL_ID": "amazon.nova-sonic-v1:0"}
    )
    # A model released later: its voices cannot be judged here, so none is refused.
    assert resolve(
        None, env={"VOICEGATE_VOICE": "zed", "VOICEGATE_MODEL_ID": "amazon.nova-3-sonic-v1:0"}
    )
