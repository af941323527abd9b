"""requests transport adapters for a vassal's socket and the router, and the Session tests get.

One call style, one response type: requests'. Tests use a ``requests.Session`` as against any HTTP server and
get a ``requests.Response``; only the transport under it differs:

- :class:`UwsgiAdapter` speaks the uwsgi protocol, with the vars nginx's stock ``uwsgi_params`` sends (the
  sans-IO codec in :mod:`pytest_emperor._protocol.uwsgi`). uWSGI answers with the app's raw HTTP/1.x response,
  read by the standard library's ``http.client`` and handed to requests through urllib3 like any response
  (cookies, encodings, redirects, ``stream=`` all work as usual).
- :class:`SocketAdapter` speaks HTTP to one fixed unix socket or TCP address (an ``http-socket`` vassal, the
  router's unix listener), the way requests-unixsocket does, but keeping the URL's host as the Host header so
  that routing by Host works. With ``routes``, only the hosts it accepts go there; the rest go to the network.

The httpx equivalents are in :mod:`pytest_emperor._protocol.httpx_transport`.
"""

from __future__ import annotations

import difflib
import http.client
import http.cookiejar
import numbers
import socket
import struct
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Union
from urllib.parse import urljoin, urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3._collections import HTTPHeaderDict  # urllib3 1.26 does not export it at the top level
from urllib3.connectionpool import HTTPConnectionPool
from urllib3.util import Timeout

from pytest_emperor._protocol.uwsgi import document_uri, encode_request, wsgi_vars
from pytest_emperor.convention import DEFAULT_TIMEOUT
from pytest_emperor.errors import EmperorError

__all__ = [
    "Address",
    "EmperorSession",
    "ListenerCheck",
    "SocketAdapter",
    "UpstreamError",
    "UwsgiAdapter",
    "check_request_arguments",
    "format_address",
    "uwsgi_exchange",
    "uwsgi_packet",
]

#: A unix socket path, or a ``(host, port)`` TCP address.
Address = Union[str, "tuple[str, int]"]

#: Asked once a unix socket is connected, before anything is sent: the listening process's pid and uid (the
#: kernel's SO_PEERCRED) -> why it must not get the request, or None.
ListenerCheck = Callable[[int, int], "str | None"]

# A request waits DEFAULT_TIMEOUT for the vassal when the caller gives no ``timeout=``: requests would wait
# forever, and a test hung on a dead vassal is worse than one that fails.


class UpstreamError(EmperorError, requests.ConnectionError):
    """The socket at ``address`` could not be reached, or closed before a complete response head."""

    def __init__(self, address: Address, message: str, **kwargs: Any) -> None:
        super().__init__(f"{format_address(address)}: {message}", **kwargs)
        self.address = address


def format_address(address: Address) -> str:
    """``unix:/tmp/x.sock`` or ``127.0.0.1:8080``, as nginx spells upstream addresses in its logs."""
    if isinstance(address, str):
        return f"unix:{address}"
    return f"{address[0]}:{address[1]}"


def connect(address: Address, timeout: float | None, check: ListenerCheck | None = None) -> socket.socket:
    """A connected stream socket; a failure is an :class:`UpstreamError` naming the address. ``check`` refuses
    the listener of a unix socket (UpstreamError) before the caller sends a byte."""
    try:
        if isinstance(address, str):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.settimeout(timeout)
                sock.connect(address)
                problem = check(*_listener(sock)) if check is not None else None
            except BaseException:
                sock.close()
                raise
            if problem is not None:
                sock.close()
                raise UpstreamError(address, problem)
            return sock
        return socket.create_connection(address, timeout=timeout)
    except OSError as exc:
        raise UpstreamError(address, f"cannot connect: {exc.strerror or exc}") from exc


def _listener(sock: socket.socket) -> tuple[int, int]:
    """(pid, uid) of the process that listens on the unix socket ``sock`` is connected to, as of its listen()."""
    pid, uid, _ = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
    return pid, uid


# -- the uwsgi protocol --------------------------------------------------------------------------------------


def uwsgi_packet(method: str, url: str, headers: Iterable[tuple[str, str]], body: bytes) -> bytes:
    """The uwsgi request nginx would send upstream for ``method url`` with these headers and body.

    As with the stock ``uwsgi_params``: REQUEST_URI is the raw target (``$request_uri``), PATH_INFO its path
    percent-decoded and normalised (``$document_uri``), QUERY_STRING the raw query (``$query_string``); the
    URL's host is the Host header unless ``headers`` has one. ValueError for a path nginx would answer 400.
    """
    parts = urlsplit(url)
    raw_path = parts.path or "/"
    try:
        path_info = document_uri(raw_path)
    except ValueError as exc:
        raise ValueError(f"{url}: nginx would answer 400: {exc}") from exc
    headers = list(headers)
    if not any(name.lower() == "host" for name, _ in headers):
        headers.insert(0, ("Host", parts.netloc.rpartition("@")[2]))
    target = f"{raw_path}?{parts.query}" if parts.query else raw_path
    variables = wsgi_vars(
        method, path_info, parts.query, headers, len(body),
        server_name=parts.hostname or "localhost", server_port=str(parts.port or 80), request_uri=target,
    )
    return encode_request(variables, body)


