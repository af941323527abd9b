"""The package's rooms depend one way: testing/ on the engine, never the reverse; the engine and routing on
nothing of dev/, check/ or the plugin (docs/architecture.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import pytest_emperor

PACKAGE = Path(pytest_emperor.__file__).parent

# room -> the rooms it must never import (not even lazily, inside a function)
FORBIDDEN = {
    "engine": ("testing", "dev", "check", "plugin", "cli"),
    "routing": ("testing", "dev", "check", "plugin", "cli"),
    "_protocol": ("engine", "routing", "testing", "dev", "check", "plugin", "cli"),
    "testing": ("dev", "check", "plugin", "cli"),
}


def imported_modules(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


@pytest.mark.parametrize("room", sorted(FORBIDDEN))
def test_rooms_depend_one_way(room: str) -> None:
    modules = sorted((PACKAGE / room).glob("*.py"))
    assert modules, f"no modules in {room}/"
    wrong = [
        f"{path.relative_to(PACKAGE)} imports {module}"
        for path in modules
        for module in imported_modules(path)
        for other in FORBIDDEN[room]
        if module == f"pytest_emperor.{other}" or module.startswith(f"pytest_emperor.{other}.")
    ]
    assert wrong == []


def test_routing_uses_only_the_engine_s_process_helpers() -> None:
    # The engine starts the router; the router needs only the engine's process helpers (parent-death signal).
    used = {m for path in (PACKAGE / "routing").glob("*.py") for m in imported_modules(path) if ".engine" in m}
    assert used <= {"pytest_emperor.engine.processes"}


def test_no_module_left_at_the_top_but_the_shared_ones() -> None:
    top = sorted(p.stem for p in PACKAGE.glob("*.py"))
    assert top == ["__init__", "cli", "convention", "errors", "plugin", "project_config"]
