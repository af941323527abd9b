"""Wildcard routing like nginx's ``server_name ~^(?<app>[^.]+)\\.api\\.example\\.com$;`` + ``uwsgi_pass``.

- :class:`RouteMap`: the pure mapping Host -> app -> vassal socket, from an nginx ``server_name`` regex with a
  named group ``app`` and a socket template using ``$app`` (the seed's ``unix:/tmp/$app.api.sock``). Used by the
  router and ``emperor-dev request``.
- :class:`Router`: what the tests and ``emperor-dev`` use of the router (addresses, per-app URL/Host, a
  ``requests`` session, ``stop()``); :meth:`NginxRouter.start` starts one. The router is a private real nginx
  (:mod:`pytest_emperor.routing.nginx`); there is no other.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_emperor.convention import MAX_BODY_SIZE
from pytest_emperor.errors import RouteMismatch, RouterError
from pytest_emperor.routing.route_table import RouteTable
from pytest_emperor.routing.routes import RouteMap

if TYPE_CHECKING:
    import requests


__all__ = [
    "RouteMismatch",
    "Router",
    "RouterError",
    "RouterSettings",
    "default_workers",
    "wait_for",
]

@dataclass(frozen=True)
class RouterSettings:
    """The router's limits, nginx's defaults unless noted."""

    #: ``client_max_body_size`` (bytes; 0 = no limit) -> 413.
    max_body_size: int = MAX_BODY_SIZE
    #: ``uwsgi_read_timeout`` (and connect/send) in seconds -> 504.
    upstream_timeout: float = 60.0
    #: ``client_header_timeout`` / ``client_body_timeout`` / ``send_timeout`` in seconds: slow clients are dropped.
    client_timeout: float = 60.0
    #: ``keepalive_timeout``: an idle keep-alive connection is closed after this many seconds.
    keepalive_timeout: float = 75.0
    #: nginx ``worker_processes``; 0 (the default) is one per CPU, at most 4 (see :func:`default_workers`).
    workers: int = 0

    def __post_init__(self) -> None:
        if self.workers == 0:
            object.__setattr__(self, "workers", default_workers())
        if self.workers < 1 or self.max_body_size < 0:
            raise ValueError(f"workers must be >= 1 and max_body_size >= 0: {self}")
        if min(self.upstream_timeout, self.client_timeout, self.keepalive_timeout) <= 0:
            raise ValueError(f"timeouts must be positive: {self}")


def default_workers() -> int:
    """One nginx worker per CPU, at most 4: with ``reuseport`` each worker has its own accept queue, so fewer
    workers than CPUs leaves cores idle while more only adds start-up time and context switches (measured in
    benchmarks/router.py; see docs/uwsgi-behaviour.md, "Routing through nginx")."""
    return max(1, min(4, os.cpu_count() or 1))


def wait_for(unix_path: str, process: subprocess.Popen[bytes], timeout: float, *, what: str, log: Path) -> None:
    """Return once ``unix_path`` accepts connections; RouterError with the log if ``process`` exits first or
    ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    last: OSError | None = None
    while True:
        if process.poll() is not None:
            raise RouterError(
                f"{what} exited with status {process.returncode} before accepting on {unix_path}"
                f"; log {log}:\n{_tail(log)}"
            )
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                probe.connect(unix_path)
            return
        except OSError as exc:
            last = exc
        if time.monotonic() > deadline:
            raise RouterError(
                f"{what} did not accept on {unix_path} within {timeout} s (last error: {last})"
                f"; log {log}:\n{_tail(log)}"
            )
        # Nothing signals "listen() was called"; poll tightly under the deadline.
        time.sleep(0.005)


def _tail(log: Path, lines: int = 20) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


class Router:
    """What the emperor, the tests and ``emperor-dev`` use of the router; :class:`~.nginx.NginxRouter` runs it."""

    #: The router's main process (nginx's master), in its own process group.
    process: subprocess.Popen[bytes]

    def __init__(self, route_map: RouteMap, tcp_address: tuple[str, int], unix_path: str, routes: RouteTable) -> None:
        self.route_map = route_map
        #: The apps this router routes (the others get a 404 page listing them), see route_table.py.
        self.routes = routes
        self.tcp_address = tcp_address
        self.unix_path = unix_path
        #: Called with an app name before its URL or session is handed out; raises :class:`RouteMismatch` when
        #: the routing cannot reach that app (the emperor sets it: it knows which sockets its vassals bind).
        self.check_route: Callable[[str], None] | None = None

    def stop(self) -> None:
        """Stop the router and remove what it created. Safe to call twice."""
        raise NotImplementedError

    def _end_process(self, steps: Sequence[tuple[int | None, float]]) -> None:
        """Escalate through ``steps`` (a signal, or None to only wait; then a grace period) until the main
        process has exited, then SIGKILL it and whatever is left of its process group, and remove the unix
        socket it listened on."""
        process = self.process
        for sig, grace in steps:
            if process.poll() is not None:
                break
            if sig is not None:
                process.send_signal(sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(grace)
        if process.poll() is None:
            process.kill()
            process.wait()
        # Workers share the main process's session; after a SIGKILLed master they would linger.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.unix_path)

    def log_text(self) -> str:
        """nginx's error log (start-up messages, upstream errors such as connect() failures)."""
        raise NotImplementedError

    def __enter__(self) -> Router:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def host_for(self, app: str) -> str:
        """The Host header that routes to ``app`` (``svc.api.localhost``)."""
        return self.route_map.host_for(app)

    def url_for(self, app: str, path: str = "/") -> str:
        """``http://svc.api.localhost:PORT/``: what a browser or curl opens (``*.localhost`` is loopback)."""
        if self.check_route is not None:
            self.check_route(app)
        return f"http://{self.host_for(app)}:{self.tcp_address[1]}{path}"

    def session_for(self, app: str, *, transport: str = "unix") -> requests.Session:
        """A ``requests.Session`` whose relative URLs (``s.get("/path")``) go through this router to ``app``.

        ``transport="unix"`` (the default, no port needed) uses requests-unixsocket; ``"tcp"`` the TCP port.
        """
        if self.check_route is not None:
            self.check_route(app)
        if transport == "unix":
            base = "http+unix://" + urllib.parse.quote(self.unix_path, safe="")
        elif transport == "tcp":
            base = f"http://{self.tcp_address[0]}:{self.tcp_address[1]}"
        else:
            raise ValueError(f"transport must be 'unix' or 'tcp', not {transport!r}")
        return _routed_session(base, self.host_for(app))

    def __repr__(self) -> str:
        return f"<{type(self).__name__} tcp={self.tcp_address} unix={self.unix_path}>"


def _routed_session(base: str, host: str) -> requests.Session:
    """A Session that prefixes relative URLs with ``base`` and sends ``Host: host`` by default."""
    import requests_unixsocket  # imported here: only sessions need requests

    class RoutedSession(requests_unixsocket.Session):  # type: ignore[misc]
        def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> requests.Response:
            response: requests.Response = super().request(
                method, base + url if url.startswith("/") else url, *args, **kwargs
            )
            return response

    session: requests.Session = RoutedSession()
    session.headers["Host"] = host
    return session
