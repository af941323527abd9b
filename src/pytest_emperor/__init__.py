"""pytest-emperor: test WSGI apps under a real uWSGI emperor with nginx-style wildcard routing.

The public names are imported on first use (PEP 562), not with the package: pytest imports the package for its
plugin in every run, including the many that never ask for ``--emperor`` (see plugin/__init__.py). They are what a user
holds and catches: the emperor and its vassals, what their methods return (events, stats, socket specs, the
isolation report, the router), and every error they raise.
"""

from __future__ import annotations

import importlib
import warnings
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pytest_emperor._protocol.client import SocketAdapter, UpstreamError, UwsgiAdapter, direct_session
    from pytest_emperor.engine.binary import find_uwsgi
    from pytest_emperor.engine.deploy_plan import DeployPlan, SocketSpec
    from pytest_emperor.engine.emperor import Emperor
    from pytest_emperor.engine.emperor_log import EmperorEvent, EventKind
    from pytest_emperor.engine.stats import BlacklistEntry, EmperorStats, VassalStats
    from pytest_emperor.engine.vassal import Vassal, VassalState
    from pytest_emperor.errors import (
        AnswersDiffer,
        ConfigError,
        ConfigFileError,
        EmperorError,
        IsolationError,
        NginxNotFound,
        RevisionError,
        RouteMismatch,
        RouterError,
        SetupError,
        SiteError,
        SocketInUse,
        UnsafePath,
        UwsgiNotFound,
        VassalCursed,
        VassalError,
        VassalTimeout,
    )
    from pytest_emperor.routing.router import Router
    from pytest_emperor.routing.routes import RouteMap
    from pytest_emperor.testing.broken import BROKEN_KINDS
    from pytest_emperor.testing.compare import Difference, assert_same_answers, compare_answers
    from pytest_emperor.testing.isolation import Attempt, IsolationReport, VassalReport

__version__ = "0.2.0"

from pytest_emperor.convention import APP_INI as APP_INI  # the file an app dir keeps its uWSGI config in

__all__ = [
    "BROKEN_KINDS",
    "AnswersDiffer",
    "Attempt",
    "BlacklistEntry",
    "ConfigError",
    "ConfigFileError",
    "DeployPlan",
    "Difference",
    "Emperor",
    "EmperorError",
    "EmperorEvent",
    "EmperorStats",
    "EventKind",
    "IsolationError",
    "IsolationReport",
    "NginxNotFound",
    "RevisionError",
    "RouteMap",
    "RouteMismatch",
    "Router",
    "RouterError",
    "SetupError",
    "SiteError",
    "SocketAdapter",
    "SocketInUse",
    "SocketSpec",
    "UnsafePath",
    "UpstreamError",
    "UwsgiAdapter",
    "UwsgiNotFound",
    "Vassal",
    "VassalCursed",
    "VassalError",
    "VassalReport",
    "VassalState",
    "VassalStats",
    "VassalTimeout",
    "__version__",
    "assert_same_answers",
    "compare_answers",
    "direct_session",
    "find_uwsgi",
]

# Public name -> the module that defines it.
_EXPORTS = {
    "AnswersDiffer": "errors",
    "Attempt": "testing.isolation",
    "BROKEN_KINDS": "testing.broken",
    "BlacklistEntry": "engine.stats",
    "ConfigError": "errors",
    "ConfigFileError": "errors",
    "DeployPlan": "engine.deploy_plan",
    "Difference": "testing.compare",
    "Emperor": "engine.emperor",
    "EmperorError": "errors",
    "EmperorEvent": "engine.emperor_log",
    "EmperorStats": "engine.stats",
    "EventKind": "engine.emperor_log",
    "IsolationError": "errors",
    "IsolationReport": "testing.isolation",
    "NginxNotFound": "errors",
    "RevisionError": "errors",
    "RouteMap": "routing.routes",
    "RouteMismatch": "errors",
    "Router": "routing.router",
    "RouterError": "errors",
    "SetupError": "errors",
    "SiteError": "errors",
    "SocketAdapter": "_protocol.client",
    "SocketInUse": "errors",
    "SocketSpec": "engine.deploy_plan",
    "UnsafePath": "errors",
    "UpstreamError": "_protocol.client",
    "UwsgiAdapter": "_protocol.client",
    "UwsgiNotFound": "errors",
    "Vassal": "engine.vassal",
    "VassalCursed": "errors",
    "VassalError": "errors",
    "VassalReport": "testing.isolation",
    "VassalState": "engine.vassal",
    "VassalStats": "engine.stats",
    "VassalTimeout": "errors",
    "assert_same_answers": "testing.compare",
    "compare_answers": "testing.compare",
    "direct_session": "_protocol.client",
    "find_uwsgi": "engine.binary",
}

# Names kept one release with a DeprecationWarning on access: name -> (module, attribute, why; the CHANGELOG).
_DEPRECATED = {
    "Response": ("requests", "Response", "requests return requests.Response (status_code, not status)"),
    "UwsgiProtocolError": (
        "pytest_emperor.errors",
        "_uwsgi_protocol_error",
        "nothing raises it any more (responses are read by http.client, which raises its own errors)",
    ),
    "InputError": ("pytest_emperor.errors", "InputError", "it is emperor-dev check's (exit code 2), not the API's"),
    "ControlProtocolError": (
        "pytest_emperor.errors",
        "ControlProtocolError",
        "it is emperor-dev's control socket's, not the API's",
    ),
}


def __getattr__(name: str) -> Any:
    if name in _DEPRECATED:
        source, attribute, why = _DEPRECATED[name]
        warnings.warn(f"pytest_emperor.{name} is deprecated: {why}", DeprecationWarning, stacklevel=2)
        value = getattr(importlib.import_module(source), attribute)
        return value() if attribute.startswith("_") else value
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'pytest_emperor' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"pytest_emperor.{module}"), name)
    globals()[name] = value  # once imported, a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
