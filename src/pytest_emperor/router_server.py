"""The built-in router's server: an HTTP/1.1 front that proxies each request to its vassal's uwsgi socket.

Everything on the request path runs in callbacks, with no task, future or stream per request: the client side
is an :class:`asyncio.Protocol` (:class:`_Client`) and the upstream a non-blocking unix socket watched with
``add_reader`` (:class:`_Upstream`). The earlier version (asyncio streams, a task per connection, a coroutine
connect and a future per request) spent its CPU in that machinery as much as in HTTP; the router has to come
as close to nginx's throughput as CPython allows (issue 3). The rules themselves live in the sans-IO modules:
http_translation (request in, uwsgi packet out) and uwsgi_protocol (the app's response).
"""

from __future__ import annotations

import _socket
import asyncio
import collections
import email.utils
import html
import os
import signal
import socket
import sys
import time
from typing import TYPE_CHECKING, Any, cast

from pytest_emperor.http_translation import (
    EndOfRequest,
    HttpError,
    Limits,
    RequestHead,
    RequestParser,
    UwsgiEncoder,
    reason_phrase,
)
from pytest_emperor.uwsgi_protocol import Body, ProtocolError, ResponseHead, ResponseParser

if TYPE_CHECKING:
    from pytest_emperor.router import RouteMap, RouterSettings

__all__ = ["SERVER", "error_page", "http_date", "response_head", "serve_forever"]

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
    date = f"Date: {http_date()}\r\n"
    for name, value in upstream.headers:
        lower = name.lower()
        if lower in _HIDDEN_UPSTREAM:
            continue
        if lower == "date":
            date = ""
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



#: nginx's lingering_timeout (5 s): how long to drain a refused client's body before closing.
_LINGERING_TIME = 5.0

# The upstream socket is a bare _socket.socket, the C type that socket.socket wraps: creating and closing one
# costs half as much (3 us less per request, measured) without socket.py's Python-level __init__ and close.
#: Linux makes the upstream socket non-blocking at birth: one syscall (ioctl FIONBIO) fewer per request.
_NONBLOCKING_STREAM = socket.SOCK_STREAM | getattr(socket, "SOCK_NONBLOCK", 0)

# A client connection's phases.
_IDLE, _BODY, _UPSTREAM, _DRAIN, _LINGER, _CLOSED = range(6)


