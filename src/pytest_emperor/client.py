"""A small blocking client: one request to a vassal's uwsgi socket or http-socket, one :class:`Response`.

The uwsgi side reuses the sans-IO codec in :mod:`pytest_emperor.uwsgi_protocol`; the HTTP side is the standard
library's ``http.client`` (with a unix-socket connection class), not a home-made HTTP client.
"""

from __future__ import annotations

import http.client
import json
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass
from email.message import Message
from typing import Any, Union

from pytest_emperor.uwsgi_protocol import (
    Body,
    ProtocolError,
    ResponseHead,
    ResponseParser,
    encode_request,
    wsgi_vars,
)

__all__ = ["Address", "Response", "SocketHTTPConnection", "UpstreamError", "http_request", "uwsgi_request"]

#: A unix socket path, or a ``(host, port)`` TCP address.
Address = Union[str, "tuple[str, int]"]


class UpstreamError(OSError):
    """The socket at ``address`` could not be reached, timed out, or answered something that is not HTTP."""

    def __init__(self, address: Address, message: str) -> None:
        super().__init__(f"{format_address(address)}: {message}")
        self.address = address


def format_address(address: Address) -> str:
    """``unix:/tmp/x.sock`` or ``127.0.0.1:8080``, as nginx spells upstream addresses in its logs."""
    if isinstance(address, str):
        return f"unix:{address}"
    return f"{address[0]}:{address[1]}"


@dataclass(frozen=True)
class Response:
    """A complete HTTP response."""

    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        """The value of header ``name`` (case-insensitive), repeated fields joined by ", " (RFC 9110 5.3)."""
        values = [v for k, v in self.headers if k.lower() == name.lower()]
        return ", ".join(values) if values else None

    @property
    def text(self) -> str:
        """The body decoded with the Content-Type charset (UTF-8 when none is given)."""
        message = Message()
        message["content-type"] = self.header("content-type") or "text/plain"
        charset = message.get_content_charset() or "utf-8"
        return self.body.decode(charset, errors="replace")

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.body)


def uwsgi_request(
    address: Address,
    method: str = "GET",
    path: str = "/",
    *,
    query: str = "",
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
    host: str = "localhost",
    timeout: float = 10.0,
) -> Response:
    """Send one request over the uwsgi protocol to ``address`` and read the response until uWSGI closes.

    The vars are those nginx's stock ``uwsgi_params`` would send (see :func:`~.uwsgi_protocol.wsgi_vars`),
    with ``Host: host`` added unless ``headers`` has one. ``timeout`` bounds the whole exchange.
    """
    headers = list(headers)
    if not any(name.lower() == "host" for name, _ in headers):
        headers.insert(0, ("Host", host))
    if body and not any(name.lower() == "content-length" for name, _ in headers):
        headers.append(("Content-Length", str(len(body))))
    port = "80" if isinstance(address, str) else str(address[1])
    payload = encode_request(
        wsgi_vars(method, path, query, headers, len(body), server_name=host, server_port=port), body
    )
    deadline = time.monotonic() + timeout
    parser = ResponseParser()
    head: ResponseHead | None = None
    chunks: list[bytes] = []
    try:
        with _connect(address, timeout) as sock:
            sock.sendall(payload)
            while True:
                sock.settimeout(max(deadline - time.monotonic(), 0.001))
                data = sock.recv(65536)
                events = parser.feed(data) if data else parser.feed_eof()
                for event in events:
                    if isinstance(event, ResponseHead):
                        head = event
                    elif isinstance(event, Body):
                        chunks.append(event.data)
                if not data:
                    break
    except socket.timeout as exc:
        raise UpstreamError(address, f"no complete response within {timeout} s") from exc
    except ProtocolError as exc:
        raise UpstreamError(address, f"invalid response: {exc}") from exc
    assert head is not None  # feed_eof() raises when the head is incomplete
    return Response(head.status, head.reason, head.headers, b"".join(chunks))


def _connect(address: Address, timeout: float) -> socket.socket:
    """A connected stream socket; connection failures become :class:`UpstreamError` naming the address."""
    try:
        if isinstance(address, str):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.settimeout(timeout)
                sock.connect(address)
            except BaseException:
                sock.close()
                raise
            return sock
        return socket.create_connection(address, timeout=timeout)
    except OSError as exc:
        raise UpstreamError(address, f"cannot connect: {exc.strerror or exc}") from exc


class SocketHTTPConnection(http.client.HTTPConnection):
    """``http.client.HTTPConnection`` to a unix socket path or TCP address, with :class:`UpstreamError` on
    connection failures (``host`` only feeds the default Host header)."""

    def __init__(self, address: Address, host: str = "localhost", timeout: float = 10.0) -> None:
        super().__init__(host, timeout=timeout)
        self.address = address
        self.connect_timeout = timeout

    def connect(self) -> None:
        """Connect to ``address`` instead of ``host``."""
        self.sock = _connect(self.address, self.connect_timeout)


def http_request(
    address: Address,
    method: str = "GET",
    path: str = "/",
    *,
    query: str = "",
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
    host: str = "localhost",
    timeout: float = 10.0,
) -> Response:
    """Send one plain HTTP/1.1 request to ``address`` (an http-socket vassal, or a router) and read it whole.

    ``Host: host`` is sent unless ``headers`` has a Host; ``timeout`` applies to each socket operation.
    """
    headers = list(headers)
    if not any(name.lower() == "host" for name, _ in headers):
        headers.insert(0, ("Host", host))
    connection = SocketHTTPConnection(address, host, timeout=timeout)
    url = f"{path}?{query}" if query else path
    try:
        # putrequest/putheader rather than request(): a header mapping could not repeat a field, and request()
        # adds Accept-Encoding on its own.
        connection.putrequest(method, url, skip_host=True, skip_accept_encoding=True)
        for name, value in headers:
            connection.putheader(name, value)
        if body and not any(name.lower() in ("content-length", "transfer-encoding") for name, _ in headers):
            connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body or None)
        response = connection.getresponse()
        return Response(response.status, response.reason, response.getheaders(), response.read())
    except UpstreamError:
        raise
    except socket.timeout as exc:
        raise UpstreamError(address, f"no complete response within {timeout} s") from exc
    except (OSError, http.client.HTTPException) as exc:
        raise UpstreamError(address, f"HTTP exchange failed: {exc!r}") from exc
    finally:
        connection.close()
