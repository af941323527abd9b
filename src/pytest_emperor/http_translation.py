"""HTTP/1.1 requests in, nginx-equivalent uwsgi vars out: sans-IO (bytes in, events out), no sockets here.

:class:`RequestParser` reads the client's bytes the way nginx 1.22 does and raises :class:`HttpError` with the
status nginx answers (400, 413, 414, 501, 505); :func:`uwsgi_vars` turns a parsed request into exactly what
nginx's stock ``uwsgi_params`` sends (uwsgi-facts section 6 and Part C), so an app sees the same environ behind
the built-in router as behind nginx.

Why not h11 or httptools: both parse HTTP correctly, but neither applies nginx's rules (headers with ``_`` or
other invalid names silently dropped rather than rejected, ``$document_uri`` decoding and normalisation, nginx's
choice of 400/413/414/501 per case), h11 lowercases header names (nginx passes the client's spelling), and h11
costs several times the per-request CPU of this parser, which the router's throughput target cannot afford. The
rules are small and every one of them is tested against real nginx in tests/test_router_parity.py.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Union

from pytest_emperor.uwsgi_protocol import (
    DOCUMENT_ROOT,
    MAX_VARS_SIZE,
    encode_request,
    header_var,
    request_header,
    wsgi_vars,
)

__all__ = [
    "HEADER_TOO_LARGE",
    "BodyData",
    "EndOfRequest",
    "HttpError",
    "Limits",
    "RequestEvent",
    "RequestHead",
    "RequestParser",
    "UwsgiEncoder",
    "normalize_host",
    "normalize_path",
    "reason_phrase",
    "uwsgi_vars",
]


class HttpError(Exception):
    """The request cannot be served; ``status`` is what nginx answers, ``detail`` what nginx would log."""

    def __init__(self, status: int, detail: str, title: str = "") -> None:
        super().__init__(f"{status} {reason_phrase(status)}: {detail}")
        self.status = status
        self.detail = detail
        #: nginx's special page title, e.g. "Request Header Or Cookie Too Large" (a 400 with its own page).
        self.title = title


#: nginx's wording where it differs from Python's http.HTTPStatus (ngx_http_status_lines).
_NGINX_PHRASES = {414: "Request-URI Too Large", 413: "Request Entity Too Large"}


def reason_phrase(status: int) -> str:
    """The reason phrase nginx uses for ``status``."""
    return _NGINX_PHRASES.get(status) or HTTPStatus(status).phrase


#: nginx answers an oversized header with a 400 whose page has this title (NGX_HTTP_REQUEST_HEADER_TOO_LARGE).
HEADER_TOO_LARGE = "Request Header Or Cookie Too Large"


@dataclass(frozen=True)
class Limits:
    """nginx's defaults: ``large_client_header_buffers 4 8k`` and ``client_max_body_size 1m`` (0 = no limit)."""

    max_line_size: int = 8 * 1024
    max_header_size: int = 4 * 8 * 1024
    max_body_size: int = 1024 * 1024


# Not frozen: a frozen dataclass's __init__ sets each field through object.__setattr__, which cost the router
# ~1.5 us per request for this one; nothing mutates a head.
@dataclass
class RequestHead:
    """A parsed request head. Strings are the wire bytes decoded as latin-1 (PEP 3333)."""

    method: str
    #: The request-target as sent (nginx's ``$request_uri``; for an absolute-form target, its path and query).
    request_uri: str
    #: ``HTTP/1.1`` as sent (nginx's ``$server_protocol``).
    version: str
    #: The headers nginx passes on (valid names, in order, original spelling, duplicates kept).
    headers: list[tuple[str, str]]
    #: Host from the absolute-form target or the Host header, lowercased, port and trailing dot removed
    #: (nginx's ``$host`` before the server_name fallback); "" when the request has none (HTTP/1.0).
    host: str
    #: The percent-decoded, normalised path (nginx's ``$document_uri``, sent as PATH_INFO).
    path: str
    #: The raw query string (``$query_string``).
    query: str
    #: The Content-Length header as sent (``$content_length``), or None.
    content_length: str | None
    chunked: bool
    keep_alive: bool
    expect_continue: bool

    @property
    def http11(self) -> bool:
        """True for HTTP/1.1 (and later 1.x) clients, which can read chunked responses."""
        return not self.version.startswith("HTTP/1.0")


