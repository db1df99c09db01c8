"""GET /metrics read strictly: every family has HELP and TYPE before its samples, histogram
buckets are cumulative and end in +Inf == _count; a sample is looked up by name and labels."""

from __future__ import annotations

import asyncio
import re

import aiohttp

SAMPLE = re.compile(
    r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>[^}]*)\})? "
    r"(?P<value>[-+]?(?:[0-9.]+(?:e[-+]?[0-9]+)?|Inf|NaN))$"
)
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """A strict reader of the text format: every sample's family has HELP and TYPE first,
    histogram buckets are cumulative and end with +Inf == _count."""
    assert text.endswith("\n")
    samples: Samples = {}
    typed: dict[str, str] = {}
    helped: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# HELP "):
            helped.add(line.split()[2])
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            assert kind in ("counter", "gauge", "histogram"), line
            assert name not in typed, f"family {name} declared twice"
            typed[name] = kind
            continue
        m = SAMPLE.match(line)
        assert m, f"not a sample line: {line!r}"
        name = m["name"]
        family = re.sub(r"_(bucket|sum|count)$", "", name) if name not in typed else name
        assert family in typed and family in helped, f"{name} has no HELP/TYPE"
        labels = frozenset(LABEL.findall(m["labels"] or ""))
        key = (name, labels)
        assert key not in samples, f"duplicate sample {line!r}"
        samples[key] = float(m["value"].replace("Inf", "inf"))
    for name, kind in typed.items():
        if kind != "histogram":
            continue
        series: dict[frozenset[tuple[str, str]], list[tuple[float, float]]] = {}
        for (sname, labels), value in samples.items():
            if sname == name + "_bucket":
                le = dict(labels)["le"]
                rest = frozenset(x for x in labels if x[0] != "le")
                series.setdefault(rest, []).append((float(le.replace("Inf", "inf")), value))
        for rest, buckets in series.items():
            buckets.sort()
            counts = [c for _, c in buckets]
            assert counts == sorted(counts), f"{name} buckets not cumulative"
            assert buckets[-1][0] == float("inf")
            assert buckets[-1][1] == samples[(name + "_count", rest)]
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def scrape(url: str) -> Samples:
    async with aiohttp.ClientSession() as http:
        async with asyncio.timeout(5):
            async with http.get(f"{url}/metrics") as resp:
                assert resp.status == 200
                assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
                return parse(await resp.text())
