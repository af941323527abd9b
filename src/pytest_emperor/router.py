"""Wildcard routing like nginx's ``server_name ~^(?<app>[^.]+)\\.api\\.example\\.com$;`` + ``uwsgi_pass``.

Three parts:

- :class:`RouteMap`: the pure mapping Host -> app -> vassal socket, from an nginx ``server_name`` regex with a
  named group ``app`` and a socket template using ``$app`` (the seed's ``unix:/tmp/$app.api.sock``).
- :class:`Router`: the interface both routers share (addresses, per-app URL/Host, a ``requests`` session,
  ``stop()``), and :func:`start_router` to start one (``"builtin"`` or ``"nginx"``).
- The built-in router (:class:`BuiltinRouter`; its server is :mod:`pytest_emperor.router_server`), run as
  ``python -m pytest_emperor.router``: a subprocess so that it never shares the GIL with the tests and so that
  ``emperor-dev`` runs it the same way. It dies with its parent (a lifeline
  pipe whose EOF stops it, plus PR_SET_PDEATHSIG) and lives in its own process group.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_emperor.processes import die_with_parent
from pytest_emperor.router_server import error_page, serve_forever

if TYPE_CHECKING:
    import requests

__all__ = [
    "BuiltinRouter",
    "RouteMap",
    "Router",
    "RouterError",
    "RouterSettings",
    "error_page",
    "main",
    "start_router",
    "wait_for",
]

#: nginx's ``(?<name>...)`` (PCRE) spelled the Python way, ``(?P<name>...)``. nginx also accepts ``(?P<name>``.
_NGINX_NAMED_GROUP = re.compile(r"\(\?<([A-Za-z_][A-Za-z0-9_]*)>")
_TEMPLATE_VAR = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")


@functools.lru_cache(maxsize=4096)
def _route(route_map: RouteMap, host: str) -> tuple[str, str] | None:
    """Memoised RouteMap lookups: the router resolves the same few hosts on every request."""
    return route_map._socket_for_host(host)


class RouterError(RuntimeError):
    """A router could not be configured, started or stopped."""


@dataclass(frozen=True)
class RouteMap:
    """Host -> socket, as an nginx server block with a regex ``server_name`` and ``uwsgi_pass unix:<template>``.

    ``server_name`` is nginx syntax: a leading ``~`` (optional here), PCRE's ``(?<app>...)`` or Python's
    ``(?P<app>...)``. ``socket_template`` may reference any named group as ``$name`` or ``${name}`` and may start
    with nginx's ``unix:``. ``host_template`` (``$app.api.localhost``) builds a Host for an app; it is derived from
    simple regexes and must be given for others.
    """

    server_name: str
    socket_template: str
    host_template: str = ""

    def __post_init__(self) -> None:
        regex = self.regex  # validates
        if "app" not in regex.groupindex:
            raise ValueError(f"server_name {self.server_name!r} has no named group 'app'")
        for name in self._template_names():
            if name not in regex.groupindex:
                raise ValueError(f"socket template uses ${name}, which server_name does not capture")
        if not self.host_template:
            object.__setattr__(self, "host_template", self._derive_host_template())
        probe = self.host_template.replace("$app", "probe")
        if self.match(probe) != "probe":
            raise ValueError(f"host template {self.host_template!r} does not match server_name {self.server_name!r}")

    @classmethod
    def for_domain(cls, domain: str = "api.localhost", socket_dir: str | os.PathLike[str] = "/tmp") -> RouteMap:
        """``<app>.<domain>`` -> ``<socket_dir>/<app>.api.sock``, the seed's layout (the vassal ini binds
        ``/tmp/%n.api.sock``)."""
        domain = domain.strip(".").lower()
        return cls(
            server_name=rf"~^(?<app>[^.]+)\.{re.escape(domain)}$",
            socket_template=f"{os.fspath(socket_dir).rstrip('/')}/$app.api.sock",
            host_template=f"$app.{domain}",
        )

    @functools.cached_property
    def pattern(self) -> str:
        """The regex in Python syntax (no ``~``, ``(?P<name>``)."""
        return _NGINX_NAMED_GROUP.sub(
            r"(?P<\1>", self.server_name[1:] if self.server_name[:1] == "~" else self.server_name
        )

    @property
    def nginx_server_name(self) -> str:
        """The regex as an nginx ``server_name`` value (``~`` prefix, PCRE named groups)."""
        return "~" + self.pattern.replace("(?P<", "(?<")

    @functools.cached_property
    def regex(self) -> re.Pattern[str]:
        """The compiled Python regex."""
        try:
            return re.compile(self.pattern)
        except re.error as exc:
            raise ValueError(f"server_name {self.server_name!r} is not a valid regex: {exc}") from exc

    @property
    def socket_path_template(self) -> str:
        """The template without nginx's ``unix:`` prefix."""
        return self.socket_template[5:] if self.socket_template.startswith("unix:") else self.socket_template

    def match(self, host: str) -> str | None:
        """The app name for a (validated, lowercased, port-less) host, or None when the regex does not match."""
        found = self.regex.search(host)
        return found.group("app") if found else None

    def socket_for_host(self, host: str) -> tuple[str, str] | None:
        """``(app, socket path)`` for a host, or None. The host must already be validated (no ``/``, ``..``)."""
        return _route(self, host)

    def _socket_for_host(self, host: str) -> tuple[str, str] | None:
        found = self.regex.search(host)
        if found is None:
            return None
        groups = {k: v or "" for k, v in found.groupdict().items()}
        path = _TEMPLATE_VAR.sub(lambda m: groups[m.group(1) or m.group(2)], self.socket_path_template)
        return groups["app"], path

    def socket_for(self, app: str) -> str:
        """The socket path the router uses for ``app``."""
        route = self.socket_for_host(self.host_for(app))
        if route is None:  # __post_init__ checked the template against the regex
            raise ValueError(f"app name {app!r} cannot be routed by {self.server_name!r}")
        return route[1]

    def host_for(self, app: str) -> str:
        """The Host that routes to ``app``."""
        return self.host_template.replace("$app", app)

    def _template_names(self) -> list[str]:
        return [m.group(1) or m.group(2) for m in _TEMPLATE_VAR.finditer(self.socket_path_template)]

    def _derive_host_template(self) -> str:
        """``^(?P<app>...)\\.api\\.x\\.com$`` -> ``$app.api.x.com``: the app group plus literal (escaped) text."""
        found = re.fullmatch(r"\^?(.*?)\(\?P<app>(?:[^()]|\([^()]*\))*\)(.*?)\$?", self.pattern)
        if found is None:
            raise ValueError(f"cannot derive a host template from {self.server_name!r}: give host_template")
        parts = []
        for literal in found.groups():
            if re.search(r"(?<!\\)[\[\](){}*+?|^$]", literal):
                raise ValueError(f"cannot derive a host template from {self.server_name!r}: give host_template")
            parts.append(re.sub(r"\\(.)", r"\1", literal))
        return f"{parts[0]}$app{parts[1]}"


@dataclass(frozen=True)
class RouterSettings:
    """Limits shared by both routers, nginx's defaults unless noted."""

    #: ``client_max_body_size`` (bytes; 0 = no limit) -> 413.
    max_body_size: int = 1024 * 1024
    #: ``uwsgi_read_timeout`` (and connect/send) in seconds -> 504.
    upstream_timeout: float = 60.0
    #: ``client_header_timeout`` / ``client_body_timeout`` / ``send_timeout`` in seconds: slow clients are dropped.
    client_timeout: float = 60.0
    #: ``keepalive_timeout``: an idle keep-alive connection is closed after this many seconds.
    keepalive_timeout: float = 75.0
    #: Worker processes (nginx ``worker_processes``; the built-in router forks as many, sharing the sockets).
    workers: int = 1
    #: Built-in router only: "auto" (uvloop when installed, else asyncio), "asyncio" or "uvloop".
    event_loop: str = "auto"

    def __post_init__(self) -> None:
        if self.event_loop not in ("auto", "asyncio", "uvloop"):
            raise ValueError(f"event_loop must be 'auto', 'asyncio' or 'uvloop', not {self.event_loop!r}")
        if self.workers < 1 or self.max_body_size < 0:
            raise ValueError(f"workers must be >= 1 and max_body_size >= 0: {self}")
        if min(self.upstream_timeout, self.client_timeout, self.keepalive_timeout) <= 0:
            raise ValueError(f"timeouts must be positive: {self}")


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
    """What both routers offer the emperor and the tests. Subclasses set the addresses and implement stop()."""

    kind = ""
    #: The router's main process (nginx's master; the built-in router's first process), in its own group.
    process: subprocess.Popen[bytes]

    def __init__(self, route_map: RouteMap, tcp_address: tuple[str, int], unix_path: str) -> None:
        self.route_map = route_map
        self.tcp_address = tcp_address
        self.unix_path = unix_path

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
        """The router's log: nginx's error log, or the built-in router's (upstream failures, timeouts)."""
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
        return f"http://{self.host_for(app)}:{self.tcp_address[1]}{path}"

    def session_for(self, app: str, *, transport: str = "unix") -> requests.Session:
        """A ``requests.Session`` whose relative URLs (``s.get("/path")``) go through this router to ``app``.

        ``transport="unix"`` (the default, no port needed) uses requests-unixsocket; ``"tcp"`` the TCP port.
        """
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


def start_router(
    kind: str,
    route_map: RouteMap,
    run_dir: str | os.PathLike[str],
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    env: Mapping[str, str] | None = None,
    timeout: float = 30.0,
    **options: Any,
) -> Router:
    """Start a ``"builtin"`` or ``"nginx"`` router on ``host:port`` (0 = ephemeral) and ``<run_dir>/router.sock``.

    ``env`` is added to the router process's environment (e.g. the run's process marker). ``options`` are the
    router's limits (see :class:`RouterSettings`).
    """
    run_dir = Path(run_dir)
    if kind == "builtin":
        return BuiltinRouter.start(route_map, run_dir, host=host, port=port, env=env, timeout=timeout, **options)
    if kind == "nginx":
        from pytest_emperor.nginx import NginxRouter

        return NginxRouter.start(route_map, run_dir, host=host, port=port, env=env, timeout=timeout, **options)
    raise ValueError(f"router kind must be 'builtin' or 'nginx', not {kind!r}")


# ---------------------------------------------------------------------------------------------------------------
# The built-in router: router_server's asyncio server, run in a subprocess.

#: Blocked until the server's loop handles them (router_server.serve_forever).
_STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}


