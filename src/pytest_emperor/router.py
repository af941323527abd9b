"""Wildcard routing like nginx's ``server_name ~^(?<app>[^.]+)\\.api\\.example\\.com$;`` + ``uwsgi_pass``.

- :class:`RouteMap`: the pure mapping Host -> app -> vassal socket, from an nginx ``server_name`` regex with a
  named group ``app`` and a socket template using ``$app`` (the seed's ``unix:/tmp/$app.api.sock``). Used by the
  router, ``emperor-dev request`` and ``emperor-dev check`` (W303).
- :class:`Router`: what the tests and ``emperor-dev`` use of the router (addresses, per-app URL/Host, a
  ``requests`` session, ``stop()``), and :func:`start_router` to start one. The router is a private real nginx
  (:mod:`pytest_emperor.nginx`); there is no other.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import signal
import socket
import subprocess
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_emperor.convention import DEFAULT_DOMAIN, DEFAULT_SOCKET_DIR, MAX_BODY_SIZE, routed_socket
from pytest_emperor.errors import RouteMismatch, RouterError

if TYPE_CHECKING:
    import requests

    from pytest_emperor.nginx_site import NginxSite

__all__ = [
    "RouteMap",
    "RouteMismatch",
    "Router",
    "RouterError",
    "RouterSettings",
    "default_workers",
    "start_router",
    "wait_for",
]

#: nginx's ``(?<name>...)`` (PCRE) spelled the Python way, ``(?P<name>...)``. nginx also accepts ``(?P<name>``.
_NGINX_NAMED_GROUP = re.compile(r"\(\?<([A-Za-z_][A-Za-z0-9_]*)>")
_TEMPLATE_VAR = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")


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
    def for_domain(
        cls, domain: str = DEFAULT_DOMAIN, socket_dir: str | os.PathLike[str] = DEFAULT_SOCKET_DIR
    ) -> RouteMap:
        """``<app>.<domain>`` -> ``<socket_dir>/<app>.api.sock``, the seed's layout (the vassal ini binds
        ``/tmp/%n.api.sock``)."""
        domain = domain.strip(".").lower()
        return cls(
            server_name=rf"~^(?<app>[^.]+)\.{re.escape(domain)}$",
            socket_template=routed_socket("$app", socket_dir),
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
        """The template without nginx's ``unix:`` prefix, with leading slashes collapsed as the kernel reads them
        (a site's ``unix://tmp/$app.sock`` is ``/tmp/$app.sock``)."""
        path = self.socket_template[5:] if self.socket_template.startswith("unix:") else self.socket_template
        return "/" + path.lstrip("/") if path.startswith("/") else path

    def match(self, host: str) -> str | None:
        """The app name for a (validated, lowercased, port-less) host, or None when the regex does not match."""
        found = self.regex.search(host)
        return found.group("app") if found else None

    def socket_for_host(self, host: str) -> tuple[str, str] | None:
        """``(app, socket path)`` for a host, or None. The host must already be validated (no ``/``, ``..``)."""
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

    def mismatch(self, app: str, bound: Sequence[str]) -> str | None:
        """Why requests for ``app`` cannot reach it, given the unix sockets it binds (``bound``), or None when
        the routing sends its Host to one of them."""
        host = self.host_for(app)
        route = self.socket_for_host(host)
        routed = route[1] if route is not None and route[0] == app else None
        if routed is not None and os.path.normpath(routed) in {os.path.normpath(path) for path in bound}:
            return None
        would = f"sends Host {host} to unix:{routed}" if routed else f"does not route Host {host} to it"
        binds = f"it binds unix:{', unix:'.join(bound)}" if bound else "it binds no unix socket"
        return f"vassal {app!r}: the routing ({self.nginx_server_name}) {would}, but {binds}"

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

    def __init__(self, route_map: RouteMap, tcp_address: tuple[str, int], unix_path: str) -> None:
        self.route_map = route_map
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


def start_router(
    route_map: RouteMap,
    run_dir: str | os.PathLike[str],
    *,
    nginx: str | os.PathLike[str] | None = None,
    site: NginxSite | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    env: Mapping[str, str] | None = None,
    timeout: float = 30.0,
    **options: Any,
) -> Router:
    """Start the router, a private nginx, on ``host:port`` (0 = ephemeral) and ``<run_dir>/router.sock``.

    ``nginx`` is the binary (default: :func:`~.nginx.find_nginx`'s search); ``site`` a team's own server blocks
    to run instead of the generated one (:func:`~.nginx_site.load_site`). ``env`` is added to nginx's
    environment (e.g. the run's process marker). ``options`` are the router's limits (:class:`RouterSettings`).
    """
    from pytest_emperor.nginx import NginxRouter  # the config machinery is only needed once a router starts

    return NginxRouter.start(
        route_map, Path(run_dir), nginx=nginx, site=site, host=host, port=port, env=env, timeout=timeout, **options
    )
