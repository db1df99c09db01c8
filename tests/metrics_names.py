"""The metric families ``GET /metrics`` shows (name, type, label names, HELP), and the list of
them kept in tests/golden/ so that a change of implementation cannot rename what users scrape.

The exposition is read by a strict reader of the text format written here, not by
prometheus_client's parser: the server renders with prometheus_client, so its own parser would
check it against itself. The reader refuses a sample whose family has no HELP and TYPE before
it, a family declared twice, a duplicate sample, a family whose samples disagree on their label
names, and a histogram whose buckets are not cumulative or do not end with ``+Inf == _count``.

``python -m tests.metrics_names`` captures the lists again from real ``voicegate serve
--backend echo`` processes (``--workers 1``, then ``--workers 2``), each after one echo call, so
labelled series are there: run it only when a metric is added on purpose.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

GOLDEN = Path(__file__).resolve().parent / "golden"
SINGLE = GOLDEN / "metrics_names.txt"
WORKERS = GOLDEN / "metrics_names_workers.txt"

_SAMPLE = re.compile(
    r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>[^}]*)\})? "
    r"(?P<value>[-+]?(?:[0-9.]+(?:e[-+]?[0-9]+)?|Inf|NaN))$"
)
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(,|$)')
_TYPES = ("counter", "gauge", "histogram")


@dataclass(slots=True)
class Family:
    name: str
    type: str = ""
    help: str = ""
    labels: tuple[str, ...] | None = None
    """Label names of its samples (``le`` of histogram buckets left out); None: no sample."""
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = field(default_factory=dict)

    def line(self) -> str:
        labels = "-" if self.labels is None else ",".join(self.labels)
        return f"{self.name}\t{self.type}\t{labels}\t{self.help}"


def read(text: str) -> dict[str, Family]:
    """The families of one exposition, strictly (see the module docstring)."""
    assert text.endswith("\n"), "an exposition ends with a newline"
    families: dict[str, Family] = {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            _, _, name, *rest = line.split(" ", 3)
            family = families.setdefault(name, Family(name))
            assert not family.help, f"HELP of {name} twice"
            family.help = rest[0] if rest else ""
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            assert kind in _TYPES, line
            family = families.setdefault(name, Family(name))
            assert not family.type, f"family {name} declared twice"
            family.type = kind
            continue
        assert line and not line.startswith("#"), f"not a sample line: {line!r}"
        m = _SAMPLE.match(line)
        assert m, f"not a sample line: {line!r}"
        name = m["name"]
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        family = families.get(name) or families.get(base)
        assert family is not None and family.type and family.help, f"{name} has no HELP/TYPE"
        assert family.name == name or family.type == "histogram", f"{name} outside its family"
        raw = m["labels"] or ""
        pairs = _LABEL.findall(raw)
        assert "".join(f'{k}="{v}"{sep}' for k, v, sep in pairs) == raw, f"bad labels: {line!r}"
        labels = frozenset((k, v) for k, v, _ in pairs)
        assert len(labels) == len(pairs), f"a label twice: {line!r}"
        names = tuple(sorted(k for k, _ in labels if not (name.endswith("_bucket") and k == "le")))
        if name.endswith("_bucket") and family.type == "histogram":
            assert "le" in dict(labels), f"a bucket without le: {line!r}"
        assert family.labels in (None, names), f"{name}: labels {names}, before {family.labels}"
        family.labels = names
        key = (name, labels)
        assert key not in family.samples, f"duplicate sample {line!r}"
        family.samples[key] = float(m["value"].replace("Inf", "inf"))
    for family in families.values():
        assert family.type and family.help, f"{family.name} lacks HELP or TYPE"
        if family.type == "histogram":
            _check_buckets(family)
    return families


def _check_buckets(family: Family) -> None:
    series: dict[frozenset[tuple[str, str]], list[tuple[float, float]]] = {}
    for (sname, labels), value in family.samples.items():
        if sname == family.name + "_bucket":
            le = dict(labels)["le"]
            rest = frozenset(x for x in labels if x[0] != "le")
            series.setdefault(rest, []).append((float(le.replace("Inf", "inf")), value))
    for rest, buckets in series.items():
        buckets.sort()
        counts = [c for _, c in buckets]
        assert counts == sorted(counts), f"{family.name} buckets not cumulative"
        assert buckets[-1][0] == float("inf"), f"{family.name} has no +Inf bucket"
        assert buckets[-1][1] == family.samples[(family.name + "_count", rest)]


def lines(families: dict[str, Family]) -> list[str]:
    """One line per family, sorted: ``name TAB type TAB label,names TAB help``."""
    return sorted(f.line() for f in families.values())


def golden(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if line and not line.startswith("#")]


# -- capturing the lists from real processes ----------------------------------------------------

_HEADER = (
    "# The metric families of GET /metrics{mode}: name, type, label names ('le' of histogram\n"
    "# buckets left out), HELP. Users scrape these: tests/test_metrics_names.py keeps them.\n"
    "# Regenerate with `python -m tests.metrics_names` only when a metric is added on purpose.\n"
)


async def _capture(*args: str) -> str:
    """/metrics of ``voicegate serve --backend echo ARGS`` after one spoken echo call."""
    import asyncio
    import shutil
    import subprocess
    import tempfile

    import aiohttp

    from tests.deploy_util import start_serve, stop
    from voicegate.testing.client import CallClient, load_wav

    espeak = shutil.which("espeak-ng")
    assert espeak, "espeak-ng is needed to speak to the echo brain"
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "speech.wav"
        subprocess.run([espeak, "-v", "en-us", "-w", str(wav), "capturing the metrics"], check=True)
        speech = load_wav(wav)
    proc, url = await asyncio.to_thread(start_serve, "--backend", "echo", *args)
    client = CallClient(url)
    try:
        async with aiohttp.ClientSession() as http, asyncio.timeout(90):
            while True:  # every worker up
                async with http.get(f"{url}/readyz") as resp:
                    if resp.status == 200:
                        break
                await asyncio.sleep(0.2)
            await client.connect(http)
            await client.wait_for("bot-ready", 15)
            client.mic.play(speech)
            await client.wait_for(
                "server-message", 30, lambda m: m["data"].get("kind") == "turn-latency"
            )
            assert await client.hangup(http) == 204
            while True:  # the call's end counted (by the supervisor's next poll, too)
                async with http.get(f"{url}/healthz") as resp:
                    if (await resp.json())["sessions"] == 0:
                        break
                await asyncio.sleep(0.2)
            async with http.get(f"{url}/metrics") as resp:
                assert resp.status == 200
                return await resp.text()
    finally:
        await client.close()
        await asyncio.to_thread(stop, proc)


def _declared() -> dict[str, tuple[str, ...]]:
    """Label names of the families a call leaves without samples, from their declarations
    (the hand-written registry of the time of capture)."""
    from voicegate.observability.metrics import GatewayMetrics

    return {m.name: tuple(sorted(m.labelnames)) for m in GatewayMetrics().metrics()}


def _write(path: Path, text: str, mode: str, extra: tuple[str, ...] = ()) -> None:
    families = read(text)
    declared = _declared()
    for family in families.values():
        if family.labels is None and family.name in declared:
            family.labels = tuple(sorted((*declared[family.name], *extra)))
    path.write_text(_HEADER.format(mode=mode) + "\n".join(lines(families)) + "\n")


async def _main() -> None:
    GOLDEN.mkdir(exist_ok=True)
    _write(SINGLE, await _capture("--workers", "1"), " (--workers 1)")
    _write(WORKERS, await _capture("--workers", "2"), " (--workers 2)", ("worker",))


if __name__ == "__main__":
    import asyncio

    asyncio.run(_main())
