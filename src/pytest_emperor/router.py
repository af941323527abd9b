"""Wildcard routing like nginx's ``server_name ~^(?<app>[^.]+)\\.api\\.example\\.com$;`` + ``uwsgi_pass``.

Three parts:

- :class:`RouteMap`: the pure mapping Host -> app -> vassal socket, from an nginx ``server_name`` regex with a
  named group ``app`` and a socket template using ``$app`` (the seed's ``unix:/tmp/$app.api.sock``).
- :class:`Router`: the interface both routers share (addresses, per-app URL/Host, a ``requests`` session,
  ``stop()``), and :func:`start_router` to start one (``"builtin"`` or ``"nginx"``).
- The built-in router, run as ``python -m pytest_emperor.router``: a subprocess so that it never shares the
  GIL with the tests and so that ``emperor-dev`` runs it the same way. It dies with its parent (a lifeline
  pipe whose EOF stops it, plus PR_SET_PDEATHSIG) and lives in its own process group.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import email.utils
import functools
import html
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
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from pytest_emperor.http_translation import (
    EndOfRequest,
    HttpError,
    Limits,
    RequestHead,
    RequestParser,
    reason_phrase,
    uwsgi_vars,
)
from pytest_emperor.processes import die_with_parent
from pytest_emperor.uwsgi_protocol import Body, ProtocolError, ResponseHead, ResponseParser, encode_request

if TYPE_CHECKING:
    import requests

__all__ = [
    "BuiltinRouter",
    "RouteMap",
    "Router",
    "RouterError",
    "RouterSettings",
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
# The built-in router: an asyncio HTTP/1.1 server in a subprocess.

SERVER = "pytest-emperor"
# Measured on nginx 1.22: it never passes these from a uwsgi upstream (hop-by-hop framing is its own since it
# re-frames the body; Server is replaced by its own; X-Accel-* are control headers). It does pass Status, and
# an upstream Date replaces its own.
_HIDDEN_UPSTREAM = frozenset(
    {
        "server",
        "connection",
        "keep-alive",
        "transfer-encoding",
        "x-accel-expires",
        "x-accel-redirect",
        "x-accel-limit-rate",
        "x-accel-buffering",
        "x-accel-charset",
    }
)
_READ_SIZE = 64 * 1024
# Above this many bytes queued for a slow client, stop reading from the upstream until they drain.
_HIGH_WATER = 256 * 1024


def error_page(
    status: int, detail: str = "", *, title: str = "", keep_alive: bool = False, head_only: bool = False
) -> bytes:
    """A complete error response in nginx's format (same HTML), plus a ``<p>`` with ``detail`` if given.

    nginx's 502/504 pages say nothing about the cause; ours name the app and socket (a deliberate difference).
    ``title`` is nginx's special title for some 400s (see :data:`HEADER_TOO_LARGE`).
    """
    phrase = reason_phrase(status)
    extra = f"<center>{title}</center>\r\n" if title else ""
    if detail:
        extra += f"<p>{html.escape(detail)}</p>\r\n"
    body = (
        f"<html>\r\n<head><title>{status} {title or phrase}</title></head>\r\n<body>\r\n"
        f"<center><h1>{status} {phrase}</h1></center>\r\n{extra}<hr><center>{SERVER}</center>\r\n"
        "</body>\r\n</html>\r\n"
    ).encode()
    head = (
        f"HTTP/1.1 {status} {phrase}\r\nServer: {SERVER}\r\nDate: {http_date()}\r\nContent-Type: text/html\r\n"
        f"Content-Length: {len(body)}\r\nConnection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n"
    ).encode()
    return head if head_only else head + body


_date_cache: list[Any] = [0, ""]


def http_date() -> str:
    """The current IMF-fixdate (RFC 9110 5.6.7), cached per second like nginx's ngx_cached_http_time."""
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache[:] = [now, email.utils.formatdate(now, usegmt=True)]
    return str(_date_cache[1])


