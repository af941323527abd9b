"""pytest against a running ``emperor-dev up`` (``pytest --emperor --emperor-attach``): the tests use the
emperor and router ``up`` already runs instead of starting their own.

``up``'s process owns its emperor, the registry of its vassals and its router's route table (the route guard
routes only the vassals it deployed), so the test process changes nothing of them itself: every deploy, wait and
removal is a request on ``up``'s control socket (dev/control.py), and the handles read what ``up`` exposes (its
status, each vassal's log file in its run dir, its router's port). The test process deploys under run-tagged
names (``<app>-pt<pid>x<hex>``), which never clash with ``up``'s apps, removes them when the test ends, and removes
the ones a killed pytest left (its pid gone) when it attaches. docs/pytest.md, "Attaching to a running up".
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import os
import re
import secrets
import shutil
import stat
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from pytest_emperor import errors
from pytest_emperor.dev.control import AppStatus, Message, call
from pytest_emperor.dev.state import Instance, StateDir
from pytest_emperor.errors import ConfigError, EmperorError

if TYPE_CHECKING:
    import requests

    from pytest_emperor._protocol.client import EmperorSession
    from pytest_emperor.engine.emperor_log import EmperorEvent, EventKind
    from pytest_emperor.engine.vassal import VassalState

#: A deploy of an attached pytest: ``<app>-pt<its pid>x<4 hex digits>``.
TAGGED = re.compile(r"-pt(\d+)x[0-9a-f]{4}$")
_SCRATCH = re.compile(r"pt(\d+)x[0-9a-f]{4}")
_SCRATCH_PREFIX = "pytest-emperor-attach-"  # + the tag: <tmp>/pytest-emperor-attach-pt<pid>x<hex><random>
# How much longer than the wait itself a control request may take (up answers once its wait ends).
_CALL_MARGIN = 10.0


def _import_clients() -> None:
    importlib.import_module("pytest_emperor._protocol.client")
    importlib.import_module("pytest_emperor.engine.route_guard")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


class AttachedEmperor:
    """The emperor of the ``up`` running on ``state_dir``, as the fixtures use an Emperor: ``deploy``, ``app``
    (an app ``up`` runs), ``run_dir``, ``timeout``; :meth:`stop` removes what this session deployed, never more.

    NotRunning (saying how to start one) when no ``up`` runs there."""

    keep = False  # the run dir is up's: never kept or removed by the tests

    def __init__(self, state_dir: Path, timeout: float, uwsgi: str | None = None) -> None:
        self.state_dir = StateDir(state_dir)
        self._uwsgi = uwsgi
        self.instance: Instance = self.state_dir.running()
        self.run_dir = Path(self.instance.run_dir)
        self.timeout = timeout
        #: every handle given out, by name: the session's deploys and up's own apps
        self.vassals: dict[str, AttachedVassal] = {}
        self._tag = f"pt{os.getpid()}x{secrets.token_hex(2)}"
        self._scratch: Path | None = None
        # The clients need requests (a tenth of a second to import): imported while pytest collects, not after.
        threading.Thread(target=_import_clients, name="emperor-attach-import", daemon=True).start()
        self._first_status: dict[str, AppStatus] | None = self.status()  # the first app() reads it
        #: the deploys of killed attached pytests, removed at attach
        self.leftovers = self._remove_leftovers(self._first_status)

    def __repr__(self) -> str:
        return f"<AttachedEmperor up pid {self.instance.pid} on {self.state_dir.path}>"

    # -- up's control socket ----------------------------------------------------------------------------------

    def call(self, request: Message, timeout: float | None = None) -> Message:
        """One control request; the error ``up`` answered raised as the same EmperorError class."""
        __tracebackhide__ = True
        response = call(self.instance.control, request, (self.timeout if timeout is None else timeout) + _CALL_MARGIN)
        if not response.get("ok"):
            kind = getattr(errors, str(response.get("kind")), None)
            cls = kind if isinstance(kind, type) and issubclass(kind, EmperorError) else EmperorError
            raise cls(f"emperor-dev up (pid {self.instance.pid}): {response.get('error')}")
        return response

    def status(self) -> dict[str, AppStatus]:
        """``up``'s apps, by name, as ``emperor-dev status`` shows them."""
        return {app["name"]: AppStatus.from_dict(app) for app in self.call({"cmd": "status"})["apps"]}

    def _remove_leftovers(self, apps: dict[str, AppStatus]) -> list[str]:
        left = [name for name in apps if (m := TAGGED.search(name)) and not _pid_alive(int(m[1]))]
        for name in left:
            with contextlib.suppress(ConfigError):  # another attached pytest removed it first
                self.call({"cmd": "rm", "name": name})
        # Then the files of their broken vassals: only dirs of ours, by name, owner and kind (never a symlink).
        for path in Path(tempfile.gettempdir()).glob(f"{_SCRATCH_PREFIX}*"):
            m = _SCRATCH.match(path.name[len(_SCRATCH_PREFIX) :])
            if not m or _pid_alive(int(m[1])):
                continue
            try:
                st = path.lstat()
            except FileNotFoundError:  # another attach removed it first
                continue
            if stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid():
                shutil.rmtree(path, ignore_errors=True)
                left.append(str(path))
        return left

    def scratch_dir(self) -> Path:
        """A private dir for the files of this session's own apps (its broken vassals), removed by :meth:`stop`
        (or, if this pytest is killed, by the next attach)."""
        if self._scratch is None:
            self._scratch = Path(tempfile.mkdtemp(prefix=f"{_SCRATCH_PREFIX}{self._tag}"))
        return self._scratch

    # -- what the fixtures use --------------------------------------------------------------------------------

    @property
    def last_seq(self) -> int:
        """Now, on a clock that only grows: where a test begins, and whether a vassal was deployed after it
        (``up``'s events are numbered in ``up``'s process, not here)."""
        return time.monotonic_ns()

    @functools.cached_property
    def uwsgi(self) -> Path:
        """The uwsgi binary the deploys' inis are checked against (``emperor-dev check``'s findings when one
        fails): found as a session's own would be, only once a deploy asks."""
        from pytest_emperor.engine.binary import find_uwsgi

        return find_uwsgi(self._uwsgi)

    def app(self, path: Path) -> AttachedVassal:
        """The app ``up`` runs from ``path`` (an app dir or ini file), once ready; ConfigError if it runs none."""
        __tracebackhide__ = True
        from pytest_emperor.engine.naming import resolve_ini

        ini = resolve_ini(path).resolve()
        # The status read at attach, once: a one-test run asks up once, not twice.
        apps, self._first_status = self._first_status or self.status(), None
        found = [app for app in apps.values() if Path(app.ini).resolve() == ini and not TAGGED.search(app.name)]
        if not found:
            raise ConfigError(
                f"emperor-dev up (pid {self.instance.pid}, state dir {self.state_dir.path}) runs no app from {ini} "
                f"(it runs: {', '.join(sorted(apps)) or 'none'}); `emperor-dev add {ini.parent}`, or run pytest "
                "without --emperor-attach"
            )
        vassal = self.vassals.setdefault(found[0].name, AttachedVassal(self, found[0], owned=False))
        return vassal if found[0].state == "ready" else vassal.wait_ready()

    def deploy(
        self,
        path: str | os.PathLike[str],
        name: str | None = None,
        *,
        exact: bool = False,
        wait: bool = True,
        timeout: float | None = None,
    ) -> AttachedVassal:
        """Deploy an app dir or ini file into ``up``'s emperor as ``<name>-<this run's tag>`` (the default name
        is the app's, as ``up`` names it); with ``wait``, return once it is ready. Removed by :meth:`stop` if
        the caller does not remove it first. Never under an ``exact`` name: those are ``up``'s own apps'."""
        __tracebackhide__ = True
        if exact:
            raise ConfigError(
                "deploy_app(exact=True) is refused under --emperor-attach: the exact names are up's own apps' "
                f"(`emperor-dev add {path}` deploys one there), and a test's deploys are tagged"
            )
        from pytest_emperor.engine.naming import default_name, resolve_ini

        app = Path(path).absolute()
        base = name or default_name(resolve_ini(app))
        tagged = f"{base}-{self._tag}"
        # Linked without waiting, then waited for on its own: a deploy refused keeps nothing in up, one that
        # fails to start is removed here.
        row = AppStatus.from_dict(self.call({"cmd": "add", "path": str(app), "name": tagged, "wait": False})["app"])
        vassal = self.vassals[tagged] = AttachedVassal(self, row, owned=True)
        if wait:
            try:
                vassal.wait_ready(timeout)
            except BaseException:
                vassal.remove()
                raise
        return vassal

    def remove(self, name: str) -> None:
        """Remove a deploy of this session from ``up`` (a name ``up`` no longer runs is already gone)."""
        self.vassals.pop(name, None)
        with contextlib.suppress(ConfigError):  # "no app named ...": up no longer runs it
            self.call({"cmd": "rm", "name": name})

    def stop(self) -> None:
        """Remove what this session deployed and is still there; ``up``'s own apps are left as they are."""
        for vassal in list(self.vassals.values()):
            vassal.close_clients()
            if vassal.owned:
                vassal.remove()
        self.vassals.clear()
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None