@dataclass(frozen=True)
class BodyData:
    """A piece of request body, de-chunked."""

    data: bytes


@dataclass(frozen=True)
class EndOfRequest:
    """The request (head and body) is complete; the next bytes belong to the next request."""


RequestEvent = Union[RequestHead, BodyData, EndOfRequest]

# nginx 1.22 ngx_http_parse_request_line: a method is upper-case letters, '_' or '-'; spaces and control
# characters in the target have been an error since 1.21.1; bytes >= 0x80 are accepted.
_REQUEST_LINE = re.compile(rb"([A-Z_-]+) +([^\x00-\x20\x7f]+) +(HTTP/([0-9]{1,3})\.([0-9]{1,3}) *)")
_ABSOLUTE = re.compile(rb"([A-Za-z][A-Za-z0-9+.-]*)://([^/?#]*)(.*)", re.DOTALL)
# ngx_http_parse_header_line with ignore_invalid_headers on and underscores_in_headers off: a name made of
# anything but letters, digits and '-' marks the header invalid, and invalid headers are dropped, not refused.
_VALID_NAME = re.compile(rb"[A-Za-z0-9-]+")
_FORBIDDEN_NAME = re.compile(rb"[\x00-\x20\x7f]")
# A field line in the common form (valid name, a colon, a value without NUL or CR), spaces around the value
# excluded like nginx does; the fast path of RequestParser._header_fields.
_CLEAN_FIELD = re.compile(r"^([A-Za-z0-9-]+):[ ]*([^\r\n\x00]*?)[ ]*\r?\n", re.MULTILINE)
_HEX = re.compile(rb"[0-9A-Fa-f]+")
_PERCENT = re.compile(r"%(.{0,2})", re.DOTALL)
_HEXCHARS = frozenset("0123456789abcdefABCDEF")

# Parser states.
_HEAD, _BODY, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_END, _TRAILERS = range(6)


def normalize_host(raw: str) -> str:
    """nginx's ngx_http_validate_host: lowercase, drop ``:port`` and one trailing dot; HttpError(400) on
    ``..``, ``/``, NUL or an empty result, so a Host can never escape the socket directory."""
    host, literal_end = raw, -1
    if host.startswith("["):  # IPv6 literal: the port starts after ']'
        literal_end = host.find("]")
    colon = host.find(":", literal_end + 1)
    if colon >= 0:
        host = host[:colon]
    if ".." in host or "/" in host or "\0" in host:
        raise HttpError(400, f"client sent invalid host header {raw!r}")
    if host.endswith("."):
        host = host[:-1]
    if not host:
        raise HttpError(400, f"client sent invalid host header {raw!r}")
    return host.lower()


def normalize_path(raw: str) -> str:
    """nginx's ``$document_uri`` from the raw path: percent-decode once, then merge slashes and resolve ``.``
    and ``..`` (decoded ``%2F`` and ``%2E`` take part, as in ngx_http_parse_complex_uri); HttpError(400) for a
    bad escape, a decoded NUL or a path climbing above the root."""
    if "%" in raw:
        raw = _PERCENT.sub(_decode_escape, raw)
        if "\0" in raw:
            raise HttpError(400, "client sent a NUL byte (%00) in the URI")
    if "//" not in raw and "/." not in raw:
        return raw  # the common case: nothing to normalise
    out: list[str] = []
    segments = raw.split("/")
    for index, segment in enumerate(segments[1:], 1):
        last = index == len(segments) - 1
        if segment == "." or (segment == "" and not last):
            continue
        if segment == "..":
            if not out:
                raise HttpError(400, f"client sent a URI above the root: {raw!r}")
            out.pop()
            continue
        out.append(segment)
    result = "/" + "/".join(out)
    if segments[-1] in (".", "..") and not result.endswith("/"):
        result += "/"
    return result