def response_head(upstream: ResponseHead, *, keep_alive: bool, chunked: bool) -> bytes:
    """The head sent to the client for the app's response, in nginx's order: status line as the app sent it,
    Server, Date (unless the app sent one), Content-Type, Content-Length / Transfer-Encoding, Connection, then the
    app's other headers."""
    first: list[str] = []
    rest: list[str] = []
    date = "" if any(n.lower() == "date" for n, _ in upstream.headers) else f"Date: {http_date()}\r\n"
    for name, value in upstream.headers:
        lower = name.lower()
        if lower in _HIDDEN_UPSTREAM:
            continue
        (first if lower in ("content-type", "content-length") else rest).append(f"{name}: {value}\r\n")
    lines = [
        f"HTTP/1.1 {upstream.status} {upstream.reason}\r\nServer: {SERVER}\r\n{date}",
        *first,
        "Transfer-Encoding: chunked\r\n" if chunked else "",
        "Connection: keep-alive\r\n" if keep_alive else "Connection: close\r\n",
        *rest,
        "\r\n",
    ]
    return "".join(lines).encode("latin-1")


class _Deadline:
    """A connection's current timeout: a deadline that the server's sweeper enforces by cancelling the task.

    Re-arming is a float store, not a timer-heap insertion (call_later) per phase of every request; the cost is
    a resolution of one sweeper tick (see _Server.tick).
    """

    __slots__ = ("_loop", "_task", "at", "expired", "what")

    def __init__(self, loop: asyncio.AbstractEventLoop, task: asyncio.Task[Any]) -> None:
        self._loop = loop
        self._task = task
        self.at = 0.0  # 0: disarmed
        self.what = ""
        self.expired = ""

    def arm(self, seconds: float, what: str) -> None:
        self.at = self._loop.time() + seconds
        self.what = what

    def disarm(self) -> None:
        self.at = 0.0

    def check(self, now: float) -> None:
        """Called by the sweeper: cancel the task once the deadline has passed."""
        if self.at and now >= self.at:
            self.at = 0.0
            self.expired = self.what
            self._task.cancel()