class AttachedVassal:
    """An app of ``up``, as a test's Vassal: ``url``, ``request``/``session``/``http``, ``state``, ``pid``,
    ``log_text()``, ``wait_ready()``; ``remove()`` for one this session deployed. What changes it in place
    (reload, stop, kill) is ``up``'s to do: ``emperor-dev reload NAME``."""

    def __init__(self, attached: AttachedEmperor, row: AppStatus, *, owned: bool) -> None:
        self._attached = attached
        self.owned = owned
        self.name = row.name
        self.ini = Path(row.ini)
        self.url = row.url
        self.host = urlsplit(row.url).hostname or row.name
        self.socket_address = row.socket
        self.protocol = row.protocol
        self.log_path = attached.run_dir / "logs" / f"{row.name}.log"
        self._deploy_mark = (self._log_size(), attached.last_seq)
        self._test_mark = self._deploy_mark
        self._session: EmperorSession | None = None
        self._http: EmperorSession | None = None

    def __repr__(self) -> str:
        return f"<AttachedVassal {self.name} of up pid {self._attached.instance.pid}>"

    @property
    def id(self) -> str:
        """The emperor's name for this vassal (its file name)."""
        return f"{self.name}.ini"

    # -- state, through up ------------------------------------------------------------------------------------

    def _row(self) -> AppStatus | None:
        return self._attached.status().get(self.name)

    @property
    def state(self) -> VassalState:
        """The vassal's state as ``up`` decides it (stopped once ``up`` no longer runs it)."""
        from pytest_emperor.engine.vassal import VassalState

        row = self._row()
        if row is None:
            return VassalState.STOPPED
        return VassalState.CURSED if row.state == "error" else VassalState(row.state)

    @property
    def pid(self) -> int | None:
        """The vassal master's pid, while ``up``'s emperor runs it."""
        row = self._row()
        return row.pid if row is not None else None

    def _wait(self, until: str, timeout: float | None) -> AppStatus:
        __tracebackhide__ = True
        timeout = self._attached.timeout if timeout is None else timeout
        response = self._attached.call({"cmd": "wait", "name": self.name, "until": until, "timeout": timeout}, timeout)
        return AppStatus.from_dict(response["app"])

    def wait_ready(self, timeout: float | None = None) -> AttachedVassal:
        """Wait until ``up`` reports the vassal ready (its emperor's event, then a probe answered)."""
        __tracebackhide__ = True
        self._wait("ready", timeout)
        return self

    def wait_cursed(self, timeout: float | None = None) -> None:
        """Wait until ``up``'s emperor curses the vassal."""
        __tracebackhide__ = True
        self._wait("cursed", timeout)

    def wait_event(self, kinds: set[EventKind], timeout: float | None = None) -> None:
        """Wait for ``up``'s emperor to throttle the vassal (the one event kind waited for here)."""
        __tracebackhide__ = True
        names = {kind.value for kind in kinds}
        if names != {"throttled"}:
            raise ConfigError(f"an attached vassal waits for throttled only, not {sorted(names)}")
        self._wait("throttled", timeout)

    @property
    def workers(self) -> list[int]:
        """PIDs of the vassal's worker processes (its master's children running the same command line)."""
        from pytest_emperor.engine.processes import children_of, command_line

        master = self.pid
        if master is None:
            return []
        own = command_line(master)
        return [pid for pid in children_of(master) if command_line(pid) == own]

    def remove(self, timeout: float | None = None, *, wait: bool = True) -> None:
        """Remove a vassal this session deployed (``up`` stops it); ConfigError for one of ``up``'s own."""
        if not self.owned:
            raise ConfigError(f"{self.name} is up's own app: an attached test never removes it (`emperor-dev rm`)")
        self.close_clients()
        self._attached.remove(self.name)

    # -- its log, in up's run dir -----------------------------------------------------------------------------

    def _log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except FileNotFoundError:
            return 0

    def begin_test(self, test_start: int) -> None:
        """Mark where the current test's part of the log begins: the deploy if it came after ``test_start``
        (``AttachedEmperor.last_seq`` when the test began), else now."""
        self._test_mark = self._deploy_mark if self._deploy_mark[1] >= test_start else (self._log_size(), test_start)

    @property
    def test_start(self) -> tuple[int, int]:
        """The log offset and the clock reading where the current test's part begins."""
        return self._test_mark

    def log_text(self, since: str | int = "test") -> str:
        """Its log from the current test on (``since="deploy"``: since it was deployed or attached to; or a
        byte offset)."""
        from pytest_emperor.engine.runs import open_owned

        offset = self._test_mark[0] if since == "test" else self._deploy_mark[0] if since == "deploy" else since
        if not isinstance(offset, int):
            raise TypeError(f'since= takes "test", "deploy" or a byte offset into {self.log_path}, not {since!r}')
        try:
            with open_owned(self.log_path) as f:  # a symlink or another's file is never read (docs/run-dir.md)
                f.seek(offset)
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def sync_log(self) -> None:
        """Nothing to wait for: the log is ``up``'s file, read as it is."""

    def events(self, since: int | None = None) -> list[EmperorEvent]:
        """The emperor's events are ``up``'s (its stream, ``emperor-dev logs``): none are read here."""
        return []

    def error_lines(self, limit: int = 30, since: str | int = "test") -> list[str]:
        """The last ``limit`` lines of its log from the current test on."""
        return self.log_text(since).splitlines()[-limit:]

    # -- talking to it ----------------------------------------------------------------------------------------

    def _check(self) -> Any:
        from pytest_emperor.engine.route_guard import listener_check

        return listener_check(str(self._attached.run_dir), {os.geteuid()})

    @property
    def session(self) -> requests.Session:
        """A ``requests.Session`` straight to the vassal's socket, as ``Vassal.session``."""
        if self._session is None:
            from pytest_emperor._protocol.client import direct_session

            if self.socket_address is None or self.protocol is None:
                raise ConfigError(f"{self.ini} declares no socket, http-socket or uwsgi-socket to send requests to")
            address: str | tuple[str, int] = self.socket_address
            if ":" in self.socket_address:  # uWSGI reads an address with ':' as TCP
                host, _, port = self.socket_address.rpartition(":")
                address = (host or "127.0.0.1", int(port))
            self._session = direct_session(
                address, self.protocol, f"http://{self.host}/", self._attached.timeout, self._check()
            )
        return self._session

    @property
    def http(self) -> requests.Session:
        """A ``requests.Session`` through ``up``'s router, as ``Vassal.http``."""
        if self._http is None:
            from pytest_emperor._protocol.client import routed_session
            from pytest_emperor.routing.resolve import addresses_for
            from pytest_emperor.routing.routes import RouteMap

            instance = self._attached.instance
            routes = RouteMap.for_domain(instance.domain)
            self._http = routed_session(
                (addresses_for(instance.router_host)[0], instance.router_port),
                lambda host: host == self.host or routes.match(host) is not None,
                self.url,
                self._attached.timeout,
            )
        return self._http

    def request(self, method: str = "GET", path: str = "/", **kwargs: Any) -> requests.Response:
        """``session.request(method, path, **kwargs)``: one request straight to the vassal's socket."""
        __tracebackhide__ = True
        return self.session.request(method, path, **kwargs)

    def close_clients(self) -> None:
        """Close the sessions handed out."""
        for client in (self._session, self._http):
            if client is not None:
                client.close()
        self._session = self._http = None
