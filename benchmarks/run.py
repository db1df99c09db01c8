"""voicegate's benchmark: latency, loss, turns, capacity (and, in full, long calls and a soak),
side by side with peers, every configuration measured by ``voicegate loadtest``.

    python -m benchmarks.run --short     # `make bench`, about 20 minutes
    python -m benchmarks.run --full      # `make bench-full`, about 90 minutes

Every configuration is RUNS fresh runs (a new stand-in and a new gateway each) of at least 3
calls; tables show the median across runs with the min-max beside it. Gateways
(systems/gateways.py): the gateway pinned to CPU 0, the load client and the stand-in on CPU 1.

- ``voicegate``: ``voicegate serve --backend bedrock`` (the real BedrockBackend: AWS SDK, SigV4,
  HTTP/2 + TLS to the stand-in);
- ``patched`` / ``stock``: ``systems/stock_gateway.py``, a minimal echo gateway on aiortc 1.16
  with no model hop, with and without voicegate's aiortc patches; on the turns workload it runs
  the stand-in's turns rules in its own process (``--brain turns``), since it has no model to
  ask;
- ``pipecat``: Pipecat's SmallWebRTC transport + AWS Nova Sonic service on the same stand-in
  (``systems/pipecat_peer/pipecat_bot.py``, its own virtualenv .bench/pipecat, from PyPI).

Every system climbs the same ladder of N, with the same rule: it stops at the first step where
most runs no longer keep real time (a failed call, or a call receiving under 49.5 frames/s).
Capacity is the largest N up to which every step met the budget in most of its runs: no failed
call, marker RTT p95 <= 80 ms, >= 49.5 frames/s received by every call, no lost marker. CPU and
memory per call are the slope of a straight line through every run's (N, figure), i.e. the
growth per added call, not one sample divided by N.

Results: benchmarks/results/results-<mode>.json (under the provenance header of every results
file: git commit, dirty flag, package versions, CPU model, load average before and after; and
the load average after each run), PNG plots, and the tables in benchmarks/README.md and the
summary in README.md, written only by this script (report/suite.py).
"""

from __future__ import annotations

import argparse
import traceback
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from benchmarks.harness import provenance, results
from benchmarks.harness.results import RESULTS, combine
from benchmarks.report import plots, suite
from benchmarks.scenarios import micro
from benchmarks.scenarios.capacity import BUDGET, ladder
from benchmarks.scenarios.gateway_runs import CALLS, FULL, RUNS, SHORT, Mode
from benchmarks.scenarios.latency import latency
from benchmarks.scenarios.long_calls import VARIANTS, interleaved, summarize
from benchmarks.scenarios.loss import loss
from benchmarks.scenarios.soak import rss_soak
from benchmarks.scenarios.turns import turns
from benchmarks.systems import pipecat
from benchmarks.systems.gateways import KINDS

SCENARIOS = "micro,latency,loss,turns,capacity,long,soak"


def long_calls(mode: Mode) -> dict[str, Any]:
    """The long-call variants (scenarios/long_calls.py) at the suite's runs and calls."""
    args = argparse.Namespace(
        seconds=mode.long_s, runs=RUNS, calls=CALLS, session_limit=15.0, renew_after=8.0,
        renew_force_after=2.0,
    )  # fmt: skip
    out: dict[str, Any] = {"settings": vars(args)}
    runs = interleaved(list(VARIANTS), args)
    for variant, docs in runs.items():
        out[variant] = summarize(variant, docs)
    return out


def render(mode: Mode, combine_parts: str | None, publish: bool) -> None:
    """Rewrite the suite's blocks from results-<mode>.json (first combined from the parts)."""
    name = f"results-{mode.name}.json"
    if combine_parts:
        parts = {p: results.load(p) for p in combine_parts.split(",")}
        results.write(RESULTS / name, combine(parts))
    doc = results.load(name)
    made = [m for m in ("capacity.png",) if (RESULTS / m).exists()]
    suite.write_readmes(doc, suite.report(doc, name, made), name, publish)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--short", action="store_true", help="about 20 minutes (default)")
    group.add_argument("--full", action="store_true", help="about 90 minutes")
    parser.add_argument("--only", default=SCENARIOS, help="scenarios")
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
        render(mode, args.combine, args.publish)
        return
    if args.soak_s is not None:
        mode.soak_s = args.soak_s
    only = set(args.only.split(","))
    peers = [p for p in args.peers.split(",") if p]
    kinds = [
        k for k in KINDS if k == "voicegate" or k in peers or (k == "patched" and "stock" in peers)
    ]
    meta: dict[str, Any] = {
        "mode": mode.name,
        "settings": asdict(mode) | {"runs": RUNS, "calls": CALLS, "budget": BUDGET},
        **provenance.start(),
    }
    if "pipecat" in kinds:
        why = pipecat.ensure_pipecat()
        if why:
            meta["pipecat_unavailable"] = why
            kinds.remove("pipecat")
        else:
            meta["pipecat_venv"] = pipecat.versions()
            meta["pipecat_settings"] = pipecat.settings()
    doc: dict[str, Any] = {"meta": meta}
    suffix = "" if args.only == SCENARIOS else "-" + args.only.replace(",", "-")
    name = f"results-{mode.name}{suffix}.json"

    scenarios: list[tuple[str, bool, Callable[[], dict[str, Any]]]] = [
        ("micro", True, micro.run),
        ("latency", True, lambda: latency(mode, kinds)),
        ("loss", True, lambda: loss(mode, kinds)),
        ("turns", True, lambda: turns(mode, kinds)),
        ("capacity", True, lambda: ladder(mode, kinds)),
        ("long", bool(mode.long_s), lambda: long_calls(mode)),
        ("soak", bool(mode.soak_s), lambda: rss_soak(mode.soak_s)),
    ]
    partial = RESULTS / f"{name}.partial"
    for scenario, enabled, run in scenarios:
        if scenario not in only or not enabled:
            continue
        print(f"{scenario} ...", flush=True)
        try:
            doc[scenario] = run()
        except Exception as exc:
            # An hour of other scenarios is not thrown away for one; the error is recorded.
            traceback.print_exc()
            doc.setdefault("errors", {})[scenario] = f"{type(exc).__name__}: {exc}"
        results.write(partial, doc)  # what is done so far, if we die
    provenance.finish(meta)
    results.write(RESULTS / name, doc)
    partial.unlink(missing_ok=True)
    made = plots.capacity(doc, RESULTS)
    text = suite.report(doc, name, made)
    print("\n" + text)
    if not suffix:
        suite.write_readmes(doc, text, name, args.publish)


if __name__ == "__main__":
    main()
