"""voicegate's media benchmark: latency, loss/jitter and capacity, side by side with peers.

    python -m benchmarks.run --short     # `make bench`, about 5 minutes
    python -m benchmarks.run --full      # `make bench-full`, about 25 minutes

Every run starts, for each gateway, a fresh Bedrock stand-in (``standin_proc``, echo brain:
zero think time), the gateway pinned to CPU 0 (``taskset -c 0``) and the load client
(``loadclient``) pinned to CPU 1 with the stand-in. Gateways:

- ``voicegate``: ``voicegate serve --backend bedrock`` (the real BedrockBackend: AWS SDK, SigV4,
  HTTP/2 + TLS to the stand-in);
- ``stock``: ``stock_gateway.py``, a minimal echo gateway on stock aiortc 1.16 (no model hop);
- ``pipecat``: Pipecat 1.14's SmallWebRTC transport + AWS Nova Sonic service on the same
  stand-in (``pipecat_bot.py``, in its own virtualenv .bench/pipecat, installed from PyPI).

Results: benchmarks/results/<scenario>.json, PNG plots next to them, and a markdown table
printed and written into benchmarks/README.md (between the ``results`` markers).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.markers import percentiles

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
BENCH_VENV = ROOT / ".bench" / "pipecat"
PIPECAT = "pipecat-ai[aws-nova-sonic,webrtc,runner]==1.14.0"
PY = sys.executable
GATEWAY_CPU = "0"
CLIENT_CPU = "1"


@dataclass
class Mode:
    latency_s: float
    loss_s: float
    losses: tuple[float, ...]
    peer_losses: tuple[float, ...]
    capacity_s: float
    capacity_n: dict[str, tuple[int, ...]]
    soak_s: float


SOAK_CALLS = 10

SHORT = Mode(
    20, 20, (0.05,), (), 12, {"voicegate": (5, 10, 20), "patched": (20,), "stock": (20,)}, 0
)
FULL = Mode(
    40,
    30,
    (0.01, 0.05, 0.10),
    (0.05,),
    15,
    {
        "voicegate": (5, 10, 15, 20),
        "patched": (10, 20, 40),
        "stock": (10, 20, 40),
        "pipecat": (5, 10),
    },
    600,
)


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["PYTHONPATH"] = str(ROOT)
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    env["VOICEGATE_LOG_LEVEL"] = "warning"
    return env


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


@contextlib.contextmanager
def standin(tmp: Path) -> Iterator[tuple[dict[str, str], Path]]:
    marks = tmp / "marks.json"
    proc = subprocess.Popen(
        ["taskset", "-c", CLIENT_CPU, PY, "-m", "benchmarks.standin_proc"]
        + ["--cert-dir", str(tmp / "certs"), "--marks", str(marks)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=_env(),
        cwd=ROOT,
    )
    assert proc.stdout is not None and proc.stdin is not None
    env: dict[str, str] = {}
    for _ in range(200):
        line = proc.stdout.readline()
        if not line:
            break
        if line.startswith("STANDIN "):
            env = json.loads(line.removeprefix("STANDIN "))
            break
    if not env:
        proc.kill()
        raise RuntimeError("the stand-in did not start")
    try:
        yield env, marks
    finally:
        proc.stdin.close()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()


def _gateway_cmd(kind: str, port: int) -> list[str]:
    if kind == "voicegate":
        return [PY, "-m", "voicegate", "serve", "--backend", "bedrock", "--port", str(port)]
    if kind == "patched":  # the stock gateway's code with voicegate's aiortc patches
        return [PY, "-m", "benchmarks.stock_gateway", "--patched", "--port", str(port)]
    if kind == "stock":
        return [PY, "-m", "benchmarks.stock_gateway", "--port", str(port)]
    if kind == "pipecat":
        return [str(BENCH_VENV / "bin" / "python"), str(ROOT / "benchmarks" / "pipecat_bot.py")] + [
            "--port",
            str(port),
        ]
    raise ValueError(kind)


@contextlib.contextmanager
def gateway(kind: str, port: int, env: dict[str, str], tmp: Path) -> Iterator[int]:
    # Every simulated caller comes from 127.0.0.1: the per-address connection cap is off.
    full = {
        **_env(),
        **env,
        "VOICEGATE_MAX_SESSIONS": "400",
        "VOICEGATE_MAX_CONNECTIONS_PER_IP": "0",
    }
    if kind == "pipecat":
        full.pop("PYTHONPATH", None)
    log = open(tmp / f"{kind}.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(
        _gateway_cmd(kind, port), stdout=log, stderr=subprocess.STDOUT, env=full, cwd=ROOT
    )
    subprocess.run(["taskset", "-pc", GATEWAY_CPU, str(proc.pid)], capture_output=True)
    try:
        _wait_port(port, proc)
        yield proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _wait_port(port: int, proc: subprocess.Popen[Any]) -> None:
    import socket

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gateway exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                time.sleep(0.5)
                return
        time.sleep(0.2)
    raise RuntimeError("gateway did not listen")


def load(
    url: str, calls: int, seconds: float, tmp: Path, pid: int | None, **impair: float
) -> dict[str, Any]:
    """Run the load client; sample the gateway's CPU and memory over its steady window."""
    out = tmp / "client.json"
    cmd = ["taskset", "-c", CLIENT_CPU, PY, "-m", "benchmarks.loadclient", "--url", url]
    cmd += ["--calls", str(calls), "--seconds", str(seconds), "--out", str(out)]
    cmd += ["--ramp", "0.05" if calls < 50 else "0.08"]
    for key, value in impair.items():
        cmd += [f"--{key.replace('_', '-')}", str(value)]
    rss0 = _rss_mb(pid) if pid else 0.0
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=_env(), cwd=ROOT)
    assert proc.stdout is not None
    cpu0 = cpu1 = 0.0
    t0 = t1 = 0.0
    rss: list[tuple[float, float]] = []
    for line in proc.stdout:
        if line.startswith("STEADY_START") and pid:
            cpu0, t0 = _cpu_seconds(pid), time.monotonic()
        elif line.startswith("STEADY_END") and pid:
            cpu1, t1 = _cpu_seconds(pid), time.monotonic()
            rss.append((t1, _rss_mb(pid)))
    proc.wait(timeout=seconds + calls + 120)
    result: dict[str, Any] = json.loads(out.read_text())
    if pid and t1 > t0:
        result["gateway_cpu_percent"] = round(100 * (cpu1 - cpu0) / (t1 - t0), 1)
        result["gateway_rss_mb"] = round(rss[-1][1], 1)
        result["gateway_rss_idle_mb"] = round(rss0, 1)
    return result


