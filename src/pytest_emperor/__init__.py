"""pytest-emperor: test WSGI apps under a real uWSGI emperor with nginx-style wildcard routing.

The public names are imported on first use (PEP 562), not with the package: pytest imports the package for its
plugin in every run, including the many that never ask for ``--emperor`` (see plugin.py).
"""

from __future__ import annotations

import importlib
import warnings
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

# The file an app dir keeps its uWSGI config in. Here rather than in vassal.py, which the plugin's option help
# needs it without importing.
APP_INI = "app.uwsgi.ini"

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

# Public name -> the module that defines it.
_EXPORTS = {
    "ConfigError": "errors",
    "Emperor": "emperor",
    "EmperorError": "errors",
    "IsolationError": "isolation",
    "IsolationReport": "isolation",
    "SocketInUse": "errors",
    "UwsgiNotFound": "errors",
    "Vassal": "vassal",
    "VassalCursed": "errors",
    "VassalError": "errors",
    "VassalState": "vassal",
    "VassalTimeout": "errors",
    "find_uwsgi": "binary",
}


def __getattr__(name: str) -> Any:
    if name == "Response":
        # pytest_emperor.Response (with .status) was replaced by requests.Response (.status_code): kept one
        # release as a deprecated alias so that imports and isinstance checks keep working (README: "Upgrading").
        import requests

        warnings.warn(
            "pytest_emperor.Response is deprecated: requests return requests.Response (status_code, not status)",
            DeprecationWarning,
            stacklevel=2,
        )
        return requests.Response
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'pytest_emperor' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"pytest_emperor.{module}"), name)
    globals()[name] = value  # once imported, a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