def _decode_escape(match: re.Match[str]) -> str:
    digits = match.group(1)
    if len(digits) != 2 or not _HEXCHARS.issuperset(digits):
        raise HttpError(400, f"client sent an invalid percent-escape %{digits!s}")
    return chr(int(digits, 16))


@dataclass
class RequestParser:
    """Incremental HTTP/1.x request parser for one client connection (keep-alive and pipelining included).

    ``feed(data)`` returns the events ``data`` completes, for as many requests as it holds: :class:`RequestHead`,
    then :class:`BodyData` pieces, then :class:`EndOfRequest`. A malformed request raises :class:`HttpError`;
    the connection must then be closed (nginx closes after a 400).
    """

    limits: Limits = field(default_factory=Limits)
    _buffer: bytearray = field(default_factory=bytearray)
    _state: int = _HEAD
    _remaining: int = 0
    _body_size: int = 0

    @property
    def idle(self) -> bool:
        """True between requests with nothing buffered: a close now loses nothing."""
        return self._state == _HEAD and not self._buffer.strip(b"\r\n")

    def feed(self, data: bytes) -> list[RequestEvent]:
        """Consume bytes from the client."""
        self._buffer += data
        events: list[RequestEvent] = []
        while True:
            if self._state == _HEAD:
                if not self._buffer:  # the common end: one request per read, nothing left to look at
                    return events
                head = self._parse_head()
                if head is None:
                    return events
                events.append(head)
                if head.chunked:
                    self._state = _CHUNK_SIZE
                elif head.content_length is not None and int(head.content_length) > 0:
                    self._state, self._remaining = _BODY, int(head.content_length)
                else:
                    events.append(EndOfRequest())
                self._body_size = 0
            elif not self._parse_body(events):
                return events

    # -- head ------------------------------------------------------------------------------------------------

    def _parse_head(self) -> RequestHead | None:
        buf = self._buffer
        # RFC 9112 2.2: a server SHOULD ignore empty lines received before the request-line (nginx does).
        start = 0
        while buf[start : start + 2] == b"\r\n" or buf[start : start + 1] == b"\n":
            start += 2 if buf[start : start + 1] == b"\r" else 1
        end = buf.find(b"\n\r\n", start)
        bare = buf.find(b"\n\n", start)
        if bare >= 0 and (end < 0 or bare < end):
            end, sep = bare, 2
        else:
            sep = 3
        if end < 0:
            self._check_incomplete_head(start)
            return None
        raw = bytes(buf[start:end])
        del buf[: end + sep]
        if end - start > self.limits.max_header_size:
            raise HttpError(400, "client sent too large request or too long header line", HEADER_TOO_LARGE)
        request_line, _, fields = raw.partition(b"\n")
        return self._build_head(request_line.rstrip(b"\r"), fields)

    def _check_incomplete_head(self, start: int) -> None:
        buf = self._buffer
        first_newline = buf.find(b"\n", start)
        if first_newline < 0:
            if len(buf) - start > self.limits.max_line_size:
                raise HttpError(414, "client sent too long URI")
            return
        if len(buf) - start > self.limits.max_header_size:
            raise HttpError(400, "client sent too large request or too long header line", HEADER_TOO_LARGE)
        last_newline = buf.rfind(b"\n")
        if len(buf) - last_newline - 1 > self.limits.max_line_size:
            raise HttpError(400, "client sent too long header line", HEADER_TOO_LARGE)

    def _header_fields(self, block: bytes) -> list[tuple[str, str]]:
        """The field lines nginx passes on, in order; HttpError for the ones it refuses."""
        if not block:
            return []
        text = block.decode("latin-1") + "\n"
        if len(text) <= self.limits.max_line_size:
            # Fast path (the router's hot loop): every line is a clean "name: value", checked in one regex pass.
            fields = _CLEAN_FIELD.findall(text)
            if len(fields) == text.count("\n"):
                return fields
        fields = []
        for line in block.split(b"\n"):
            if len(line) > self.limits.max_line_size:
                raise HttpError(400, "client sent too long header line", HEADER_TOO_LARGE)
            if b"\0" in line:
                raise HttpError(400, "client sent a NUL byte in a header line")
            if line.endswith(b"\r"):
                line = line[:-1]
            if b"\r" in line:
                raise HttpError(400, "client sent a bare CR in a header line")
            name_b, _, value_b = line.partition(b":")
            if _VALID_NAME.fullmatch(name_b) is None:
                # Measured on nginx 1.22: an empty name, or one holding a space or control character (which
                # includes obs-fold continuation lines, RFC 9112 5.2) is a 400; any other invalid name (with
                # '_', '.', non-ASCII...) is dropped silently (ignore_invalid_headers on). A valid name without
                # a colon is kept with an empty value.
                if not name_b or _FORBIDDEN_NAME.search(name_b):
                    raise HttpError(400, f"client sent invalid header line {line[:100]!r}")
                continue
            # nginx strips spaces only, not tabs (sw_space_before_value / sw_space_after_value).
            fields.append((name_b.decode("latin-1"), value_b.strip(b" ").decode("latin-1")))
        return fields

    def _build_head(self, request_line: bytes, field_block: bytes) -> RequestHead:
        if len(request_line) > self.limits.max_line_size:
            raise HttpError(414, "client sent too long URI")
        match = _REQUEST_LINE.fullmatch(request_line)
        if match is None:
            raise HttpError(400, f"client sent invalid request line {request_line[:100]!r}")
        # The version keeps trailing spaces: nginx's $server_protocol runs to the end of the line.
        method_b, target_b, version_b, major_b, minor_b = match.groups()
        major, minor = int(major_b), int(minor_b)
        if major > 1:
            raise HttpError(505, f"client sent unsupported HTTP version {major}.{minor}")
        if major < 1:
            raise HttpError(400, "client sent an HTTP/0.x request line")
        http11 = minor >= 1
        method = method_b.decode("ascii")
        target = target_b.decode("latin-1")
        target_host = None
        path_and_query = target
        if not target.startswith("/"):
            absolute = _ABSOLUTE.fullmatch(target_b)
            rest = absolute.group(3) if absolute else b""
            if absolute is None or rest[:1] not in (b"/", b"?", b""):
                raise HttpError(400, f"client sent invalid request target {target[:100]!r}")
            target_host = normalize_host(absolute.group(2).decode("latin-1"))
            # Measured: nginx's $request_uri for an absolute-form target is what follows the authority ("/" if
            # nothing does, "?a=1" for "http://host?a=1"), and its path defaults to "/".
            path_and_query = rest.decode("latin-1") or "/"
        # A fragment ends both the path and the query (clients should not send one; nginx tolerates it).
        raw_path, _, query = path_and_query.split("#", 1)[0].partition("?")
        raw_path = raw_path or "/"

        headers: list[tuple[str, str]] = []
        host_header = content_length = transfer_encoding = expect = None
        connection = ""
        for name, value in self._header_fields(field_block):
            lower = name.lower()
            if lower == "host":
                if host_header is not None:
                    raise HttpError(400, "client sent duplicate host header")
                host_header = value
            elif lower == "content-length":
                if content_length is not None:
                    raise HttpError(400, "client sent duplicate header line: Content-Length")
                if not value.isdigit() or not value.isascii() or len(value) > 18:
                    raise HttpError(400, f"client sent invalid Content-Length header {value!r}")
                content_length = value
            elif lower == "transfer-encoding":
                if transfer_encoding is not None:
                    raise HttpError(400, "client sent duplicate header line: Transfer-Encoding")
                transfer_encoding = value
            elif lower == "connection":
                connection = value.lower()
            elif lower == "expect":
                expect = value
            headers.append((name, value))

        if host_header is None and http11:
            # Checked on the header even when an absolute-form target names the host (measured on nginx).
            raise HttpError(400, 'client sent HTTP/1.1 request without "Host" header')
        host = normalize_host(host_header) if host_header is not None else ""
        if target_host is not None:
            host = target_host  # RFC 9112 3.2.2: the absolute-form's authority wins over Host
        chunked = False
        if transfer_encoding is not None:
            if not http11:
                raise HttpError(400, "client sent HTTP/1.0 request with Transfer-Encoding")
            if content_length is not None:
                raise HttpError(400, "client sent Content-Length and Transfer-Encoding")
            if transfer_encoding.lower() != "chunked":
                raise HttpError(501, f"client sent unknown Transfer-Encoding {transfer_encoding!r}")
            chunked = True
        max_body = self.limits.max_body_size
        if content_length is not None and max_body and int(content_length) > max_body:
            raise HttpError(413, f"client intended to send too large body: {content_length} bytes")
        keep_alive = "close" not in connection if http11 else "keep-alive" in connection
        return RequestHead(
            method=method,
            request_uri=path_and_query,
            version=version_b.decode("ascii"),
            headers=headers,
            host=host,
            path=normalize_path(raw_path),
            query=query,
            content_length=content_length,
            chunked=chunked,
            keep_alive=keep_alive,
            expect_continue=http11 and expect is not None and expect.lower() == "100-continue",
        )

    # -- body ------------------------------------------------------------------------------------------------

    def _parse_body(self, events: list[RequestEvent]) -> bool:
        """Advance the body state machine; False when more bytes are needed."""
        buf = self._buffer
        if self._state in (_BODY, _CHUNK_DATA):
            if not buf:
                return False
            take = min(self._remaining, len(buf))
            events.append(BodyData(bytes(buf[:take])))
            del buf[:take]
            self._remaining -= take
            if self._remaining:
                return False
            if self._state == _BODY:
                self._finish(events)
            else:
                self._state = _CHUNK_END
            return True
        newline = buf.find(b"\n")
        if newline < 0:
            if len(buf) > self.limits.max_line_size:
                raise HttpError(400, "client sent invalid chunked body (line too long)")
            return False
        line = bytes(buf[:newline]).rstrip(b"\r")
        del buf[: newline + 1]
        if self._state == _CHUNK_END:
            if line:
                raise HttpError(400, "client sent invalid chunked body (no CRLF after chunk data)")
            self._state = _CHUNK_SIZE
        elif self._state == _CHUNK_SIZE:
            size_text = line.split(b";", 1)[0].strip(b" \t")
            if _HEX.fullmatch(size_text) is None or len(size_text) > 15:
                raise HttpError(400, f"client sent invalid chunked body (chunk size {line[:40]!r})")
            size = int(size_text, 16)
            self._body_size += size
            max_body = self.limits.max_body_size
            if max_body and self._body_size > max_body:
                raise HttpError(413, f"client intended to send too large chunked body: {self._body_size}+ bytes")
            if size:
                self._state, self._remaining = _CHUNK_DATA, size
            else:
                self._state = _TRAILERS
        elif not line:  # _TRAILERS: the empty line ends them; trailer fields are discarded, as nginx does
            self._finish(events)
        return True

    def _finish(self, events: list[RequestEvent]) -> None:
        events.append(EndOfRequest())
        self._state = _HEAD


