"""The package's rooms depend one way: testing/ on the engine, never the reverse; the engine on nothing of dev/,
check/ or the plugin; routing on nothing of the engine; ini/ (the reader) on nothing else of the package; and no
import cycle, between modules or between rooms, counting every import (lazy ones inside functions and type-only
ones too) (docs/architecture.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import pytest_emperor

PACKAGE = Path(pytest_emperor.__file__).parent

# room -> the rooms it must never import (not even lazily, inside a function)
FORBIDDEN = {
    "engine": ("testing", "dev", "check", "plugin", "cli", "revisions"),
    "routing": ("engine", "testing", "dev", "check", "plugin", "cli", "revisions"),
    "revisions": ("testing", "dev", "check", "plugin", "cli"),
    "_protocol": ("engine", "routing", "testing", "dev", "check", "plugin", "cli"),
    "testing": ("dev", "check", "plugin", "cli"),
    # the ini reader is pure: it imports nothing else of the package (its caller hands it a ConfigSource)
    "ini": (
        "engine", "routing", "_protocol", "testing", "dev", "check", "plugin", "cli", "revisions",
        "convention", "errors", "project_config",
    ),
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


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the package's modules it imports (``from pkg import module`` counts as importing the module)."""
    modules = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:
                    child = f"{node.module}.{alias.name}"
                    found.add(child if child in modules else node.module)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
        graph[name] = {m for m in found if m in modules and m != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One cycle of ``graph`` (its nodes in order, the first repeated at the end), or [] if there is none."""
    done: set[str] = set()
    path: list[str] = []

    def visit(node: str) -> list[str]:
        if node in path:
            return [*path[path.index(node) :], node]
        if node in done:
            return []
        path.append(node)
        for other in sorted(graph.get(node, ())):
            cycle = visit(other)
            if cycle:
                return cycle
        path.pop()
        done.add(node)
        return []

    for node in sorted(graph):
        cycle = visit(node)
        if cycle:
            return cycle
    return []


def room_of(module: str) -> str:
    # pytest_emperor.engine.vassal -> engine; pytest_emperor.plugin -> plugin; the package itself -> __init__
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_no_import_cycle_between_modules() -> None:
    # The package's __init__ names every public class (lazily); it is the one module every other may not import.
    graph = import_graph()
    assert find_cycle(graph) == []


def test_no_import_cycle_between_rooms() -> None:
    rooms: dict[str, set[str]] = {}
    for module, imported in import_graph().items():
        room = room_of(module)
        rooms.setdefault(room, set()).update(room_of(m) for m in imported if room_of(m) != room)
    assert find_cycle(rooms) == []


def test_the_cycle_finder_sees_a_type_only_cycle() -> None:
    # So that the two tests above cannot pass vacuously: a cycle closed by an import under TYPE_CHECKING counts.
    assert find_cycle({"a": {"b"}, "b": {"a"}}) == ["a", "b", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) == []
    graph = import_graph()
    assert "pytest_emperor.engine.vassal" in graph["pytest_emperor.engine.registry"]  # type-only there


def test_no_module_left_at_the_top_but_the_shared_ones() -> None:
    top = sorted(p.stem for p in PACKAGE.glob("*.py"))
    assert top == ["__init__", "cli", "convention", "errors", "procfs", "project_config"]


def test_the_default_wait_is_set_in_one_place() -> None:
    # A `timeout` parameter or field that defaults to the user-facing wait (30 s) names convention.DEFAULT_TIMEOUT;
    # internal bounds (a stats read, a kill) keep numbers of their own.
    literal = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                arguments = node.args
                positional = [*arguments.posonlyargs, *arguments.args]
                pairs = [*zip(positional[len(positional) - len(arguments.defaults) :], arguments.defaults)]
                pairs += [(a, d) for a, d in zip(arguments.kwonlyargs, arguments.kw_defaults) if d is not None]
                literal += [
                    f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name}({arg.arg}=...)"
                    for arg, default in pairs
                    if arg.arg == "timeout" and isinstance(default, ast.Constant) and default.value == 30
                ]
            elif (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and node.target.id == "timeout"
                and isinstance(node.value, ast.Constant)
                and node.value.value == 30
            ):
                literal.append(f"{path.relative_to(PACKAGE)}:{node.lineno} timeout = {node.value.value}")
    assert literal == []
