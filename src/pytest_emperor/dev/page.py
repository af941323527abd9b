"""``emperor-dev up``'s page: what runs, at ``http://localhost:<port>/``, kept current while it is open.

The router (nginx, routing/route_table.py) serves this machine's Hosts the files of ``<run dir>/page/``: the
page's three static files (``page_assets/`` beside this module, copied there at start) and ``up.json``, the document
the page polls. :class:`UpPage` rewrites that document (a new file renamed over the old one, so a poll never
reads half of it) as soon as the emperor reports an event, and every :data:`TICK` seconds for what changes
without one (memory, request counts), only when something did change. The states in it are ``up``'s table's,
from the one state function (``engine/vassal.py``'s ``decide_state``, through ``DevServer.status``).

The page only shows: acting on an app stays with the command line, whose control socket only its user can
open, while the router's TCP port is open to every user of the machine (docs/up.md, "The page").
"""

from __future__ import annotations

import collections
import contextlib
import functools
import json
import os
import re
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from pytest_emperor import procfs
from pytest_emperor.dev.control import AppStatus
from pytest_emperor.dev.logs import LogLine
from pytest_emperor.engine.processes import children_of
from pytest_emperor.engine.runs import open_owned
from pytest_emperor.errors import EmperorError, UnsafePath

#: The page's files, shipped beside this module (``page_assets/``), copied into the run dir's page directory.
ASSETS = ("index.html", "page.css", "page.js")
DOCUMENT = "up.json"
#: Seconds between two looks at what changes without an event (memory, request counts: reading /proc for 50 apps
#: costs about 20 ms); an event is shown at once.
TICK = 2.0
#: The emperor's latest events the page lists.
EVENTS_KEPT = 100

# uWSGI's request line counts the instance's requests: "[pid: 123|app: 0|req: 5/17]" is its 17th (all workers;
# docs/uwsgi-behaviour.md, "Request log lines").
_REQUEST_COUNT = re.compile(r"\|req: -?\d+/(\d+)\]")
#: How much of the end of an app's log is read for its request count at start: many request lines' worth.
_COUNT_TAIL = 64 * 1024
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class ProcessFacts:
    """What /proc says about an app's processes."""

    memory: int  # resident bytes of its master and every process it forked (workers, mules, spoolers)
    started: float  # when its master started, in epoch seconds


@functools.cache
def _boot_time() -> float:
    """When the machine booted, in epoch seconds (read once: /proc/stat is computed afresh at each read)."""
    with open("/proc/stat", "rb") as f:
        for line in f:
            if line.startswith(b"btime "):
                return float(line.split()[1])
    raise OSError("no btime in /proc/stat")


def process_facts(master: int) -> ProcessFacts | None:
    """The memory and start of the app whose master is ``master``; None when it is gone or not this user's (a
    pid the emperor reported may be reused by anyone's process by the time it is read)."""
    uid = os.getuid()
    try:
        if os.stat(f"/proc/{master}").st_uid != uid:
            return None
        ticks = procfs.start_ticks(master)
        if ticks is None:
            return None
        started = ticks / _CLOCK_TICKS + _boot_time()
        memory = 0
        for pid in [master, *children_of(master)]:
            with contextlib.suppress(OSError):  # a worker that exited meanwhile
                if os.stat(f"/proc/{pid}").st_uid == uid:
                    with open(f"/proc/{pid}/statm", "rb") as f:
                        memory += int(f.read().split()[1]) * _PAGE_SIZE
    except (OSError, ValueError, IndexError):
        return None
    return ProcessFacts(memory, started)


def document(
    apps: Sequence[AppStatus],
    facts: dict[str, ProcessFacts | None],
    requests: dict[str, int],
    events: Sequence[dict[str, Any]],
    up: dict[str, Any],
) -> dict[str, Any]:
    """The page's JSON document (pure): every app's row as ``up``'s table has it, with its process facts and
    request count, then the emperor's latest events, newest last."""
    rows = []
    for app in apps:
        found = facts.get(app.name)
        rows.append({
            "name": app.name, "url": app.url, "state": app.state, "pid": app.pid, "routed": app.routed,
            "errors": app.errors, "requests": requests.get(app.name),
            "memory": found.memory if found else None, "started": round(found.started, 1) if found else None,
        })
    return {"up": up, "apps": rows, "events": list(events)}


