"""Shared fixtures of the project's own tests: the real uwsgi binary, a live emperor, generated apps."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Callable

import pytest
from components import uwsgi_binary
from filelock import FileLock
from hypothesis import settings
from plugin_helpers import Sandbox

from pytest_emperor.engine.emperor import Emperor

# CI runs a fixed set of examples, so that what passed here passes there; local runs keep exploring new ones.
# No per-example deadline there: hypothesis's 200 ms is a timing assertion, and a loaded CI machine stretched one
# example of a 0.1 ms property to 300 ms (speed is measured by benchmarks/, not by tests).
settings.register_profile("ci", derandomize=True, print_blob=True, deadline=None)
if os.environ.get("CI") == "true":
    settings.load_profile("ci")

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "example_apps"

HELLO = '''
def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello from " + environ["PATH_INFO"].encode()]
'''

# The production style; `{extra}` adds or overrides lines.
# make_app's ini: the production style (tests/seed.py) with `module = app` instead of its venv and
# wsgi-file, and the socket and extra options of each test.
MAKE_APP_INI = """\
[uwsgi]
app_root = @(exec://dirname $(realpath %P))
chdir = %(app_root)
socket = {socket}
chmod-socket = 666
module = app
processes = 2 # number of cores on machine
master = true
vacuum = true
{extra}
"""


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A short private dir under /tmp (socket paths must stay under 108 bytes; tmp_path is too long)."""
    path = Path(tempfile.mkdtemp(prefix="pe-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def uwsgi_bin() -> Path:
    """The real uwsgi binary beside the running Python."""
    return uwsgi_binary()


@pytest.fixture
def live_emperor(uwsgi_bin: Path) -> Iterator[Emperor]:
    """A real emperor of its own for one test, with a router in front (started on first use), stopped (and
    checked gone) after it."""
    from router_fixtures import fronted

    with Emperor(uwsgi_bin, timeout=30) as emperor, fronted(emperor):
        yield emperor
    assert not emperor.running


@pytest.fixture(scope="session")
def example_venvs() -> None:
    """The example apps' virtualenvs, made by the same documented step the README uses (once, xdist-safe)."""
    with FileLock(str(EXAMPLES / ".make_venvs.lock")):
        subprocess.run([sys.executable, str(EXAMPLES / "make_venvs.py")], check=True, capture_output=True)


@pytest.fixture
def make_app(tmp_path: Path) -> Callable[..., Path]:
    """Factory: ``make_app(name, extra_ini="", code=HELLO, socket="/tmp/%n.api.sock")`` writes an app dir
    (app.uwsgi.ini + app.py) under the test's long tmp path, which also proves that long app paths are fine (only
    socket paths are limited). ``socket=""`` leaves the socket line out."""

    def make(name: str = "app", extra_ini: str = "", code: str = HELLO, socket: str = "/tmp/%n.api.sock") -> Path:
        app = tmp_path / name
        app.mkdir()
        ini = MAKE_APP_INI.format(extra=textwrap.dedent(extra_ini), socket=socket)
        if not socket:
            ini = ini.replace("socket = \n", "")
        (app / "app.uwsgi.ini").write_text(ini)
        (app / "app.py").write_text(code)
        return app

    return make


@pytest.fixture
def box(monkeypatch: pytest.MonkeyPatch) -> Iterator[Sandbox]:
    """This test's sandbox (runs root, socket dir, TMPDIR), which the nested pytest runs get through the
    environment (runpytest_subprocess inherits it), without this suite's own xdist and pytest-cov variables."""
    sandbox = Sandbox.create()
    for name, value in sandbox.env().items():
        monkeypatch.setenv(name, value)
    for name in os.environ:
        if name.startswith(("PYTEST_XDIST", "PYTEST_CURRENT", "COV_CORE")):
            monkeypatch.delenv(name)
    try:
        yield sandbox
    finally:
        sandbox.remove()
