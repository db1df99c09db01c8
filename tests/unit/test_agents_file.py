"""The agents file parser: a good file becomes the spec, and each kind of mistake is listed
(all of them at once, never only the first)."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from voicegate.agents.file import AgentsFileError, load_agents, parse_file

SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()

GOOD = """\
default_agent = "sales"

[agents.sales]
description = "Sales"
system_prompt = "You sell."
voice = "tiffany"
tools = ["order_status", "clock"]

[agents.support]
description = "Order help"
max_call_seconds = 600
endpointing = "LOW"
mcp_servers = ["tickets"]
knowledge = ["handbook"]
webhook_url = "https://hooks.example.com/support"

[tools.order_status]
description = "Look up the status of the caller's order."
parameters = { type = "object", properties = { order_id = { type = "string" } } }
http = { url = "https://orders.internal/voice-tool", timeout_s = 5, secret_file = "tool.secret", \
headers = { "x-team" = "a" } }

[tools.clock]
description = "The time."
python = "voicegate.conversation.tools:get_current_time"

[mcp_servers.tickets]
command = ["python", "tickets_server.py"]

[knowledge.handbook]
path = "kb"
"""


def write(tmp_path: Path, text: str) -> str:
    (tmp_path / "tool.secret").write_text(SECRET + "\n")
    (tmp_path / "kb").mkdir(exist_ok=True)
    path = tmp_path / "agents.toml"
    path.write_text(text)
    return str(path)


def problems_of(tmp_path: Path, text: str) -> list[str]:
    spec, problems = parse_file(write(tmp_path, text))
    return problems


def test_a_good_file_becomes_the_spec(tmp_path: Path) -> None:
    spec = load_agents(write(tmp_path, GOOD))
    assert spec.default_agent == "sales"
    assert set(spec.agents) == {"sales", "support"}
    sales, support = spec.agents["sales"], spec.agents["support"]
    assert sales.voice == "tiffany" and sales.tools == ("order_status", "clock")
    assert support.max_call_seconds == 600 and support.endpointing == "LOW"
    assert support.webhook_url == ("https://hooks.example.com/support",)
    order = spec.tools["order_status"]
    assert order.http is not None and order.http.timeout_s == 5
    assert order.http.secret_file == str(tmp_path / "tool.secret")  # relative to the file
    assert order.http.headers == (("x-team", "a"),)
    assert spec.tools["clock"].python.endswith(":get_current_time")
    assert spec.mcp_servers["tickets"].command == ("python", "tickets_server.py")
    assert spec.mcp_servers["tickets"].cwd == str(tmp_path)
    assert spec.knowledge["handbook"].path == str(tmp_path / "kb")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[agents."Bad Name"]\n', "the name must match [a-z0-9_-]{1,32}"),
        (f"[agents.{'a' * 33}]\n", "the name must match"),
        ('[agents.a]\ntools = ["nope"]\n', "tools names 'nope', which is not a [tools.NAME]"),
        ('[agents.a]\nmcp_servers = ["x"]\n', "mcp_servers names 'x'"),
        ('[agents.a]\nknowledge = ["x"]\n', "knowledge names 'x'"),
        ('[agents.a]\nsytem_prompt = "x"\n', "unknown key 'sytem_prompt'"),
        ('colour = "red"\n[agents.a]\n', "the file: unknown key 'colour'"),
        ('default_agent = "b"\n[agents.a]\n', "default_agent 'b' is not an agent"),
        ("[agents.a]\n[agents.b]\n", "default_agent is missing"),
        ('[agents.a]\nendpointing = "FAST"\n', "endpointing 'FAST' must be HIGH, MEDIUM or LOW"),
        ("[agents.a]\nmax_call_seconds = 0.5\n", "max_call_seconds 0.5 must be between"),
        ('[agents.a]\nwebhook_url = "ftp://x"\n', "is not an http(s) URL"),
        ('[agents.a]\n[tools.t]\ndescription = "d"\n', "give exactly one of http"),
        (
            '[agents.a]\n[tools.t]\ndescription = "d"\npython = "m:f"\n'
            'http = { url = "http://h" }\n',
            "give exactly one of http",
        ),
        ('[agents.a]\n[tools.t]\ndescription = "d"\nhttp = { url = "nope" }\n', "not an http(s)"),
        ('[agents.a]\n[tools.t]\ndescription = "d"\nhttp = { }\n', "url is missing"),
        ('[agents.a]\n[tools.t]\nhttp = { url = "http://h" }\n', "description is missing"),
        (
            '[agents.a]\n[tools.t]\ndescription = "d"\nparameters = { type = "string" }\n'
            'http = { url = "http://h" }\n',
            'parameters must be a JSON schema with type = "object"',
        ),
        (
            '[agents.a]\n[tools.t]\ndescription = "d"\nhttp = { url = "http://h", verb = "PUT" }\n',
            "unknown key 'verb'",
        ),
        (
            '[agents.a]\n[tools.t]\ndescription = "d"\n'
            'http = { url = "http://h", secret_file = "missing.secret" }\n',
            "secret_file",
        ),
        (
            '[agents.a]\n[tools.t]\ndescription = "d"\n'
            'http = { url = "http://h", secret_file = "kb" }\n',
            "cannot be read",
        ),
        (
            '[agents.a]\n[tools.t]\ndescription = "d"\npython = "no_such_module_x:f"\n',
            "module 'no_such_module_x' not found",
        ),
        (
            '[agents.a]\n[tools.t]\ndescription = "d"\n'
            'python = "voicegate.conversation.tools:nope"\n',
            "has no 'nope'",
        ),
        (
            '[agents.a]\n[tools.t]\ndescription = "d"\n'
            'python = "voicegate.conversation.tools:MAX_RESULT_BYTES"\n',
            "is not callable",
        ),
        ('[agents.a]\n[tools.t]\ndescription = "d"\npython = "nocolon"\n', '"module:function"'),
        ('[agents.a]\n[tools.Bad]\ndescription = "d"\npython = "m:f"\n', "[a-z][a-z0-9_]{0,63}"),
        ("[agents.a]\n[mcp_servers.m]\n", "give exactly one of command"),
        (
            '[agents.a]\n[mcp_servers.m]\ncommand = ["x"]\nurl = "http://h/mcp"\n',
            "give exactly one of command",
        ),
        ("[agents.a]\n[mcp_servers.m]\ncommand = []\n", "non-empty list of strings"),
        ('[agents.a]\n[mcp_servers.m]\nurl = "tcp://h"\n', "not an http(s) URL"),
        ("[agents.a]\n[knowledge.k]\n", "give exactly one of path"),
        (
            '[agents.a]\n[knowledge.k]\npath = "kb"\nknowledge_base_id = "ABCDEFGHIJ"\n',
            "give exactly one of path",
        ),
        ('[agents.a]\n[knowledge.k]\npath = "nowhere"\n', "is not a folder"),
        ('[agents.a]\n[knowledge.k]\nknowledge_base_id = "short"\n', "must be 10 letters"),
        ("", "declares no [agents.NAME]"),
    ],
)
def test_each_problem_is_reported(tmp_path: Path, text: str, expected: str) -> None:
    problems = problems_of(tmp_path, text)
    assert any(expected in problem for problem in problems), problems
    assert all(problem.startswith("agents file") for problem in problems)


def test_every_problem_is_listed_at_once(tmp_path: Path) -> None:
    text = (
        'default_agent = "ghost"\n'
        '[agents.a]\ntools = ["nope"]\nvoice = "not a voice"\n'
        '[tools.t]\ndescription = "d"\n'
        "[mcp_servers.m]\n"
    )
    with pytest.raises(AgentsFileError) as caught:
        load_agents(write(tmp_path, text))
    assert len(caught.value.problems) == 5, caught.value.problems


def test_a_file_that_is_not_toml_or_missing(tmp_path: Path) -> None:
    assert "is not valid TOML" in problems_of(tmp_path, "[agents\n")[0]
    spec, problems = parse_file(str(tmp_path / "absent.toml"))
    assert spec is None and "cannot be read" in problems[0]


def test_python_tools_next_to_the_file_import(tmp_path: Path) -> None:
    (tmp_path / "team_tools_here.py").write_text(
        "def lookup(order_id: str) -> dict:\n    return {}\n"
    )
    text = (
        '[agents.a]\ntools = ["t"]\n[tools.t]\ndescription = "d"\n'
        'python = "team_tools_here:lookup"\n'
    )
    assert problems_of(tmp_path, text) == []


def test_a_tool_may_say_when_and_what_the_caller_hears_while_it_runs(tmp_path: Path) -> None:
    text = GOOD.replace(
        'python = "voicegate.conversation.tools:get_current_time"\n',
        'python = "voicegate.conversation.tools:get_current_time"\n'
        'filler_after_s = 0.5\nfiller = "  Hold on,   checking the clock. "\n',
    )
    text = text.replace("[tools.order_status]\n", "[tools.order_status]\nfiller_after_s = 0\n")
    spec = load_agents(write(tmp_path, text))
    clock, order = spec.tools["clock"], spec.tools["order_status"]
    assert (clock.filler_after_s, clock.filler) == (0.5, "Hold on, checking the clock.")
    assert order.filler_after_s == 0  # never
    untouched = load_agents(write(tmp_path, GOOD)).tools["clock"]
    assert (untouched.filler_after_s, untouched.filler) == (2.0, "One moment, I'm looking that up.")


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("filler_after_s = -1\n", "filler_after_s -1 must be between 0 and 300"),
        ('filler_after_s = "soon"\n', "filler_after_s must be a number"),
        ('filler = "   "\n', "filler must not be blank"),
        ("filler = 3\n", "filler must be a string"),
        (f'filler = "{"x" * 201}"\n', "filler is longer than 200 bytes"),
    ],
)
def test_bad_filler_settings_are_reported(tmp_path: Path, extra: str, expected: str) -> None:
    text = '[agents.a]\n[tools.t]\ndescription = "d"\nhttp = { url = "http://h" }\n' + extra
    assert any(expected in problem for problem in problems_of(tmp_path, text))
