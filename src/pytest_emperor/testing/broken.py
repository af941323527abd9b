"""Known-broken vassals on demand, each checked against the real emperor.

Each kind is a tiny app written into the run dir (never into the user's tree) in the production style, deployed
beside the user's apps, and returned once it has reached the state its kind leads to:

===================  =====================================================================  ===================
kind                 what is broken                                                         returned once
===================  =====================================================================  ===================
``bad-config``       ``chdir`` to a missing dir: the vassal exits during start-up           throttled (3 curses)
``import-error``     the app fails to import; uWSGI serves 500s (``need_app=False``)        ready, answering 500
``import-error``     the same with ``need-app``: exit 22 at start (``need_app=True``)       throttled (3 curses)
``crash-loop``       starts and serves, then its master is killed a second later, again     cursed twice
``hang``             start-up blocks in the app's import: never ready                       its master runs
``worker-crash``     a worker dies on ``/crash-worker``; the master respawns it             a worker respawned
===================  =====================================================================  ===================
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import TYPE_CHECKING

from pytest_emperor.convention import APP_INI
from pytest_emperor.engine.emperor_log import EventKind
from pytest_emperor.errors import ConfigError, VassalError

if TYPE_CHECKING:
    from pytest_emperor.engine.emperor import Emperor
    from pytest_emperor.engine.vassal import Vassal

_INI = """\
[uwsgi]
; A known-broken vassal from pytest-emperor's testing/broken.py: {kind}
app_root = @(exec://dirname $(realpath %P))
chdir = {chdir}
socket = /tmp/%n.api.sock
wsgi-file = app.py
master = true
processes = {processes}
vacuum = true
{extra}
"""

_OK_APP = """\
import os

def application(environ, start_response):
    if environ["PATH_INFO"] == "/crash-worker":
        os._exit(1)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]
"""

_APPS = {
    "bad-config": (_OK_APP, {"chdir": "%(app_root)/does-not-exist"}),
    "import-error": ("import module_that_does_not_exist  # noqa\n", {}),
    # The attached daemon is a child of the master: $PPID is the master it kills, one second after start-up.
    "crash-loop": (_OK_APP, {"extra": "attach-daemon = sleep 1; kill -KILL $PPID"}),
    "hang": ("import threading\nprint('importing forever', flush=True)\nthreading.Event().wait()\n", {}),
    "worker-crash": (_OK_APP, {"processes": "2"}),
}

#: Every kind of broken vassal, in the order of the table above.
BROKEN_KINDS = tuple(_APPS)


def write_broken_app(directory: Path, kind: str, *, need_app: bool = False) -> Path:
    """Write the app dir of a broken ``kind`` under ``directory``; return it."""
    if kind not in _APPS:
        raise ConfigError(f"unknown broken vassal kind {kind!r}; choose one of {', '.join(BROKEN_KINDS)}")
    code, settings = _APPS[kind]
    values = {"kind": kind, "chdir": "%(app_root)", "processes": "1", "extra": "", **settings}
    if need_app:
        values["extra"] += "\nneed-app = true"
    directory.mkdir(parents=True, exist_ok=True)
    (directory / APP_INI).write_text(_INI.format(**values))
    (directory / "app.py").write_text(code)
    return directory


def deploy_broken(
    emperor: Emperor,
    kind: str,
    name: str | None = None,
    *,
    need_app: bool = False,
    timeout: float | None = None,
    directory: Path | None = None,
) -> Vassal:
    """Deploy a broken vassal of ``kind`` and return it once it reached its kind's state (see the module doc).
    Its files go under ``directory`` (default: the emperor's run dir, removed with it)."""
    __tracebackhide__ = True
    name = name or kind + ("-need-app" if need_app else "")
    app = write_broken_app((directory or emperor.run_dir / "broken") / name, kind, need_app=need_app)
    vassal = emperor.deploy(app, name, wait=False)
    try:
        _reach_state(vassal, kind, need_app, emperor.timeout if timeout is None else timeout)
    except BaseException:
        vassal.remove()
        raise
    return vassal


def _reach_state(vassal: Vassal, kind: str, need_app: bool, timeout: float) -> None:
    __tracebackhide__ = True
    deadline = time.monotonic() + timeout
    if kind == "bad-config" or (kind == "import-error" and need_app):
        vassal.wait_event({EventKind.THROTTLED}, timeout)
    elif kind == "import-error":
        vassal.wait_ready(timeout)
        status = vassal.request("GET", "/").status_code
        if status != 500:
            raise VassalError(f"broken vassal {vassal.name} answered {status}, expected 500", vassal.error_lines())
    elif kind == "crash-loop":
        for _ in range(2):
            vassal.wait_cursed(deadline - time.monotonic())
    elif kind == "hang":
        # The emperor logs nothing when it forks a vassal and a hung one never reports; its stats list it
        # with a pid as soon as it is forked, so poll those (each read also wakes the emperor to scan).
        while vassal.pid is None:
            if time.monotonic() > deadline:
                raise VassalError(f"hung vassal {vassal.name} never started", vassal.error_lines())
            time.sleep(0.005)
    else:  # worker-crash
        vassal.wait_ready(timeout)
        before = set(vassal.workers)
        # The worker dies mid-request: the connection closes without a response.
        with contextlib.suppress(OSError):
            vassal.request("GET", "/crash-worker", timeout=deadline - time.monotonic())
        # No event says "worker respawned" (the emperor is not told); the master's children are polled.
        while not set(vassal.workers) - before or len(vassal.workers) < len(before):
            if time.monotonic() > deadline:
                raise VassalError(f"vassal {vassal.name} did not respawn its worker", vassal.error_lines())
            time.sleep(0.005)
