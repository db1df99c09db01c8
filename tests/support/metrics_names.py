"""The metric families ``GET /metrics`` shows (name, type, label names, HELP), and the list of
them kept in tests/golden/ so that a change of implementation cannot rename what users scrape.

The exposition is read by a strict reader of the text format written here, not by
prometheus_client's parser: the server renders with prometheus_client, so its own parser would
check it against itself. The reader refuses a sample whose family has no HELP and TYPE before
it, a family declared twice, a duplicate sample, a family whose samples disagree on their label
names, and a histogram whose buckets are not cumulative or do not end with ``+Inf == _count``.

``python -m tests.support.metrics_names`` captures the lists again from real ``voicegate serve
--backend echo`` processes (``--workers 1``, then ``--workers 2``), each after one echo call, so
labelled series are there: run it only when a metric is added on purpose.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import numpy as np

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
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


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample of an exposition (None when it is not there)."""
    key = (name, frozenset(labels.items()))
    for family in read(text).values():
        if key in family.samples:
            return family.samples[key]
    return None


def lines(families: dict[str, Family]) -> list[str]:
    """One line per family, sorted: ``name TAB type TAB label,names TAB help``."""
    return sorted(f.line() for f in families.values())


def golden(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if line and not line.startswith("#")]


# -- capturing the lists from real processes ----------------------------------------------------

_HEADER = (
    "# The metric families of GET /metrics{mode}: name, type, label names ('le' of histogram\n"
    "# buckets left out), HELP. Users scrape these: tests/test_metrics_names.py keeps them.\n"
    "# Regenerate with `python -m tests.support.metrics_names` only when a metric is added on purpose.\n"  # noqa: E501
)


def speech() -> np.ndarray:
    """A spoken sentence for the echo brain (espeak-ng), as the caller's microphone plays it."""
    import shutil
    import subprocess
    import tempfile

    from voicegate.testing.client import load_wav

    espeak = shutil.which("espeak-ng")
    assert espeak, "espeak-ng is needed to speak to the echo brain (apt-get install espeak-ng)"
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "speech.wav"
        subprocess.run([espeak, "-v", "en-us", "-w", str(wav), "capturing the metrics"], check=True)
        return load_wav(wav)


@contextlib.asynccontextmanager
async def serving(*args: str) -> AsyncIterator[str]:
    """``voicegate serve --backend echo ARGS`` on loopback, every worker ready: its URL."""
    from tests.support.deploy import start_serve, stop

    proc, url = await asyncio.to_thread(start_serve, "--backend", "echo", *args)
    try:
        async with aiohttp.ClientSession() as http, asyncio.timeout(90):
            while True:  # every worker up: nothing else to wait on from outside
                async with http.get(f"{url}/readyz") as resp:
                    if resp.status == 200:
                        break
                await asyncio.sleep(0.2)
        yield url
    finally:
        assert await asyncio.to_thread(stop, proc) == 0


async def scrape(url: str) -> str:
    async with aiohttp.ClientSession() as http, asyncio.timeout(10):
        async with http.get(f"{url}/metrics") as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            return await resp.text()


async def one_call(url: str, pcm: np.ndarray) -> None:
    """One spoken echo call from the project's headless caller, answered and hung up; returns
    once the node counts it as ended."""
    from voicegate.testing.client import CallClient

    client = CallClient(url)
    try:
        async with aiohttp.ClientSession() as http, asyncio.timeout(90):
            await client.connect(http)
            await client.wait_for("bot-ready", 15)
            client.mic.play(pcm)
            await client.wait_for(
                "server-message", 30, lambda m: m["data"].get("kind") == "turn-latency"
            )
            assert await client.hangup(http) == 204
            while True:  # the call's end counted (by the supervisor's next poll, too)
                async with http.get(f"{url}/healthz") as resp:
                    if (await resp.json())["sessions"] == 0:
                        break
                await asyncio.sleep(0.2)
    finally:
        await client.close()


def _write(path: Path, text: str, mode: str) -> None:
    families = read(text)
    unsampled = [f.name for f in families.values() if f.labels is None]
    assert not unsampled, f"families without a sample, so without label names: {unsampled}"
    path.write_text(_HEADER.format(mode=mode) + "\n".join(lines(families)) + "\n")


async def _main() -> None:
    GOLDEN.mkdir(exist_ok=True)
    pcm = await asyncio.to_thread(speech)
    for path, args in ((SINGLE, ("--workers", "1")), (WORKERS, ("--workers", "2"))):
        async with serving(*args) as url:
            await one_call(url, pcm)
            _write(path, await scrape(url), f" ({' '.join(args)})")


if __name__ == "__main__":
    asyncio.run(_main())