class _Client(asyncio.Protocol):
    """One client connection: requests in order (keep-alive, pipelining), each proxied to its vassal.

    A request moves through the phases _IDLE (waiting for its head) -> _BODY -> _UPSTREAM (the app's response
    is relayed as it arrives) -> _DRAIN (only when the client reads slowly) -> _IDLE. Its timeout is a deadline
    that :meth:`_Server.sweep` enforces: re-arming is a float store, not a timer-heap insertion per phase of
    every request; the cost is a resolution of one sweeper tick.
    """

    def __init__(self, server: _Server) -> None:
        self.server = server
        self.settings = server.settings
        self.parser = RequestParser(server.limits)
        self.events: collections.deque[Any] = collections.deque()
        #: An HttpError from the parser, answered once the requests before it are served.
        self.error: HttpError | None = None
        self.phase = _IDLE
        self.head: RequestHead | None = None
        self.body: list[bytes] = []
        self.upstream: _Upstream | None = None
        self.client_eof = False
        self.writing_paused = self.reading_paused = False
        self.keep_alive = self.advancing = False
        self.deadline = 0.0  # loop time; 0: disarmed
        self.waiting_for = ""

    # -- asyncio.Protocol ----------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it, hence a cast, not a check.
        self.transport = cast("asyncio.Transport", transport)
        self.loop = self.server.loop
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            # nginx's tcp_nodelay (on by default): without it, Nagle holds the body behind the head until the
            # client's delayed ACK, 40 ms per response. asyncio only sets it for sockets made with IPPROTO_TCP.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            peer, local = transport.get_extra_info("peername"), transport.get_extra_info("sockname")
            self.remote = (str(peer[0]), str(peer[1]))
            server_port = str(local[1])
        else:  # what nginx reports for a unix-socket listener: $remote_addr "unix:", empty ports
            self.remote = ("unix:", "")
            server_port = ""
        self.encoder = UwsgiEncoder(
            server_name=self.server.server_name,
            server_port=server_port,
            remote_addr=self.remote[0],
            remote_port=self.remote[1],
        )
        # Above this many bytes queued for a slow client, stop reading from the app until they drain.
        self.transport.set_write_buffer_limits(high=_HIGH_WATER)
        self.server.clients.add(self)
        self._advance()

    def data_received(self, data: bytes) -> None:
        if self.phase in (_LINGER, _CLOSED) or self.error is not None:
            return  # lingering close: the client's bytes are read only to be discarded
        if self.phase != _IDLE and self.phase != _BODY:
            # A pipelining client: nothing more is read until the response under way is sent. Pausing only
            # now, not at every dispatch, spares the common client two epoll_ctl calls per request.
            self.reading_paused = True
            self.transport.pause_reading()
        try:
            self.events.extend(self.parser.feed(data))
        except HttpError as exc:
            self.error = exc
        self._advance()

    def eof_received(self) -> bool:
        self.client_eof = True
        if self.phase == _LINGER:
            return False  # the transport closes
        self._advance()
        return True  # keep the transport open to send the response under way

    def pause_writing(self) -> None:
        self.writing_paused = True
        if self.phase == _UPSTREAM and self.upstream is not None:
            # A slow client: stop reading the app until the client has taken what is queued.
            self.upstream.pause()
            self._arm(self.settings.client_timeout, "sending the response (send_timeout)")

    def resume_writing(self) -> None:
        self.writing_paused = False
        if self.phase == _UPSTREAM and self.upstream is not None:
            self._arm(self.settings.upstream_timeout, self.upstream.describe)
            self.upstream.resume()
        elif self.phase == _DRAIN:
            self._next_request()

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None and self.phase != _LINGER:
            self.server.log(f"client {self.remote[0]}: {exc!r}")
        self._close()

    # -- requests ------------------------------------------------------------------------------------------

    def _advance(self) -> None:
        """Take the next steps the parsed events allow: start a request, gather its body, send it upstream."""
        # An error page ends a request synchronously (_dispatch -> _error -> _next_request -> _advance): without
        # this guard, a burst of pipelined requests that all fail would recurse once per request.
        if self.advancing:
            return
        self.advancing = True
        try:
            self._advance_loop()
        finally:
            self.advancing = False

    def _advance_loop(self) -> None:
        while self.phase in (_IDLE, _BODY):
            if self.phase == _IDLE:
                if not self.events:
                    if self.error is not None:
                        self._fail(self.error)
                    elif self.client_eof:
                        self._close()
                    elif self.parser.idle:
                        self._arm(self.settings.keepalive_timeout, "waiting for a request (keepalive_timeout)")
                    else:
                        self._arm(self.settings.client_timeout, "reading the request head (client_header_timeout)")
                    return
                head = self.events.popleft()
                assert isinstance(head, RequestHead)
                self.head, self.body, self.phase = head, [], _BODY
                if head.expect_continue:
                    # nginx answers "100 Continue" whenever it starts reading the body, which uwsgi_pass always does.
                    self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            while self.events:
                event = self.events.popleft()
                if isinstance(event, EndOfRequest):
                    self.deadline = 0.0
                    self._dispatch()
                    break
                self.body.append(event.data)
            else:
                if self.error is not None:
                    self._fail(self.error)
                elif self.client_eof:
                    self.server.log(f"client {self.remote[0]}: closed the connection in the middle of the body")
                    self._close()
                else:
                    self._arm(self.settings.client_timeout, "reading the request body (client_body_timeout)")
                return

    def _dispatch(self) -> None:
        """The request is complete: answer it ourselves (no app, too big) or start the uwsgi exchange."""
        head = self.head
        assert head is not None
        route = self.server.route_map.socket_for_host(head.host)
        if route is None:
            detail = f"no app for Host {head.host!r}: it does not match server_name {self.server.server_name}"
            self._error(502, detail)
            return
        app, path = route
        body = b"".join(self.body)
        self.body = []
        try:
            request = self.encoder.encode(head, body)
        except ValueError as exc:  # nginx: "uwsgi request is too big" -> 500
            self._error(500, str(exc))
            return
        sock = _socket.socket(socket.AF_UNIX, _NONBLOCKING_STREAM)
        if _NONBLOCKING_STREAM == socket.SOCK_STREAM:
            sock.setblocking(False)
        try:
            # A unix-socket connect completes at once or fails: nginx too answers 502 when the backlog is full
            # (Linux's EAGAIN for unix sockets, ngx_event_connect_peer), so there is no connect phase to wait for.
            sock.connect(path)
        except OSError as exc:
            sock.close()
            reason = exc.strerror or str(exc)
            self.server.log(f"app {app!r}: connect() to unix:{path} failed ({reason})")
            self._error(502, f"app {app!r}: cannot connect to its socket unix:{path}: {reason}")
            return
        self.phase = _UPSTREAM
        self.upstream = _Upstream(self, head, app, path, sock)
        self._arm(self.settings.upstream_timeout, self.upstream.describe)
        self.upstream.start(request)

    def response_done(self, keep_alive: bool) -> None:
        """The upstream exchange is over (response relayed, or an error page sent instead)."""
        if self.upstream is not None:
            self.upstream.close()
            self.upstream = None
        self.keep_alive = keep_alive
        if self.writing_paused:
            self.phase = _DRAIN
            self._arm(self.settings.client_timeout, "sending the response (send_timeout)")
        else:
            self._next_request()

    def response_failed(self, upstream: _Upstream, exc: ProtocolError) -> None:
        """The app's response is malformed: 502 if nothing was sent yet, else the client must see it cut."""
        if upstream.started:
            self.server.log(f"client {self.remote[0]}: app {upstream.app!r}: response cut short: {exc}")
            self._close()
            return
        self.server.log(f"app {upstream.app!r}: invalid response from unix:{upstream.path}: {exc}")
        self._error(502, f"app {upstream.app!r}: invalid response from unix:{upstream.path}: {exc}")

    def _next_request(self) -> None:
        self.deadline = 0.0
        if not self.keep_alive:
            self._close()
            return
        self.phase = _IDLE
        self._resume_reading()
        self._advance()

    def _error(self, status: int, detail: str) -> None:
        """Answer ``status`` with ``detail`` and keep the connection alive when the client allows it."""
        head = self.head
        assert head is not None
        page = error_page(status, detail, keep_alive=head.keep_alive, head_only=head.method == "HEAD")
        self.transport.write(page)
        self.response_done(head.keep_alive)

    def _fail(self, exc: HttpError) -> None:
        """Send an error page and close the way nginx does after a bad request: stop writing, then keep
        reading for a while (lingering close) so that the client sees the page instead of a reset."""
        self.server.log(f"client {self.remote[0]}: {exc}")
        self.phase = _LINGER
        self.transport.write(error_page(exc.status, title=exc.title))
        if self.transport.can_write_eof():
            self.transport.write_eof()  # sent once the page is flushed
        self._arm(_LINGERING_TIME, "lingering close")
        if self.client_eof:
            self._close()
        else:
            self._resume_reading()

    def _resume_reading(self) -> None:
        if self.reading_paused:
            self.reading_paused = False
            self.transport.resume_reading()

    def _close(self) -> None:
        if self.phase == _CLOSED:
            return
        self.phase = _CLOSED
        self.deadline = 0.0
        self.server.clients.discard(self)
        if self.upstream is not None:
            self.upstream.close()
            self.upstream = None
        self.transport.close()  # flushes what is queued first

    # -- timeouts ------------------------------------------------------------------------------------------

    def _arm(self, seconds: float, what: str) -> None:
        self.deadline = self.loop.time() + seconds
        self.waiting_for = what

    def check(self, now: float) -> None:
        """Called by the sweeper: act on a passed deadline as nginx does."""
        if not self.deadline or now < self.deadline:
            return
        self.deadline = 0.0
        upstream = self.upstream
        if self.phase == _UPSTREAM and upstream is not None and not upstream.started:
            app, where = upstream.app, f"unix:{upstream.path}"
            self.server.log(f"app {app!r}: upstream timed out reading the response from {where}")
            self._error(504, f"app {app!r}: no response from {where} within {self.settings.upstream_timeout} s")
            return
        if self.phase == _UPSTREAM and upstream is not None:
            self.server.log(f"client {self.remote[0]}: app {upstream.app!r}: response stalled ({self.waiting_for})")
        elif self.phase != _LINGER:
            # nginx closes timed-out clients without a response (408 is only logged).
            self.server.log(f"client {self.remote[0]}: timed out {self.waiting_for}")
        self._close()