def main(argv: list[str] | None = None) -> None:
    """``python -m pytest_emperor.router``: run the built-in router (also what BuiltinRouter starts)."""
    parser = argparse.ArgumentParser(prog="python -m pytest_emperor.router", description=main.__doc__)
    parser.add_argument("--server-name", required=True, help="nginx server_name regex with a group 'app'")
    parser.add_argument("--socket-template", required=True, help="socket path with $app, e.g. /tmp/$app.api.sock")
    parser.add_argument("--host-template", default="", help="Host for an app, e.g. $app.api.localhost")
    parser.add_argument("--tcp", default="127.0.0.1:0", help="HOST:PORT to listen on (port 0: ephemeral)")
    parser.add_argument("--unix", required=True, help="unix socket path to listen on")
    parser.add_argument("--ready-fd", type=int, help="write the bound addresses as JSON to this fd")
    parser.add_argument("--lifeline-fd", type=int, help="exit when this fd reaches EOF (parent gone)")
    for name, default in vars(RouterSettings()).items():
        parser.add_argument("--" + name.replace("_", "-"), type=type(default), default=default)
    args = parser.parse_args(argv)
    signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)  # until the loop handles them (_serve_forever)
    route_map = RouteMap(args.server_name, args.socket_template, args.host_template)
    settings = RouterSettings(**{name: getattr(args, name) for name in vars(RouterSettings())})
    host, _, port = args.tcp.rpartition(":")
    host = host.strip("[]")
    try:
        tcp = _listen(socket.AF_INET6 if ":" in host else socket.AF_INET, (host, int(port)))
        with contextlib.suppress(FileNotFoundError):
            os.unlink(args.unix)  # a stale socket from a killed run; the run dir is ours alone
        unix = _listen(socket.AF_UNIX, args.unix)
    except OSError as exc:
        sys.exit(f"pytest-emperor router: cannot listen: {exc}")
    # Pre-fork like nginx's worker_processes: the workers share the listening sockets and die with us.
    children: list[int] = []
    is_main = True
    for _ in range(settings.workers - 1):
        pid = os.fork()
        if pid == 0:
            is_main, children = False, []
            die_with_parent(signal.SIGTERM)()
            break
        children.append(pid)
    if args.ready_fd is not None:
        with os.fdopen(args.ready_fd, "w") as ready:  # workers just close their copy
            if is_main:
                report = {"tcp": [host, tcp.getsockname()[1]], "unix": args.unix, "pid": os.getpid()}
                ready.write(json.dumps(report) + "\n")
    try:
        serve_forever(route_map, settings, [tcp, unix], args.lifeline_fd)
    finally:
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        for pid in children:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        if is_main:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(args.unix)


