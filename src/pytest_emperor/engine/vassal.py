"""A vassal: a handle over one deployed app's deploy plan, its log and its clients, with its state.

The deploy plan (deploy_plan.py) read the app's ini the way uWSGI will read it through the vassal's symlink,
predicting the sockets it binds: that lets tests talk to the vassal without asking it. What a vassal needs of its
emperor (its event log, its stats, its run dir, the router in front) it is lent at deploy (:class:`Lent`); it never
sees the emperor itself. Its output is read by vassal_log.py, and its clients are vassal_clients.py's.
"""

from __future__ import annotations

import contextlib
import enum
import os
import signal
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_emperor.engine.deploy_plan import DeployPlan, SocketSpec
from pytest_emperor.engine.emperor_log import EmperorEvent, EventKind
from pytest_emperor.engine.events import EventLog
from pytest_emperor.engine.processes import children_of, command_line, hasten_stop, is_sleeping, kill_all
from pytest_emperor.engine.stats import BlacklistEntry, EmperorStats, StatsClient
from pytest_emperor.engine.vassal_clients import Front, VassalClients
from pytest_emperor.engine.vassal_log import Since, VassalLog, request_logging_off
from pytest_emperor.errors import ConfigError, VassalCursed, VassalError, VassalTimeout
from pytest_emperor.routing.routes import RouteMap

if TYPE_CHECKING:
    import requests
    from httpx import Client as HttpxClient  # the property named httpx would shadow the module in annotations

    from pytest_emperor._protocol.client import ListenerCheck


# How long a stopping vassal's workers get to exit on their SIGINT before they are taken to be ignoring it (the
# worker start-up race, see stop()): they exit within milliseconds otherwise, even mid-request.
STOP_GRACE = 1.0
# How long a stopping vassal's master gets in all before it is killed.
STOP_LIMIT = 3.0
# How long wait_ready() lets the other workers finish starting after worker 1 accepts (see _settle).
SETTLE_LIMIT = 2.0
# How long reload() waits for the vassal to come back before it kills workers stuck in a graceful reload.
RELOAD_GRACE = 5.0

def _workers_of(master: int) -> list[int]:
    """The worker processes of a vassal master: its children running the same command line."""
    own = command_line(master)
    return [pid for pid in children_of(master) if command_line(pid) == own]


class VassalState(enum.Enum):
    """What the emperor is doing with a vassal, as far as its stats and log tell."""

    STARTING = "starting"  # deployed, not accepting yet (or being retried after a curse)
    READY = "ready"  # accepting requests
    CURSED = "cursed"  # died or was killed; the emperor will retry it
    THROTTLED = "throttled"  # blacklisted after repeated deaths and waiting out its throttle
    STOPPED = "stopped"  # removed


def decide_state(seen: VassalState, events: Sequence[EmperorEvent]) -> VassalState:
    """The one state of a vassal, that every view shows (its ``state``, ``up``'s table, ``status --json``).

    ``seen`` is what the emperor's stats say now; ``events`` are the emperor's events about the vassal since it
    was deployed. Ready and stopped are the stats' word. Otherwise the vassal is in a retry episode since its last
    ready (or reload), and the episode's worst verdict is its state: throttled once the emperor throttled it, else
    cursed once it died. Between two retries the stats alternate between a running (starting) vassal and a
    blacklisted one: read alone, they made the state flicker from one call to the next.
    """
    if seen in (VassalState.READY, VassalState.STOPPED):
        return seen
    episode: list[EmperorEvent] = []
    for event in events:
        if event.kind in (EventKind.READY, EventKind.RELOADING):
            episode = []
        else:
            episode.append(event)
    if any(event.kind is EventKind.THROTTLED for event in episode):
        return VassalState.THROTTLED
    if any(event.is_death for event in episode):
        return VassalState.CURSED
    return seen


