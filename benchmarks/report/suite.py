"""The suite's report (``python -m benchmarks.run``): the run's header, the latency, loss and
turns tables, the longer sections, and the blocks it writes into benchmarks/README.md, README.md
and docs/deploy.md (the only writer of those three blocks)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.harness.provenance import ROOT, read
from benchmarks.report.blocks import BENCH_README, DEPLOY, README, replace_block
from benchmarks.report.cells import header, rows
from benchmarks.report.sections import capacity_lines, long_lines, sizing, soak_lines, summary

BUSY_LOAD = 1.5
"""A 1-minute load average above this (2 CPUs) before or during a run means a shared machine."""


def meta_lines(results: dict[str, Any], name: str, made: list[str]) -> list[str]:
    meta = results["meta"]
    run = read(results)
    s = meta["settings"]
    v = run.versions
    dirty = f"dirty ({len(run.dirty_files)} files)" if run.dirty else "clean"
    lines = [
        f"Run: {meta['mode']}, {run.started_utc} to {run.finished_utc or '?'}, commit "
        f"`{run.commit[:10]}` ({dirty}), {run.cpu_model}, {run.cpus} CPUs, "
        f"{run.platform}. Load average before {run.load_before}, after "
        f"{run.load_after}. Raw: `results/{name}`"
        + (f"; plots: {', '.join(f'`results/{m}`' for m in made)}" if made else "")
        + ".",
        "",
        f"Every configuration: {s['runs']} fresh runs of {s['calls']} calls (capacity: N calls); "
        "cells are the median across runs with the min–max in brackets. voicegate side: "
        f"aiortc {v.get('aiortc')}, aws-sdk-bedrock-runtime {v.get('aws-sdk-bedrock-runtime')}, "
        f"awscrt {v.get('awscrt')}, Python {v.get('python')}.",
    ]
    if meta.get("parts"):
        changed = meta.get("parts_changed_files") or []
        code = (
            "their commits differ only in result files"
            if not changed
            else "their commits differ, besides result files, in "
            + ", ".join(f"`{f}`" for f in changed)
        )
        lines += [
            "",
            f"Run in {len(meta['parts'])} parts, one after the other ({code}): "
            + "; ".join(
                f"{part_scenarios(p)} at `{p['git_commit'][:10]}`"
                f"{' (dirty)' if p['git_dirty'] else ''}, {p['started_utc']} to "
                f"{p['finished_utc']}, load {p['load_avg_before'][0]:g} before"
                for p in meta["parts"]
            )
            + ".",
        ]
    if "pipecat_venv" in meta and meta["pipecat_venv"]:
        pv = meta["pipecat_venv"]
        lines += [
            "",
            f"Pipecat: pipecat-ai {pv.get('pipecat-ai')} (aiortc {pv.get('aiortc')}, "
            f"aws-sdk-bedrock-runtime {pv.get('aws-sdk-bedrock-runtime')}), settings "
            f"{meta.get('pipecat_settings')}.",
        ]
    if "pipecat_unavailable" in meta:
        lines += ["", f"Pipecat not run: {meta['pipecat_unavailable']}"]
    shared = busy(results)
    if shared:
        lines += ["", f"**The machine was shared during this run** ({shared}): other processes "
                  "competed for the 2 CPUs, so absolute latencies and CPU figures are upper "
                  "bounds and capacities lower bounds; systems were measured in the same "
                  "conditions, one after another."]  # fmt: skip
    return lines


def part_scenarios(part: dict[str, Any]) -> str:
    """What a part of a combined run gave the tables, and what of it a later part replaced."""
    replaced = part.get("replaced") or []
    kept = [s for s in part["scenarios"] if s not in replaced]
    text = ", ".join(kept) if kept else "nothing kept"
    if replaced:
        text += f" ({', '.join(replaced)} measured too, replaced by a later part)"
    return text


def busy(results: dict[str, Any]) -> str:
    """Whether other work shared the machine: the load before the run, and after each 3-call
    configuration. The capacity ladder, long calls and soak are left out: they load both CPUs
    by design (40 calls make a 1-minute load of 3-5 on their own), so their load says nothing
    about anyone else."""
    before = (read(results).load_before or [0.0])[0]
    loads = [before]
    for section in ("latency", "loss", "turns"):
        for conf in results.get(section, {}).values():
            la = conf["agg"].get("load_1min")
            if la:
                loads.append(la["max"])
    worst = max(loads)
    if before > BUSY_LOAD or worst > 2 * BUSY_LOAD:
        return f"1-minute load average {before:g} before, up to {worst:g}"
    return ""


def report(results: dict[str, Any], name: str, made: list[str]) -> str:
    """The results block of benchmarks/README.md."""
    lines = meta_lines(results, name, made)
    lat_cols = ["RTT p50 ms", "p95", "p99", "in p50", "out p50", "fps min", "lost", "connect ms"]
    lat_keys = ["rtt_p50", "rtt_p95", "rtt_p99", "in_p50", "out_p50", "fps_min",
                "markers_lost", "connect_p50"]  # fmt: skip
    if results.get("latency"):
        lines += ["", "**Marker round trip** (echo brain, zero think time):", ""]
        lines += header("system", lat_cols) + rows(results["latency"], lat_keys)
    if results.get("loss"):
        lines += ["", "**Under loss** (the caller's own RTP, both ways, seeded):", ""]
        lines += header("system", lat_cols[:3] + ["fps min", "lost"])
        lines += rows(results["loss"], ["rtt_p50", "rtt_p95", "rtt_p99", "fps_min", "markers_lost"])
    if results.get("turns"):
        lines += [
            "",
            "**Turns** (speech end at the caller -> first answer audio at the caller; turns "
            "brain: 300 ms end-of-turn silence + 200 ms think = 500 ms; voicegate and Pipecat "
            "ask the stand-in's turns brain over the model hop, the stock gateways, which have "
            "no model hop, run the same brain in their own process, so their figure is aiortc's "
            "media path both ways and the pacing, nothing else):",
            "",
        ]
        cols = ["speech end -> answer p50 ms", "p95", "minus think p50", "p95", "unanswered"]
        keys = ["turn_p50", "turn_p95", "gateway_p50", "gateway_p95", "turns_unanswered"]
        lines += header("system", cols) + rows(results["turns"], keys)
    lines += capacity_lines(results)
    lines += long_lines(results)
    lines += soak_lines(results)
    for scenario, error in results.get("errors", {}).items():
        lines += ["", f"**{scenario}: not measured**, the scenario failed: `{error}`"]
    return "\n".join(lines)


def blocks(
    results: dict[str, Any], text: str, name: str, publish: bool
) -> list[tuple[Path, str, str]]:
    """The suite's blocks as (file, block name, text). A run on a shared machine (see
    BUSY_LOAD) is not published there unless ``publish``: the blocks then say so, and where the
    raw figures are."""
    shared = busy(results)
    short = summary(results)
    deploy = sizing(results)
    if shared and not publish:
        run = read(results)
        text = short = deploy = (
            f"Not published: the last run ({results['meta']['mode']}, {run.started_utc}, commit "
            f"`{run.commit[:10]}`) was on a shared machine ({shared}), where other "
            "processes' load moves latencies by hundreds of ms between runs. Its raw figures are "
            f"in `benchmarks/results/{name}`; run `make bench` on a quiet machine to publish "
            "(`python -m benchmarks.run --publish` publishes anyway, marked as shared)."
        )
    out = [(BENCH_README, "results", text), (README, "bench-summary", short)]
    if results.get("capacity"):  # the sizing guide quotes the capacity ladder, nothing else
        out.append((DEPLOY, "sizing", deploy))
    return out


def write_readmes(
    results: dict[str, Any], text: str, name: str, publish: bool, root: Path = ROOT
) -> None:
    """Rewrite the suite's blocks (see :func:`blocks`)."""
    for path, block, body in blocks(results, text, name, publish):
        replace_block(path, block, body, root=root)


__all__ = [
    "BUSY_LOAD",
    "blocks",
    "busy",
    "meta_lines",
    "part_scenarios",
    "report",
    "write_readmes",
]
