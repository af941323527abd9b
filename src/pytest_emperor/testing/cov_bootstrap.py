"""Started inside every vassal of a covered run: imported by uWSGI (``shared-import``), not by pytest-emperor.

It runs in the vassal's own interpreter, with the app's virtualenv, where neither pytest nor pytest-emperor is
importable: it uses only the standard library, ``uwsgi`` and coverage.py (which testing/coverage.py puts on the
vassal's path). testing/coverage.py copies this file into the run's coverage dir as ``_pytest_emperor_cov.py``.

``shared-import`` runs in the master before any worker is forked, with or without ``lazy-apps``, so every worker
inherits a started tracer; a worker saves its own data file when it exits (``uwsgi.atexit``, and Python's
``atexit`` at interpreter teardown). See docs/uwsgi-behaviour.md, "Coverage inside vassals".
"""

from __future__ import annotations

import atexit
import json
import os
import sys
import threading
from typing import Any, Callable

# Set by the emperor's include file (``env = ...``): the JSON settings written by testing/coverage.py.
SETTINGS_ENV = "PYTEST_EMPEROR_COV"


def _problem(message: str, problems: str | None) -> None:
    """Say why this process is not measured: in the vassal's log (stderr goes to its ``logto``) and in the run's
    problems file, which the measuring process reports."""
    line = f"pytest-emperor coverage: pid {os.getpid()}: {message}"
    sys.stderr.write(line + "\n")
    sys.stderr.flush()
    if problems:
        with open(problems, "a", encoding="utf-8") as file:
            file.write(line + "\n")


def _chain_uwsgi_atexit(save: Callable[[], None]) -> None:
    """Run ``save`` from ``uwsgi.atexit`` too (kept if the app set one first): uWSGI calls it at worker exit even
    with ``skip-atexit-teardown``, when Python's own atexit handlers never run."""
    try:
        import uwsgi
    except ImportError:  # imported outside uWSGI (a plain ``python -c``): Python's atexit is enough
        return
    previous: Callable[[], Any] | None = getattr(uwsgi, "atexit", None)

    def run() -> None:
        try:
            save()
        finally:
            if previous is not None:
                previous()

    uwsgi.atexit = run


def _trace_uwsgi_threads() -> None:
    """Reach the threads uWSGI starts in C (``threads = N``), which ``threading.settrace`` never sees.

    Each of them calls ``threading.current_thread()`` as it starts (``uwsgi_python_set_thread_name``): there, set
    the hook coverage.py gave ``threading.settrace``, as ``threading.Thread`` does for the threads it starts."""
    current_thread = threading.current_thread

    def current_thread_traced() -> threading.Thread:
        hook = threading.gettrace() if sys.version_info >= (3, 10) else getattr(threading, "_trace_hook", None)
        if hook is not None and sys.gettrace() is None:
            sys.settrace(hook)
        return current_thread()

    threading.current_thread = current_thread_traced


def start() -> object | None:
    """Start coverage.py with the run's settings; return the Coverage object, or None (with a logged reason)."""
    path = os.environ.get(SETTINGS_ENV)
    if not path:
        return None
    with open(path, encoding="utf-8") as file:
        settings = json.load(file)
    try:
        import coverage

        cov = coverage.Coverage(
            data_file=settings["data_file"],
            data_suffix=True,  # one file per process: each worker writes its own
            auto_data=False,  # saved by save() below, once, at this process's exit
            source=settings["source"],
            source_pkgs=settings["source_pkgs"],
            include=settings["include"],
            omit=settings["omit"],
            branch=settings["branch"],
            config_file=settings["config_file"] or False,
        )
    except ImportError as exc:
        _problem(
            f"not measured: coverage.py cannot be imported here ({exc}; sys.path={sys.path})", settings["problems"]
        )
        return None
    except Exception as exc:  # a bad coverage config: the app must still run, and the report says why
        _problem(f"not measured: {type(exc).__name__}: {exc}", settings["problems"])
        return None
    cov.start()
    saved_by: list[int] = []

    def save() -> None:
        # Once per process; a worker forked from the master inherits the master's tracer and this closure, and
        # coverage.py gives the forked process a data file of its own (it checks the pid before writing).
        if os.getpid() in saved_by:
            return
        saved_by.append(os.getpid())
        cov.stop()
        cov.save()

    _trace_uwsgi_threads()
    _chain_uwsgi_atexit(save)
    atexit.register(save)
    return cov


COVERAGE = start()
