"""benchmarks/ is a package by role whose imports point one way, checked on its source.

Behaviours covered: a command (benchmarks/*.py) may import anything below it; a scenario
imports report, systems and harness; report and systems import only harness; harness imports
no other part. No module imports another's private name (voicegate's included), none imports
a benchmarks module inside a function (which hid two import cycles before), the modules of one
part import each other without a cycle, and of the tests only the shared helpers
(tests.support) are imported, never a test module or conftest. The Pipecat peer's scripts
(run in Pipecat's own virtualenv) are not part of the package.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks"
MAY_IMPORT = {
    "commands": {"commands", "scenarios", "report", "systems", "harness"},
    "scenarios": {"scenarios", "report", "systems", "harness"},
    "report": {"report", "harness"},
    "systems": {"systems", "harness"},
    "harness": {"harness"},
}


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(BENCH.rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        if "pipecat_peer" in rel.parts:
            continue
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        out[".".join(parts)] = path
    return out


def _part(module: str) -> str:
    parts = module.split(".")
    if len(parts) > 2 or (len(parts) == 2 and parts[1] in MAY_IMPORT):
        return parts[1]
    return "commands"


def _imports(tree: ast.Module) -> Iterator[tuple[ast.stmt, str, list[str], bool]]:
    """(node, module, names, at module level) for every import in the module."""
    top = {id(n) for n in tree.body}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node, alias.name, [], id(node) in top
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            yield node, node.module, [a.name for a in node.names], id(node) in top


def _target(modules: dict[str, Path], name: str, names: list[str]) -> list[str]:
    """The benchmarks modules an import statement loads (a package's submodules included)."""
    found = [name] if name in modules else []
    found += [f"{name}.{n}" for n in names if f"{name}.{n}" in modules]
    return found


def test_imports_point_down_without_private_names_or_hidden_cycles() -> None:
    modules = _modules()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    problems = []
    for module, path in modules.items():
        for node, name, names, top in _imports(ast.parse(path.read_text())):
            where = f"{path.relative_to(ROOT)}:{node.lineno}"
            if name.split(".")[0] == "tests" and not name.startswith("tests.support"):
                problems.append(f"{where}: imports {name}, not a shared helper of tests.support")
            if name.startswith(("benchmarks", "voicegate", "tests")):
                private = [n for n in names if n.startswith("_")]
                if private or any(p.startswith("_") for p in name.split(".")):
                    problems.append(f"{where}: private {name} {private}")
            for target in _target(modules, name, names):
                if not top:
                    problems.append(f"{where}: imports {target} inside a function")
                if _part(target) not in MAY_IMPORT[_part(module)]:
                    problems.append(f"{where}: {_part(module)} imports {_part(target)}")
                if target != module and _part(target) == _part(module):
                    graph[module].add(target)
    assert not problems, "\n".join(problems)
    done: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        assert module not in path, f"import cycle: {' -> '.join((*path, module))}"
        if module in done:
            return
        for target in graph[module]:
            visit(target, (*path, module))
        done.add(module)

    for module in graph:
        visit(module, ())
