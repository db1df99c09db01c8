"""The marked blocks of the docs that benchmarks write, and the one way they are rewritten.

A block is the text between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->`` in a Markdown
file; nothing outside its markers is touched.
"""

from __future__ import annotations

from pathlib import Path

from benchmarks.harness.provenance import ROOT

BENCH_README = Path("benchmarks") / "README.md"
README = Path("README.md")
DEPLOY = Path("docs") / "deploy.md"
"""The files with blocks, relative to the repository's root."""


def markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


def replace_block(
    path: Path, name: str, text: str, heading: str | None = None, root: Path = ROOT
) -> None:
    """Put ``text`` between the NAME markers of ``root / path``; a file without them gets them
    at its end (under ``## heading`` when given)."""
    start, end = markers(name)
    target = root / path
    body = target.read_text() if target.exists() else f"{start}\n{end}\n"
    if start not in body:
        title = f"\n## {heading}\n" if heading else ""
        body = body.rstrip("\n") + f"\n{title}\n{start}\n{end}\n"
    head, rest = body.split(start, 1)
    tail = rest.split(end, 1)[1] if end in rest else "\n"
    target.write_text(f"{head}{start}\n{text}\n{end}{tail}")


def read_block(path: Path, name: str, root: Path = ROOT) -> str | None:
    """The text between the NAME markers of ``root / path`` (None without them)."""
    start, end = markers(name)
    body = (root / path).read_text()
    if start not in body or end not in body:
        return None
    return body.split(start, 1)[1].split(end, 1)[0].removeprefix("\n").removesuffix("\n")


__all__ = ["BENCH_README", "DEPLOY", "README", "markers", "read_block", "replace_block"]