class UpPage:
    """The page's directory in a run dir, and the thread that keeps its document current."""

    def __init__(
        self, directory: Path, status: Callable[[], list[AppStatus]], up: dict[str, Any], group: int | None = None
    ) -> None:
        self.directory = directory
        #: the group of nginx's workers when they run as another user (``nginx-user``): the directory is searchable
        #: and its files readable by that group, never by others (as the route table's, routing/nginx.py)
        self.group = group
        self._status = status
        self._up = up
        self._lock = threading.Lock()
        self._requests: dict[str, int] = {}
        self._events: collections.deque[dict[str, Any]] = collections.deque(maxlen=EVENTS_KEPT)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._written = ""
        self.writes = 0  # how many times the document was rewritten (benchmarks count them)

    def install(self) -> UpPage:
        """Make the directory, copy the page's files into it, and write a first document (no app yet)."""
        self.directory.mkdir(mode=0o700, exist_ok=True)
        if self.group is not None:
            os.chown(self.directory, -1, self.group)
            os.chmod(self.directory, 0o710)
        source = resources.files("pytest_emperor.dev").joinpath("page_assets")
        for name in ASSETS:
            with resources.as_file(source.joinpath(name)) as path:
                shutil.copyfile(path, self.directory / name)
            self._share(self.directory / name)
        self._write(document([], {}, {}, [], self._up))
        return self

    def start(self) -> UpPage:
        """Keep the document current from now on, in a thread, until :meth:`stop`."""
        self._thread = threading.Thread(target=self._run, name="emperor-dev-page", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the thread (the document stays as it was)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()

    def changed(self) -> None:
        """Something changed (an app added, removed, reloaded): rewrite the document now."""
        self._wake.set()

    def count_logged(self, logs_dir: Path) -> None:
        """Take each app's request count from its log as it is now (the stream then follows from its end): its
        latest request line, in the last :data:`_COUNT_TAIL` bytes."""
        for log in logs_dir.glob("*.log"):
            try:
                with open_owned(log) as f:  # never through a link a vassal that dropped privileges put there
                    f.seek(max(0, f.seek(0, os.SEEK_END) - _COUNT_TAIL))
                    tail = f.read().decode("utf-8", "replace")
            except (OSError, UnsafePath):
                continue
            counts = _REQUEST_COUNT.findall(tail)
            if counts:
                with self._lock:
                    self._requests[log.stem] = int(counts[-1])

    def feed(self, lines: Sequence[LogLine]) -> None:
        """Lines of ``up``'s log stream: an event is kept and shown at once; an app's request line updates its
        count (shown at the next tick: under load there are thousands a second)."""
        counted: set[str] = set()
        event = False
        with self._lock:
            for line in reversed(lines):  # the latest request line of each app is its count
                if line.event:
                    event = True
                elif line.app not in counted:
                    found = _REQUEST_COUNT.search(line.text)
                    if found is not None:
                        self._requests[line.app] = int(found.group(1))
                        counted.add(line.app)
            now = round(time.time(), 1)
            self._events.extend(
                {"time": now, "app": line.app, "text": line.text, "kind": line.kind.value}
                for line in lines if line.kind is not None
            )
        if event:
            self._wake.set()

    def refresh(self) -> bool:
        """Rebuild the document from the apps' states now; write it if it changed. True if it was written."""
        apps = self._status()
        facts = {app.name: process_facts(app.pid) if app.pid else None for app in apps}
        with self._lock:
            built = document(apps, facts, dict(self._requests), list(self._events), self._up)
        return self._write(built)

    def _write(self, built: dict[str, Any]) -> bool:
        text = json.dumps(built, separators=(",", ":"))
        if text == self._written:
            return False
        fresh = self.directory / f".{DOCUMENT}.new"
        with open(fresh, "w", encoding="utf-8") as f:
            f.write(text)
        self._share(fresh)
        os.replace(fresh, self.directory / DOCUMENT)
        self._written = text
        self.writes += 1
        return True

    def _share(self, path: Path) -> None:
        """A file of the page: readable by nginx's workers' group, if they run as another user; by no one else."""
        if self.group is not None:
            os.chown(path, -1, self.group)
        os.chmod(path, 0o640)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(TICK)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.refresh()
            except (EmperorError, OSError, ValueError):  # the emperor is stopping (a stats read cut short): the
                continue  # page says so once up stops answering
