"""voicegate's benchmark: latency, loss, turns, capacity (and, in full, long calls and a soak),
side by side with peers, every configuration measured by ``voicegate loadtest``.

    python -m benchmarks.run --short     # `make bench`, about 20 minutes
    python -m benchmarks.run --full      # `make bench-full`, about 90 minutes

Every configuration is RUNS fresh runs (a new stand-in and a new gateway each) of at least 3
calls; tables show the median across runs with the min-max beside it. Gateways (procs.py): the
gateway pinned to CPU 0, the load client and the stand-in on CPU 1.

- ``voicegate``: ``voicegate serve --backend bedrock`` (the real BedrockBackend: AWS SDK, SigV4,
  HTTP/2 + TLS to the stand-in);
- ``patched`` / ``stock``: ``stock_gateway.py``, a minimal echo gateway on aiortc 1.16 with no
  model hop, with and without voicegate's aiortc patches; on the turns workload it runs the
  stand-in's turns rules in its own process (``--brain turns``), since it has no model to ask;
- ``pipecat``: Pipecat's SmallWebRTC transport + AWS Nova Sonic service on the same stand-in
  (``pipecat_bot.py``, its own virtualenv .bench/pipecat, installed from PyPI).

Every system climbs the same ladder of N, with the same rule: it stops at the first step where
most runs no longer keep real time (a failed call, or a call receiving under 49.5 frames/s).
Capacity is the largest N up to which every step met the budget in most of its runs: no failed
call, marker RTT p95 <= 80 ms, >= 49.5 frames/s received by every call, no lost marker. CPU and
memory per call are the slope of a straight line through every run's (N, figure), i.e. the
growth per added call, not one sample divided by N.

Results: benchmarks/results/results-<mode>.json (with git commit, dirty flag, package versions,
CPU model, load average before and after each run), PNG plots, and the tables in
benchmarks/README.md and the summary in README.md, written only by this script (tables.py).
"""

from __future__ import annotations

import argparse
import functools
import json
import subprocess
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks import procs, tables
from benchmarks.procs import KINDS, STOCK_KINDS

RESULTS = procs.ROOT / "benchmarks" / "results"
RUNS = 3
CALLS = 3
BUDGET = {"rtt_p95_ms": 80.0, "fps_min": 49.5, "markers_lost": 0, "calls_failed": 0}


@dataclass
class Mode:
    name: str
    latency_s: float
    losses: tuple[float, ...]
    peer_losses: tuple[float, ...]
    turns_s: float
    capacity_s: float
    steps: tuple[int, ...]
    long_s: float
    soak_s: float


SHORT = Mode("short", 8, (0.05,), (), 13, 6, (3, 6, 12), 0, 0)
FULL = Mode(
    "full", 20, (0.01, 0.05, 0.10), (0.05,), 25, 12, (3, 6, 10, 15, 20, 30, 40, 60), 45, 600
)


def one_run(
    kind: str,
    calls: int,
    seconds: float,
    brain: str = "echo",
    workload: str = "markers",
    **impair: float,
) -> dict[str, Any]:
    """A fresh stand-in and gateway, one loadtest; the run's summary, gateway CPU/RSS over the
    measured window, one-way split (markers), load average after.

    The stock gateways have no model hop: on the turns workload they answer with the stand-in's
    turns rules run in their own process, at the same defaults as the stand-in's turns brain (one
    owner: voicegate.standin.scripted_turns), so the think time subtracted is the same."""
    extra = ["--brain", "turns"] if kind in STOCK_KINDS and brain == "turns" else None
    with tempfile.TemporaryDirectory(prefix=f"vgbench-{kind}-") as name:
        tmp = Path(name)
        with (
            procs.standin(tmp, brain) as (info, marks_file),
            procs.gateway(kind, info, tmp, extra) as (url, sampler),
        ):
            think = info.get("think_ms") if workload == "turns" else None
            ramp = 20 if calls <= 20 else 10
            doc = procs.loadtest(
                url, tmp / "load.json", calls, seconds, workload=workload, think_ms=think,
                warmup=1.5, ramp=ramp, **impair,
            )  # fmt: skip
            t0, t1 = doc["meta"]["window_monotonic"]
            gateway = sampler.window(t0, t1)
        marks = json.loads(marks_file.read_text()) if marks_file.exists() else []
        run: dict[str, Any] = {
            "summary": doc["summary"],
            "gateway": gateway,
            "one_way": tables.one_way(doc, marks) if workload == "markers" else {},
            "load_avg_after": procs.load_avg(),
        }
        if doc["summary"]["calls_ok"] == 0:
            run["gateway_log_tail"] = (tmp / f"{kind}.log").read_text()[-1500:]
        return run


