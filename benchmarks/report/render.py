"""Every block the benchmarks write, rendered again from the results files alone.

    python -m benchmarks.report        # rewrite every block from benchmarks/results

Nothing is measured: each block is rendered from the results file its benchmark last wrote
(the suite's: the newer of results-short.json and results-full.json; offline turn: the newest
offline-turn*.json, beside the file it was compared with), so the docs can always be checked
against the committed results (tests/test_bench_render.py does).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.harness.provenance import ROOT, read
from benchmarks.harness.results import RESULTS, load
from benchmarks.report import (
    bedrock_cpu,
    chunk_sizes,
    cluster,
    long_calls,
    mouth_to_ear,
    offline_turn,
    paired_cpu,
    suite,
)
from benchmarks.report.blocks import BENCH_README, read_block, replace_block

Block = tuple[Path, str, str]
"""A block: its file (relative to the repository's root), its name and its text."""
LEGACY_COMPARED = {"offline-turn-repeat.json": "offline-turn.json"}
"""Offline-turn results written before they recorded the file they were shown beside."""


def _newest(paths: list[Path]) -> Path:
    return max(paths, key=lambda p: read(load(p)).started_utc or "")


def suite_blocks(results_dir: Path = RESULTS) -> list[Block]:
    """The suite's blocks, from the newer of the short and full runs (the last to write them)."""
    found = [results_dir / f"results-{m}.json" for m in ("short", "full")]
    path = _newest([p for p in found if p.exists()])
    results = load(path)
    made = [m for m in ("capacity.png",) if (results_dir / m).exists()]
    text = suite.report(results, path.name, made)
    return suite.blocks(results, text, path.name, publish=False)


def offline_turn_block(results_dir: Path = RESULTS) -> Block:
    path = _newest(sorted(results_dir.glob("offline-turn*.json")))
    result = load(path)
    compared = result.get("compare", LEGACY_COMPARED.get(path.name))
    compare = load(results_dir / compared) if compared else None
    text = offline_turn.block(result, compare, f"results/{path.name}")
    return BENCH_README, offline_turn.NAME, text


def long_call_blocks(results_dir: Path = RESULTS, root: Path = ROOT) -> list[Block]:
    """One block per long-calls results file that has its block in benchmarks/README.md."""
    out = []
    for path in sorted(results_dir.glob("long-calls*.json")):
        name = path.stem
        if read_block(BENCH_README, name, root) is not None:
            out.append((BENCH_README, name, long_calls.block(load(path), name)))
    return out


def all_blocks(results_dir: Path = RESULTS, root: Path = ROOT) -> list[Block]:
    docs: dict[str, dict[str, Any]] = {
        name: load(results_dir / f"{name}.json")
        for name in ("mouth-to-ear", "cluster-failover", "bedrock_cpu", "chunk-sizes", "paired-cpu")
    }
    return [
        *suite_blocks(results_dir),
        *long_call_blocks(results_dir, root),
        (BENCH_README, mouth_to_ear.NAME, mouth_to_ear.table(docs["mouth-to-ear"])),
        offline_turn_block(results_dir),
        (BENCH_README, cluster.NAME, cluster.block(docs["cluster-failover"])),
        (BENCH_README, bedrock_cpu.NAME, bedrock_cpu.table(docs["bedrock_cpu"])),
        (BENCH_README, chunk_sizes.NAME, chunk_sizes.table(docs["chunk-sizes"])),
        (BENCH_README, paired_cpu.NAME, paired_cpu.table(docs["paired-cpu"])),
    ]


def render_all(root: Path = ROOT, results_dir: Path = RESULTS) -> list[Block]:
    """Rewrite every block under ``root`` from ``results_dir``; the blocks written."""
    blocks = all_blocks(results_dir, root)
    for path, name, text in blocks:
        replace_block(path, name, text, root=root)
    return blocks


__all__ = [
    "Block",
    "all_blocks",
    "long_call_blocks",
    "offline_turn_block",
    "render_all",
    "suite_blocks",
]