def summarize(result: dict[str, Any], marks: list[float] | None = None) -> dict[str, Any]:
    calls = result["calls"]
    rtts = [ms for c in calls for _, ms in c["rtt"]]
    sent = sum(c["markers_sent"] for c in calls)
    fps = [c["fps_back"] for c in calls]
    summary: dict[str, Any] = {
        "calls": len(calls),
        "refused": result.get("refused", 0),
        "rtt_ms": percentiles(rtts),
        "markers_lost": max(0, sent - len(rtts)),
        "fps_back_min": round(min(fps), 1) if fps else None,
        "fps_back_mean": round(sum(fps) / len(fps), 1) if fps else None,
    }
    for key in ("gateway_cpu_percent", "gateway_rss_mb", "gateway_rss_idle_mb"):
        if key in result:
            summary[key] = result[key]
    if "gateway_cpu_percent" in result and calls:
        summary["cpu_percent_per_call"] = round(result["gateway_cpu_percent"] / len(calls), 2)
        summary["rss_mb_per_call"] = round(
            (result["gateway_rss_mb"] - result["gateway_rss_idle_mb"]) / len(calls), 2
        )
    if marks is not None and len(calls) == 1:
        ins, outs = [], []
        for t, rtt in calls[0]["rtt"]:
            arrived = [m for m in marks if t < m < t + rtt / 1000]
            if arrived:
                ins.append((arrived[0] - t) * 1000)
                outs.append(rtt - (arrived[0] - t) * 1000)
        summary["one_way_in_ms"] = percentiles(ins)
        summary["one_way_out_ms"] = percentiles(outs)
    receive = [c["receive"] for c in calls if c.get("receive")]
    if receive:
        summary["client_receive"] = {
            k: sum(r[k] for r in receive) for k in ("packets", "concealed", "recovered", "late")
        }
    summary["series"] = [(round(t - result["window"][0], 2), round(ms, 1)) for t, ms in
                         (calls[0]["rtt"] if calls else [])]  # fmt: skip
    return summary


