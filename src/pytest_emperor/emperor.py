"""One real ``uwsgi --emperor`` on a private run dir: start it, watch it, deploy vassals into it, stop it cleanly.

How the pieces fit:

* the emperor runs in its own session (so a Ctrl-C on the terminal reaches pytest, which then stops it in
  order) with an environment marker (processes.py) and a parent-death signal;
* its stdout is a pipe read by one thread, which copies every line to ``emperor.log`` and turns the
  ``[emperor]`` lines into numbered events (emperor_log.py); waits block on those events, not on sleeps;
* the stats socket (stats.py) is the source of truth for a vassal's state, and connecting to it wakes the
  emperor so it scans the vassal dir at once instead of at its next ``--emperor-freq`` tick;
* every vassal logs to ``logs/<name>.log`` through a ``--vassals-include`` that only sets ``logto``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from pytest_emperor.binary import find_uwsgi
from pytest_emperor.emperor_log import EmperorEvent, EmperorLogParser, EventKind
from pytest_emperor.errors import EmperorError, VassalTimeout
from pytest_emperor.isolation import Isolation, direct, through_router
from pytest_emperor.processes import MARKER_ENV, die_with_parent, kill_all, processes_with_marker, wait_exit
from pytest_emperor.router import RouteMap, Router, start_router
from pytest_emperor.runs import RunDir
from pytest_emperor.stats import EmperorStats, read_stats
from pytest_emperor.vassal import Vassal, prepare_deployment

# Emperor options chosen for tests (uwsgi-facts.md sections 1 and 3):
#  --emperor-freq 1: the shortest scan period; deploys do not wait for it anyway (the stats doorbell).
#  --emperor-nofollow: the emperor takes the mtime of the *symlink*, so reload() can touch the link and never the
#    user's file (with the default, only the target's mtime counts).
#  --emperor-throttle 100 / --emperor-max-throttle 1000: a cursed vassal is retried within about a second,
#    instead of after a back-off growing by 1 s per failure up to 3 minutes, so throttling is observable in a test.
EMPEROR_FLAGS = (
    "--emperor-freq", "1",
    "--emperor-nofollow",
    "--emperor-throttle", "100",
    "--emperor-max-throttle", "1000",
)  # fmt: skip

# A clean emperor shutdown takes about a second per vassal wave (each vassal master reaps its workers on a 1 s
# tick); past this, a vassal hit by uWSGI's stop-during-start race (see Vassal.remove) is holding it up.
SHUTDOWN_GRACE = 5.0


class Emperor:
    """A running uWSGI emperor with its vassal dir; use as a context manager (or ``start()``/``stop()``).

    ``name_suffix`` is appended to every vassal name, and so (through ``%n``) to socket paths like
    ``/tmp/%n.api.sock``: by default ``-<run tag>``, unique per run, so that concurrent runs and xdist workers
    never bind the same path. Pass ``""`` to deploy under the apps' own names, as production does.

    ``route_map`` (default: ``<app>.<domain>`` -> ``/tmp/<app>.api.sock``) is the nginx-style routing; the
    ``router`` (``"builtin"`` or ``"nginx"``) serving it is started on first use of ``emperor.router``.
    """

    def __init__(
        self,
        uwsgi: str | os.PathLike[str] | None = None,
        *,
        name_suffix: str | None = None,
        domain: str = "api.localhost",
        route_map: RouteMap | None = None,
        router: str = "builtin",
        router_options: dict[str, Any] | None = None,
        runs_root: Path | None = None,
        keep: bool = False,
        timeout: float = 30.0,
    ) -> None:
        self.uwsgi = find_uwsgi(uwsgi)
        self.name_suffix = name_suffix
        self.route_map = route_map or RouteMap.for_domain(domain)
        self.router_kind = router
        self.router_options = router_options or {}
        self._router: Router | None = None
        self.keep = keep
        self.timeout = timeout
        self.vassals: dict[str, Vassal] = {}
        self._runs_root = runs_root
        self._run: RunDir | None = None
        self._run_path: Path | None = None  # still known after stop(), for a kept run dir
        self._proc: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None
        self._events: list[EmperorEvent] = []
        self._eof = False
        self._cond = threading.Condition()

    # -- paths ------------------------------------------------------------------------------------------------

    @property
    def run_dir(self) -> Path:
        """The private directory of this run (kept after stop with ``keep=True``)."""
        if self._run_path is None:
            raise EmperorError("the emperor was never started")
        return self._run_path

    @property
    def vassal_dir(self) -> Path:
        """The directory the emperor watches; deploying is creating a symlink here."""
        return self.run_dir / "vassals"

    @property
    def logs_dir(self) -> Path:
        """Where each vassal writes ``<name>.log``."""
        return self.run_dir / "logs"

    @property
    def log_path(self) -> Path:
        """The emperor's own output (with the early output of vassals, before their ``logto`` applies)."""
        return self.run_dir / "emperor.log"

    @property
    def stats_path(self) -> Path:
        """The emperor's stats socket."""
        return self.run_dir / "stats.sock"

    def kill_everything(self) -> None:
        """SIGKILL every process of this run at once (emperor, vassals, router): the forced stop of a second
        Ctrl-C. ``stop()`` still has to be called to clean up."""
        kill_all(processes_with_marker(self._run_or_fail().marker))

    @property
    def pid(self) -> int:
        """The emperor's pid."""
        if self._proc is None:
            raise EmperorError("the emperor is not started")
        return self._proc.pid

    # -- lifecycle --------------------------------------------------------------------------------------------

    def start(self) -> Emperor:
        """Start the emperor and return once its stats socket answers."""
        self._run = RunDir.create(self._runs_root)
        self._run_path = self._run.path
        if self.name_suffix is None:
            self.name_suffix = f"-{self._run.tag}"
        self.vassal_dir.mkdir(mode=0o700)
        self.logs_dir.mkdir(mode=0o700)
        include = self.run_dir / "vassal-logging.ini"
        # %N is the name of the vassal's own (first) config file; see uwsgi-facts.md section 4.
        include.write_text(f"[uwsgi]\nlogto = {self.logs_dir}/%N.log\n")
        cmd = [
            str(self.uwsgi),
            "--emperor", str(self.vassal_dir),
            "--emperor-stats", str(self.stats_path),
            "--vassals-include", str(include),
            *EMPEROR_FLAGS,
        ]  # fmt: skip
        env = dict(os.environ, **{MARKER_ENV: self._run.marker})
        try:
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                cwd=self.run_dir,
                env=env,
                start_new_session=True,
                preexec_fn=die_with_parent(signal.SIGINT),
            )
        except BaseException:
            self._run.close(keep=self.keep)
            self._run = None
            raise
        (self.run_dir / "emperor.pid").write_text(f"{self._proc.pid}\n")
        self._reader = threading.Thread(target=self._read_output, name="emperor-log", daemon=True)
        self._reader.start()
        try:
            self.wait_event(
                lambda e: e.kind is EventKind.STATS_READY, since=0, timeout=self.timeout, what="the stats socket"
            )
            self.stats()
        except BaseException:
            self.stop()
            raise
        return self

    def __enter__(self) -> Emperor:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop the emperor with SIGINT (its shutdown signal), make sure every process of the run is gone, remove
        the sockets its vassals left and the run dir (unless ``keep``). Safe to call twice."""
        if self._run is None:
            return
        try:
            if self._router is not None:
                router, self._router = self._router, None
                router.stop()
        finally:
            self._stop_emperor()

    def _stop_emperor(self) -> None:
        assert self._run is not None
        try:
            if self._proc is not None:
                if self._proc.poll() is None:
                    self._run.note_bound()  # while the vassals still serve their sockets (see runs.py)
                    self._proc.send_signal(signal.SIGINT)
                    if not wait_exit(self._proc.pid, SHUTDOWN_GRACE):
                        kill_all(processes_with_marker(self._run.marker))
                self._proc.wait()
            # Vassals that outlived the emperor (a wedged one, or one whose emperor was killed): force them, then
            # remove the sockets they left that are provably theirs.
            self._run.kill_and_unlink()
            if self._reader is not None:
                self._reader.join(timeout=5)
            # The read end of the emperor's output pipe (one fd per run otherwise), once the reader is done with
            # it: closing a buffered file another thread is blocked reading waits for that read, i.e. forever if
            # something still holds the write end.
            reading = self._reader is not None and self._reader.is_alive()
            if self._proc is not None and self._proc.stdout is not None and not reading:
                self._proc.stdout.close()
        finally:
            self._run.close(keep=self.keep)
            self._run = None

    @property
    def router(self) -> Router:
        """The router in front of the vassals (started on first use): ``tcp_address``, ``unix_path``,
        ``url_for(name)``, ``session_for(name)``."""
        if self._router is None:
            self._router = start_router(
                self.router_kind, self.route_map, self.run_dir,
                env={MARKER_ENV: self._run_or_fail().marker}, timeout=self.timeout, **self.router_options,
            )  # fmt: skip
        return self._router

    @property
    def running(self) -> bool:
        """True while the emperor process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def _read_output(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        parser = EmperorLogParser()
        with self.log_path.open("ab") as log:
            for raw in self._proc.stdout:
                log.write(raw)
                log.flush()
                event = parser.feed(raw.decode("utf-8", "replace").rstrip("\r\n"))
                if event is not None:
                    with self._cond:
                        self._events.append(event)
                        self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    # -- events and stats -------------------------------------------------------------------------------------

    @property
    def last_seq(self) -> int:
        """The number of the latest event; pass it as ``since`` to wait only for what happens next."""
        with self._cond:
            return len(self._events)

    def events(self, vassal: str | None = None, since: int = 0) -> list[EmperorEvent]:
        """Events after ``since``, optionally only those about the vassal id ``vassal`` (``name.ini``)."""
        with self._cond:
            return [e for e in self._events[since:] if vassal is None or e.vassal == vassal]

    def wait_event(
        self,
        match: Callable[[EmperorEvent], bool],
        *,
        since: int,
        timeout: float,
        what: str,
        context: Callable[[], Sequence[str]] | None = None,
    ) -> EmperorEvent:
        """Block until an event after ``since`` satisfies ``match``; return it.

        On timeout (or if the emperor's output ends) raise VassalTimeout saying what was awaited, the events
        seen meanwhile and, from ``context``, the relevant log lines.
        """
        deadline = time.monotonic() + timeout
        checked = since
        with self._cond:
            while True:
                for event in self._events[checked:]:
                    if match(event):
                        return event
                checked = len(self._events)
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._eof:
                    break
                self._cond.wait(remaining)
            seen = [e.line for e in self._events[since:] if e.kind is not EventKind.OUTPUT][-10:]
        why = "the emperor exited" if self._eof else f"timed out after {timeout:g}s"
        message = f"{why} waiting for {what}; emperor events meanwhile: " + (
            "\n  " + "\n  ".join(seen) if seen else "none"
        )
        raise VassalTimeout(message, context() if context else self.log_tail())

    def log_tail(self, lines: int = 20) -> list[str]:
        """The last lines of the emperor's log."""
        try:
            return self.log_path.read_text(errors="replace").splitlines()[-lines:]
        except FileNotFoundError:
            return []

    def stats(self) -> EmperorStats:
        """Read the emperor's stats (and wake it up: see ``stats.read_stats``)."""
        return read_stats(str(self.stats_path))

    def clear_blacklist(self) -> None:
        """Forget every blacklisted vassal (SIGURG), so a name that was cursed can be deployed again at once."""
        since = self.last_seq
        os.kill(self.pid, signal.SIGURG)
        self.stats()
        self.wait_event(
            lambda e: e.kind is EventKind.BLACKLIST_CLEARED, since=since, timeout=self.timeout,
            what="the emperor to clear its blacklist",
        )  # fmt: skip

    # -- deploying --------------------------------------------------------------------------------------------

    def deploy(
        self, path: str | os.PathLike[str], name: str | None = None, *, wait: bool = True, timeout: float | None = None
    ) -> Vassal:
        """Deploy an app dir (its ``app.uwsgi.ini``) or an ini file as vassal ``<name><suffix>``, by symlink.

        The default name is the app dir's. With ``wait`` (the default) return once it is ready (accepting, and a
        probe request answered); raise VassalCursed with its error lines if the emperor curses it first, after
        removing it again.
        """
        vassal = prepare_deployment(self, Path(path), name)
        for socket_path in vassal.socket_paths:
            self._run_or_fail().record_socket(socket_path)
        self.vassals[vassal.name] = vassal
        vassal.link()
        if wait:
            try:
                vassal.wait_ready(timeout)
                # Ready: the files at its socket paths are the ones it bound, so the run may unlink them later.
                self._run_or_fail().record_bound(vassal.socket_paths)
            except BaseException:
                # A deploy that failed leaves nothing behind: no link for the emperor to retry all session, and
                # the name free for the next attempt.
                vassal.remove()
                raise
        return vassal

    def isolation(self, *healthy: Vassal, p99_budget: float = 0.5, via: str = "direct") -> Isolation:
        """``with emperor.isolation(*healthy) as report:``: steady traffic to ``healthy`` for the whole block,
        which fails on exit unless none of them noticed what the block did (see isolation.py). ``via`` is
        ``"direct"`` (to the sockets) or ``"router"``."""
        senders = {"direct": direct, "router": through_router}
        if via not in senders:
            raise ValueError(f"via must be 'direct' or 'router', not {via!r}")
        return Isolation(self, healthy, p99_budget=p99_budget, send=senders[via])

    def _run_or_fail(self) -> RunDir:
        if self._run is None:
            raise EmperorError("the emperor is not started")
        return self._run
