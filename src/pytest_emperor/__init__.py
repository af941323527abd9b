"""pytest-emperor: test WSGI apps under a real uWSGI emperor with nginx-style wildcard routing."""

from __future__ import annotations

from pytest_emperor.binary import find_uwsgi
from pytest_emperor.client import Response
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
    "Response",
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
