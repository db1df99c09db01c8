"""Test modules share code only through tests.support: a helper imported from another test
module drags that module's tests, fixtures and marks along (pytest collects what it imports)
and hides the helper from whoever maintains tests/support. conftest is never imported either
(pytest advises against it)."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def _imported(path: Path) -> list[str]:
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
        elif isinstance(node, ast.Import):
            names.extend(a.name for a in node.names)
    return names


def test_only_tests_support_is_imported_from_tests() -> None:
    wrong = {
        f"{path.relative_to(TESTS)}: {name}"
        for path in TESTS.rglob("*.py")
        for name in _imported(path)
        if (name == "tests" or name.startswith("tests."))
        and not (name == "tests.support" or name.startswith("tests.support."))
    }
    assert not wrong, sorted(wrong)