def configuration(label: str, make: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """RUNS runs of one configuration (a run that crashes is recorded, never fatal)."""
    runs = []
    for i in range(RUNS):
        print(f"  {label}: run {i + 1}/{RUNS} ...", flush=True)
        try:
            runs.append(make())
        except Exception as exc:
            runs.append({"error": f"{type(exc).__name__}: {exc}"})
    return {"runs": runs, "agg": tables.aggregate(runs)}


def scenario_latency(mode: Mode, kinds: list[str]) -> dict[str, Any]:
    return {
        kind: configuration(
            f"latency {kind}", functools.partial(one_run, kind, CALLS, mode.latency_s)
        )
        for kind in kinds
    }


def scenario_loss(mode: Mode, kinds: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind in kinds:
        for loss in mode.losses if kind == "voicegate" else mode.peer_losses:
            label = f"{kind} loss {loss:.0%} jitter 10ms"
            out[label] = configuration(
                f"loss {label}",
                functools.partial(
                    one_run, kind, CALLS, mode.latency_s, loss=loss, jitter_ms=10.0, seed=7
                ),
            )
    return out


def scenario_turns(mode: Mode, kinds: list[str]) -> dict[str, Any]:
    """Every system, the same runs x calls: voicegate and Pipecat through the stand-in's turns
    brain, the stock gateways with the same rules in process (no model hop; see one_run)."""
    return {
        kind: configuration(
            f"turns {kind}",
            functools.partial(one_run, kind, CALLS, mode.turns_s, brain="turns", workload="turns"),
        )
        for kind in kinds
    }


def real_time(run: dict[str, Any]) -> bool:
    s = run.get("summary")
    return bool(s) and s["calls_failed"] == 0 and (s["fps_min"] or 0) >= BUDGET["fps_min"]


def passes(run: dict[str, Any]) -> bool:
    s = run.get("summary")
    if not s:
        return False
    p95 = s["rtt_ms"]["p95"]
    return (
        s["calls_failed"] <= BUDGET["calls_failed"]
        and p95 is not None
        and p95 <= BUDGET["rtt_p95_ms"]
        and (s["fps_min"] or 0) >= BUDGET["fps_min"]
        and s.get("markers_lost", 0) <= BUDGET["markers_lost"]
    )


def scenario_capacity(mode: Mode, kinds: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind in kinds:
        steps: dict[str, Any] = {}
        for n in mode.steps:
            result = configuration(
                f"capacity {kind} N={n}", functools.partial(one_run, kind, n, mode.capacity_s)
            )
            result["passed_runs"] = sum(passes(r) for r in result["runs"])
            result["passes"] = result["passed_runs"] * 2 > RUNS
            result["real_time"] = sum(real_time(r) for r in result["runs"]) * 2 > RUNS
            steps[str(n)] = result
            if not result["real_time"]:
                break  # the same rule for every system: stop once real time is lost
        out[kind] = {"steps": steps, **tables.capacity(steps)}
    return out


def scenario_long(mode: Mode) -> dict[str, Any]:
    from benchmarks import long_calls

    args = argparse.Namespace(
        seconds=mode.long_s, runs=RUNS, calls=CALLS, session_limit=15.0, renew_after=8.0,
        renew_force_after=2.0,
    )  # fmt: skip
    out: dict[str, Any] = {"settings": vars(args)}
    runs = long_calls.interleaved(list(long_calls.VARIANTS), args)
    for variant, docs in runs.items():
        out[variant] = long_calls.summarize(variant, docs)
    return out


def scenario_soak(mode: Mode) -> dict[str, Any]:
    """One run: voicegate with 10 calls for ``soak_s``; its RSS must stay flat."""
    with tempfile.TemporaryDirectory(prefix="vgbench-soak-") as name:
        tmp = Path(name)
        with (
            procs.standin(tmp) as (info, _),
            procs.gateway("voicegate", info, tmp) as (url, sampler),
        ):
            doc = procs.loadtest(url, tmp / "load.json", 10, mode.soak_s, warmup=1.5)
            samples = list(sampler.samples)
    t0 = samples[0][0] if samples else 0.0
    rss = [(round(t - t0), round(mb, 1)) for t, _, mb in samples[:: round(10 / procs.SAMPLE_S)]]
    steady = [mb for t, mb in rss if t >= 60]
    return {
        "summary": doc["summary"],
        "rss_samples": rss,
        "rss_growth_mb_after_first_minute": round(steady[-1] - steady[0], 1) if steady else None,
    }


def combine(parts: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """One results document from runs of the same mode that measured different scenarios.

    Parts are taken in the order they started. A scenario measured by more than one part comes
    from the newest of them (a section re-measured after a fix, say the turns of every system,
    replaces the older one whole; sections are never mixed run by run). Each part's commit,
    dirty flag, times and load stay on record (``meta["parts"]``, with the scenarios a newer part
    replaced under ``replaced``), and ``parts_changed_files`` lists what differs between their
    commits besides benchmarks/results (a reader judges whether it touched what was measured).
    A newer part that failed a scenario an older one measured is refused: leave one of them out
    rather than let a failure hide behind an older figure."""
    ordered = sorted(parts.items(), key=lambda item: item[1]["meta"]["started_utc"])
    docs = [doc for _, doc in ordered]
    if len({d["meta"]["mode"] for d in docs}) != 1:
        raise SystemExit("--combine: the parts are of different modes")
    measured = [[k for k in doc if k not in ("meta", "errors")] for doc in docs]
    owner: dict[str, int] = {}  # scenario -> index of the newest part that measured it
    for i, keys in enumerate(measured):
        owner.update(dict.fromkeys(keys, i))
    for i, doc in enumerate(docs):
        for scenario in doc.get("errors", {}):
            if scenario in owner and owner[scenario] < i:
                raise SystemExit(
                    f"--combine: {ordered[i][0]} failed {scenario}, which the older "
                    f"{ordered[owner[scenario]][0]} measured; leave one of them out"
                )
    meta = dict(docs[0]["meta"])
    meta["parts"] = [
        {
            "file": name,
            "scenarios": measured[i],
            "replaced": [k for k in measured[i] if owner[k] != i],
            **{
                k: doc["meta"].get(k)
                for k in (
                    "git_commit",
                    "git_dirty",
                    "started_utc",
                    "finished_utc",
                    "load_avg_before",
                    "load_avg_after",
                )
            },
        }  # fmt: skip
        for i, (name, doc) in enumerate(ordered)
    ]
    commits = [d["meta"]["git_commit"] for d in docs]
    changed: set[str] = set()
    for commit in commits[1:]:
        names = subprocess.run(
            ["git", "diff", "--name-only", commits[0], commit, "--", ".", ":!benchmarks/results"],
            cwd=procs.ROOT, capture_output=True, text=True, check=True,
        ).stdout.split()  # fmt: skip
        changed.update(names)
    meta["parts_changed_files"] = sorted(changed)
    meta["git_dirty"] = any(d["meta"]["git_dirty"] for d in docs)
    meta["git_dirty_files"] = [f for d in docs for f in d["meta"].get("git_dirty_files", [])]
    meta["finished_utc"] = docs[-1]["meta"].get("finished_utc")
    meta["load_avg_after"] = docs[-1]["meta"].get("load_avg_after")
    out: dict[str, Any] = {"meta": meta}
    for i, doc in enumerate(docs):
        for key, value in doc.items():
            if key == "errors":  # an older part's failure that a newer one measured is gone
                kept = {k: v for k, v in value.items() if k not in owner}
                if kept:
                    out.setdefault("errors", {}).update(kept)
            elif key != "meta" and owner[key] == i:
                out[key] = value
    return out


def pipecat_settings() -> dict[str, Any]:
    python = procs.BENCH_VENV / "bin" / "python"
    done = subprocess.run(
        [str(python), str(procs.ROOT / "benchmarks" / "pipecat_bot.py"), "--settings"],
        capture_output=True,
        text=True,
    )
    try:
        settings: dict[str, Any] = json.loads(done.stdout)
    except ValueError:
        return {}
    return settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--short", action="store_true", help="about 20 minutes (default)")
    group.add_argument("--full", action="store_true", help="about 90 minutes")
    parser.add_argument(
        "--only", default="micro,latency,loss,turns,capacity,long,soak", help="scenarios"
    )
    parser.add_argument("--peers", default="stock,pipecat", help="peers to compare with")
    parser.add_argument("--soak-s", type=float, help="soak length (full: 600 s)")
    parser.add_argument(
        "--publish",
        action="store_true",
        help="write the README tables even when the machine was shared (marked as such)",
    )
    parser.add_argument(
        "--render", action="store_true", help="only rewrite the README blocks from the last JSON"
    )
    parser.add_argument(
        "--combine",
        metavar="FILES",
        help="with --render: results files of one mode run one after the other (e.g. "
        "results-full-capacity.json,results-full-micro-latency-loss-turns.json), combined into "
        "results-<mode>.json first; a scenario in several parts comes from the newest",
    )
    args = parser.parse_args()
    mode = FULL if args.full else SHORT
    if args.render:
        name = f"results-{mode.name}.json"
        if args.combine:
            parts = {p: json.loads((RESULTS / p).read_text()) for p in args.combine.split(",")}
            (RESULTS / name).write_text(json.dumps(combine(parts), indent=1))
        results = json.loads((RESULTS / name).read_text())
        made = [m for m in ("capacity.png",) if (RESULTS / m).exists()]
        tables.write_readmes(results, tables.report(results, name, made), name, args.publish)
        return
    if args.soak_s is not None:
        mode.soak_s = args.soak_s
    only = set(args.only.split(","))
    RESULTS.mkdir(parents=True, exist_ok=True)
    peers = [p for p in args.peers.split(",") if p]
    kinds = [
        k for k in KINDS if k == "voicegate" or k in peers or (k == "patched" and "stock" in peers)
    ]
    meta: dict[str, Any] = {
        "mode": mode.name,
        "settings": asdict(mode) | {"runs": RUNS, "calls": CALLS, "budget": BUDGET},
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "load_avg_before": procs.load_avg(),
        **procs.machine_meta(),
    }
    if "pipecat" in kinds:
        why = procs.ensure_pipecat()
        if why:
            meta["pipecat_unavailable"] = why
            kinds.remove("pipecat")
        else:
            meta["pipecat_venv"] = procs.machine_meta()["pipecat_venv"]
            meta["pipecat_settings"] = pipecat_settings()
    results: dict[str, Any] = {"meta": meta}
    suffix = "" if args.only == parser.get_default("only") else "-" + args.only.replace(",", "-")
    name = f"results-{mode.name}{suffix}.json"

    def micro_run() -> dict[str, Any]:
        from benchmarks import micro

        return micro.run()

    scenarios: list[tuple[str, bool, Callable[[], dict[str, Any]]]] = [
        ("micro", True, micro_run),
        ("latency", True, lambda: scenario_latency(mode, kinds)),
        ("loss", True, lambda: scenario_loss(mode, kinds)),
        ("turns", True, lambda: scenario_turns(mode, kinds)),
        ("capacity", True, lambda: scenario_capacity(mode, kinds)),
        ("long", bool(mode.long_s), lambda: scenario_long(mode)),
        ("soak", bool(mode.soak_s), lambda: scenario_soak(mode)),
    ]
    partial = RESULTS / f"{name}.partial"
    for scenario, enabled, run in scenarios:
        if scenario not in only or not enabled:
            continue
        print(f"{scenario} ...", flush=True)
        try:
            results[scenario] = run()
        except Exception as exc:
            # An hour of other scenarios is not thrown away for one; the error is recorded.
            traceback.print_exc()
            results.setdefault("errors", {})[scenario] = f"{type(exc).__name__}: {exc}"
        partial.write_text(json.dumps(results, indent=1))  # what is done so far, if we die
    meta["load_avg_after"] = procs.load_avg()
    meta["finished_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    (RESULTS / name).write_text(json.dumps(results, indent=1))
    partial.unlink(missing_ok=True)
    made = tables.plots(results, RESULTS)
    text = tables.report(results, name, made)
    print("\n" + text)
    if not suffix:
        tables.write_readmes(results, text, name, args.publish)


if __name__ == "__main__":
    main()
