"""The package's curated public API: every name resolves lazily, and every error is one family."""

from __future__ import annotations

import inspect
import subprocess
import sys
import typing
import warnings

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
    assert len(errors) >= 12
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
    # the command line's own errors (emperor-dev up's state dir, check's input, the control socket) are not the API's
    cli_only = {"NotRunning", "AlreadyRunning", "InputError", "ControlProtocolError"}
    assert {cls.__name__ for cls in ours} - set(pytest_emperor.__all__) <= cli_only
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


def _public_types_in(annotation: object) -> set[type]:
    """The package's own classes an annotation names (inside unions, lists, dicts, ...)."""
    found: set[type] = set()
    if isinstance(annotation, type) and annotation.__module__.startswith("pytest_emperor"):
        found.add(annotation)
    for argument in typing.get_args(annotation):
        found |= _public_types_in(argument)
    return found


@pytest.mark.skipif(
    sys.version_info < (3, 10), reason="typing.get_type_hints cannot evaluate `X | None` annotations before Python 3.10"
)
def test_what_public_methods_return_can_be_annotated() -> None:
    # A user holding what emperor.stats(), vassal.events(), vassal.socket ... return can name its type.
    import httpx
    import requests

    from pytest_emperor._protocol.client import EmperorSession

    names = {name: getattr(pytest_emperor, name) for name in pytest_emperor.__all__ if name != "__version__"}
    names.update(requests=requests, HttpxClient=httpx.Client, EmperorSession=EmperorSession)
    returned: set[type] = set()
    for cls in (pytest_emperor.Emperor, pytest_emperor.Vassal, pytest_emperor.IsolationReport):
        for name, member in inspect.getmembers(cls):
            if name.startswith("_"):
                continue
            function = member.fget if isinstance(member, property) else member
            if callable(function):
                hints = typing.get_type_hints(function, {**vars(sys.modules[cls.__module__]), **names})
                returned |= _public_types_in(hints.get("return"))
        for name, hint in typing.get_type_hints(cls, {**vars(sys.modules[cls.__module__]), **names}).items():
            if not name.startswith("_"):
                returned |= _public_types_in(hint)
    assert {pytest_emperor.EmperorEvent, pytest_emperor.EmperorStats, pytest_emperor.SocketSpec} <= returned
    assert sorted(cls.__name__ for cls in returned if cls.__name__ not in pytest_emperor.__all__) == []


@pytest.mark.parametrize("name", ["UwsgiProtocolError", "InputError", "ControlProtocolError", "Response"])
def test_names_that_left_the_api_warn_for_one_release(name: str) -> None:
    assert name not in pytest_emperor.__all__
    with pytest.warns(DeprecationWarning, match=f"pytest_emperor.{name} is deprecated"):
        value = getattr(pytest_emperor, name)
    assert isinstance(value, type)
    if name != "Response":
        assert issubclass(value, EmperorError)


def test_the_deprecated_uwsgi_protocol_error_is_one_class() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from pytest_emperor.errors import UwsgiProtocolError

        assert UwsgiProtocolError is pytest_emperor.UwsgiProtocolError  # an old `except` still catches it
        assert issubclass(UwsgiProtocolError, ValueError)
