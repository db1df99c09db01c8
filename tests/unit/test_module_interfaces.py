"""Every module that is imported from outside its package says what it offers (``__all__``),
and what other packages import from it is in that list.

Read from the import graph (grimp, the library import-linter uses) and the source itself, so a
new import from outside a package is held to the same rule without a list kept by hand. A
top-level module (``voicegate.config``) is a package of its own here. Tests and benchmarks
count as outside every package.
"""

from __future__ import annotations

import ast
from pathlib import Path

import grimp

import voicegate

SRC = Path(voicegate.__file__).parent
ROOT = SRC.parent.parent
OUTSIDERS = ("tests", "benchmarks")


def _home(module: str) -> str:
    parent = module.rpartition(".")[0]
    return module if parent == "voicegate" else parent


def _inside(importer: str, module: str) -> bool:
    home = _home(module)
    return importer == home or importer.startswith(home + ".")


def _path(module: str) -> Path:
    if module == "voicegate":
        return SRC / "__init__.py"
    relative = Path(*module.split(".")[1:])
    file = SRC / relative.with_suffix(".py")
    return file if file.exists() else SRC / relative / "__init__.py"


def _exports(module: str) -> list[str] | None:
    for node in ast.parse(_path(module).read_text()).body:
        targets = node.targets if isinstance(node, ast.Assign) else []
        if isinstance(node, ast.AnnAssign):
            targets = [node.target]
        if any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets):
            assert isinstance(node.value, ast.List | ast.Tuple), f"{module}: __all__ is a literal"
            return [ast.literal_eval(e) for e in node.value.elts]
    return None


def _imports(graph: grimp.ImportGraph) -> dict[str, dict[str, set[str]]]:
    """module -> {importer outside its package: names it imports from the module}."""
    found: dict[str, dict[str, set[str]]] = {}

    def add(importer: str, module: str, names: set[str]) -> None:
        if module in graph.modules and module != "voicegate" and not _inside(importer, module):
            found.setdefault(module, {}).setdefault(importer, set()).update(names)

    files = [(m, _path(m)) for m in graph.modules]
    for folder in OUTSIDERS:
        files += [(str(p.relative_to(ROOT)), p) for p in sorted((ROOT / folder).rglob("*.py"))]
    for importer, path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                if not node.module.startswith("voicegate"):
                    continue
                # Private names are another rule's business (nothing imports them from outside).
                names = {a.name for a in node.names if not a.name.startswith("_")}
                add(
                    importer,
                    node.module,
                    {n for n in names if f"{node.module}.{n}" not in graph.modules},
                )
                for name in names:
                    add(importer, f"{node.module}.{name}", set())
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    add(importer, alias.name, set())
    return found


def test_modules_imported_from_outside_their_package_declare_all() -> None:
    graph = grimp.build_graph("voicegate", cache_dir=None)
    imports = _imports(graph)
    assert "voicegate.config" in imports and "voicegate.audio.levels" in imports  # it looks
    missing = sorted(m for m in imports if _exports(m) is None)
    assert not missing, f"imported from outside their package, without __all__: {missing}"
    undeclared = {
        f"{module}.{name}": sorted(importers)
        for module, by in imports.items()
        for name in sorted(
            {n for names in by.values() for n in names} - set(_exports(module) or [])
        )
        for importers in [[i for i, names in by.items() if name in names]]
    }
    assert not undeclared, f"imported from outside their package, not in __all__: {undeclared}"


def test_every_name_in_all_exists() -> None:
    graph = grimp.build_graph("voicegate", cache_dir=None)
    for module in sorted(graph.modules):
        exports = _exports(module)
        if not exports:
            continue
        tree = ast.parse(_path(module).read_text())
        if any(isinstance(n, ast.FunctionDef) and n.name == "__getattr__" for n in tree.body):
            continue  # names loaded on first use (PEP 562): checked by importing them elsewhere
        bound: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                bound.add(node.name)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                bound.add(node.id)
            elif isinstance(node, ast.ImportFrom | ast.Import):
                bound.update((a.asname or a.name).split(".")[0] for a in node.names)
            elif isinstance(node, ast.TypeAlias):
                bound.add(node.name.id)
        submodules = {m.rpartition(".")[2] for m in graph.find_children(module)}
        unknown = set(exports) - bound - submodules
        assert not unknown, f"{module}.__all__ names what it does not define: {sorted(unknown)}"
