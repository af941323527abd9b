"""The router a front door runs before the emperor: a private real nginx (:mod:`pytest_emperor.routing.nginx`
starts it), routing like nginx's ``server_name ~^(?<app>[^.]+)\\.api\\.example\\.com$;`` + ``uwsgi_pass``.

:class:`Router` is what the tests and ``emperor-dev`` hold of it: addresses, per-app URL and Host, its log,
``stop()``. The Host -> app -> socket mapping itself is routes.py's :class:`RouteMap`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pytest_emperor.convention import MAX_BODY_SIZE
from pytest_emperor.errors import RouteMismatch, RouterError
from pytest_emperor.routing.route_table import RouteTable
from pytest_emperor.routing.routes import RouteMap

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


def wait_for(
    unix_path: str, process: subprocess.Popen[bytes], timeout: float, *, what: str, log: Path, pid_file: Path
) -> None:
    """Return once ``unix_path`` accepts connections and ``pid_file`` exists; RouterError with the log if
    ``process`` exits first or ``timeout`` passes.

    nginx listens before it installs its signal handlers and writes its pid file after them: until then a
    SIGTERM (the parent-death signal) ends it by the default action, which leaves its unix socket file behind
    (docs/uwsgi-behaviour.md, "Routing through nginx").
    """
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
            if pid_file.exists():
                return
            last = FileNotFoundError(f"accepts, but no pid file {pid_file} yet")
        except OSError as exc:
            last = exc
        if time.monotonic() > deadline:
            raise RouterError(
                f"{what} did not accept on {unix_path} within {timeout} s (last error: {last})"
                f"; log {log}:\n{_tail(log)}"
            )
        # Nothing signals "listen() was called" or the pid file's creation; poll tightly under the deadline.
        time.sleep(0.005)


def _tail(log: Path, lines: int = 20) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


class Router:
    """A running router (a private nginx, started by :func:`~.nginx.start_router`): its addresses, per-app
    URL and Host, its log, ``stop()``."""

    def __init__(
        self,
        route_map: RouteMap,
        tcp_address: tuple[str, int],
        unix_path: str,
        directory: Path,
        process: subprocess.Popen[bytes],
        routes: RouteTable,
    ) -> None:
        self.route_map = route_map
        #: The apps this router routes (the others get a 404 page listing them), see route_table.py.
        self.routes = routes
        self.tcp_address = tcp_address
        self.unix_path = unix_path
        self.directory = directory
        #: The router's main process (nginx's master), in its own process group.
        self.process = process

    def stop(self) -> None:
        """Graceful stop (SIGQUIT: workers finish their requests), then SIGTERM, then SIGKILL of the group. Safe
        to call twice."""
        self._end_process(((signal.SIGQUIT, 10.0), (signal.SIGTERM, 5.0)))

    def log_text(self) -> str:
        """nginx's error log (start-up messages, upstream errors such as connect() failures)."""
        try:
            return (self.directory / "error.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""

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

    def kill(self) -> None:
        """SIGKILL the router's processes at once (a forced stop); ``stop()`` still cleans up."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)

    def __enter__(self) -> Router:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def host_for(self, app: str) -> str:
        """The Host header that routes to ``app`` (``svc.api.localhost``)."""
        return self.route_map.host_for(app)

    def url_for(self, app: str, path: str = "/") -> str:
        """``http://svc.api.localhost:PORT/``: what a browser or curl opens (``*.localhost`` is loopback)."""
        return f"http://{self.host_for(app)}:{self.tcp_address[1]}{path}"

    def __repr__(self) -> str:
        return f"<{type(self).__name__} tcp={self.tcp_address} unix={self.unix_path}>"

