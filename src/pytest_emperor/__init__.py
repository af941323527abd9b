"""pytest-emperor: test WSGI apps under a real uWSGI emperor with nginx-style wildcard routing.

The public names are imported on first use (PEP 562), not with the package: pytest imports the package for its
plugin in every run, including the many that never ask for ``--emperor`` (see plugin.py).
"""

from __future__ import annotations

import importlib
import warnings
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pytest_emperor._protocol.client import SocketAdapter, UpstreamError, UwsgiAdapter, direct_session
    from pytest_emperor.engine.binary import find_uwsgi
    from pytest_emperor.engine.emperor import Emperor
    from pytest_emperor.engine.emperor_log import EventKind
    from pytest_emperor.engine.vassal import Vassal, VassalState
    from pytest_emperor.errors import (
        ConfigError,
        ConfigFileError,
        ControlProtocolError,
        EmperorError,
        InputError,
        IsolationError,
        NginxNotFound,
        RouteMismatch,
        RouterError,
        SiteError,
        SocketInUse,
        UwsgiNotFound,
        UwsgiProtocolError,
        VassalCursed,
        VassalError,
        VassalTimeout,
    )
    from pytest_emperor.routing.routes import RouteMap
    from pytest_emperor.testing.broken import BROKEN_KINDS
    from pytest_emperor.testing.isolation import IsolationReport

__version__ = "0.2.0"

from pytest_emperor.convention import APP_INI as APP_INI  # the file an app dir keeps its uWSGI config in

__all__ = [
    "BROKEN_KINDS",
    "ConfigError",
    "ConfigFileError",
    "ControlProtocolError",
    "Emperor",
    "EmperorError",
    "EventKind",
    "InputError",
    "IsolationError",
    "IsolationReport",
    "NginxNotFound",
    "RouteMap",
    "RouteMismatch",
    "RouterError",
    "SiteError",
    "SocketAdapter",
    "SocketInUse",
    "UpstreamError",
    "UwsgiAdapter",
    "UwsgiNotFound",
    "UwsgiProtocolError",
    "Vassal",
    "VassalCursed",
    "VassalError",
    "VassalState",
    "VassalTimeout",
    "__version__",
    "direct_session",
    "find_uwsgi",
]

# Public name -> the module that defines it.
_EXPORTS = {
    "SocketAdapter": "_protocol.client",
    "UwsgiAdapter": "_protocol.client",
    "direct_session": "_protocol.client",
    "BROKEN_KINDS": "testing.broken",
    "ConfigError": "errors",
    "ConfigFileError": "errors",
    "ControlProtocolError": "errors",
    "Emperor": "engine.emperor",
    "EmperorError": "errors",
    "EventKind": "engine.emperor_log",
    "InputError": "errors",
    "IsolationError": "errors",
    "IsolationReport": "testing.isolation",
    "NginxNotFound": "errors",
    "RouteMap": "routing.routes",
    "RouteMismatch": "errors",
    "RouterError": "errors",
    "SiteError": "errors",
    "SocketInUse": "errors",
    "UpstreamError": "_protocol.client",
    "UwsgiNotFound": "errors",
    "UwsgiProtocolError": "errors",
    "Vassal": "engine.vassal",
    "VassalCursed": "errors",
    "VassalError": "errors",
    "VassalState": "engine.vassal",
    "VassalTimeout": "errors",
    "find_uwsgi": "engine.binary",
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