class _Upstream:
    """One uwsgi exchange on a connected non-blocking unix socket: writes the request, then relays the
    response to the client as it arrives, re-framed the way nginx does (chunked for HTTP/1.1 clients when the
    app gives no length).

    The socket is driven with add_reader/add_writer rather than a transport: a transport needs a coroutine
    (``create_unix_connection``), so a task, a future and a loop iteration for the connect per request.
    """

    def __init__(self, client: _Client, head: RequestHead, app: str, path: str, sock: _socket.socket) -> None:
        self.client = client
        self.head = head
        self.app = app
        self.path = path
        self.sock = sock
        self.fd = sock.fileno()
        self.loop = client.loop
        self.parser = ResponseParser()
        self.pending = memoryview(b"")
        self.started = self.finished = self.reading = False
        self.chunked = self.keep_alive = False
        self.remaining: int | None = None  # body bytes the app announced with Content-Length
        self.no_body = head.method == "HEAD"
        self.describe = f"reading from unix:{path} (uwsgi_read_timeout)"

    def start(self, request: bytes) -> None:
        self.pending = memoryview(request)
        self._send()
        self.resume()

    def _send(self) -> None:
        try:
            sent = self.sock.send(self.pending)
        except BlockingIOError:
            sent = 0
        except OSError:
            # The app closed early (it answered without reading the whole body): its answer, or its EOF,
            # is what the reader sees next.
            sent = len(self.pending)
        self.pending = self.pending[sent:]
        if self.pending:
            self.loop.add_writer(self.fd, self._send)  # a body larger than the socket buffer
        else:
            self.loop.remove_writer(self.fd)

    def pause(self) -> None:
        if self.reading:
            self.reading = False
            self.loop.remove_reader(self.fd)

    def resume(self) -> None:
        if not self.reading and not self.finished:
            self.reading = True
            self.loop.add_reader(self.fd, self._readable)

    def close(self) -> None:
        if self.fd >= 0:
            self.finished = True
            self.pause()
            self.loop.remove_writer(self.fd)
            self.sock.close()
            self.fd = -1

    def _readable(self) -> None:
        try:
            data = self.sock.recv(_READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self.client.server.log(f"app {self.app!r}: connection lost: {exc!r}")
            data = b""
        if data:
            client = self.client
            client.deadline = self.loop.time() + client.settings.upstream_timeout
            self._relay(data)
        else:
            self._relay(None)

    def _relay(self, data: bytes | None) -> None:
        """Parse ``data`` (None: the app closed) and write what it completes to the client."""
        try:
            events = self.parser.feed(data) if data is not None else self.parser.feed_eof()
        except ProtocolError as exc:
            self.finished = True
            self.client.response_failed(self, exc)
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
                    self.client.server.log(f"app {self.app!r}: response ended {self.remaining} bytes short")
                    self.keep_alive = False
                finished = True
        client = self.client
        if out:
            client.transport.write(b"".join(out))
        if finished:
            self.finished = True
            client.response_done(self.keep_alive)


class _Server:
    """The per-process state of a built-in router."""

    def __init__(self, loop: asyncio.AbstractEventLoop, route_map: RouteMap, settings: RouterSettings) -> None:
        self.loop = loop
        self.route_map = route_map
        self.server_name = route_map.nginx_server_name
        self.settings = settings
        self.limits = Limits(max_body_size=settings.max_body_size)
        self.clients: set[_Client] = set()
        #: The sweeper's period: a quarter of the shortest timeout, at most 0.25 s (timeouts are enforced
        #: within one tick; nginx's own timers are rounded to its timer resolution too).
        timeouts = (settings.upstream_timeout, settings.client_timeout, settings.keepalive_timeout, _LINGERING_TIME)
        self.tick = min(0.25, min(timeouts) / 4)

    def sweep(self) -> None:
        """Enforce every connection's deadline, then run again in one tick."""
        now = self.loop.time()
        for client in list(self.clients):
            client.check(now)
        self.loop.call_later(self.tick, self.sweep)

    def log(self, message: str) -> None:
        """One line on stderr (the router log), like nginx's error log."""
        print(f"{time.strftime('%Y/%m/%d %H:%M:%S')} [{os.getpid()}] {message}", file=sys.stderr, flush=True)


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


def serve_forever(
    route_map: RouteMap, settings: RouterSettings, listeners: list[socket.socket], lifeline_fd: int | None
) -> None:
    """Run one router process's event loop until SIGTERM/SIGINT or until the lifeline pipe closes.

    The caller blocks SIGTERM and SIGINT first; they are handled once the loop runs."""
    loop = _new_event_loop(settings.event_loop)
    server = _Server(loop, route_map, settings)

    async def main() -> None:
        stop = asyncio.Event()  # made inside the running loop: on 3.9 an Event binds to the loop current at birth
        servers = []
        for listener in listeners:
            if listener.family == socket.AF_UNIX:
                servers.append(await loop.create_unix_server(lambda: _Client(server), sock=listener))
            else:
                servers.append(await loop.create_server(lambda: _Client(server), sock=listener))
        for sig in _STOP_SIGNALS:
            loop.add_signal_handler(sig, stop.set)
        # The caller blocked them until now, so that one arriving during start-up is handled here, not fatal.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
        if lifeline_fd is not None:
            # The parent holds the write end: EOF here means it closed it (stop) or died.
            loop.add_reader(lifeline_fd, stop.set)
        server.sweep()
        await stop.wait()
        for srv in servers:
            srv.close()
        # Open connections end with the process.
        for client in list(server.clients):
            client.transport.abort()

    try:
        loop.run_until_complete(main())
    finally:
        # Closing the loop restores SIGTERM's default action; a second SIGTERM (e.g. PR_SET_PDEATHSIG arriving
        # just after the lifeline EOF) must not kill us before the caller's cleanup (unlinking the socket).
        signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
        loop.close()
