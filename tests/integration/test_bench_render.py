"""The benchmark blocks in the docs are what the committed results render to, byte for byte.

Behaviours covered:
- every block the benchmarks write (the suite's results, README summary and deploy sizing, long
  calls, mouth to ear, offline turn, cluster, Bedrock CPU), rendered again from
  benchmarks/results alone (``python -m benchmarks.report``), leaves README.md,
  benchmarks/README.md and docs/deploy.md exactly as committed: a table edited by hand, or a
  change to the report code that changes its output, fails here;
- results files written before the one provenance schema (other key names) still read, and a
  header written now reads back the same way;
- combining the committed parts of the full run again (``--render --combine``) writes the
  committed results-full.json byte for byte;
- failover figures written the new way (percentiles in ms) are quoted like the committed ones.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from benchmarks.harness import provenance
from benchmarks.harness.results import RESULTS, combine, load, write
from benchmarks.report import cluster
from benchmarks.report.blocks import BENCH_README, DEPLOY, README
from benchmarks.report.render import render_all

from voicegate.testing.signals import percentiles

ROOT = Path(__file__).resolve().parents[2]
BLOCKS = {
    "results",
    "bench-summary",
    "sizing",
    "long-calls",
    "long-calls-turns",
    "mouth-to-ear",
    "offline-turn",
    "cluster-failover",
    "bedrock-cpu",
    "chunk-sizes",
    "paired-cpu",
}


def test_every_block_renders_from_the_committed_results(tmp_path: Path) -> None:
    for doc in (README, BENCH_README, DEPLOY):
        (tmp_path / doc).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ROOT / doc, tmp_path / doc)
    written = render_all(root=tmp_path)
    assert {name for _, name, _ in written} == BLOCKS
    for doc in (README, BENCH_README, DEPLOY):
        assert (tmp_path / doc).read_bytes() == (ROOT / doc).read_bytes(), doc


def test_headers_of_every_layout_read_as_one_provenance() -> None:
    seen = {
        name: provenance.read(load(name))
        for name in (
            "results-full.json",
            "long-calls.json",
            "bedrock_cpu.json",
            "mouth-to-ear.json",
            "offline-turn.json",
            "cluster-failover.json",
        )
    }
    for name, run in seen.items():
        assert len(run.commit) == 40 and run.load_before and run.load_after, name
    assert seen["bedrock_cpu.json"].hardware == "x86_64 2 CPUs"
    assert seen["bedrock_cpu.json"].versions == {"python": "3.12.1"}
    assert seen["mouth-to-ear.json"].started_utc == "2026-11-30T22:39:17Z"
    assert seen["offline-turn.json"].started_utc == "2026-11-30T23:12:06Z"
    assert seen["long-calls.json"].dirty and seen["long-calls.json"].dirty_files
    part = provenance.read(load("cluster-failover.json")["workers"])
    assert (part.commit[:9], part.dirty, part.load_before) == (
        "621345adf",
        True,
        [2.36, 3.41, 3.65],
    )
    assert RESULTS.is_dir()


def test_a_header_written_now_reads_back() -> None:
    meta = provenance.finish(provenance.start())
    run = provenance.read({"meta": meta})
    assert run.commit == meta["git_commit"] and run.dirty == meta["git_dirty"]
    assert run.started_utc and run.finished_utc and run.started_utc <= run.finished_utc
    assert run.cpus and run.machine and run.versions["python"]
    assert run.load_before and run.load_after


def test_combining_the_committed_parts_gives_the_committed_full_run(tmp_path: Path) -> None:
    full = load("results-full.json")
    parts = {p["file"]: load(p["file"]) for p in full["meta"]["parts"]}
    write(tmp_path / "results-full.json", combine(parts))
    assert (tmp_path / "results-full.json").read_bytes() == (
        RESULTS / "results-full.json"
    ).read_bytes()


def test_failover_figures_written_in_ms_read_as_seconds() -> None:
    """New cluster results keep the failover tries' percentiles in ms (FIGURE_ms); the block
    quotes seconds from them as it does from the committed FIGURE_s."""
    legacy = load("cluster-failover.json")["failover"]["result"]
    figures = {f"{figure}_s" for figure in cluster.FAILOVER_FIGURES}
    new = {k: v for k, v in legacy.items() if k not in figures}
    for figure in cluster.FAILOVER_FIGURES:
        new[f"{figure}_ms"] = percentiles([1000 * r[f"{figure}_s"] for r in legacy["tries"]])
    assert cluster.seconds(legacy, "kill_to_bot_audio") == ("3.15", "4.223")
    assert cluster.seconds(new, "kill_to_bot_audio") == ("3.15", "4.223")
    assert cluster.seconds(legacy, "turn_to_bot_audio") == ("2.415", "2.42")
    assert cluster.seconds(new, "turn_to_bot_audio") == ("2.4145", "2.42")  # 0.1 ms, not 1 ms
    assert "kill -9 -> first bot audio p50 3.15 s, max 4.223 s" in cluster.block({
        "failover": {"result": new, "meta": provenance.finish(provenance.start())}
    })  # fmt: skip