def run_gateway(
    kind: str, calls: int, seconds: float, port: int, **impair: float
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix=f"vgbench-{kind}-") as name:
        tmp = Path(name)
        with standin(tmp) as (env, marks_file), gateway(kind, port, env, tmp) as pid:
            result = load(f"http://127.0.0.1:{port}", calls, seconds, tmp, pid, **impair)
        marks = json.loads(marks_file.read_text()) if marks_file.exists() else None
        summary = summarize(result, marks)
        summary["load_avg_after"] = _load()
        if summary["calls"] == 0:
            summary["gateway_log_tail"] = (tmp / f"{kind}.log").read_text()[-2000:]
        return summary


def ensure_pipecat() -> str | None:
    """Create .bench/pipecat from PyPI if needed; returns why it cannot run, or None."""
    python = BENCH_VENV / "bin" / "python"
    stamp = BENCH_VENV / ".installed"
    if stamp.exists() and stamp.read_text() == PIPECAT:
        return None
    base = subprocess.run(
        [str(ROOT / "scripts" / "find-python")], capture_output=True, text=True
    ).stdout.strip()
    try:
        if not python.exists():
            subprocess.run([base or "python3", "-m", "venv", str(BENCH_VENV)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", PIPECAT], check=True, timeout=600
        )
    except (subprocess.SubprocessError, OSError) as exc:
        return f"installing {PIPECAT} into {BENCH_VENV} failed: {exc}"
    stamp.write_text(PIPECAT)
    return None


# --------------------------------------------------------------------------------------------


def scenario_latency(mode: Mode, kinds: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for i, kind in enumerate(kinds):
        print(f"  latency: {kind} ...", flush=True)
        try:
            out[kind] = run_gateway(kind, 1, mode.latency_s, 8700 + i)
        except Exception as exc:  # a peer that fails is reported, not fatal
            out[kind] = {"error": f"{type(exc).__name__}: {exc}"}
    return out


def scenario_loss(mode: Mode, kinds: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    port = 8720
    for kind in kinds:
        for loss in mode.losses if kind == "voicegate" else mode.peer_losses:
            label = f"{kind} loss {loss:.0%} jitter 10ms"
            print(f"  loss: {label} ...", flush=True)
            port += 1
            try:
                out[label] = run_gateway(
                    kind, 1, mode.loss_s, port, loss=loss, jitter_ms=10.0, seed=7
                )
            except Exception as exc:
                out[label] = {"error": f"{type(exc).__name__}: {exc}"}
    return out


def scenario_capacity(mode: Mode, kinds: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    port = 8760
    for kind in kinds:
        for n in mode.capacity_n.get(kind, ()):
            print(f"  capacity: {kind} N={n} ...", flush=True)
            port += 1
            try:
                res = run_gateway(kind, n, mode.capacity_s, port)
            except Exception as exc:
                res = {"error": f"{type(exc).__name__}: {exc}"}
            res.pop("series", None)
            out[f"{kind} N={n}"] = res
    return out


def scenario_soak(mode: Mode) -> dict[str, Any]:
    """voicegate with SOAK_CALLS calls for ``soak_s``: RSS sampled every 10 s must stay flat."""
    if not mode.soak_s:
        return {}
    print(f"  soak: voicegate N={SOAK_CALLS} for {mode.soak_s:.0f} s ...", flush=True)
    import threading

    samples: list[tuple[float, float]] = []
    with tempfile.TemporaryDirectory(prefix="vgbench-soak-") as name:
        tmp = Path(name)
        with standin(tmp) as (env, _), gateway("voicegate", 8790, env, tmp) as pid:
            stop = threading.Event()

            def sample() -> None:
                t0 = time.monotonic()
                while not stop.wait(10):
                    samples.append((round(time.monotonic() - t0), round(_rss_mb(pid), 1)))

            thread = threading.Thread(target=sample, daemon=True)
            thread.start()
            result = load("http://127.0.0.1:8790", SOAK_CALLS, mode.soak_s, tmp, pid)
            stop.set()
            thread.join()
    summary = summarize(result)
    summary.pop("series", None)
    steady = [mb for t, mb in samples if t >= 60]
    summary["rss_samples"] = samples
    growth = round(steady[-1] - steady[0], 1) if steady else None
    summary["rss_growth_mb_after_first_minute"] = growth
    return summary


# --------------------------------------------------------------------------------------------


def _fmt(v: Any) -> str:
    return "–" if v is None else f"{v:g}" if isinstance(v, float | int) else str(v)


def table(results: dict[str, Any]) -> str:
    lines = ["| run | calls | RTT p50 / p95 / p99 ms | in p50 | out p50 | fps back min | "
             "gateway CPU % (per call) | RSS MB/call | markers lost |",
             "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for section in ("latency", "loss", "capacity"):
        for name, r in results.get(section, {}).items():
            if "error" in r:
                lines.append(f"| {section}: {name} | – | error: {r['error'][:80]} |||||||")
                continue
            rtt = r["rtt_ms"]
            cpu = r.get("gateway_cpu_percent")
            per = r.get("cpu_percent_per_call")
            lines.append(
                f"| {section}: {name} | {r['calls']} | {_fmt(rtt['p50'])} / {_fmt(rtt['p95'])} / "
                f"{_fmt(rtt['p99'])} | {_fmt(r.get('one_way_in_ms', {}).get('p50'))} | "
                f"{_fmt(r.get('one_way_out_ms', {}).get('p50'))} | {_fmt(r['fps_back_min'])} | "
                f"{_fmt(cpu)} ({_fmt(per)}) | {_fmt(r.get('rss_mb_per_call'))} | "
                f"{r['markers_lost']} |"
            )
    lat = results.get("latency", {})
    vg = lat.get("voicegate", {}).get("rtt_ms", {})
    ratios = []
    for peer in ("stock", "pipecat"):
        other = lat.get(peer, {}).get("rtt_ms", {})
        if vg.get("p50") and other.get("p50"):
            ratios.append(
                f"{peer} / voicegate RTT: p50 {other['p50'] / vg['p50']:.2f}x, "
                f"p99 {other['p99'] / vg['p99']:.2f}x"
            )
    cap = results.get("capacity", {})
    # Like with like: the stock echo gateway against the same gateway with voicegate's patches
    # (media path alone); Pipecat (Nova Sonic service) against voicegate on the Bedrock path.
    for peer, mine_kind in (("stock", "patched"), ("pipecat", "voicegate")):
        for key, r in cap.items():
            if key.split(" ")[0] == peer and r.get("cpu_percent_per_call"):
                n = key.split("=")[1]
                mine = cap.get(f"{mine_kind} N={n}", {}).get("cpu_percent_per_call")
                if mine:
                    ratios.append(
                        f"{peer} / {mine_kind} CPU per call at N={n}: "
                        f"{r['cpu_percent_per_call'] / mine:.2f}x"
                    )
    soak = results.get("soak")
    if soak and soak.get("rss_samples"):
        (t_first, mb_first), (t_last, mb_last) = soak["rss_samples"][0], soak["rss_samples"][-1]
        ratios.append(
            f"soak: {soak['calls']} calls, RSS {mb_first} MB at {t_first} s -> {mb_last} MB at "
            f"{t_last} s; growth after the first minute "
            f"{soak['rss_growth_mb_after_first_minute']} MB"
        )
    return "\n".join(lines + [""] + [f"- {r}" for r in ratios])


def plots(results: dict[str, Any]) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    made = []
    lat = {k: v for k, v in results.get("latency", {}).items() if v.get("series")}
    if lat:
        fig, ax = plt.subplots(figsize=(8, 4))
        for name, r in lat.items():
            ax.plot([t for t, _ in r["series"]], [ms for _, ms in r["series"]], ".-", label=name)
        ax.set(xlabel="seconds", ylabel="marker round trip (ms)", title="Round trip, 1 call")
        ax.set_ylim(bottom=0)
        ax.legend()
        fig.savefig(RESULTS / "latency.png", dpi=90, bbox_inches="tight")
        plt.close(fig)
        made.append("latency.png")
    loss = {k: v for k, v in results.get("loss", {}).items() if v.get("series")}
    if loss:
        fig, ax = plt.subplots(figsize=(8, 4))
        for name, r in loss.items():
            ax.plot([t for t, _ in r["series"]], [ms for _, ms in r["series"]], ".-", label=name)
        ax.set(xlabel="seconds", ylabel="marker round trip (ms)", title="Under loss + jitter")
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=7)
        fig.savefig(RESULTS / "loss.png", dpi=90, bbox_inches="tight")
        plt.close(fig)
        made.append("loss.png")
    cap = results.get("capacity", {})
    if cap:
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
        for kind in ("voicegate", "patched", "stock", "pipecat"):
            pts = [(int(k.split("=")[1]), r) for k, r in cap.items()
                   if k.split(" ")[0] == kind and "rtt_ms" in r]  # fmt: skip
            if not pts:
                continue
            ns = [n for n, _ in pts]
            a1.plot(ns, [r.get("gateway_cpu_percent") or 0 for _, r in pts], "o-", label=kind)
            a2.plot(ns, [r["rtt_ms"]["p50"] or 0 for _, r in pts], "o-", label=f"{kind} p50")
            a2.plot(ns, [r["rtt_ms"]["p99"] or 0 for _, r in pts], "x--", label=f"{kind} p99")
        a1.set(xlabel="concurrent calls", ylabel="gateway CPU % of one core", title="CPU")
        a2.set(xlabel="concurrent calls", ylabel="round trip ms", title="Latency under load")
        a1.legend()
        a2.legend(fontsize=7)
        fig.savefig(RESULTS / "capacity.png", dpi=90, bbox_inches="tight")
        plt.close(fig)
        made.append("capacity.png")
    return made


def write_readme(text: str) -> None:
    readme = ROOT / "benchmarks" / "README.md"
    start, end = "<!-- results:start -->", "<!-- results:end -->"
    body = readme.read_text() if readme.exists() else f"# benchmarks\n\n{start}\n{end}\n"
    if start not in body:
        body += f"\n{start}\n{end}\n"
    head, rest = body.split(start, 1)
    tail = rest.split(end, 1)[1] if end in rest else ""
    readme.write_text(f"{head}{start}\n{text}\n{end}{tail}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--short", action="store_true", help="about 5 minutes (default)")
    group.add_argument("--full", action="store_true", help="about 25 minutes")
    parser.add_argument(
        "--only", default="micro,latency,loss,capacity,soak", help="comma-separated scenarios"
    )
    parser.add_argument("--peers", default="stock,pipecat", help="peers to compare with")
    parser.add_argument("--soak-s", type=float, help="soak length (full: 600 s)")
    args = parser.parse_args()
    mode = FULL if args.full else SHORT
    if args.soak_s is not None:
        mode.soak_s = args.soak_s
    only = set(args.only.split(","))
    RESULTS.mkdir(parents=True, exist_ok=True)
    kinds = ["voicegate"] + [p for p in args.peers.split(",") if p]
    if "stock" in kinds:
        kinds.insert(1, "patched")
    meta: dict[str, Any] = {
        "mode": "full" if args.full else "short",
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": f"{platform.machine()} {os.cpu_count()} CPUs, {platform.platform()}",
        "python": platform.python_version(),
        "load_avg_before": _load(),
    }
    if "pipecat" in kinds:
        why = ensure_pipecat()
        if why:
            meta["pipecat_unavailable"] = why
            kinds.remove("pipecat")
    results: dict[str, Any] = {"meta": meta}
    if "micro" in only:
        print("micro ...", flush=True)
        from benchmarks import micro

        results["micro"] = micro.run()
    if "latency" in only:
        results["latency"] = scenario_latency(mode, kinds)
    if "loss" in only:
        results["loss"] = scenario_loss(mode, kinds)
    if "capacity" in only:
        results["capacity"] = scenario_capacity(mode, kinds)
    if "soak" in only and mode.soak_s:
        results["soak"] = scenario_soak(mode)
    meta["load_avg_after"] = _load()
    meta["finished_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    default_only = parser.get_default("only")
    suffix = "" if args.only == default_only else "-" + args.only.replace(",", "-")
    name = f"results-{meta['mode']}{suffix}.json"
    (RESULTS / name).write_text(json.dumps(results, indent=1))
    made = plots(results)
    text = (
        f"Run: {meta['mode']}, {meta['started_utc']} to {meta['finished_utc']}, "
        f"load average before {meta['load_avg_before']} / after {meta['load_avg_after']}, "
        f"{meta['machine']}. Raw: `results/{name}`"
        + (f"; plots: {', '.join(f'`results/{m}`' for m in made)}" if made else "")
        + ".\n\n"
        + table(results)
    )
    if "pipecat_unavailable" in meta:
        text += f"\n- Pipecat not run: {meta['pipecat_unavailable']}"
    print("\n" + text)
    if not suffix:
        write_readme(text)


if __name__ == "__main__":
    main()
