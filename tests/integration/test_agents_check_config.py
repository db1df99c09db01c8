"""``voicegate serve --check-config --agents FILE``: the real CLI lists every problem of the
agents file (exit 2) or the agents of a good one (exit 0); ``VOICEGATE_AGENTS`` works alike."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def check(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(ROOT / "src"),
        "HOME": os.environ.get("HOME", "/tmp"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    return subprocess.run(
        [sys.executable, "-m", "voicegate", "serve", "--check-config", "--backend", "echo", *args],
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_every_problem_of_the_agents_file_is_listed(tmp_path: Path) -> None:
    bad = tmp_path / "agents.toml"
    bad.write_text(
        'default_agent = "ghost"\n'
        '[agents.support]\ntools = ["missing"]\nvoice = "nobody"\nwebhook_url = "https://h/x"\n'
        '[tools.order_status]\ndescription = "d"\n'
        '[tools.lookup]\ndescription = "d"\npython = "no_such_team_module:lookup"\n'
        "[mcp_servers.tickets]\n"
        '[knowledge.handbook]\npath = "nowhere"\n'
    )
    result = check("--agents", str(bad))
    assert result.returncode == 2, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("  - agents file")]
    expected = [
        "default_agent 'ghost' is not an agent",
        "tools names 'missing'",
        "voice 'nobody' is not a documented voice",
        "[tools.order_status]: give exactly one of http",
        "module 'no_such_team_module' not found",
        "[mcp_servers.tickets]: give exactly one of command",
        "[knowledge.handbook]: path",
        "webhook_url of support needs --webhook-secret-file",
    ]
    for text in expected:
        assert any(text in line for line in lines), (text, lines)
    assert len(lines) == len(expected), lines
    missing = check(env={"VOICEGATE_AGENTS": str(tmp_path / "absent.toml")})
    assert missing.returncode == 2 and "cannot be read" in missing.stderr


def test_a_good_file_is_summarised(tmp_path: Path) -> None:
    good = tmp_path / "agents.toml"
    good.write_text(
        'default_agent = "support"\n[agents.support]\ndescription = "Help"\n[agents.sales]\n'
    )
    result = check(env={"VOICEGATE_AGENTS": str(good)})
    assert result.returncode == 0, result.stderr
    assert f"agents: support, sales from {good} (default support)" in result.stdout
    plain = check()
    assert "agents: one, default (from the flags)" in plain.stdout