class _Connection:
    """One client connection: requests in order (keep-alive, pipelining), each proxied to its vassal."""

    def __init__(self, server: _Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.server = server
        self.reader = reader
        self.writer = writer
        self.parser = RequestParser(server.limits)
        self.events: collections.deque[Any] = collections.deque()
        sock = writer.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            # nginx's tcp_nodelay (on by default): without it, Nagle holds the body behind the head until the
            # client's delayed ACK, 40 ms per response. asyncio only sets it for sockets made with IPPROTO_TCP.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            peer, local = writer.get_extra_info("peername"), writer.get_extra_info("sockname")
            self.remote = (str(peer[0]), str(peer[1]))
            self.server_port = str(local[1])
        else:  # what nginx reports for a unix-socket listener: $remote_addr "unix:", empty ports
            self.remote = ("unix:", "")
            self.server_port = ""

    async def serve(self) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.timer = _Deadline(asyncio.get_running_loop(), task)
        self.server.connections.add(self.timer)
        try:
            while True:
                head = await self._next_head()
                if head is None:
                    return
                if not await self._handle(head):
                    return
        except HttpError as exc:
            self.server.log(f"client {self.remote[0]}: {exc}")
            await self._fail(error_page(exc.status, title=exc.title))
        except asyncio.CancelledError:
            # Either our timer (nginx closes timed-out clients without a response; 408 is only logged) or the
            # router shutting down. The cancellation ends here, at the top of the connection's task: a task
            # that ends cancelled trips asyncio 3.11's start_server callback (task.exception() raises).
            if self.timer.expired:
                self.server.log(f"client {self.remote[0]}: timed out {self.timer.expired}")
        except (ConnectionError, OSError) as exc:
            self.server.log(f"client {self.remote[0]}: {exc!r}")
        finally:
            self.server.connections.discard(self.timer)
            self.writer.close()

    async def _read(self) -> bool:
        """Feed the parser one read from the client; False on EOF."""
        data = await self.reader.read(_READ_SIZE)
        if not data:
            return False
        self.events.extend(self.parser.feed(data))
        return True

    async def _next_head(self) -> RequestHead | None:
        settings = self.server.settings
        while not self.events:
            if self.parser.idle:
                self.timer.arm(settings.keepalive_timeout, "waiting for a request (keepalive_timeout)")
            else:
                self.timer.arm(settings.client_timeout, "reading the request head (client_header_timeout)")
            if not await self._read():
                self.timer.disarm()
                return None
        self.timer.disarm()
        head = self.events.popleft()
        assert isinstance(head, RequestHead)
        return head

    async def _read_body(self) -> bytes:
        chunks: list[bytes] = []
        while True:
            while self.events:
                event = self.events.popleft()
                if isinstance(event, EndOfRequest):
                    self.timer.disarm()
                    return b"".join(chunks)
                chunks.append(event.data)
            self.timer.arm(self.server.settings.client_timeout, "reading the request body (client_body_timeout)")
            if not await self._read():
                raise ConnectionError("client closed the connection in the middle of the request body")

    async def _handle(self, head: RequestHead) -> bool:
        """Serve one request; True if the connection stays open for the next."""
        if head.expect_continue:
            # nginx answers "100 Continue" whenever it starts reading the body, which uwsgi_pass always does.
            self.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        body = await self._read_body()
        route = self.server.route_map.socket_for_host(head.host)
        if route is None:
            detail = (
                f"no app for Host {head.host!r}: it does not match server_name "
                f"{self.server.route_map.nginx_server_name}"
            )
            return await self._error(head, 502, detail)
        app, path = route
        vars = uwsgi_vars(
            head,
            body_length=len(body),
            server_name=self.server.route_map.nginx_server_name,
            server_port=self.server_port,
            remote_addr=self.remote[0],
            remote_port=self.remote[1],
        )
        try:
            request = encode_request(vars, body)
        except ValueError as exc:  # nginx: "uwsgi request is too big" -> 500
            return await self._error(head, 500, str(exc))
        settings = self.server.settings
        loop = asyncio.get_running_loop()
        upstream = _Upstream(self, head, app, path, request)
        self.timer.arm(settings.upstream_timeout, f"connecting to unix:{path} (uwsgi_connect_timeout)")
        try:
            await loop.create_unix_connection(lambda: upstream, path)
        except asyncio.CancelledError:
            if not self.timer.expired:
                raise
            self.timer.expired = ""
            return await self._error(head, 504, f"app {app!r}: connecting to unix:{path} timed out")
        except OSError as exc:
            reason = exc.strerror or str(exc)
            self.server.log(f"app {app!r}: connect() to unix:{path} failed ({reason})")
            return await self._error(head, 502, f"app {app!r}: cannot connect to its socket unix:{path}: {reason}")
        self.timer.arm(settings.upstream_timeout, f"reading from unix:{path} (uwsgi_read_timeout)")
        try:
            keep_alive = await upstream.done
        except asyncio.CancelledError:
            if not self.timer.expired:
                raise
            self.timer.expired = ""
            if upstream.started:
                raise ConnectionError(f"app {app!r}: response stalled ({self.timer.what})") from None
            self.server.log(f"app {app!r}: upstream timed out reading the response from unix:{path}")
            detail = f"app {app!r}: no response from unix:{path} within {settings.upstream_timeout} s"
            return await self._error(head, 504, detail)
        except ProtocolError as exc:
            if upstream.started:
                raise ConnectionError(f"app {app!r}: {exc}") from None
            self.server.log(f"app {app!r}: invalid response from unix:{path}: {exc}")
            return await self._error(head, 502, f"app {app!r}: invalid response from unix:{path}: {exc}")
        finally:
            upstream.close()
        if self.writer.transport.get_write_buffer_size() > _HIGH_WATER:
            self.timer.arm(settings.client_timeout, "sending the response (send_timeout)")
            await self.writer.drain()
        self.timer.disarm()
        return keep_alive

    async def _error(self, head: RequestHead, status: int, detail: str) -> bool:
        """Answer ``status`` with ``detail`` and keep the connection alive when the client allows it."""
        self.writer.write(error_page(status, detail, keep_alive=head.keep_alive, head_only=head.method == "HEAD"))
        self.timer.arm(self.server.settings.client_timeout, "sending an error page (send_timeout)")
        await self.writer.drain()
        self.timer.disarm()
        return head.keep_alive

    async def _fail(self, page: bytes) -> None:
        """Send an error page and close the way nginx does after a bad request: stop writing, then keep
        reading for a while (lingering close) so that the client sees the page instead of a reset."""
        self.writer.write(page)
        self.timer.arm(_LINGERING_TIME, "lingering close")
        try:
            await self.writer.drain()
            if self.writer.can_write_eof():
                self.writer.write_eof()
            while await self.reader.read(_READ_SIZE):
                pass
        except asyncio.CancelledError:
            if not self.timer.expired:
                raise
        except OSError:
            pass
        finally:
            self.timer.disarm()


class _Upstream(asyncio.Protocol):
    """One uwsgi exchange: writes the request, then relays the response to the client as it arrives,
    re-framed the way nginx does (chunked for HTTP/1.1 clients when the app gives no length).

    Relaying in data_received, without a coroutine step per chunk, is what keeps the router's per-request cost
    low. ``done`` resolves to "keep the client connection alive" or to the ProtocolError of a bad response.
    """

    def __init__(self, conn: _Connection, head: RequestHead, app: str, path: str, request: bytes) -> None:
        self.conn = conn
        self.head = head
        self.app = app
        self.request = request
        self.parser = ResponseParser()
        self.done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self.started = False
        self.chunked = self.keep_alive = False
        self.remaining: int | None = None  # body bytes the app announced with Content-Length
        self.no_body = head.method == "HEAD"
        self.describe = f"reading from unix:{path} (uwsgi_read_timeout)"
        self.drain_task: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it, hence a cast, not a check.
        self.transport = cast("asyncio.Transport", transport)
        transport = self.transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        if not self.done.done():
            self.conn.timer.arm(self.conn.server.settings.upstream_timeout, self.describe)
            self._relay(data)

    def eof_received(self) -> bool:
        if not self.done.done():
            self._relay(None)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            if exc is not None:
                self.conn.server.log(f"app {self.app!r}: connection lost: {exc!r}")
            self._relay(None)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def _relay(self, data: bytes | None) -> None:
        """Parse ``data`` (None: the app closed) and write what it completes to the client."""
        try:
            events = self.parser.feed(data) if data is not None else self.parser.feed_eof()
        except ProtocolError as exc:
            self.done.set_exception(exc)
            return
        out: list[bytes] = []  # one write per upstream read: fewer syscalls than one per event
        finished = False
        for event in events:
            if isinstance(event, ResponseHead):
                self.started = True
                status = event.status
                self.no_body = self.no_body or status in (204, 304) or status < 200
                length = next((v for k, v in event.headers if k.lower() == "content-length"), None)
                if self.no_body or (length is not None and length.isdigit()):
                    self.keep_alive = self.head.keep_alive
                    self.remaining = None if self.no_body or length is None else int(length)
                elif self.head.http11:  # RFC 9112 7.1: only an HTTP/1.1 client can read chunked
                    self.chunked, self.keep_alive = True, self.head.keep_alive
                out.append(response_head(event, keep_alive=self.keep_alive, chunked=self.chunked))
                # With the length known and reached, the response is complete without waiting for EOF.
                finished = self.no_body or self.remaining == 0
            elif isinstance(event, Body):
                if finished:
                    continue
                payload = event.data
                if self.remaining is not None:
                    payload = payload[: self.remaining]
                    self.remaining -= len(payload)
                    finished = self.remaining == 0
                if self.chunked:
                    out.append(b"%x\r\n%b\r\n" % (len(payload), payload))
                elif payload:
                    out.append(payload)
            elif not finished:  # EndOfResponse
                if self.chunked:
                    out.append(b"0\r\n\r\n")
                if self.remaining:  # the app closed before its Content-Length: the client must notice
                    self.conn.server.log(f"app {self.app!r}: response ended {self.remaining} bytes short")
                    self.keep_alive = False
                finished = True
        client = self.conn.writer.transport
        if out:
            client.write(b"".join(out))
        if finished:
            self.done.set_result(self.keep_alive)
        elif client.get_write_buffer_size() > _HIGH_WATER and self.transport is not None:
            # A slow client: stop reading the app until the client has taken what is queued.
            self.transport.pause_reading()
            self.conn.timer.arm(self.conn.server.settings.client_timeout, "sending the response (send_timeout)")
            self.drain_task = asyncio.ensure_future(self._resume_when_drained())

    async def _resume_when_drained(self) -> None:
        with contextlib.suppress(ConnectionError, RuntimeError):
            await self.conn.writer.drain()
            if self.transport is not None and not self.transport.is_closing():
                self.conn.timer.arm(self.conn.server.settings.upstream_timeout, self.describe)
                self.transport.resume_reading()


#: nginx's lingering_timeout (5 s): how long to drain a refused client's body before closing.
_LINGERING_TIME = 5.0


class _Server:
    """The per-process state of a built-in router."""

    def __init__(self, route_map: RouteMap, settings: RouterSettings) -> None:
        self.route_map = route_map
        self.settings = settings
        self.limits = Limits(max_body_size=settings.max_body_size)
        self.connections: set[_Deadline] = set()
        #: The sweeper's period: a quarter of the shortest timeout, at most 0.25 s (timeouts are enforced
        #: within one tick; nginx's own timers are rounded to its timer resolution too).
        timeouts = (settings.upstream_timeout, settings.client_timeout, settings.keepalive_timeout, _LINGERING_TIME)
        self.tick = min(0.25, min(timeouts) / 4)

    def sweep(self) -> None:
        """Enforce every connection's deadline, then run again in one tick."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        for deadline in list(self.connections):
            deadline.check(now)
        loop.call_later(self.tick, self.sweep)

    def log(self, message: str) -> None:
        """One line on stderr (the router log), like nginx's error log."""
        print(f"{time.strftime('%Y/%m/%d %H:%M:%S')} [{os.getpid()}] {message}", file=sys.stderr, flush=True)

    async def on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _Connection(self, reader, writer).serve()


_STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}


