"""The package's curated public API: every name resolves lazily, and every error is one family."""

from __future__ import annotations

import subprocess
import sys

import pytest

import pytest_emperor
from pytest_emperor.errors import EmperorError


@pytest.mark.parametrize("name", sorted(set(pytest_emperor.__all__) - {"__version__"}))
def test_every_public_name_resolves(name: str) -> None:
    assert getattr(pytest_emperor, name) is not None


def test_every_public_error_is_an_emperor_error() -> None:
    errors = [
        value
        for name in pytest_emperor.__all__
        if isinstance(value := getattr(pytest_emperor, name), type) and issubclass(value, BaseException)
    ]
    assert len(errors) >= 15
    assert [e.__name__ for e in errors if not issubclass(e, EmperorError)] == []


def test_every_error_class_in_the_package_is_public_and_in_the_family() -> None:
    # Import every module, then walk EmperorError's subclasses: an error defined anywhere else with another root
    # (a second ProtocolError, a bare ValueError subclass) is caught by the second half.
    import importlib
    import pkgutil

    for module in pkgutil.walk_packages(pytest_emperor.__path__, "pytest_emperor."):
        if not module.name.endswith("__main__"):
            importlib.import_module(module.name)
    family: set[type] = set()
    pending: list[type] = [EmperorError]
    while pending:
        cls = pending.pop()
        family.add(cls)
        pending.extend(cls.__subclasses__())
    ours = {cls for cls in family if cls.__module__.startswith("pytest_emperor")}
    assert {cls.__name__ for cls in ours} - set(pytest_emperor.__all__) <= {"NotRunning", "AlreadyRunning"}
    names = [cls.__name__ for cls in ours]
    assert len(names) == len(set(names)), "two errors share a name"
    strays = []
    for module in list(sys.modules.values()):
        if getattr(module, "__name__", "").startswith("pytest_emperor"):
            for value in vars(module).values():
                if (
                    isinstance(value, type)
                    and issubclass(value, Exception)
                    and value.__module__.startswith("pytest_emperor")
                    and not issubclass(value, EmperorError)
                ):
                    strays.append(f"{value.__module__}.{value.__name__}")
    assert strays == []


def test_importing_the_package_imports_no_machinery() -> None:
    code = "import sys, pytest_emperor; print(sorted(m for m in sys.modules if m.startswith('pytest_emperor')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['pytest_emperor', 'pytest_emperor.convention']"  # APP_INI, a constant module