def _listen(family: int, address: str | tuple[str, int]) -> socket.socket:
    """A listening socket with nginx's Linux backlog (511)."""
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        if family != socket.AF_UNIX:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(511)
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"{exc.strerror}: {address}") from None
    return sock


class BuiltinRouter(Router):
    """The built-in router, run as ``python -m pytest_emperor.router`` in its own process group."""

    kind = "builtin"

    def __init__(
        self,
        route_map: RouteMap,
        tcp_address: tuple[str, int],
        unix_path: str,
        process: subprocess.Popen[bytes],
        lifeline: int,
        log_path: Path,
    ) -> None:
        super().__init__(route_map, tcp_address, unix_path)
        self.process = process
        self.log_path = log_path
        self._lifeline: int | None = lifeline

    @classmethod
    def start(
        cls,
        route_map: RouteMap,
        run_dir: Path,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        env: Mapping[str, str] | None = None,
        timeout: float = 30.0,
        **options: Any,
    ) -> BuiltinRouter:
        """Start the router process and return once it listens (it reports its addresses on a pipe)."""
        settings = RouterSettings(**options)
        run_dir.mkdir(parents=True, exist_ok=True)
        unix_path = str(run_dir / "router.sock")
        log_path = run_dir / "router.log"
        ready_r, ready_w = os.pipe()
        lifeline_r, lifeline_w = os.pipe()
        argv = [
            sys.executable,
            # Not `-m pytest_emperor.router`: the package imports this module first, and runpy would then run a
            # second copy of it as __main__ (with a RuntimeWarning in the router's log).
            "-c",
            "import sys; from pytest_emperor.router import main; main(sys.argv[1:])",
            "--server-name",
            route_map.server_name,
            "--socket-template",
            route_map.socket_template,
            "--host-template",
            route_map.host_template,
            "--tcp",
            f"{host}:{port}",
            "--unix",
            unix_path,
            "--ready-fd",
            str(ready_w),
            "--lifeline-fd",
            str(lifeline_r),
        ]
        for name, value in vars(settings).items():
            argv += ["--" + name.replace("_", "-"), str(value)]
        try:
            with log_path.open("ab") as log:
                process = subprocess.Popen(
                    argv,
                    env={**os.environ, **(env or {})},
                    pass_fds=(ready_w, lifeline_r),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    preexec_fn=die_with_parent(signal.SIGTERM),
                )
        except BaseException:
            for fd in (ready_r, ready_w, lifeline_r, lifeline_w):
                os.close(fd)
            raise
        os.close(ready_w)
        os.close(lifeline_r)
        router = cls(route_map, (host, port), unix_path, process, lifeline_w, log_path)
        try:
            report = router._await_ready(ready_r, timeout)
        except BaseException:
            router.stop()
            raise
        finally:
            os.close(ready_r)
        router.tcp_address = (report["tcp"][0], int(report["tcp"][1]))
        return router

    def _await_ready(self, ready_fd: int, timeout: float) -> dict[str, Any]:
        """Read the child's JSON report; EOF without one means it failed to start."""
        deadline = time.monotonic() + timeout
        data = b""
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([ready_fd], [], [], remaining)[0]:
                raise RouterError(
                    f"built-in router not ready within {timeout} s; log {self.log_path}:\n{_tail(self.log_path)}"
                )
            chunk = os.read(ready_fd, 4096)
            data += chunk
            if not chunk or data.endswith(b"\n"):
                break
        if not data:
            self.process.wait(timeout)
            raise RouterError(
                f"built-in router exited with status {self.process.returncode} before listening;"
                f" log {self.log_path}:\n{_tail(self.log_path)}"
            )
        report: dict[str, Any] = json.loads(data)
        return report

    def log_text(self) -> str:
        """The router's log (errors, timeouts, upstream failures)."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        """Close the lifeline (the router exits on EOF), reap it, then SIGKILL whatever is left of its group."""
        if self._lifeline is not None:
            os.close(self._lifeline)
            self._lifeline = None
        self._end_process(((None, 10.0), (signal.SIGTERM, 5.0)))


if __name__ == "__main__":
    main()
