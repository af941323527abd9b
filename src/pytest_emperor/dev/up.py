"""One running ``emperor-dev up``: an emperor deploying apps under their production names, a router in front,
a control server for the other commands, log streaming and file watching, and a clean shutdown.

Everything that is started is registered on an ExitStack as it starts, so a shutdown (Ctrl-C, SIGTERM, ``down``,
or a failure half-way through start-up) undoes exactly what was done, in reverse order.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import pwd
import signal
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pytest_emperor.check.at_deploy import causes, explained, ignored_options, shown, static_findings
from pytest_emperor.convention import DEFAULT_DOMAIN, DEFAULT_SOCKET_DIR, DEFAULT_TIMEOUT, ROUTER_HOST
from pytest_emperor.dev.apps import AppSpec, resolve_app
from pytest_emperor.dev.control import AppStatus, ControlServer, Message
from pytest_emperor.dev.interrupts import Interrupts
from pytest_emperor.dev.logs import LogLine, LogTail, RetryMuter, describe, follow
from pytest_emperor.dev.output import EMPEROR, Output
from pytest_emperor.dev.page import UpPage
from pytest_emperor.dev.state import Instance, StateDir
from pytest_emperor.dev.watch import AppWatcher
from pytest_emperor.engine.emperor import SHUTDOWN_GRACE, Emperor
from pytest_emperor.engine.emperor_log import EventKind
from pytest_emperor.engine.processes import die_with_parent, wait_exit
from pytest_emperor.engine.runs import remove_stale_socket
from pytest_emperor.engine.stats import EmperorStats
from pytest_emperor.engine.vassal import Vassal, VassalState
from pytest_emperor.errors import ConfigError, EmperorError, RouterError, VassalError
from pytest_emperor.routing.nginx import start_router
from pytest_emperor.routing.nginx_site import load_site
from pytest_emperor.routing.resolve import open_hint
from pytest_emperor.routing.route_table import RouteState
from pytest_emperor.routing.router import Router
from pytest_emperor.routing.routes import RouteMap

if TYPE_CHECKING:
    from pytest_emperor.testing.coverage import VassalCoverage

EXIT_FORCED = 130  # a second Ctrl-C: like a shell's 128 + SIGINT


@dataclass(frozen=True)
class UpOptions:
    """The options of ``emperor-dev up``."""

    nginx: str | None = None  # the nginx binary (default: find_nginx's search)
    nginx_site: Path | None = None  # a production site file to route by, instead of --domain/--socket-dir
    host: str = ROUTER_HOST
    port: int = 8080
    domain: str = DEFAULT_DOMAIN
    socket_dir: str = DEFAULT_SOCKET_DIR  # where the apps' inis bind <name>.api.sock (production: /tmp/%n.api.sock)
    reload: bool = False
    timeout: float = DEFAULT_TIMEOUT
    uwsgi: str | None = None
    cov: tuple[str, ...] | None = None  # measure coverage in the apps (sources; empty: coverage.py's default)
    emperor_args: tuple[str, ...] = ()  # production's emperor flags (--uid/--gid: the apps run as that user)
    run_owner: tuple[int, int] | None = None  # the (uid, gid) those flags drop to: the run dir is handed to it
    nginx_user: str | None = None  # the user nginx's workers run as (default: the caller)


class DevServer:
    """The emperor, router and apps of one ``up``; :meth:`run` is the whole command."""

    def __init__(self, state: StateDir, options: UpOptions, output: Output) -> None:
        self.state = state
        self.options = options
        self.output = output
        self.apps: dict[str, AppSpec] = {}
        self.failures: dict[str, str] = {}  # apps that could not even be deployed, and why
        self.misrouted: dict[str, str] = {}  # apps the router sends elsewhere than their socket, and the fix
        self.stopping = threading.Event()
        self.forced = False
        self.emperor_died = False
        self._serving = False
        self._starting = False  # a first signal interrupts the start-up (KeyboardInterrupt), see run()
        self._lock = threading.Lock()  # guards apps/failures/misrouted and emperor.deploy's name check
        self._app_locks: dict[str, threading.Lock] = {}
        self._stack = contextlib.ExitStack()
        self._emperor: Emperor | None = None
        self._router: Router | None = None
        self._watcher: AppWatcher | None = None
        self._page: UpPage | None = None

    @property
    def emperor(self) -> Emperor:
        """The running emperor."""
        if self._emperor is None:
            raise EmperorError("the emperor is not started")
        return self._emperor

    def _write_coverage(self, coverage: VassalCoverage, data_file: Path) -> None:
        try:
            count, problems = coverage.combine_into(data_file)
            for problem in problems:
                self.output.note(f"coverage: {problem}", error=True)
            self.output.note(f"coverage: the data of {count} app processes combined into {data_file}")
        finally:
            coverage.close()

    @property
    def router(self) -> Router:
        """The running router in front of the emperor."""
        if self._router is None:
            raise EmperorError("the router is not started")
        return self._router

    # -- the command ------------------------------------------------------------------------------------------

    def run(self, specs: Sequence[AppSpec]) -> int:
        """Start everything, deploy ``specs``, print the table, stream logs until a stop; return the exit code."""
        for line in self.state.acquire():
            self.output.note(line)
        self._stack.callback(self.state.release)
        # A second Ctrl-C while the stack below closes forces the stop: the signals stay ours until it is closed.
        self._starting = True
        with Interrupts(self._stop_on_signal, self._force, interrupting=lambda: self._starting):
            try:
                self._serve(specs)
            except KeyboardInterrupt:  # the first signal, during start-up: shut down what was started
                self.stopping.wait()  # once its note is said (interrupts.py)
            finally:
                try:
                    self._starting = False  # from now on a signal asks for the stop or forces it, never cuts it short
                finally:
                    self._stack.close()
        if self._emperor is not None and self._emperor.shutdown_killed and not self.forced:
            self.output.note(f"the emperor did not stop within {SHUTDOWN_GRACE:g} s of its SIGINT: every process of "
                             "the run was killed", error=True)
        self.output.note("stopped: the apps, the router and the emperor are gone")
        if self.forced:
            return EXIT_FORCED
        return 1 if self.emperor_died else 0

    def _serve(self, specs: Sequence[AppSpec]) -> None:
        """Start the emperor and router, deploy ``specs``, print the table, then stream logs until a stop."""
        self._start()
        with self._lock:
            self.apps.update((spec.name, spec) for spec in specs)
        if self._page is not None:  # the apps are shown starting, and each as it settles
            self._stack.callback(self._page.start().stop)
        # Watch before deploying: the watch is set up while the apps start, so an edit made as soon as the
        # table is printed is seen.
        self._watcher = AppWatcher(self._specs, self._restart_in_background, code=self.options.reload).start()
        self._stack.callback(self._watcher.stop)
        self.deploy_all(specs)
        self._starting, self._serving = False, True
        table = self.status()
        self.output.table(table)
        hint = open_hint(self.router.route_map, self.router.tcp_address[1], self.options.host)
        if hint is not None:
            self.output.note(hint)
        retried = [app.name for app in table if app.state in ("cursed", "throttled")]
        for name in retried:
            self.output.note(f"{name} is muted while the emperor retries it (all of it: emperor-dev logs {name})")
        self.output.note(
            f"{sum(app.state == 'ready' for app in table)} of {len(specs)} apps ready. Ctrl-C stops them all;"
            f" from another terminal: emperor-dev status | logs -f | add PATH | rm NAME | reload NAME | down"
        )
        self._stream(retried)
        self.stopping.wait()

    def _stop_on_signal(self, signum: int) -> None:
        """The first Ctrl-C or SIGTERM (on the signals' own thread, see interrupts.py): say so, then stop; after
        `emperor-dev down` or the emperor's death, a stop is under way already: this one forces it."""
        if self.stopping.is_set():
            self._force(signum)
            return
        try:
            self.output.note(f"{signal.Signals(signum).name}: stopping every app (Ctrl-C again to force)")
        finally:
            self.stopping.set()

    def _force(self, _signum: int) -> None:
        """A second Ctrl-C: kill every process of the run now; the shutdown under way then finishes at once."""
        self.forced = True
        if self._emperor is not None and self._emperor.running:
            self.output.note("forcing: killing every process of the run", error=True)
            if self._router is not None:
                self._router.kill()
            with contextlib.suppress(EmperorError):  # the shutdown under way finished meanwhile
                self._emperor.kill_everything()

    def _start(self) -> None:
        options = self.options
        vassal_options: list[tuple[str, str]] = []
        flags: list[str] = []
        if options.cov is not None:
            from pytest_emperor.testing.coverage import for_current_dir

            coverage, data_file = for_current_dir(options.cov)
            # Registered before the emperor's stop, so it runs after it: once every app process saved its data.
            self._stack.callback(self._write_coverage, coverage, data_file)
            vassal_options, flags = coverage.vassal_options(), coverage.emperor_flags()
        site = load_site(options.nginx_site) if options.nginx_site is not None else None
        route_map = site.route_map if site is not None else RouteMap.for_domain(options.domain, options.socket_dir)
        self._emperor = Emperor(
            options.uwsgi, name_suffix="", route_map=route_map,
            timeout=options.timeout, vassal_options=vassal_options, extra_args=[*options.emperor_args, *flags],
            run_owner=options.run_owner, searchable_run=options.nginx_user is not None,
        )
        self._stack.callback(self._emperor.stop)  # registered first: stop() is a no-op on an emperor not started
        self._emperor.start()
        run_dir = self._emperor.run_dir
        worker_group = pwd.getpwnam(options.nginx_user).pw_gid if options.nginx_user is not None else None
        page = self._page = UpPage(run_dir / "page", self.status, {"pid": os.getpid()}, worker_group).install()
        try:
            router = self._router = start_router(
                route_map,
                run_dir,
                host=options.host,
                port=options.port,
                nginx=options.nginx,
                site=site,
                own_page=page.directory,
                env=self._emperor.process_env,
                preexec_fn=die_with_parent(signal.SIGTERM),
                timeout=options.timeout,
                user=options.nginx_user,
            )
        except RouterError as exc:
            raise RouterError(
                f"could not start the router (nginx) on {options.host}:{options.port}"
                + (" (is the port taken? --port 0 picks a free one)" if options.port else "") + f": {exc}"
            ) from exc
        self._stack.callback(router.stop)  # before the emperor's stop
        self._emperor.front = lambda: router
        control_path = self.state.control_path(run_dir)
        remove_stale_socket(control_path)  # ours: we hold the state dir's lock
        control = ControlServer(control_path, self.handle).start()
        self._stack.callback(control.stop)
        self.state.publish(
            Instance(
                pid=os.getpid(), control=control_path, run_dir=str(run_dir), domain=options.domain,
                router_host=router.tcp_address[0],
                router_port=router.tcp_address[1], router_unix=router.unix_path,
            )
        )

    def _stream(self, muted: Sequence[str]) -> None:
        """Start the log stream (``muted``: apps the emperor is retrying) and the emperor's death watch."""
        stop = threading.Event()
        page = self._page
        if page is not None:  # what the stream starts after: the apps' start-up, kept as the stream keeps it
            page.count_logged(self.emperor.logs_dir)
            muter = RetryMuter()
            page.feed([
                line for line in map(describe, self.emperor.events())
                if line is not None and line.event and muter.keep(line)
            ])
        tail = LogTail(self.emperor.run_dir, from_end=True)

        def emit(lines: list[LogLine]) -> None:
            self.output.log_lines(lines)
            if page is not None:
                page.feed(lines)  # the page shows the same events as the terminal

        streamer = threading.Thread(
            target=follow, args=(tail, emit, stop), kwargs={"muted": muted}, name="emperor-dev-logs", daemon=True,
        )
        streamer.start()
        self._stack.callback(streamer.join)
        self._stack.callback(stop.set)
        threading.Thread(target=self._watch_emperor, name="emperor-dev-emperor", daemon=True).start()

    def _watch_emperor(self) -> None:
        emperor = self.emperor
        while not wait_exit(emperor.pid, 3600):
            pass
        if not self.stopping.is_set():
            self.emperor_died = True
            self.output.note("the emperor exited unexpectedly; its last lines:", error=True)
            for text in emperor.log_tail():
                self.output.line(EMPEROR, text)
            self.stopping.set()

    # -- apps -------------------------------------------------------------------------------------------------

    def _specs(self) -> Mapping[str, AppSpec]:
        with self._lock:
            return dict(self.apps)

    def _app_lock(self, name: str) -> threading.Lock:
        with self._lock:
            return self._app_locks.setdefault(name, threading.Lock())

    def _deploy(self, spec: AppSpec) -> Vassal | None:
        """Deploy without waiting; a deploy error is recorded (and shown as state "error"), not raised."""
        self.output.add_names([spec.name])
        with self._lock:
            self.apps[spec.name] = spec
            self.failures.pop(spec.name, None)
            try:
                vassal = self.emperor.deploy(spec.ini, spec.name, wait=False)
            except EmperorError as exc:
                self.failures[spec.name] = str(exc)
                return None
        problem = self.router.route_map.mismatch(spec.name, vassal.socket_paths)
        with self._lock:
            self.misrouted.pop(spec.name, None)
            if problem is not None:
                fix = "fix the site file or the ini" if self.options.nginx_site else (
                    f"bind {self.options.socket_dir}/%n.api.sock, or pass --socket-dir"
                )
                self.misrouted[spec.name] = f"{problem}: requests through the router will get 502 ({fix})"
        if problem is not None:
            self.output.note(f"warning: {self.misrouted[spec.name]}", error=True)
        for typo in ignored_options(static_findings(vassal.ini, vassal.name, self.emperor.uwsgi)):
            self.output.note(f"warning: {spec.name}: {typo.path}:{typo.line}: {typo.message}", error=True)
        self._page_changed()
        return vassal

    def _page_changed(self) -> None:
        if self._page is not None:
            self._page.changed()

    def deploy_all(self, specs: Sequence[AppSpec]) -> None:
        """Deploy every app at once, then wait for all of them at once: each is shown as soon as it is ready (or
        cursed), and one that is slow or hung holds up none of the others."""
        # The readiness probes need requests (0.1 s to import): imported while the vassals boot, not before.
        threading.Thread(target=importlib.import_module, args=("pytest_emperor._protocol.client",), daemon=True).start()
        deployed = [vassal for vassal in map(self._deploy, specs) if vassal is not None]
        waiters = [
            threading.Thread(target=self._show_when_ready, args=(vassal,), name=f"emperor-dev-ready-{vassal.name}")
            for vassal in deployed
        ]
        for waiter in waiters:
            waiter.daemon = True  # a Ctrl-C during start-up does not wait for them: the emperor's stop ends them
            waiter.start()
        for waiter in waiters:
            waiter.join()

    def _show_when_ready(self, vassal: Vassal) -> None:
        try:
            vassal.wait_ready()
            state = VassalState.READY.value  # the emperor said so and a probe was answered: no stats read needed
        except VassalError:  # shown in the table with its error lines, after what check finds in its ini
            lead = causes(static_findings(vassal.ini, vassal.name, self.emperor.uwsgi))
            if lead and not self.stopping.is_set():
                self.output.note(f"{vassal.name} failed to start; emperor-dev check finds:\n{shown(lead)}", error=True)
            try:
                state = self.app_status(vassal.name).state
            except (EmperorError, OSError):  # the emperor died meanwhile: _watch_emperor says so
                return
        if not self.stopping.is_set():
            self.output.line(EMPEROR, f"{vassal.name}: {state}")

    def add(self, arg: str, name: str | None = None, *, wait: bool = True) -> AppStatus:
        """Deploy one more app (``arg`` as on the command line, absolute) and, with ``wait``, wait until it is
        ready (without: return once it is linked, as a test's ``deploy_app(..., wait=False)`` asks)."""
        spec = resolve_app(arg, Path("/"))
        if name:
            spec = AppSpec(name, spec.ini)
        with self._lock:
            if spec.name in self.apps:
                raise ConfigError(f"an app named {spec.name!r} is already running; `emperor-dev rm {spec.name}` first")
        vassal = self._deploy(spec)
        if vassal is None:
            # Refused before anything ran: nothing of it stays (no "error" row making `status` fail until `rm`).
            with self._lock:
                self.apps.pop(spec.name, None)
                failure = self.failures.pop(spec.name, f"{spec.name!r} could not be deployed")
            raise ConfigError(failure)
        if self._watcher is not None:
            self._watcher.apps_changed()
        if wait:
            try:
                vassal.wait_ready()
            except VassalError as exc:  # led by what check finds in its ini, as a test's failed deploy is
                raise explained(exc, vassal.ini, vassal.name, self.emperor.uwsgi) from None
        return self.app_status(spec.name)

    def wait_for(self, name: str, until: str, timeout: float | None) -> AppStatus:
        """Wait, in this process that owns the app's events, until app ``name`` is ``until``: "ready" (accepting
        and answering a probe), or the next "cursed" or "throttled" event (a test's broken vassal reaching its
        state); VassalError (its error lines) if it cannot."""
        self._spec(name)
        vassal = self.emperor.vassals.get(name)
        if vassal is None:
            raise ConfigError(f"{name!r} is not deployed: {self.failures.get(name, 'it is still being deployed')}")
        if until == "ready":
            # Waits consume the vassal's events: the ready event of an app up waited for itself is gone.
            if vassal.state is not VassalState.READY:
                vassal.wait_ready(timeout)
        elif until == "cursed":
            vassal.wait_cursed(timeout)
        elif until == "throttled":
            vassal.wait_event({EventKind.THROTTLED}, timeout)
        else:
            raise ConfigError(f"bad request: wait until {until!r} (ready, cursed or throttled)")
        return self.app_status(name)

    def remove(self, name: str) -> None:
        """Undeploy an app (its vassal stops, its socket goes)."""
        self._spec(name)
        with self._app_lock(name):
            vassal = self.emperor.vassals.get(name)
            if vassal is not None:
                vassal.remove()
            with self._lock:
                self.apps.pop(name, None)
                self.failures.pop(name, None)
                self.misrouted.pop(name, None)
        self._page_changed()
        if self._watcher is not None:
            self._watcher.apps_changed()

    def reload(self, name: str) -> AppStatus:
        """Reload an app and wait until it is ready: a running vassal gracefully (as touching its link does), a
        cursed one (or one that could not be deployed) by deploying it afresh, so a fixed app comes back now
        rather than at its next throttled retry."""
        spec = self._spec(name)
        with self._app_lock(name):
            vassal = self.emperor.vassals.get(name)
            # Only a ready app is reloaded in place. One the emperor is retrying may be mid-retry (running, not
            # cursed yet): that attempt ends first. Ready (it may have read the files before they were fixed),
            # it is reloaded in place; cursed again, it is deployed afresh.
            if vassal is not None and vassal.wait_retry() is VassalState.READY:
                vassal.reload()
            else:
                if vassal is not None:
                    vassal.remove()
                fresh = self._deploy(spec)
                if fresh is None:
                    raise ConfigError(self.failures[name])
                fresh.wait_ready()
        return self.app_status(name)

    def _restart_in_background(self, name: str) -> None:
        # During start-up the apps are being deployed from their files as they are now.
        if self._serving and not self.stopping.is_set():
            threading.Thread(target=self._restart, args=(name,), name=f"emperor-dev-reload-{name}", daemon=True).start()

    def _restart(self, name: str) -> None:
        self.output.line(EMPEROR, f"{name}: its files changed, reloading it")
        try:
            self.reload(name)
        except EmperorError as exc:
            if not self.stopping.is_set():
                self.output.line(EMPEROR, f"{name}: reload failed: {str(exc).splitlines()[0]}")

    def _spec(self, name: str) -> AppSpec:
        with self._lock:
            spec = self.apps.get(name)
            known = sorted(self.apps)
        if spec is None:
            raise ConfigError(f"no app named {name!r} is running (running: {', '.join(known) or 'none'})")
        return spec

    # -- status -----------------------------------------------------------------------------------------------

    def app_status(self, name: str, stats: EmperorStats | None = None) -> AppStatus:
        """One app's row (from ``stats``, a snapshot of the emperor's stats, or a fresh one)."""
        spec = self._spec(name)
        url = self.router.url_for(name)
        vassal = self.emperor.vassals.get(name)
        if vassal is None:
            failure = self.failures.get(name)
            if failure is None:  # not deployed yet (``up`` is starting)
                return AppStatus(name, url, VassalState.STARTING.value, None, str(spec.ini), None, None)
            # nothing retries a deploy that was refused (a socket another process serves): `reload` deploys it again
            why = [*failure.splitlines(), f"once that is fixed: emperor-dev reload {name}"]
            return AppStatus(name, url, "error", None, str(spec.ini), None, None, why)
        stats = self.emperor.stats() if stats is None else stats
        state = vassal.state_in(stats)
        errors: list[str] = []
        if state in (VassalState.CURSED, VassalState.THROTTLED):
            # Each retry logs the same lines again: show each once, the latest last.
            errors = list(reversed(dict.fromkeys(reversed(vassal.error_lines(limit=50)))))[-5:]
        misrouted = self.misrouted.get(name)
        if misrouted is not None:
            errors.append(f"not routed: {misrouted}")
        socket = vassal.socket
        routed = self.router.routes.states().get(name) is RouteState.READY
        return AppStatus(
            name, url, state.value, vassal.pid_in(stats), str(spec.ini),
            socket.address if socket else None, socket.protocol if socket else None, errors, routed,
        )

    def status(self) -> list[AppStatus]:
        """Every app's row, in deploy order, from one stats snapshot (one read, not two per app)."""
        stats = self.emperor.stats()
        return [self.app_status(name, stats) for name in self._specs()]

    # -- the control socket -----------------------------------------------------------------------------------

    def handle(self, request: Message) -> Message:
        """Serve one control request (see control.py)."""
        cmd = request.get("cmd")
        try:
            if cmd == "status":
                return {"ok": True, "pid": os.getpid(), "apps": [s.to_dict() for s in self.status()]}
            if cmd == "add":
                wait = request.get("wait", True) is not False
                return {"ok": True, "app": self.add(str(request["path"]), request.get("name"), wait=wait).to_dict()}
            if cmd == "wait":
                timeout = None if request.get("timeout") is None else float(request["timeout"])
                until = str(request.get("until", "ready"))
                return {"ok": True, "app": self.wait_for(str(request["name"]), until, timeout).to_dict()}
            if cmd == "rm":
                self.remove(str(request["name"]))
                return {"ok": True}
            if cmd == "reload":
                return {"ok": True, "app": self.reload(str(request["name"])).to_dict()}
            if cmd == "down":
                self.output.note("stopping on `emperor-dev down`")
                self.stopping.set()
                return {"ok": True, "pid": os.getpid()}
        except KeyError as exc:
            return {"ok": False, "error": f"bad request: {cmd} needs {exc}"}
        except EmperorError as exc:  # its kind lets a client raise the same error (dev/attach.py)
            return {"ok": False, "error": str(exc), "kind": type(exc).__name__}
        return {"ok": False, "error": f"bad request: unknown command {cmd!r}"}