def uwsgi_exchange(
    address: Address, packet: bytes, method: str, *, connect_timeout: float | None, read_timeout: float | None,
    check: ListenerCheck | None = None,
) -> http.client.HTTPResponse:
    """Send a uwsgi ``packet`` and return the response with its head read; its body is read from the socket
    as the caller reads it (uWSGI ends it by closing the connection)."""
    sock = connect(address, connect_timeout, check)
    try:
        sock.settimeout(read_timeout)
        sock.sendall(packet)
        response = http.client.HTTPResponse(sock, method=method)
        response.begin()
    except socket.timeout as exc:
        raise requests.ReadTimeout(f"{format_address(address)}: no response head within {read_timeout} s") from exc
    except (http.client.HTTPException, OSError) as exc:
        # nginx's "upstream prematurely closed connection while reading response header" (a 502 behind it).
        raise UpstreamError(address, f"closed the connection before a complete response head ({exc!r})") from exc
    finally:
        sock.close()  # the response holds its own reference (makefile): the fd closes when the body is read
    return response


def _timeouts(timeout: Any) -> tuple[float | None, float | None]:
    """requests' ``timeout`` (None, seconds, ``(connect, read)`` or a urllib3 Timeout) as a pair."""
    if isinstance(timeout, Timeout):
        return timeout.connect_timeout, timeout.read_timeout  # type: ignore[return-value]
    if isinstance(timeout, tuple):
        return timeout[0], timeout[1]
    return timeout, timeout


def _body_bytes(body: Any) -> bytes:
    """A prepared request's body as bytes: nginx buffers a chunked or streamed body and sends its length."""
    if body is None:
        return b""
    if isinstance(body, str):
        return body.encode("utf-8")  # what urllib3 puts on the wire for a str body
    if isinstance(body, (bytes, bytearray, memoryview)):
        return bytes(body)
    if hasattr(body, "read"):
        data = body.read()
        return data.encode("utf-8") if isinstance(data, str) else bytes(data)
    return b"".join(chunk.encode("utf-8") if isinstance(chunk, str) else bytes(chunk) for chunk in body)


class UwsgiAdapter(HTTPAdapter):
    """Sends every request over the uwsgi protocol to ``address`` (a vassal's ``socket =``), one connection
    per request as nginx does without ``uwsgi`` keep-alive. Responses are built as requests builds any."""

    def __init__(self, address: Address, check: ListenerCheck | None = None) -> None:
        super().__init__()
        self.address = address
        self.check = check

    def send(
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: Any = None,
        verify: Any = True,
        cert: Any = None,
        proxies: Mapping[str, str] | None = None,
    ) -> requests.Response:
        """Send ``request`` to the vassal; the body is read as requests reads any (at once unless ``stream``)."""
        assert request.method is not None and request.url is not None
        connect_timeout, read_timeout = _timeouts(timeout)
        try:
            packet = uwsgi_packet(request.method, request.url, request.headers.items(), _body_bytes(request.body))
        except ValueError as exc:
            raise requests.exceptions.InvalidURL(str(exc), request=request) from exc
        raw = uwsgi_exchange(
            self.address, packet, request.method, connect_timeout=connect_timeout, read_timeout=read_timeout,
            check=self.check,
        )
        response = urllib3.HTTPResponse(
            body=raw, headers=HTTPHeaderDict(raw.getheaders()), status=raw.status, version=raw.version,
            reason=raw.reason, preload_content=False, decode_content=True, original_response=raw,
            request_method=request.method, request_url=request.url,
        )
        return self.build_response(request, response)


# -- HTTP to a fixed socket ----------------------------------------------------------------------------------


