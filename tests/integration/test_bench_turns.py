"""The turns benchmark for every system, and combining a re-measured section into a full run.

Behaviours covered:
- the stock benchmark gateway with ``--brain turns`` (started as the benchmark starts it) answers
  every turn once, never sooner than the stand-in's 500 ms, with the stand-in's own rules;
- ``benchmarks.run --render --combine`` takes a scenario measured by several parts from the
  newest one, whatever order the files are named in, keeps every part (commit, times) on record
  with what was replaced, drops an older part's failure that a newer part measured, and refuses
  a newer part's failure of what an older part measured.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from pathlib import Path
from typing import Any

import pytest
from benchmarks.harness.results import combine
from benchmarks.report.suite import report
from benchmarks.systems.gateways import gateway

from voicegate.standin.scripted_turns import TurnsFactory
from voicegate.testing.loadtest import LoadOptions, run

ROOT = Path(__file__).resolve().parents[2]


async def test_stock_gateway_answers_turns_with_the_stand_ins_rules(tmp_path: Path) -> None:
    think_ms = TurnsFactory().think_ms  # what the stand-in's turns brain would take
    with contextlib.ExitStack() as stack:
        url, _ = await asyncio.to_thread(
            stack.enter_context, gateway("stock", {}, tmp_path, ["--brain", "turns"])
        )
        opts = LoadOptions(
            url, calls=1, duration=6.5, warmup=0.5, ramp=20.0, workload="turns", think_ms=think_ms
        )
        try:
            doc = await run(opts)
        finally:
            await asyncio.to_thread(stack.close)
    s = doc["summary"]
    assert (s["calls_ok"], s["calls_failed"]) == (1, 0), s["failures"]
    assert s["turns"] >= 1 and s["turns_unanswered"] == 0
    turn_ms = doc["calls"][0]["turn_ms"]
    assert len(turn_ms) == s["turns"]
    # Answered by the brain's rules, not echoed: never before end-of-turn silence + think.
    assert min(turn_ms) >= think_ms


def _part(started: str, commit: str, **sections: Any) -> dict[str, Any]:
    meta = {
        "mode": "full",
        "started_utc": started,
        "finished_utc": started.replace("T1", "T2"),
        "git_commit": commit,
        "git_dirty": False,
        "git_dirty_files": [],
        "load_avg_before": [0.2, 0.2, 0.2],
        "load_avg_after": [0.5, 0.4, 0.3],
        "settings": {"runs": 3, "calls": 3},
        "cpu_model": "test CPU",
        "cpus": 2,
        "platform": "test",
        "versions": {},
    }
    return {"meta": meta, **sections}


def _turns(gateway_p50: float) -> dict[str, Any]:
    agg = {"runs_ok": 3, "gateway_p50": {"median": gateway_p50, "min": 1.0, "max": 2.0}}
    return {"voicegate": {"runs": [], "agg": agg}}


def test_combine_takes_a_re_measured_section_from_the_newest_part() -> None:
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    old = _part(
        "2026-01-01T10:00:00Z",
        head,
        latency={"voicegate": {"runs": [], "agg": {"runs_ok": 3}}},
        turns=_turns(31.0),
        errors={"turns": "an old failure, re-measured since"},
    )
    new = _part("2026-01-01T12:00:00Z", head, turns=_turns(29.0))
    for parts in ({"old.json": old, "new.json": new}, {"new.json": new, "old.json": old}):
        out = combine(parts)
        assert out["turns"] == new["turns"] and out["latency"] == old["latency"]
        assert "errors" not in out
        first, second = out["meta"]["parts"]
        assert (first["file"], first["scenarios"], first["replaced"]) == (
            "old.json",
            ["latency", "turns"],
            ["turns"],
        )
        assert (second["file"], second["scenarios"], second["replaced"]) == (
            "new.json",
            ["turns"],
            [],
        )
        assert out["meta"]["started_utc"] == old["meta"]["started_utc"]
        assert out["meta"]["finished_utc"] == new["meta"]["finished_utc"]
        text = report(out, "results-full.json", [])
        assert "latency (turns measured too, replaced by a later part) at" in text
        assert "; turns at" in text


def test_combine_refuses_a_newer_failure_of_what_an_older_part_measured() -> None:
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    old = _part("2026-01-01T10:00:00Z", head, turns=_turns(31.0))
    new = _part("2026-01-01T12:00:00Z", head, errors={"turns": "RuntimeError: boom"})
    with pytest.raises(SystemExit, match="new.json failed turns"):
        combine({"old.json": old, "new.json": new})
