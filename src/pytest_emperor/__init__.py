"""pytest-emperor: test WSGI apps under a real uWSGI emperor with nginx-style wildcard routing."""

from __future__ import annotations

import warnings
from typing import Any

from pytest_emperor.binary import find_uwsgi
from pytest_emperor.emperor import Emperor
from pytest_emperor.errors import (
    ConfigError,
    EmperorError,
    SocketInUse,
    UwsgiNotFound,
    VassalCursed,
    VassalError,
    VassalTimeout,
)
from pytest_emperor.isolation import IsolationError, IsolationReport
from pytest_emperor.vassal import Vassal, VassalState

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "Emperor",
    "EmperorError",
    "IsolationError",
    "IsolationReport",
    "SocketInUse",
    "UwsgiNotFound",
    "Vassal",
    "VassalCursed",
    "VassalError",
    "VassalState",
    "VassalTimeout",
    "__version__",
    "find_uwsgi",
]


def __getattr__(name: str) -> Any:
    # pytest_emperor.Response (with .status) was replaced by requests.Response (.status_code): kept one release
    # as a deprecated alias so that imports and isinstance checks keep working (README: "Upgrading").
    if name == "Response":
        import requests

        warnings.warn(
            "pytest_emperor.Response is deprecated: requests return requests.Response (status_code, not status)",
            DeprecationWarning,
            stacklevel=2,
        )
        return requests.Response
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