class _AddressConnection(urllib3.connection.HTTPConnection):
    """An HTTP connection for ``host:port`` whose socket goes to a fixed ``address`` instead (so urllib3 sends
    the URL's Host, where requests-unixsocket's pool sends ``localhost``)."""

    def __init__(self, *args: Any, address: Address, check: ListenerCheck | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.address = address
        self.check = check

    def _new_conn(self) -> socket.socket:
        timeout = self.timeout if isinstance(self.timeout, numbers.Real) else None
        try:
            return connect(self.address, timeout, self.check)
        except UpstreamError as exc:
            raise urllib3.exceptions.NewConnectionError(self, str(exc)) from exc


class _AddressPool(HTTPConnectionPool):
    ConnectionCls = _AddressConnection
    reuse = True

    def _put_conn(self, conn: Any) -> None:
        # uWSGI's http-socket closes every connection after its response without a "Connection: close" header
        # (docs/uwsgi-behaviour.md), so a pooled connection races that close and the next request on it can
        # fail with "connection reset". Without reuse, a connection is closed once its response is read (the
        # pool reopens it for the next request).
        if not self.reuse and conn is not None:
            conn.close()
        super()._put_conn(conn)


class SocketAdapter(HTTPAdapter):
    """HTTP to the fixed ``address`` for every URL whose host ``routes`` accepts (every URL without ``routes``),
    with the URL's host and port as Host; other URLs go to the network as with a plain requests adapter.
    ``reuse=False``: one connection per request, for a server that closes each one unannounced."""

    def __init__(
        self, address: Address, routes: Callable[[str], bool] | None = None, *, reuse: bool = True,
        check: ListenerCheck | None = None,
    ) -> None:
        super().__init__()
        self.address = address
        self.check = check
        self._routes = routes
        self._reuse = reuse
        self._pools: dict[tuple[str, int], _AddressPool] = {}
        self._lock = threading.Lock()

    def routed(self, url: str) -> bool:
        """Whether ``url`` goes to ``address``."""
        return self._routes is None or self._routes(urlsplit(url).hostname or "")

    def _pool(self, url: str) -> _AddressPool:
        parts = urlsplit(url)
        key = (parts.hostname or "localhost", parts.port or 80)
        with self._lock:
            pool = self._pools.get(key)
            if pool is None:
                pool = self._pools[key] = _AddressPool(
                    key[0], key[1], maxsize=10, address=self.address, check=self.check
                )
                pool.reuse = self._reuse
            return pool

    def get_connection_with_tls_context(
        self, request: requests.PreparedRequest, verify: Any, proxies: Any = None, cert: Any = None
    ) -> urllib3.connectionpool.ConnectionPool:
        """The pool for the request's host: our address when routed (proxies never apply to it)."""
        assert request.url is not None
        if self.routed(request.url):
            return self._pool(request.url)
        return super().get_connection_with_tls_context(request, verify, proxies, cert)

    def request_url(self, request: requests.PreparedRequest, proxies: Any) -> str:
        """The path alone when routed (no proxy in between)."""
        assert request.url is not None
        return request.path_url if self.routed(request.url) else super().request_url(request, proxies)

    def close(self) -> None:
        """Close every pooled connection."""
        super().close()
        with self._lock:
            for pool in self._pools.values():
                pool.close()
            self._pools.clear()


# -- the Session -------------------------------------------------------------------------------------------

# requests.Session.request's parameters after (method, url), in order, so positional calls bind as in requests.
_REQUEST_PARAMS = (
    "params", "data", "headers", "cookies", "files", "auth", "timeout", "allow_redirects", "proxies", "hooks",
    "stream", "verify", "cert", "json",
)
# The old request() keywords, so that code written against them fails with the way to fix it.
_RENAMED = {"query": "params=", "body": "data= (or json=)"}


def _is_pairs(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and all(isinstance(p, (list, tuple)) and len(p) == 2 for p in value)


def _is_seconds(value: Any) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0)


def check_request_arguments(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Check the keyword arguments of a request before any I/O: TypeError naming the argument and what it
    accepts. Returns them with ``headers`` given as pairs turned into a mapping (repeats joined by ", ", as
    RFC 9110 5.3 allows)."""
    __tracebackhide__ = True
    for old, new in _RENAMED.items():
        if old in kwargs:
            raise TypeError(f"{old}= is not a request argument (requests' style): use {new}")
    unknown = sorted(set(kwargs) - set(_REQUEST_PARAMS))
    if unknown:
        close = difflib.get_close_matches(unknown[0], _REQUEST_PARAMS, n=1)
        hint = f" (did you mean {close[0]}=?)" if close else ""
        raise TypeError(
            f"unexpected keyword argument {unknown[0]!r}{hint}; requests accepts {', '.join(_REQUEST_PARAMS)}"
        )
    params = kwargs.get("params")
    if params is not None and not isinstance(params, (str, bytes, Mapping)) and not _is_pairs(params):
        raise TypeError(f"params= takes a mapping, a list of (name, value) pairs or a string, not {params!r}")
    headers = kwargs.get("headers")
    if headers is not None:
        if not isinstance(headers, Mapping):
            if not _is_pairs(headers):
                raise TypeError(f"headers= takes a mapping or a list of (name, value) pairs, not {headers!r}")
            merged: dict[str, str] = {}
            by_name: dict[str, str] = {}
            for name, value in headers:
                key = by_name.setdefault(str(name).lower(), name)
                merged[key] = f"{merged[key]}, {value}" if key in merged else value
            headers = kwargs["headers"] = merged
        # None as a value drops a session default header, as in requests.
        text = (str, bytes)
        bad = [(k, v) for k, v in headers.items() if not isinstance(k, text) or not isinstance(v, (*text, type(None)))]
        if bad:
            raise TypeError(f"headers= names and values must be str or bytes (None drops a default), not {bad[0]!r}")
    data = kwargs.get("data")
    if data is not None and not (
        isinstance(data, (bytes, bytearray, memoryview, Iterable)) or hasattr(data, "read")
    ):  # str, form mappings and pairs are iterables
        raise TypeError(f"data= takes bytes, a str, a form mapping or pairs, a file or chunks, not {data!r}")
    if data is not None and kwargs.get("json") is not None:
        raise TypeError("pass data= (a body: bytes, str, form mapping, file) or json= (an object), not both")
    cookies = kwargs.get("cookies")
    if cookies is not None and not isinstance(cookies, (Mapping, http.cookiejar.CookieJar)):
        raise TypeError(f"cookies= takes a mapping of names to values or a CookieJar, not {cookies!r}")
    auth = kwargs.get("auth")
    if auth is not None and not callable(auth) and not (isinstance(auth, tuple) and len(auth) == 2):
        raise TypeError(f"auth= takes a (user, password) pair or a requests auth object, not {auth!r}")
    files = kwargs.get("files")
    if files is not None and not isinstance(files, Mapping) and not _is_pairs(files):
        raise TypeError(f"files= takes a mapping or a list of (field, file) pairs, not {files!r}")
    timeout = kwargs.get("timeout")
    if not (
        _is_seconds(timeout)
        or isinstance(timeout, Timeout)
        or (isinstance(timeout, tuple) and len(timeout) == 2 and all(_is_seconds(t) for t in timeout))
    ):
        raise TypeError(f"timeout= takes seconds (> 0), a (connect, read) pair of them, or None, not {timeout!r}")
    for flag in ("allow_redirects", "stream"):
        if kwargs.get(flag) is not None and not isinstance(kwargs[flag], bool):
            raise TypeError(f"{flag}= takes True or False, not {kwargs[flag]!r}")
    return kwargs


class EmperorSession(requests.Session):
    """A ``requests.Session`` whose relative URLs (``"/health"``, ``"health?x=1"``) are taken from ``base_url``,
    with a default ``timeout``, and whose arguments are checked before any I/O (TypeError naming the argument).
    """

    def __init__(self, base_url: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        super().__init__()
        self.base_url = base_url
        self.timeout = timeout
        # No proxies, ~/.netrc or REQUESTS_CA_BUNDLE from the environment: a test's requests to its own app
        # mean the same on every machine (and reading them cost each request ~0.5 ms here).
        self.trust_env = False

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:
        """requests' ``Session.request``, with the checks and defaults above."""
        __tracebackhide__ = True
        if not isinstance(method, (str, bytes)):
            raise TypeError(f"method takes a string such as 'GET', not {method!r}")
        if not isinstance(url, (str, bytes)):
            raise TypeError(f"url takes a string, absolute or relative to {self.base_url}, not {url!r}")
        if len(args) > len(_REQUEST_PARAMS):
            raise TypeError(f"too many positional arguments: requests takes {', '.join(_REQUEST_PARAMS)}")
        for name, value in zip(_REQUEST_PARAMS, args):
            if name in kwargs:
                raise TypeError(f"got multiple values for argument {name!r}")
            kwargs[name] = value
        check_request_arguments(kwargs)
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self.timeout
        url = url.decode() if isinstance(url, bytes) else url
        response: requests.Response = super().request(method, urljoin(self.base_url, url), **kwargs)
        return response


def direct_session(
    address: Address, protocol: str, base_url: str, timeout: float = DEFAULT_TIMEOUT, check: ListenerCheck | None = None
) -> EmperorSession:
    """A session sending every ``http://`` URL straight to a vassal's socket (``protocol`` ``"uwsgi"`` or
    ``"http"``, as on its ``socket =`` / ``http-socket =`` line); the URL's host is the Host header. ``check``
    vets the listener of each connection before the request is sent."""
    session = EmperorSession(base_url, timeout)
    adapter = UwsgiAdapter(address, check) if protocol == "uwsgi" else SocketAdapter(address, reuse=False, check=check)
    session.mount("http://", adapter)
    return session


def routed_session(
    address: Address, routes: Callable[[str], bool], base_url: str, timeout: float = DEFAULT_TIMEOUT
) -> EmperorSession:
    """A session sending ``http://`` URLs whose host ``routes`` accepts to the router at ``address`` (Host kept),
    and any other URL to the network."""
    session = EmperorSession(base_url, timeout)
    session.mount("http://", SocketAdapter(address, routes))
    return session
