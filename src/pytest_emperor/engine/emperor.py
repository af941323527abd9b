"""One real ``uwsgi --emperor`` on a private run dir: start it, watch it, deploy vassals into it, stop it cleanly.

How the pieces fit:

* the emperor runs in its own session (so a Ctrl-C on the terminal reaches pytest, which then stops it in
  order) with an environment marker (processes.py) and a parent-death signal;
* its stdout is a pipe read by one thread, which copies every line to ``emperor.log`` and turns the
  ``[emperor]`` lines into numbered events (emperor_log.py); waits block on those events, not on sleeps;
* the stats socket (stats.py) is the source of truth for a vassal's state, and connecting to it wakes the
  emperor so it scans the vassal dir at once instead of at its next ``--emperor-freq`` tick;
* every vassal gets, through a ``--vassals-include``: ``logto = logs/<name>.log``, the ``shared-import`` of
  bound_recorder.py (its master records the sockets it bound), and the caller's ``vassal_options``.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from pytest_emperor.convention import DEFAULT_DOMAIN
from pytest_emperor.engine import bound_recorder
from pytest_emperor.engine.binary import find_uwsgi
from pytest_emperor.engine.emperor_log import EmperorEvent, EmperorLogParser, EventKind
from pytest_emperor.engine.processes import (
    MARKER_ENV,
    WAKE_TICK,
    children_of,
    die_with_parent,
    hasten_stop,
    kill_all,
    wait_exit,
)
from pytest_emperor.engine.route_guard import follow_event
from pytest_emperor.engine.runs import RunDir
from pytest_emperor.engine.stats import EmperorStats, read_stats
from pytest_emperor.engine.vassal import STOP_GRACE, Vassal, prepare_deployment
from pytest_emperor.errors import EmperorError, RouteMismatch, VassalTimeout
from pytest_emperor.routing.router import Router
from pytest_emperor.routing.routes import RouteMap

# Emperor options chosen for tests (docs/uwsgi-behaviour.md, "The engine"):
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

# A clean emperor shutdown takes tens of milliseconds once its vassals are woken (see _stop_emperor); past this,
# something is wedged and every process of the run is killed.
SHUTDOWN_GRACE = 5.0


@dataclass
class _Removal:
    """A vassal being removed in the background (``Vassal.remove(wait=False)``)."""

    vassal: Vassal
    thread: threading.Thread = field(init=False)
    error: BaseException | None = None


class Emperor:
    """A running uWSGI emperor with its vassal dir; use as a context manager (or ``start()``/``stop()``).

    ``name_suffix`` is appended to every vassal name, and so (through ``%n``) to socket paths like
    ``/tmp/%n.api.sock``: by default ``-<run tag>``, unique per run, so that concurrent runs and xdist workers
    never bind the same path. Pass ``""`` to deploy under the apps' own names, as production does.

    ``route_map`` (default: ``<app>.<domain>`` -> ``/tmp/<app>.api.sock``) is the nginx routing; the router (a
    private nginx, see :meth:`~.routing.nginx.NginxRouter.start` for ``router_options``) is started on first use of
    ``emperor.router``. ``keep_app_logto`` leaves a vassal's own ``logto`` in force (the run's per-vassal log is
    then only for vassals without one); ``extra_args`` are more emperor flags (production's ``--uid``/``--gid``), and
    ``run_owner`` (uid, gid) hands the run dir to the user such flags drop to. ``vassal_options`` (``(key, value)``
    pairs) are given to every vassal on top of its own ini file (coverage: testing/coverage.py).
    """

    def __init__(
        self,
        uwsgi: str | os.PathLike[str] | None = None,
        *,
        name_suffix: str | None = None,
        domain: str = DEFAULT_DOMAIN,
        route_map: RouteMap | None = None,
        router_options: dict[str, Any] | None = None,
        runs_root: Path | None = None,
        keep: bool = False,
        timeout: float = 30.0,
        keep_app_logto: bool = False,
        extra_args: Sequence[str] = (),
        run_owner: tuple[int, int] | None = None,
        vassal_options: Sequence[tuple[str, str]] = (),
    ) -> None:
        self.uwsgi = find_uwsgi(uwsgi)
        self.keep_app_logto = keep_app_logto
        self.extra_args = tuple(extra_args)
        self.run_owner = run_owner
        self.vassal_options = list(vassal_options)
        self.name_suffix = name_suffix
        self.route_map = route_map or RouteMap.for_domain(domain)
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
        self._removals: dict[str, _Removal] = {}
        self._removals_lock = threading.Lock()
        self._bells: list[socket.socket] = []  # doorbell connections the emperor has not answered yet (see ring)
        self._bells_lock = threading.Lock()
        self._stats_lock = threading.Lock()
        self._recent_stats: tuple[int, EmperorStats] | None = None  # (last_seq when read, the snapshot)
        self.version = ""  # the binary's version, read from the stats once started

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
        if self._router is not None:  # nginx writes its process titles over its environment: it has no marker
            kill_all([self._router.process.pid, *children_of(self._router.process.pid)])
        self._run_or_fail().kill()

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
        # %N is the name of the vassal's own (first) config file; see docs/uwsgi-behaviour.md, "The engine".
        logto = f"logto = {self.logs_dir}/%N.log\n"
        if self.keep_app_logto:
            # as production: a vassal's own `logto` (even into a missing dir) stays; the include comes after the
            # vassal's file, so `if-not-opt` sees it (emperor-dev check's boot check uses this)
            logto = f"if-not-opt = logto\n{logto}endif =\n"
        # Every master records the sockets it bound as soon as it has bound them (bound_recorder.py), so that
        # even one that dies before it is ready leaves no file the run cannot prove its own.
        python_dir = self.run_dir / "python"
        python_dir.mkdir(mode=0o755)
        shutil.copyfile(bound_recorder.__file__, python_dir / f"{bound_recorder.VASSAL_MODULE}.py")
        recorder = f"pythonpath = {python_dir}\nshared-import = {bound_recorder.VASSAL_MODULE}\n"
        extra = "".join(f"{key} = {value}\n" for key, value in self.vassal_options)
        include.write_text(f"[uwsgi]\n{logto}{recorder}{extra}")
        if self.run_owner is not None:
            # an emperor told to drop privileges (`--uid`) must still reach its own run dir afterwards
            for path in (self.run_dir, self.vassal_dir, self.logs_dir):
                os.chown(path, *self.run_owner)
        cmd = [
            str(self.uwsgi),
            "--emperor", str(self.vassal_dir),
            "--emperor-stats", str(self.stats_path),
            "--vassals-include", str(include),
            *EMPEROR_FLAGS,
            *self.extra_args,
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
            self.version = str(self.stats().raw.get("version", ""))  # %V of the vassals' inis
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
            try:
                self.finish_removals()
            finally:
                if self._proc is not None:
                    if self._proc.poll() is None:
                        self._run.note_bound()  # while the vassals still serve their sockets (see runs.py)
                        self._shut_down(self._proc)
                    self._proc.wait()
                # Vassals that outlived the emperor (a wedged one, or one whose emperor was killed): force them,
                # then remove the sockets they left that are provably theirs.
                self._run.kill_and_unlink()
                if self._reader is not None:
                    self._reader.join(timeout=5)
                with self._bells_lock:
                    self._close_bells(answered_only=False)
                # The read end of the emperor's output pipe (one fd per run otherwise), once the reader is done
                # with it: closing a buffered file another thread is blocked reading waits for that read, i.e.
                # forever if something still holds the write end.
                reading = self._reader is not None and self._reader.is_alive()
                if self._proc is not None and self._proc.stdout is not None and not reading:
                    self._proc.stdout.close()
        finally:
            self._run.close(keep=self.keep)
            self._run = None

    def _shut_down(self, proc: subprocess.Popen[bytes]) -> None:
        """SIGINT, the emperor's shutdown: it sends every vassal its stop and waits for them. Left alone, that
        takes 3 s for a single vassal (docs/uwsgi-behaviour.md, "Start, stop and removal timing"): each master
        reaps its workers at its 1 s tick and the emperor polls for them with ``sleep(1)``. So the masters are
        woken (``hasten_stop``) and the emperor too: SIGWINCH, whose handler does nothing but end its sleep."""
        assert self._run is not None
        since = self.last_seq
        proc.send_signal(signal.SIGINT)
        deadline = time.monotonic() + SHUTDOWN_GRACE
        # Woken before the emperor has marked them as stopping, masters would die as unasked deaths (curses).
        with contextlib.suppress(VassalTimeout):  # a wedged emperor is dealt with below
            self.wait_event(
                lambda e: e.kind is EventKind.SHUTDOWN, since=since, timeout=SHUTDOWN_GRACE, what="the shutdown"
            )

        def wake_emperor() -> None:
            if proc.poll() is None:  # not reaped, so the pid is still the emperor's
                proc.send_signal(signal.SIGWINCH)

        # Listed once the shutdown has begun: from then on the emperor respawns nothing, so a master it respawned
        # just before the stop (a crash loop) is among them. Such a master may have bound its socket and not yet
        # recorded it (bound_recorder.py): hasten_stop notes what each serves before it signals it.
        masters = children_of(proc.pid)  # the vassal masters: the emperor forks nothing else
        hasten_stop(
            masters, grace=STOP_GRACE, timeout=SHUTDOWN_GRACE, note=self._run.note_bound, each_tick=wake_emperor
        )
        # A wake-up that lands just before the emperor sleeps is lost: one a tick until it is gone.
        while not wait_exit(proc.pid, WAKE_TICK):
            if time.monotonic() > deadline:
                self._run.kill()
                return
            wake_emperor()

    def forget(self, vassal: Vassal) -> None:
        """Drop a removed ``vassal`` from :attr:`vassals` (the emperor alone writes its registry)."""
        if self.vassals.get(vassal.name) is vassal:
            del self.vassals[vassal.name]

    # -- background removals ----------------------------------------------------------------------------------

    def remove_in_background(self, vassal: Vassal, timeout: float | None = None) -> None:
        """Forget ``vassal`` now and stop it in a thread (``Vassal.remove(wait=False)``); ``finish_removals``
        waits for it."""
        removal = _Removal(vassal)

        def run() -> None:
            try:
                vassal.stop(timeout)
            except BaseException as exc:  # raised to whoever waits for the removal
                removal.error = exc

        removal.thread = threading.Thread(target=run, name=f"remove-{vassal.name}", daemon=True)
        with self._removals_lock:
            self.vassals.pop(vassal.name, None)
            self._removals[vassal.name] = removal
        removal.thread.start()

    def finish_removals(self, name: str | None = None, sockets: Iterable[str] = ()) -> None:
        """Wait for the background removals of the vassal ``name`` and of those binding one of ``sockets`` (all of
        them if neither is given); raise the first error one of them met."""
        wanted = set(sockets)
        with self._removals_lock:
            chosen = [
                (key, removal)
                for key, removal in self._removals.items()
                if (name is None and not wanted) or key == name or wanted & set(removal.vassal.socket_paths)
            ]
        errors = []
        for key, removal in chosen:
            removal.thread.join()
            with self._removals_lock:
                if self._removals.get(key) is removal:
                    del self._removals[key]
            if removal.error is not None:
                errors.append(removal.error)
        if errors:
            raise errors[0]

    @property
    def router(self) -> Router:
        """The router in front of the vassals (started on first use): ``tcp_address``, ``unix_path``,
        ``url_for(name)``, ``session_for(name)``."""
        if self._router is None:
            from pytest_emperor.routing.nginx import NginxRouter  # nginx's machinery: once it starts

            self._router = NginxRouter.start(
                self.route_map, self.run_dir,
                env={MARKER_ENV: self._run_or_fail().marker}, timeout=self.timeout, **self.router_options,
            )  # fmt: skip
            self._router.check_route = self._check_route
        return self._router

    def _check_route(self, name: str) -> None:
        """RouteMismatch before any request when the routing cannot reach vassal ``name`` (others: unchecked)."""
        __tracebackhide__ = True  # a failure reads as the caller's own line (pytest hides this frame)
        vassal = self.vassals.get(name)
        if vassal is not None:
            problem = self.route_map.mismatch(name, vassal.socket_paths)
            if problem is not None:
                raise RouteMismatch(f"{problem}: every request through the router would get a 502")

    @property
    def running(self) -> bool:
        """True while the emperor process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def _record_bound(self, vassal_id: str | None) -> None:
        """A vassal of this run reports ready: the files at its socket paths are the ones its master bound, so
        the run may unlink them once it is gone (``RunDir.record_bound``). Recorded at every ready, before the
        event is seen by any waiter: a master killed later (a crash loop, ``kill_master``) leaves a file that
        vacuum never removes, and each respawned master binds a new one."""
        run = self._run
        for vassal in list(self.vassals.values()):  # a copy: deploys add to it from other threads
            if vassal.id == vassal_id and run is not None:
                with contextlib.suppress(FileNotFoundError):  # the run was closed meanwhile
                    run.record_bound(vassal.socket_paths)

    def _read_output(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        parser = EmperorLogParser()
        with self.log_path.open("ab") as log:
            for raw in self._proc.stdout:
                log.write(raw)
                log.flush()
                event = parser.feed(raw.decode("utf-8", "replace").rstrip("\r\n"))
                if event is not None:
                    if event.kind is EventKind.READY:
                        self._record_bound(event.vassal)
                    follow_event(self, event)  # the router's route table (route_guard.py)
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
        seen = self.last_seq
        stats = read_stats(str(self.stats_path))
        self._recent_stats = (seen, stats)
        return stats

    def stats_after(self, seq: int) -> EmperorStats:
        """A stats snapshot read after the event ``seq`` was seen: the latest one read if it is that recent, else
        a new one. Each read costs the emperor a JSON dump of every vassal, so vassals that become ready together
        (50 at once under ``emperor-dev up``) share one."""
        with self._stats_lock:  # the others wait for this read rather than start their own
            recent = self._recent_stats
            if recent is not None and recent[0] >= seq:
                return recent[1]
            return self.stats()

    def ring(self) -> None:
        """Wake the emperor so that it scans its vassal dir now, without waiting for it.

        A connection to the stats socket wakes it (see ``stats.read_stats``) and, unlike a signal, is never lost:
        it waits in the listen queue until the emperor gets to it. Reading the answer would wait for the emperor,
        which is slow while dozens of vassals start; so the connection is left open for the emperor to write its
        answer into the socket buffer, and closed once answered: closed earlier, the emperor's write would fail
        and log an error.
        """
        bell = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            bell.connect(str(self.stats_path))
        except OSError:
            bell.close()
            raise
        with self._bells_lock:
            self._bells.append(bell)
            self._close_bells(answered_only=True)

    def _close_bells(self, answered_only: bool) -> None:
        answered: set[int] = set()
        if answered_only and self._bells:
            poller = select.poll()  # not select(): a busy process may hold fds past FD_SETSIZE
            for bell in self._bells:
                poller.register(bell, select.POLLIN)
            answered = {fd for fd, _ in poller.poll(0)}
        keep = []
        for bell in self._bells:
            if answered_only and bell.fileno() not in answered:
                keep.append(bell)
            else:
                bell.close()
        self._bells = keep

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
        __tracebackhide__ = True  # a failure reads as the caller's own line (pytest hides this frame)
        vassal = prepare_deployment(self, Path(path), name)
        for socket_path in vassal.socket_paths:
            self._run_or_fail().record_socket(socket_path)
        self.vassals[vassal.name] = vassal
        vassal.link()
        if wait:
            try:
                vassal.wait_ready(timeout)
            except BaseException:
                # A deploy that failed leaves nothing behind: no link for the emperor to retry all session, and
                # the name free for the next attempt.
                vassal.remove()
                raise
        return vassal

    def note_bound(self, pids: list[int]) -> None:
        """Record the sockets ``pids`` (processes of this run) hold bound now (``RunDir.note_bound``); the
        ``note`` of ``processes.hasten_stop``."""
        self._run_or_fail().note_bound(pids)

    def unlink_dead_socket(self, path: str) -> bool:
        """Unlink the socket file a stopped vassal of this run left at ``path`` (see ``RunDir.unlink_dead_socket``)."""
        return self._run_or_fail().unlink_dead_socket(path)

    def _run_or_fail(self) -> RunDir:
        if self._run is None:
            raise EmperorError("the emperor is not started")
        return self._run