def uwsgi_vars(
    head: RequestHead,
    *,
    body_length: int,
    server_name: str,
    server_port: str,
    remote_addr: str,
    remote_port: str,
    scheme: str = "http",
) -> list[tuple[str, str]]:
    """The uwsgi vars nginx sends for ``head`` with the stock ``uwsgi_params`` (plus every header as HTTP_*).

    ``body_length`` is the de-chunked body size: nginx buffers a chunked body and then sends its length as
    CONTENT_LENGTH. ``server_name`` is nginx's ``$server_name`` (the server block's first name).
    """
    if head.content_length is not None:
        content_length = head.content_length
    elif head.chunked:
        content_length = str(body_length)
    else:
        content_length = ""
    return wsgi_vars(
        head.method,
        head.path,
        head.query,
        head.headers,
        body_length,
        server_name=server_name,
        server_port=server_port,
        remote_addr=remote_addr,
        remote_port=remote_port,
        scheme=scheme,
        request_uri=head.request_uri,
        content_length=content_length,
        server_protocol=head.version,
    )


def _prefixed(text: str) -> str:
    """``text`` behind its u16le uwsgi length, as latin-1 characters (one per byte once encoded)."""
    size = len(text)
    return chr(size & 0xFF) + chr(size >> 8 & 0xFF) + text