def _new_event_loop(kind: str) -> asyncio.AbstractEventLoop:
    """uvloop is an optional speed-up (about 2x, uwsgi-facts Part A); the router works without it."""
    if kind != "asyncio":
        try:
            import uvloop  # type: ignore[import-not-found,unused-ignore]
        except ImportError:
            if kind == "uvloop":
                raise
        else:
            loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
            return loop
    return asyncio.new_event_loop()


def _serve_forever(
    route_map: RouteMap, settings: RouterSettings, listeners: list[socket.socket], lifeline_fd: int | None
) -> None:
    """Run one router process's event loop until SIGTERM/SIGINT or until the lifeline pipe closes."""
    loop = _new_event_loop(settings.event_loop)
    server = _Server(route_map, settings)

    async def main() -> None:
        stop = asyncio.Event()  # made inside the running loop: on 3.9 an Event binds to the loop current at birth
        servers = []
        for listener in listeners:
            if listener.family == socket.AF_UNIX:
                servers.append(await asyncio.start_unix_server(server.on_connection, sock=listener))
            else:
                servers.append(await asyncio.start_server(server.on_connection, sock=listener))
        for sig in _STOP_SIGNALS:
            loop.add_signal_handler(sig, stop.set)
        # main() blocked them until now, so that one arriving during start-up is handled here, not fatal.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
        if lifeline_fd is not None:
            # The parent holds the write end: EOF here means it closed it (stop) or died.
            loop.add_reader(lifeline_fd, stop.set)
        server.sweep()
        await stop.wait()
        for srv in servers:
            srv.close()
        # Open connections end with the process; cancel their tasks so that none runs on a closed loop.
        others = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)

    try:
        loop.run_until_complete(main())
    finally:
        # Closing the loop restores SIGTERM's default action; a second SIGTERM (e.g. PR_SET_PDEATHSIG arriving
        # just after the lifeline EOF) must not kill us before the caller's cleanup (unlinking the socket).
        signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
        loop.close()


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
        _serve_forever(route_map, settings, [tcp, unix], args.lifeline_fd)
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
        process = self.process
        for sig, grace in ((None, 10.0), (signal.SIGTERM, 5.0)):
            if sig is not None and process.poll() is None:
                process.send_signal(sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(grace)
                break
        if process.poll() is None:
            process.kill()
            process.wait()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.unix_path)


if __name__ == "__main__":
    main()
