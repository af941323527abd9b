"""Restart an app when its files change: its ini always, its Python files with ``--reload``.

The emperor runs with ``--emperor-nofollow`` (it watches the mtime of the vassal *symlink*, see emperor.py), so
editing an app's ``app.uwsgi.ini`` does not by itself reload it: ``up`` watches the files (inotify, through
watchfiles) and restarts the vassals concerned. :func:`apps_to_restart` is the pure decision.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import watchfiles

from pytest_emperor.dev.apps import AppSpec

# Directories whose files are never an app's own code: caches, VCS data, virtualenvs (a `pip install` into an
# app's venv is not an edit; its thousands of files would restart the app at every step of it).
_IGNORED_DIRS = frozenset({"__pycache__", ".git", ".hg", ".svn", ".tox", ".nox", ".mypy_cache", ".pytest_cache",
                           ".hypothesis", "node_modules", ".emperor", "site-packages"})

# Editors save in bursts (write a temp file, rename it, touch it): wait this long for the burst to end (ms).
_DEBOUNCE_MS = 300


def apps_to_restart(changed: Iterable[Path], apps: Mapping[str, AppSpec], *, code: bool) -> set[str]:
    """The apps concerned by changes to ``changed``: those whose ini it is, and (with ``code``) those whose app
    dir holds a changed ``.py`` file outside the ignored directories. Several apps deployed from one dir all run
    its code, so they all restart."""
    names = set()
    for path in changed:
        for name, spec in apps.items():
            if path == spec.ini:
                names.add(name)
            elif code and path.suffix == ".py" and spec.app_dir in path.parents:
                inside = path.relative_to(spec.app_dir).parts[:-1]
                if not any(part in _IGNORED_DIRS or part.startswith("venv") for part in inside):
                    names.add(name)
    return names


class _Either:
    """Set when either event is: watchfiles' ``stop_event`` only needs ``is_set()``."""

    def __init__(self, *events: threading.Event) -> None:
        self.events = events

    def is_set(self) -> bool:
        return any(event.is_set() for event in self.events)


class AppWatcher:
    """A thread that calls ``restart(name)`` for each app concerned by a change (see :func:`apps_to_restart`)."""

    def __init__(
        self, apps: Callable[[], Mapping[str, AppSpec]], restart: Callable[[str], None], *, code: bool
    ) -> None:
        self._apps = apps
        self._restart = restart
        self._code = code
        self._stop = threading.Event()
        self._changed = threading.Event()
        self._thread = threading.Thread(target=self._run, name="emperor-dev-watch", daemon=True)

    def start(self) -> AppWatcher:
        """Start watching."""
        self._thread.start()
        return self

    def apps_changed(self) -> None:
        """The set of apps changed (add/rm): watch the new set of directories."""
        self._changed.set()

    def stop(self) -> None:
        """Stop watching."""
        self._stop.set()
        self._changed.set()  # wakes a watcher that had no dir to watch
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._changed.clear()
            apps = dict(self._apps())
            dirs = sorted({spec.app_dir for spec in apps.values()})
            if not dirs:
                self._changed.wait()  # nothing to watch until an app is added (or the stop)
                continue
            # Without --reload only the ini files matter, and they sit at the top of each app dir.
            for changes in watchfiles.watch(
                *dirs, stop_event=_Either(self._stop, self._changed), debounce=_DEBOUNCE_MS,
                watch_filter=lambda change, _path: change is not watchfiles.Change.deleted,
                recursive=self._code, raise_interrupt=False,
            ):
                for name in sorted(apps_to_restart((Path(p) for _, p in changes), apps, code=self._code)):
                    self._restart(name)