class UwsgiEncoder:
    """``encode_request(uwsgi_vars(head, ...), body)`` for one client connection, in a few string operations.

    The router encodes ~20 vars per request; doing it var by var (encode, length, join) cost more CPU than
    parsing the request. Here the per-connection vars are pre-encoded once, header names map to their
    ``HTTP_*`` key through a cache, and the block is built as one latin-1 string and encoded once. Anything
    unusual (text latin-1 cannot encode, a block over the u16 limit) takes the reference path, which also
    raises its errors; tests/test_http_translation.py checks both give the same bytes.
    """

    def __init__(self, *, server_name: str, server_port: str, remote_addr: str, remote_port: str) -> None:
        self._connection = {
            "server_name": server_name,
            "server_port": server_port,
            "remote_addr": remote_addr,
            "remote_port": remote_port,
        }
        # uwsgi_vars' order: these come between SERVER_PROTOCOL and the headers.
        self._constant = "".join(
            _prefixed(key) + _prefixed(value)
            for key, value in (
                ("REQUEST_SCHEME", "http"),
                ("REMOTE_ADDR", remote_addr),
                ("REMOTE_PORT", remote_port),
                ("SERVER_PORT", server_port),
                ("SERVER_NAME", server_name),
            )
        )

    def encode(self, head: RequestHead, body: bytes) -> bytes:
        """The uwsgi packet (header, vars, body) for ``head``; ValueError when nginx would refuse it (500)."""
        if head.content_length is not None:
            content_length = head.content_length
        elif head.chunked:
            content_length = str(len(body))
        else:
            content_length = ""
        content_type = None
        headers = []
        keys = _HEADER_KEYS
        for name, value in head.headers:
            known = keys.get(name)
            if known is None:
                known = ("" if "_" in name else _prefixed(header_var(name)), name.lower() == "content-type")
                if len(keys) < _MAX_HEADER_KEYS:
                    keys[name] = known
            key, is_content_type = known
            if is_content_type and content_type is None:
                content_type = value
            if key:
                headers.append(key + _prefixed(value))
        text = "".join(
            (
                _QUERY_STRING,
                _prefixed(head.query),
                _REQUEST_METHOD,
                _prefixed(head.method),
                _CONTENT_TYPE,
                _prefixed(content_type or ""),
                _CONTENT_LENGTH,
                _prefixed(content_length),
                _REQUEST_URI,
                _prefixed(head.request_uri),
                _PATH_INFO,
                _prefixed(head.path),
                _DOCUMENT_ROOT,
                _SERVER_PROTOCOL,
                _prefixed(head.version),
                self._constant,
                *headers,
            )
        )
        try:
            block = text.encode("latin-1")
            fits = len(block) <= MAX_VARS_SIZE
        except UnicodeEncodeError:
            fits = False
        if not fits:
            vars = uwsgi_vars(head, body_length=len(body), **self._connection)
            return encode_request(vars, body)
        return b"".join((request_header(len(block)), block, body))


#: Header names seen, client-controlled so bounded: name -> (its length-prefixed HTTP_* key, or "" when nginx
#: drops the header for its underscore; is it Content-Type).
_HEADER_KEYS: dict[str, tuple[str, bool]] = {}
_MAX_HEADER_KEYS = 1024
_QUERY_STRING = _prefixed("QUERY_STRING")
_REQUEST_METHOD = _prefixed("REQUEST_METHOD")
_CONTENT_TYPE = _prefixed("CONTENT_TYPE")
_CONTENT_LENGTH = _prefixed("CONTENT_LENGTH")
_REQUEST_URI = _prefixed("REQUEST_URI")
_PATH_INFO = _prefixed("PATH_INFO")
_DOCUMENT_ROOT = _prefixed("DOCUMENT_ROOT") + _prefixed(DOCUMENT_ROOT)
_SERVER_PROTOCOL = _prefixed("SERVER_PROTOCOL")
