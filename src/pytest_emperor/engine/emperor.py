"""One real ``uwsgi --emperor`` on a private run dir, coordinating its event log, stats, run dir and vassals.

How the pieces fit:

* the emperor runs in its own session (so a Ctrl-C on the terminal reaches pytest, which then stops it in
  order) with an environment marker (processes.py) and a parent-death signal;
* its stdout is a pipe read by one thread into the event log (events.py): ``emperor.log`` and numbered events;
  waits block on those events, not on sleeps;
* the stats client (stats.py) reads the source of truth for a vassal's state, and rings the emperor's doorbell
  so it scans the vassal dir at once instead of at its next ``--emperor-freq`` tick;
* the registry (registry.py) holds the deployed vassals and their background removals; each vassal is lent
  what it needs of these (vassal.Lent), never the emperor itself;
* the router is the front door's (the plugin's, ``emperor-dev up``'s): it is handed in as ``front``;
* every vassal gets, through a ``--vassals-include``: ``logto = logs/<name>.log``, the ``shared-import`` of
  bound_recorder.py (its master records the sockets it bound), and the caller's ``vassal_options``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from pytest_emperor.convention import DEFAULT_DOMAIN, DEFAULT_TIMEOUT
from pytest_emperor.engine import bound_recorder
from pytest_emperor.engine.binary import find_uwsgi
from pytest_emperor.engine.deploy_plan import plan_deploy
from pytest_emperor.engine.emperor_log import EmperorEvent, EventKind
from pytest_emperor.engine.events import EventLog
from pytest_emperor.engine.naming import resolve_ini, vassal_name
from pytest_emperor.engine.processes import (
    MARKER_ENV,
    WAKE_TICK,
    children_of,
    described,
    die_with_parent,
    hasten_stop,
    wait_exit,
)
from pytest_emperor.engine.registry import Registry
from pytest_emperor.engine.route_guard import follow_event, listener_check
from pytest_emperor.engine.runs import (
    UWSGI_DIR,
    Reservation,
    RunDir,
    reserve,
    shared_runs_root,
    socket_holders,
    socket_is_live,
)
from pytest_emperor.engine.stats import EmperorStats, StatsClient
from pytest_emperor.engine.vassal import STOP_GRACE, Lent, Vassal
from pytest_emperor.engine.vassal_clients import Front
from pytest_emperor.errors import ConfigError, EmperorError, SocketInUse, VassalTimeout
from pytest_emperor.routing.routes import RouteMap

if TYPE_CHECKING:
    from pytest_emperor.routing.router import Router

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
)

# A clean emperor shutdown takes tens of milliseconds once its vassals are woken (see _stop_emperor); past this,
# something is wedged and every process of the run is killed.
SHUTDOWN_GRACE = 5.0


class Emperor:
    """A running uWSGI emperor with its vassal dir; use as a context manager (or ``start()``/``stop()``).

    ``name_suffix`` is appended to every vassal name, and so (through ``%n``) to socket paths like
    ``/tmp/%n.api.sock``: by default ``-<run tag>``, unique per run, so that concurrent runs and xdist workers
    never bind the same path. Pass ``""`` to deploy under the apps' own names, as production does (or
    ``deploy(..., exact=True)`` for one vassal). Every vassal's name and unix sockets are reserved while it is
    deployed (runs.py, ``reserve``): another run's deploy of the same name or socket is refused.

    ``route_map`` (default: ``<app>.<domain>`` -> ``/tmp/<app>.api.sock``) is the nginx routing; ``front`` gives
    the router a front door runs before the emperor, called on first use of ``vassal.url``, ``http`` or ``httpx``
    (``start_router(emperor.route_map, emperor.run_dir, env=emperor.process_env, ...)``).
    ``keep_app_logto`` leaves a vassal's own ``logto`` in force (the run's per-vassal log is then only for vassals
    without one); ``extra_args`` are more emperor flags (production's ``--uid``/``--gid``), and ``run_owner`` (uid,
    gid) hands the run dir to the user such flags drop to; ``searchable_run`` lets other users enter the run dir by
    path (nginx's workers run as production's ``nginx-user``). ``vassal_options`` (``(key, value)`` pairs) are given to
    every vassal on top of its own ini file (coverage: testing/coverage.py).
    """

    def __init__(
        self,
        uwsgi: str | os.PathLike[str] | None = None,
        *,
        name_suffix: str | None = None,
        domain: str = DEFAULT_DOMAIN,
        route_map: RouteMap | None = None,
        front: Callable[[], Router] | None = None,
        router_options: dict[str, Any] | None = None,
        runs_root: Path | None = None,
        keep: bool = False,
        timeout: float = DEFAULT_TIMEOUT,
        keep_app_logto: bool = False,
        extra_args: Sequence[str] = (),
        run_owner: tuple[int, int] | None = None,
        searchable_run: bool = False,
        vassal_options: Sequence[tuple[str, str]] = (),
    ) -> None:
        self.uwsgi = find_uwsgi(uwsgi)
        self.keep_app_logto = keep_app_logto
        self.extra_args = tuple(extra_args)
        self.run_owner = run_owner
        self.searchable_run = searchable_run or run_owner is not None
        self.vassal_options = list(vassal_options)
        self.name_suffix = name_suffix
        self.route_map = route_map or RouteMap.for_domain(domain)
        #: The router in front of the vassals, started by the front door on first call (see ``vassal.url``).
        self.front = front
        if router_options is not None:
            warnings.warn(
                "Emperor(router_options=...) is deprecated: the router is the front door's; pass front=",
                DeprecationWarning,
                stacklevel=2,
            )
        self._router_options = router_options or {}
        self._router: Router | None = None  # only the deprecated Emperor.router's
        self.keep = keep
        self.timeout = timeout
        #: The deployed vassals by name (a read-only mapping).
        self.vassals = Registry()
        self._runs_root = runs_root
        self._run: RunDir | None = None
        self._run_path: Path | None = None  # still known after stop(), for a kept run dir
        self._proc: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None
        self._log: EventLog | None = None
        self._stats: StatsClient | None = None
        self._lent: Lent | None = None
        self._reserved: dict[Vassal, list[Reservation]] = {}  # what each deployed vassal holds (runs.reserve)
        # the binary's version (%V of the vassals' inis): its stats say it for free, where `uwsgi --version`
        # (binary.uwsgi_version, what emperor-dev check asks without an emperor) costs a process start
        self.version = ""
        #: the emperor did not finish its shutdown within SHUTDOWN_GRACE of its SIGINT: its run was killed
        self.shutdown_killed = False

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
        return self.run_dir / UWSGI_DIR / "stats.sock"  # bound by the emperor, after any privilege drop

    @property
    def process_env(self) -> dict[str, str]:
        """The environment marker of this run's processes: a process started with it (the front door's router)
        is found and killed with the run's own (processes.py)."""
        return {MARKER_ENV: self._run_or_fail().marker}

    def kill_everything(self) -> None:
        """SIGKILL every process of this run at once (emperor, vassals): the forced stop of a second Ctrl-C.
        ``stop()`` still has to be called to clean up."""
        if self._router is not None:  # nginx writes its process titles over its environment: it has no marker
            self._router.kill()
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
        runs_root = self._runs_root
        if runs_root is None and self.searchable_run:  # another user (dropped emperor, nginx's workers) enters it
            runs_root = shared_runs_root()
        self._run = RunDir.create(runs_root)
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
        if self.run_owner is not None:  # an emperor told to drop privileges (`--uid`): what it needs of the run
            self._run.hand_over(self.run_owner)
        elif self.searchable_run:
            self._run.path.chmod(0o711)  # entered by path, never listed (docs/run-dir.md)
        cmd = [
            str(self.uwsgi),
            "--emperor", str(self.vassal_dir),
            "--emperor-stats", str(self.stats_path),
            "--vassals-include", str(include),
            *EMPEROR_FLAGS,
            *self.extra_args,
        ]
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
        log = self._log = EventLog(self.log_path)
        self._stats = StatsClient(str(self.stats_path), log, self._proc.pid)
        self._lent = Lent(
            events=log,
            stats=self._stats,
            route_map=self.route_map,
            logs_dir=self.logs_dir,
            timeout=self.timeout,
            note_bound=self._run.note_bound,
            unlink_dead_socket=self._run.unlink_dead_socket,
            clear_blacklist=self._clear_blacklist,
            release=self._release,
            front=self._front,
            # what the vassals' direct clients ask of a socket's listener: this user's (or the run owner's), of
            # this run (route_guard.py)
            listener_check=listener_check(
                str(self.run_dir), {os.geteuid(), *([self.run_owner[0]] if self.run_owner else [])}
            ),
            owner=self,
        )
        self._reader = threading.Thread(
            target=log.follow, args=(self._proc.stdout, self._before_waiters), name="emperor-log", daemon=True
        )
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
        self, exc_type: type[BaseException] | None, exc: BaseException | None, _tb: TracebackType | None
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
                self.vassals.finish_removals()
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
                if self._stats is not None:
                    self._stats.close()
                for held in list(self._reserved):  # every process of the run is gone: its names are free
                    self._unreserve(held)
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
                self.shutdown_killed = True
                self._run.kill()
                return
            wake_emperor()

    def _release(self, vassal: Vassal, stopped: bool, timeout: float | None) -> None:
        """A vassal removed for good: forget it (``stopped``) or stop it in the background; its name and sockets
        are free for others once it is gone."""
        if stopped:
            self.vassals.forget(vassal)
            self._unreserve(vassal)
        else:
            self.vassals.remove_in_background(vassal, timeout, then=lambda: self._unreserve(vassal))

    def _unreserve(self, vassal: Vassal) -> None:
        for held in self._reserved.pop(vassal, []):
            held.release()

    def finish_removals(self) -> None:
        """Wait for every ``vassal.remove(wait=False)`` still finishing; raise the first error one of them met."""
        self.vassals.finish_removals()

    def _front(self) -> Front:
        return self.front() if self.front is not None else self.router

    @property
    def router(self) -> Router:
        """Deprecated: the router a bare Emperor started for itself on first use; a front door now runs it (pass
        ``front=``)."""
        warnings.warn(
            "Emperor.router is deprecated: the router is the front door's (pytest --emperor and emperor-dev up run "
            "one); a bare Emperor takes it as front=",
            DeprecationWarning,
            stacklevel=2,
        )
        if self.front is not None:
            return self.front()
        if self._router is None:
            from pytest_emperor.routing.nginx import start_router  # nginx's machinery: once it starts

            self._router = start_router(
                self.route_map,
                self.run_dir,
                env=self.process_env,
                preexec_fn=die_with_parent(signal.SIGTERM),
                timeout=self.timeout,
                **self._router_options,
            )
        return self._router

    @property
    def running(self) -> bool:
        """True while the emperor process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def _before_waiters(self, event: EmperorEvent) -> None:
        """What the run does with an event before any waiter sees it: record the sockets a ready vassal bound,
        and keep the router's route table in step (route_guard.py), so that a deploy that returned is routed."""
        run = self._run
        if run is None:
            return
        vassals = self.vassals.values()
        if event.kind is EventKind.READY:
            self._record_bound(run, [v for v in vassals if v.id == event.vassal])
        follow_event(event, run_dir=run.path, vassal_dir=self.vassal_dir, route_map=self.route_map, vassals=vassals)

    @staticmethod
    def _record_bound(run: RunDir, ready: list[Vassal]) -> None:
        """A vassal of this run reports ready: the files at its socket paths are the ones its master bound, so
        the run may unlink them once it is gone (``RunDir.record_bound``). Recorded at every ready, before the
        event is seen by any waiter: a master killed later (a crash loop, ``kill_master``) leaves a file that
        vacuum never removes, and each respawned master binds a new one."""
        for vassal in ready:
            with contextlib.suppress(FileNotFoundError):  # the run was closed meanwhile
                run.record_bound(vassal.socket_paths)

    # -- events and stats -------------------------------------------------------------------------------------

    @property
    def last_seq(self) -> int:
        """The number of the latest event; pass it as ``since`` to wait only for what happens next."""
        return self._started()[0].last_seq

    def events(self, vassal: str | None = None, since: int = 0) -> list[EmperorEvent]:
        """Events after ``since``, optionally only those about the vassal id ``vassal`` (``name.ini``)."""
        return self._started()[0].events(vassal, since)

    def wait_event(
        self,
        match: Callable[[EmperorEvent], bool],
        *,
        since: int,
        timeout: float,
        what: str,
        context: Callable[[], Sequence[str]] | None = None,
    ) -> EmperorEvent:
        """Block until an event after ``since`` satisfies ``match``; return it (VassalTimeout saying what was
        awaited and what was seen, with ``context``'s lines, if it does not come in time)."""
        return self._started()[0].wait(match, since=since, timeout=timeout, what=what, context=context)

    def log_tail(self, lines: int = 20) -> list[str]:
        """The last lines of the emperor's log."""
        return EventLog(self.log_path).tail(lines) if self._log is None else self._log.tail(lines)

    def stats(self) -> EmperorStats:
        """Read the emperor's stats (and wake it up: see ``stats.read_stats``)."""
        return self._started()[1].read()

    def _clear_blacklist(self) -> None:
        """Forget every blacklisted vassal (SIGURG), so a name that was cursed can be deployed again at once."""
        since = self.last_seq
        os.kill(self.pid, signal.SIGURG)
        self.stats()
        self.wait_event(
            lambda e: e.kind is EventKind.BLACKLIST_CLEARED, since=since, timeout=self.timeout,
            what="the emperor to clear its blacklist",
        )

    def _started(self) -> tuple[EventLog, StatsClient, Lent]:
        if self._log is None or self._stats is None or self._lent is None:
            raise EmperorError("the emperor was never started")
        return self._log, self._stats, self._lent

    # -- deploying --------------------------------------------------------------------------------------------

    def deploy(
        self,
        path: str | os.PathLike[str],
        name: str | None = None,
        *,
        exact: bool = False,
        wait: bool = True,
        timeout: float | None = None,
    ) -> Vassal:
        """Deploy an app dir (its ``app.uwsgi.ini``) or an ini file as vassal ``<name><suffix>``, by symlink.

        The default name is the app dir's. ``exact``: without the suffix, so ``%n`` (and a ``/tmp/%n.api.sock``)
        is production's own; refused (SocketInUse) while another run holds that name or socket, or a live process
        serves the socket. With ``wait`` (the default) return once it is ready (accepting, and a probe request
        answered); raise VassalCursed with its error lines if the emperor curses it first, after removing it again.
        """
        __tracebackhide__ = True
        vassal = self._prepare(Path(path), name, exact)
        for socket_path in vassal.socket_paths:
            self._run_or_fail().record_socket(socket_path)
        self.vassals.add(vassal)
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

    def _prepare(self, path: Path, name: str | None, exact: bool) -> Vassal:
        """Validate an app for deployment, reserve its name and sockets, and build its (not yet linked) Vassal."""
        __tracebackhide__ = True
        ini = resolve_ini(path)
        full = vassal_name(ini, name, "" if exact else self.name_suffix or "", self.route_map)
        self.vassals.finish_removals(full)
        if full in self.vassals:
            raise ConfigError(f"a vassal named {full!r} is already deployed; remove it first or choose another name")
        reserved = [self._reserve(full, f"{ini}: vassal name {full!r} is held by", full)]
        try:
            link = self.vassal_dir.resolve() / f"{full}.ini"
            plan = plan_deploy(ini, link, version=self.version, binary_path=str(self.uwsgi))
            try:
                self.vassals.finish_removals(sockets=[s.address for s in plan.sockets if s.is_unix])
                for socket in plan.sockets:
                    if not socket.is_unix:
                        continue
                    at = f"{ini}:{socket.line}: vassal {full!r} would bind {socket.address}, which"
                    if socket.address.startswith("/"):  # a relative one is the vassal dir's, the run's own
                        reserved.append(self._reserve(socket.address, f"{at} is held by", full))
                    if socket_is_live(socket.address):
                        holders = _named(socket_holders(socket.address)) or (
                            f"a process not named here: `ss -xlp src {socket.address}` as root names it"
                        )
                        raise SocketInUse(
                            f"{at} another live process is serving ({holders}); uWSGI would unlink it and steal it, "
                            "so nothing was deployed. Stop that process or deploy under another name"
                        )
            except BaseException:
                plan.discard()
                raise
        except BaseException:
            for held in reserved:
                held.release()
            raise
        vassal = Vassal(self._started()[2], full, plan)
        self._reserved[vassal] = reserved
        return vassal

    def _reserve(self, key: str, refusal: str, name: str) -> Reservation:
        """Reserve a vassal name or socket path for the vassal ``name`` (SocketInUse, starting with ``refusal``,
        if another holds it)."""
        __tracebackhide__ = True
        run = self._run_or_fail()
        held = reserve(run.path.parent, key, f"the run {run.path} (pid {os.getpid()}) for its vassal {name!r}")
        if isinstance(held, str):
            raise SocketInUse(
                f"{refusal} {held}, so nothing was deployed: two vassals with one name or socket would take each "
                "other's; wait for that run to end, or deploy under another name"
            )
        return held

    def _run_or_fail(self) -> RunDir:
        if self._run is None:
            raise EmperorError("the emperor is not started")
        return self._run


def _named(pids: list[int], most: int = 3) -> str:
    """The first ``most`` of ``pids`` as an error message names them (a prefork server's workers hold its socket
    too), and how many more."""
    shown = ", ".join(map(described, pids[:most]))
    return shown + (f" and {len(pids) - most} more" if len(pids) > most else "")