@dataclass(frozen=True)
class Lent:
    """What an emperor lends each of its vassals: its collaborators, and the few acts only it may do."""

    events: EventLog
    stats: StatsClient
    route_map: RouteMap
    logs_dir: Path
    timeout: float
    #: records the sockets the given pids hold bound now (``RunDir.note_bound``)
    note_bound: Callable[[list[int]], None]
    #: unlinks a socket file a stopped vassal of the run left (``RunDir.unlink_dead_socket``)
    unlink_dead_socket: Callable[[str], bool]
    #: forgets every blacklisted vassal
    clear_blacklist: Callable[[], None]
    #: the vassal is removed for good: forget it (``wait``) or stop it in the background
    release: Callable[[Vassal, bool, float | None], None]
    #: the router in front, started by the front door on first call
    front: Callable[[], Front]
    #: what the direct clients ask of a socket's listener before they send a byte
    listener_check: ListenerCheck
    #: the emperor, only for the deprecated ``Vassal.emperor``
    owner: object


class Vassal:
    """One deployed app. Read ``state``/``pid``; ``request()`` it; ``wait_ready``/``reload``/``remove`` it."""

    name: str  #: its name in the emperor (the app's, plus the emperor's suffix)
    plan: DeployPlan  #: the ini as uWSGI reads it through the link, and what it binds
    ini: Path  #: the app's own ini file
    symlink: Path  #: the link in the vassal dir
    sockets: list[SocketSpec]  #: every socket it binds, in the ini's order
    socket: SocketSpec | None  #: the main socket: the first one the ini declares
    log_path: Path  #: its own log

    def __init__(self, lent: Lent, name: str, plan: DeployPlan) -> None:
        self._lent = lent
        self.name = name
        self.plan = plan
        self.ini = plan.ini
        self.symlink = plan.link
        self.sockets = sockets = plan.sockets
        self.socket = sockets[0] if sockets else None  # the main socket: the first one the ini declares
        self.log_path = lent.logs_dir / f"{name}.log"
        self._log = VassalLog(self.log_path, self.id, lent.events, request_logging=not request_logging_off(plan))
        self._clients = VassalClients(
            name, plan, lent.route_map, lent.timeout, front=lent.front, check=lent.listener_check,
            answered=self._log.answered,
        )
        self._since = 0  # event number at deploy (or at the last reload): waits look after it
        self._stopped = True  # until link()

    def __repr__(self) -> str:
        return f"<Vassal {self.name} {self.socket.address if self.socket else 'no socket'}>"

    # -- identity ---------------------------------------------------------------------------------------------

    @property
    def id(self) -> str:
        """The emperor's name for this vassal (its file name)."""
        return self.symlink.name

    @property
    def app_dir(self) -> Path:
        """The directory holding the app's ini."""
        return self.ini.parent

    @property
    def socket_path(self) -> str | None:
        """The unix socket path of the main socket, if it is a unix socket."""
        return self.socket.address if self.socket is not None and self.socket.is_unix else None

    @property
    def socket_paths(self) -> list[str]:
        """Every unix socket path the vassal binds."""
        return [s.address for s in self.sockets if s.is_unix]

    @property
    def host(self) -> str:
        """The Host the router maps to this vassal (``<name>.api.localhost`` by default)."""
        return self._lent.route_map.host_for(self.name)

    @property
    def url(self) -> str:
        """The vassal's URL through the router, for a browser or curl (starts the router if needed)."""
        return self._clients.url

    @property
    def emperor(self) -> Any:  # an Emperor: typed loosely, vassal.py never imports emperor.py
        """Deprecated: the emperor that deployed this vassal (a vassal holds what it needs of it)."""
        warnings.warn(
            "Vassal.emperor is deprecated: keep the Emperor you deployed the vassal with", DeprecationWarning, 2
        )
        return self._lent.owner

    @property
    def session(self) -> requests.Session:
        """A ``requests.Session`` straight to the vassal's socket (uwsgi protocol for ``socket =``, HTTP for
        ``http-socket =``), sending what nginx would: relative URLs (``session.get("/x")``) get this vassal's
        Host; an absolute URL's host becomes the Host header, and it goes to this socket all the same."""
        return self._clients.session

    @property
    def http(self) -> requests.Session:
        """A ``requests.Session`` through the router, as production traffic arrives (starts the router if
        needed): relative URLs are taken from ``url``, and any ``http://`` URL of the run's domain
        (``vassal.url + "x"``, another vassal's ``url``) goes to the router's loopback port with its Host."""
        return self._clients.http

    @property
    def httpx(self) -> HttpxClient:
        """An ``httpx.Client`` through the router, like ``http`` (needs httpx installed)."""
        return self._clients.httpx(direct=False)

    @property
    def httpx_direct(self) -> HttpxClient:
        """An ``httpx.Client`` straight to the vassal's socket, like ``session`` (needs httpx installed)."""
        return self._clients.httpx(direct=True)

    def close_clients(self) -> None:
        """Close the sessions and clients handed out (their pooled connections)."""
        self._clients.close()

    # -- lifecycle --------------------------------------------------------------------------------------------

    def link(self) -> None:
        """Deploy: create the symlink and ring the emperor's doorbell so it scans now.

        A name the emperor blacklisted (its vassal died without ever serving a request) would be skipped
        silently until its throttle expires, so the blacklist is cleared first. Only a name this emperor has run
        can be on it, so only such a name costs a stats read.
        """
        if self._lent.events.events(self.id) and self.id in self._lent.stats.read().blacklist:
            self._lent.clear_blacklist()
        self._since = self._lent.events.last_seq
        self._log.mark_deploy()
        if not self.plan.commit():  # the planned link was used by an earlier link(): this one is new
            os.symlink(self.ini, self.symlink)
        self._stopped = False
        self._lent.stats.ring()

    def wait_ready(self, timeout: float | None = None) -> Vassal:
        """Wait until the emperor reports the vassal accepting and a probe request gets an answer.

        Fails fast with VassalCursed (and the vassal's error lines) if the vassal dies meanwhile.
        """
        __tracebackhide__ = True
        timeout = self._lent.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        event = self._wait_for(lambda e: e.kind is EventKind.READY or e.is_death, timeout, "to be ready")
        if event.is_death:
            raise VassalCursed(
                f"vassal {self.name} ({self.ini}) was cursed by the emperor while starting"
                + (f" (pid {event.pid})" if event.pid else ""),
                self.error_lines(),
            )
        if self.socket is not None:
            self._probe(deadline)
        self._settle(event.seq, min(deadline, time.monotonic() + SETTLE_LIMIT))
        return self

    def wait_retry(self, timeout: float | None = None) -> VassalState:
        """Let a retry of the emperor's under way (its master running, neither accepting nor cursed yet) end, and
        return the state then (at once if none is under way): ready (as ``wait_ready``), or cursed again.

        Stopping a retry that is about to be ready only to deploy the app afresh would show it ready, then down:
        a caller that reloads a fixed app waits for the retry first, and reloads the ready one in place.
        """
        __tracebackhide__ = True
        since = self._lent.events.last_seq  # before the stats read: an outcome logged after it is not missed
        running = self._lent.stats.read().vassals.get(self.id)
        if running is not None and not running.cursed and not running.accepting:
            self._since = since
            with contextlib.suppress(VassalCursed):  # cursed again: the state says so
                self.wait_ready(timeout)
        return self.state

    def _settle(self, ready_seq: int, deadline: float) -> None:
        # The emperor hears "accepting" from worker 1 only. A worker still starting has not installed its
        # signal handlers, and uWSGI 2.0 then ignores a reload or stop sent to it: the master waits up to its
        # 60 s worker mercy. So readiness also waits (briefly, bounded) until every worker sits blocked in the
        # kernel, twice in a row: what a worker waiting for requests does. No event exists for it: polled, first
        # every millisecond, then less often: 50 vassals of `emperor-dev up` settling at once at 1 kHz each took
        # 90 ms of the CPU their own start-up needed (benchmarks/loop.py).
        master = self.pid_in(self._lent.stats.after(ready_seq))  # the master that became ready, or a successor
        if master is None:
            return
        quiet = 0
        pause = 0.001
        while quiet < 2 and time.monotonic() < deadline:
            workers = _workers_of(master)
            quiet = quiet + 1 if workers and all(is_sleeping(pid) for pid in workers) else 0
            time.sleep(pause)
            pause = min(pause * 2, 0.016)

    def _probe(self, deadline: float) -> None:
        __tracebackhide__ = True
        assert self.socket is not None
        # Once worker 1 accepts, the listen socket is bound; the probe proves the predicted address is the one
        # the vassal serves, and its first answered request makes the vassal loyal to the emperor.
        try:
            self.request("GET", "/", timeout=max(deadline - time.monotonic(), 0.1))
        except OSError as exc:
            raise VassalError(
                f"vassal {self.name} is accepting per the emperor, but a probe request to "
                f"{self.socket.address} failed: {exc}. Either the app closed the connection (see its log), or "
                f"{self.ini}:{self.socket.line} is not the socket it binds",
                self.error_lines(),
            ) from exc

    def wait_cursed(self, timeout: float | None = None) -> EmperorEvent:
        """Wait until the vassal dies (the emperor curses it, or reaps it unasked); return that event.

        Its ``pid`` is the dead master's for a curse, None for a bare removal: the emperor reaped the master before
        reading its pipe, and logged no pid (docs/uwsgi-behaviour.md, "The engine").
        """
        __tracebackhide__ = True
        timeout = self._lent.timeout if timeout is None else timeout
        return self._wait_for(lambda e: e.is_death, timeout, "to be cursed")

    def wait_event(self, kinds: set[EventKind], timeout: float | None = None) -> EmperorEvent:
        """Wait for the next emperor event of one of ``kinds`` about this vassal."""
        __tracebackhide__ = True
        timeout = self._lent.timeout if timeout is None else timeout
        names = "/".join(sorted(k.value for k in kinds))
        return self._wait_for(lambda e: e.kind in kinds, timeout, f"to be {names}")

    def _wait_for(
        self, match: Callable[[EmperorEvent], bool], timeout: float, what: str, since: int | None = None
    ) -> EmperorEvent:
        __tracebackhide__ = True
        # Waits consume the emperor's events like a cursor: after wait_cursed(), wait_ready() waits for the
        # comeback, not for the start-up that preceded the curse.
        event = self._lent.events.wait(
            lambda e: e.vassal == self.id and match(e),
            since=self._since if since is None else since,
            timeout=timeout,
            what=f"vassal {self.name} {what}",
            context=self.error_lines,
        )
        self._since = event.seq
        return event

    def reload(self, timeout: float | None = None) -> Vassal:
        """Make the emperor reload the vassal, as ``touch --no-dereference`` on the link does, and wait until it
        is ready again.

        The emperor reloads when the link's mtime is *strictly greater*, in whole seconds, than the one it saw
        last; rather than wait for the clock, the link's mtime is set one second past it.
        """
        __tracebackhide__ = True
        seen = self._lent.stats.read().vassals.get(self.id)
        last = seen.last_mod if seen is not None else int(os.lstat(self.symlink).st_mtime)
        mtime = max(last + 1, int(time.time()))
        self._since = self._lent.events.last_seq
        os.utime(self.symlink, (mtime, mtime), follow_symlinks=False)
        self._lent.stats.read()
        timeout = self._lent.timeout if timeout is None else timeout
        self.wait_event({EventKind.RELOADING}, timeout)
        old_workers = self.workers
        try:
            return self.wait_ready(min(timeout, RELOAD_GRACE))
        except VassalTimeout:
            if timeout <= RELOAD_GRACE:
                raise
        # A worker that ignored the graceful reload (see _settle) holds the master back: end it.
        kill_all([pid for pid in old_workers if pid in self.workers])
        return self.wait_ready(timeout - RELOAD_GRACE)

    def stop(self, timeout: float | None = None) -> None:
        """Stop the vassal as an operator does, by removing its symlink; return once the emperor has reaped it
        and its socket files are gone (removed here if the config has no ``vacuum`` and nobody serves them).

        uWSGI alone takes a second or more (docs/uwsgi-behaviour.md, "Start, stop and removal timing"): the master
        reaps its workers only at its next 1 s tick, so once the emperor has sent its stop the master is woken
        (``processes.hasten_stop``), and the emperor is rung to reap it. uWSGI 2.0 also has a start-up race: a
        worker stopped before it has installed its signal handlers ignores the stop, and its master would wait
        for it for the 60 s of its worker mercy: it is killed after ``STOP_GRACE`` seconds. A master still
        importing its app does not read the emperor's stop at all; the wake-up SIGINT interrupts its import
        (Python's own handler) and it stops, and one not gone after ``STOP_LIMIT`` is killed.
        """
        __tracebackhide__ = True
        timeout = self._lent.timeout if timeout is None else timeout
        since = self._lent.events.last_seq
        running = self._lent.stats.read().vassals.get(self.id)
        self.symlink.unlink(missing_ok=True)
        if running is None:
            # A vassal waiting out its throttle may have been retried by the emperor's scan between that read and
            # the unlink: that retry must be stopped and reaped like any running vassal, or a deploy of the same
            # name right after takes its "ready" for its own. The first read wakes the emperor, which scans (and
            # stops the retry) after answering it; the second is answered after that scan.
            self._lent.stats.read()
            running = self._lent.stats.read().vassals.get(self.id)
        if running is not None:
            self._lent.stats.ring()  # the emperor scans now, misses the link and sends the stop
            # Woken before the emperor has marked it as stopping, the master would die as an unasked death.
            self._wait_for(
                lambda e: e.kind in (EventKind.STOPPING, EventKind.REMOVED, EventKind.CURSED), timeout,
                "to be stopped by the emperor", since=since,
            )
            if running.pid > 0:
                # a master still starting dies of the wake-up SIGINT: what it has bound is noted first
                hasten_stop([running.pid], grace=STOP_GRACE, timeout=STOP_LIMIT, note=self._lent.note_bound)
            self._lent.stats.ring()  # the emperor reaps at its next pass; without a ring that is a second away
            self._wait_for(lambda e: e.kind is EventKind.REMOVED, timeout, "to be removed", since=since)
        for path in self.socket_paths:
            # the master is gone; a worker still in its exit teardown may accept a connect for a moment, so the
            # file's recorded identity, not a connect, says it is ours and dead (docs/uwsgi-behaviour.md, Recovery)
            self._lent.unlink_dead_socket(path)
        self._stopped = True

    def start(self, timeout: float | None = None) -> Vassal:
        """Start a stopped vassal again by re-creating its symlink; wait until it is ready."""
        self.link()
        return self.wait_ready(timeout)

    def remove(self, timeout: float | None = None, *, wait: bool = True) -> None:
        """Undeploy for good: ``stop()`` it and forget it (its name can be deployed again).

        With ``wait=False`` return at once and let the stop finish in the background: a later deploy of the same
        name or socket waits for it (and raises its error, if any), and so does ``emperor.stop()``.
        """
        if wait and not self._stopped:
            self.stop(timeout)
        self._lent.release(self, wait or self._stopped, timeout)

    # -- state ------------------------------------------------------------------------------------------------

    @property
    def state(self) -> VassalState:
        """The vassal's state now, from the emperor's stats and what it logged since the deploy."""
        return self.state_in(self._lent.stats.read())

    def state_in(self, stats: EmperorStats) -> VassalState:
        """The vassal's state in a stats snapshot (and what it logged since the deploy): a table of many vassals
        costs one stats read, and its rows agree with each other."""
        if self._stopped:
            return VassalState.STOPPED
        running = stats.vassals.get(self.id)
        if running is not None:
            seen = VassalState.CURSED if running.cursed else VassalState.READY if running.accepting else (
                VassalState.STARTING
            )
        elif self.id in stats.blacklist:
            seen = VassalState.CURSED
        else:
            seen = VassalState.STARTING if self.symlink.is_symlink() else VassalState.STOPPED
        return decide_state(seen, self.events())

    @property
    def pid(self) -> int | None:
        """The vassal master's pid, while the emperor runs it."""
        return self.pid_in(self._lent.stats.read())

    def pid_in(self, stats: EmperorStats) -> int | None:
        """The vassal master's pid in a stats snapshot."""
        running = stats.vassals.get(self.id)
        return running.pid if running is not None and running.pid > 0 else None

    @property
    def blacklist(self) -> BlacklistEntry | None:
        """The emperor's blacklist entry (attempts, throttle) while the vassal waits out a throttle."""
        return self._lent.stats.read().blacklist.get(self.id)

    @property
    def respawns(self) -> int:
        """How many times the emperor respawned (reloaded) the running vassal, per its stats."""
        running = self._lent.stats.read().vassals.get(self.id)
        return running.respawns if running is not None else 0

    @property
    def workers(self) -> list[int]:
        """PIDs of the vassal's worker processes (its master's children running the same command line)."""
        master = self.pid
        return [] if master is None else _workers_of(master)

    @property
    def curses(self) -> int:
        """How many times the emperor cursed this vassal since it was deployed."""
        return sum(1 for e in self.events() if e.is_death)

    def events(self, since: int | None = None) -> list[EmperorEvent]:
        """The emperor's events about this vassal after the event ``since`` (default: its deploy)."""
        return self._lent.events.events(self.id, since=self._log.deploy_seq if since is None else since)

    # -- what an operator or a crash does to a vassal ----------------------------------------------------------

    def kill(self, sig: int = signal.SIGKILL) -> int:
        """Send ``sig`` to the vassal's master (SIGKILL: it dies and the emperor curses it); return its pid."""
        master = self.pid
        if master is None:
            raise VassalError(f"vassal {self.name} has no running master to signal", self.error_lines())
        os.kill(master, sig)
        return master

    def kill_worker(self, sig: int = signal.SIGKILL) -> int:
        """Kill one worker (the master respawns it); return once it is gone, with its pid."""
        workers = self.workers
        if not workers:
            raise VassalError(f"vassal {self.name} has no worker to kill", self.error_lines())
        kill_all(workers[:1], sig)
        return workers[0]

    def unlink_socket(self) -> None:
        """Make the main socket disappear under a running vassal, as a stray cleanup script would: the vassal
        keeps running, but nothing can connect any more."""
        if self.socket_path is None:
            raise ConfigError(f"{self.ini} has no unix socket to remove")
        os.unlink(self.socket_path)

    # -- logs -------------------------------------------------------------------------------------------------

    def begin_test(self, test_start: int) -> None:
        """Mark where the current test's part of the log begins, so that ``log_text()`` and ``error_lines()``
        default to it: the vassal's deploy if that came after the emperor's event ``test_start`` (the test's
        start), else now."""
        self._log.begin_test(test_start)

    @property
    def test_start(self) -> tuple[int, int]:
        """The log offset and emperor event number where the current test's part begins (see ``begin_test``)."""
        return self._log.test_start

    def log_text(self, since: Since = "test") -> str:
        """The vassal's own log from the current test on (``since="deploy"``: since its deploy; or from a byte
        offset), with the lines of the requests already answered."""
        return self._log.text(since)

    def sync_log(self) -> None:
        """Wait until the vassal's log holds the line of every request it answered to ``session``/``http``
        (``VassalLog.sync``)."""
        self._log.sync()

    def output_lines(self, since: Since = "test") -> list[str]:
        """Everything the vassal printed from the current test on (or ``since="deploy"``): its early output (in
        the emperor's log) then its log."""
        return self._log.output_lines(since)

    def error_lines(self, limit: int = 30, since: Since = "test") -> list[str]:
        """The lines of the vassal's output that explain a failure (the last ``limit`` lines if none match), from
        the current test on (or ``since="deploy"``)."""
        return self._log.error_lines(limit, since)

    # -- talking to it ----------------------------------------------------------------------------------------

    def request(self, method: str = "GET", path: str = "/", **kwargs: Any) -> requests.Response:
        """``vassal.session.request(method, path, **kwargs)``: one request straight to the vassal's socket, with
        requests' keywords (``params=``, ``headers=``, ``data=``, ``json=``, ``files=``, ``timeout=``...)."""
        __tracebackhide__ = True
        return self.session.request(method, path, **kwargs)
