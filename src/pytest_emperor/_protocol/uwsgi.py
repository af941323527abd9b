"""The uwsgi wire protocol, sans-IO (h11 style: bytes in, values or events out; no sockets here).

A request is a 4-byte header ``modifier1, u16le vars_size, modifier2`` (``struct uwsgi_header`` in
uwsgi.h; nginx writes ``len & 0xff, len >> 8``), then the vars block (``u16le key_len, key, u16le val_len,
val`` repeated, see ``uwsgi_parse_vars`` in core/protocol.c), then ``CONTENT_LENGTH`` bytes of body. The
response has no framing: it is the app's raw HTTP/1.x response and ends when uWSGI closes the connection.

String encoding: nginx copies the request bytes into the vars untouched, and PEP 3333 maps such bytes to
native strings as latin-1 ("bytes-as-latin-1"). So a ``str`` is encoded as latin-1 whenever it can be,
which makes ``decode(encode(s)) == s`` and lets bytes read off the wire (decoded as latin-1) pass through
unchanged. Text that latin-1 cannot encode (a test writing ``"/café-€"``) is sent as UTF-8, which is what
every HTTP client puts on the wire for it; the app then sees the same mojibake it would see behind nginx.
``bytes`` are passed through as is.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Union

from pytest_emperor.errors import UwsgiProtocolError

__all__ = [
    "DOCUMENT_ROOT",
    "MAX_HEAD_SIZE",
    "MAX_VARS_SIZE",
    "Body",
    "EndOfResponse",
    "Event",
    "ResponseHead",
    "ResponseParser",
    "UwsgiProtocolError",
    "decode_request",
    "encode_request",
    "encode_vars",
    "end_of_head",
    "field_lines",
    "header_var",
    "request_header",
    "wsgi_vars",
]

#: The vars block size is a u16 (uwsgi.h ``pktsize``); uWSGI logs ``uwsgi request is too big`` beyond it.
MAX_VARS_SIZE = 65535
#: Largest response head accepted. nginx refuses heads over ``uwsgi_buffer_size`` (4/8 KiB) with
#: "upstream sent too big header" and a 502; we allow more because tests may set large cookies on purpose.
MAX_HEAD_SIZE = 64 * 1024

Text = Union[str, bytes]
#: nginx's ``$document_root`` with no ``root`` directive is ``<prefix>/html``; Debian's prefix is
#: /usr/share/nginx.
DOCUMENT_ROOT = "/usr/share/nginx/html"

_HEADER = struct.Struct("<BHB")
_U16 = struct.Struct("<H")


def _to_bytes(value: Text) -> bytes:
    """Encode one key or value as described in the module docstring."""
    if isinstance(value, bytes):
        return value
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        return value.encode("utf-8")


def encode_vars(vars: Iterable[tuple[Text, Text]]) -> bytes:
    """Encode ``(key, value)`` pairs as a uwsgi vars block.

    Raises ValueError on an empty key or a size over 65535 (a single string or the whole block).
    """
    parts: list[bytes] = []
    for key, value in vars:
        # The router encodes ~20 vars per request: the common case (latin-1 text) stays on this fast path.
        try:
            kb, vb = key.encode("latin-1"), value.encode("latin-1")  # type: ignore[union-attr]
        except (AttributeError, UnicodeEncodeError):
            kb, vb = _to_bytes(key), _to_bytes(value)
        if not kb:
            # uWSGI skips such a var ("uwsgi key cannot be null"), so sending one is always a bug.
            raise ValueError("uwsgi var keys cannot be empty")
        try:
            parts += (len(kb).to_bytes(2, "little"), kb, len(vb).to_bytes(2, "little"), vb)
        except OverflowError:  # a length that does not fit the protocol's u16
            raise ValueError(f"uwsgi var {kb[:40]!r} is longer than 65535 bytes") from None
    block = b"".join(parts)
    if len(block) > MAX_VARS_SIZE:
        raise ValueError(f"uwsgi vars block is {len(block)} bytes, over the protocol's {MAX_VARS_SIZE}")
    return block


def encode_request(
    vars: Iterable[tuple[Text, Text]], body: bytes = b"", modifier1: int = 0, modifier2: int = 0
) -> bytes:
    """Return header + vars block + body, ready to write to a uwsgi socket (modifier 0/0 is WSGI)."""
    if not (0 <= modifier1 <= 255 and 0 <= modifier2 <= 255):
        raise ValueError(f"uwsgi modifiers are bytes (0-255), got {modifier1}, {modifier2}")
    block = encode_vars(vars)
    return b"".join((request_header(len(block), modifier1, modifier2), block, body))


def request_header(vars_size: int, modifier1: int = 0, modifier2: int = 0) -> bytes:
    """The 4-byte packet header for a vars block of ``vars_size`` bytes."""
    return _HEADER.pack(modifier1, vars_size, modifier2)


def decode_request(data: bytes) -> tuple[int, int, list[tuple[str, str]], bytes]:
    """Decode a complete uwsgi request: ``(modifier1, modifier2, vars, rest)``; strings are latin-1.

    ``rest`` is whatever follows the vars block (the body). Raises :class:`UwsgiProtocolError` on truncated or
    malformed input.
    """
    if len(data) < _HEADER.size:
        raise UwsgiProtocolError(f"uwsgi header needs 4 bytes, got {len(data)}")
    modifier1, size, modifier2 = _HEADER.unpack_from(data)
    end = _HEADER.size + size
    if len(data) < end:
        raise UwsgiProtocolError(f"uwsgi vars block announces {size} bytes but only {len(data) - 4} follow")
    pairs: list[tuple[str, str]] = []
    pos = _HEADER.size
    while pos < end:
        key, pos = _read_string(data, pos, end, "key")
        if not key:
            raise UwsgiProtocolError(f"empty uwsgi var key at offset {pos - 2}")
        value, pos = _read_string(data, pos, end, f"value of {key!r}")
        pairs.append((key.decode("latin-1"), value.decode("latin-1")))
    return modifier1, modifier2, pairs, data[end:]


def _read_string(data: bytes, pos: int, end: int, what: str) -> tuple[bytes, int]:
    """Read one u16le-length-prefixed string of the vars block that ends at ``end``."""
    if pos + 2 > end:
        raise UwsgiProtocolError(f"uwsgi vars block truncated in the length of a {what} at offset {pos}")
    (length,) = _U16.unpack_from(data, pos)
    pos += 2
    if pos + length > end:
        raise UwsgiProtocolError(f"uwsgi {what} at offset {pos} needs {length} bytes, the block has {end - pos}")
    return data[pos : pos + length], pos + length


def wsgi_vars(
    method: str,
    path: str,
    query: str = "",
    headers: Iterable[tuple[str, str]] = (),
    body_length: int = 0,
    *,
    server_name: str = "localhost",
    server_port: str = "80",
    remote_addr: str = "127.0.0.1",
    scheme: str = "http",
    request_uri: str | None = None,
    content_length: str | None = None,
    remote_port: str = "0",
    server_protocol: str = "HTTP/1.1",
    document_root: str = DOCUMENT_ROOT,
) -> list[tuple[str, str]]:
    """The vars nginx's stock ``uwsgi_params`` would send for this request, plus ``HTTP_*`` per header.

    ``path`` is ``PATH_INFO`` (nginx's decoded ``$document_uri``); ``request_uri`` defaults to
    ``path?query``; ``content_length`` (the header's raw value, nginx's ``$content_length``) defaults to
    ``body_length`` or empty. Like nginx, CONTENT_TYPE and CONTENT_LENGTH are always present (empty when
    unknown) and a header whose name has an underscore is dropped (``underscores_in_headers off``).
    """
    headers = list(headers)
    content_type = next((v for k, v in headers if k.lower() == "content-type"), "")
    if request_uri is None:
        request_uri = f"{path}?{query}" if query else path
    if content_length is None:
        content_length = str(body_length) if body_length else ""
    pairs = [
        # conf/uwsgi_params' order, so a diff against nginx's wire bytes stays readable.
        ("QUERY_STRING", query),
        ("REQUEST_METHOD", method),
        ("CONTENT_TYPE", content_type),
        ("CONTENT_LENGTH", content_length),
        ("REQUEST_URI", request_uri),
        ("PATH_INFO", path),
        ("DOCUMENT_ROOT", document_root),
        ("SERVER_PROTOCOL", server_protocol),
        ("REQUEST_SCHEME", scheme),
    ]
    if scheme == "https":
        pairs.append(("HTTPS", "on"))  # `HTTPS $https if_not_empty`: nginx omits it on plain http.
    pairs += [
        ("REMOTE_ADDR", remote_addr),
        ("REMOTE_PORT", remote_port),
        ("SERVER_PORT", server_port),
        ("SERVER_NAME", server_name),
    ]
    pairs += [(header_var(name), value) for name, value in headers if "_" not in name]
    return pairs


# A percent-escape as ngx_http_parse_complex_uri reads it: "%" and the (up to) two characters after it.
_PERCENT = re.compile(r"%(.{0,2})", re.DOTALL)
_HEXCHARS = frozenset("0123456789abcdefABCDEF")


def document_uri(raw: str) -> str:
    """nginx's ``$document_uri`` (what the stock ``uwsgi_params`` sends as PATH_INFO) for a raw request path:
    percent-decoded once, slashes merged, ``.`` and ``..`` resolved (a decoded ``%2F`` or ``%2E`` takes part,
    as in ngx_http_parse_complex_uri). ValueError where nginx answers 400: a bad escape, a decoded NUL, or a
    path climbing above the root."""
    if "%" in raw:
        raw = _PERCENT.sub(_decode_escape, raw)
        if "\0" in raw:
            raise ValueError("client sent a NUL byte (%00) in the URI")
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
                raise ValueError(f"client sent a URI above the root: {raw!r}")
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
        raise ValueError(f"client sent an invalid percent-escape %{digits!s}")
    return chr(int(digits, 16))


def header_var(name: str) -> str:
    """``X-Forwarded-For`` -> ``HTTP_X_FORWARDED_FOR`` (nginx's ``$http_*`` naming)."""
    return "HTTP_" + name.upper().replace("-", "_")


# ----------------------------------------------------------------------------------------------------
# Response parsing


@dataclass  # not frozen: a frozen __init__ costs every response (measured when a Python router parsed them)
class ResponseHead:
    """The status line and headers of the app's response (strings decoded as latin-1, RFC 9110 5.5)."""

    status: int
    reason: str
    headers: list[tuple[str, str]] = field(default_factory=list)
    http_version: str = "1.1"


@dataclass(frozen=True)
class Body:
    """A chunk of response body, as it arrived."""

    data: bytes


@dataclass(frozen=True)
class EndOfResponse:
    """The upstream closed the connection: the response is complete."""


Event = Union[ResponseHead, Body, EndOfResponse]

# RFC 9112 4: status-line = HTTP-version SP status-code SP [ reason-phrase ]. Like nginx's
# ngx_http_parse_status_line, also accept a missing space before an empty reason and several spaces after the
# version (uWSGI copies SERVER_PROTOCOL into its status line, trailing spaces included).
_STATUS_LINE = re.compile(rb"HTTP/(\d{1,3})\.(\d{1,3}) +([1-9]\d\d)(?: ([^\r\n]*))?")
# RFC 9110 5.1 field-name = token.
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# A clean field line: a token, a colon, the value without the spaces and tabs around it (field_lines' rules).
_CLEAN_FIELD_LINE = re.compile(r"^([!#$%&'*+\-.^_`|~0-9A-Za-z]+):[ \t]*(.*?)[ \t]*\r?$", re.MULTILINE)
_LINE_END = re.compile(rb"\r?\n")


class ResponseParser:
    """Incremental parser of the app's raw HTTP/1.x response, which uWSGI ends by closing the connection.

    ``feed()`` returns the events the new bytes complete: one :class:`ResponseHead`, then :class:`Body`
    events; ``feed_eof()`` returns :class:`EndOfResponse`, or raises :class:`UwsgiProtocolError` when the head was
    cut short (nginx's "upstream prematurely closed connection while reading response header").
    """

    def __init__(self, max_head_size: int = MAX_HEAD_SIZE) -> None:
        self._buffer = bytearray()
        self._head: ResponseHead | None = None
        self._done = False
        self._max_head_size = max_head_size

    @property
    def head(self) -> ResponseHead | None:
        """The parsed head, once complete."""
        return self._head

    def feed(self, data: bytes) -> list[Event]:
        """Consume bytes read from the upstream."""
        if self._done:
            raise UwsgiProtocolError("data fed after the end of the response")
        if self._head is not None:
            return [Body(bytes(data))] if data else []
        # The head usually arrives whole in the first read: then it is parsed from ``data``, not copied around.
        buffer: bytes | bytearray = data
        if self._buffer:
            self._buffer += data
            buffer = self._buffer
        found = end_of_head(buffer)
        if found is None:
            if len(buffer) > self._max_head_size:
                raise UwsgiProtocolError(f"response head is over {self._max_head_size} bytes")
            if buffer is data:
                self._buffer += data
            return []
        head_end, body_start = found
        if body_start > self._max_head_size + 4:
            raise UwsgiProtocolError(f"response head is over {self._max_head_size} bytes")
        self._head = _parse_head(bytes(buffer[:head_end]))
        rest = bytes(buffer[body_start:])
        self._buffer.clear()
        events: list[Event] = [self._head]
        if rest:
            events.append(Body(rest))
        return events

    def feed_eof(self) -> list[Event]:
        """The upstream closed its side: end the response."""
        if self._done:
            return []
        if self._head is None:
            got = f"{len(self._buffer)} bytes: {bytes(self._buffer[:80])!r}" if self._buffer else "nothing"
            raise UwsgiProtocolError(f"upstream closed the connection before a complete response head (got {got})")
        self._done = True
        return [EndOfResponse()]


def end_of_head(data: bytes | bytearray) -> tuple[int, int] | None:
    """Where the first empty line (``\\r?\\n\\r?\\n``) starts and ends in ``data``, or None.

    Two ``find`` calls rather than that regex's search, which cost the router 1.5 us per response: the empty
    line begins at the first LF of either LF LF or LF CR LF (plus a CR just before it, if any).
    """
    lf_lf, lf_crlf = data.find(b"\n\n"), data.find(b"\n\r\n")
    if lf_lf < 0 and lf_crlf < 0:
        return None
    if lf_crlf < 0 or 0 <= lf_lf < lf_crlf:
        first, end = lf_lf, lf_lf + 2
    else:
        first, end = lf_crlf, lf_crlf + 3
    return (first - 1 if first and data[first - 1] == 0x0D else first), end


def _parse_head(raw: bytes) -> ResponseHead:
    """Parse ``status-line CRLF *(field-line CRLF)`` (the final empty line already stripped)."""
    status_line, newline, block = raw.partition(b"\n")
    if newline and status_line.endswith(b"\r"):
        status_line = status_line[:-1]
    status = _STATUS_LINE.fullmatch(status_line)
    if status is None:
        raise UwsgiProtocolError(f"malformed status line from upstream: {status_line[:100]!r}")
    major, minor, code, reason = status.groups()
    headers: list[tuple[str, str]] = []
    if newline:
        # Fast path: one regex pass over the decoded block; when every line matched (and the last does not
        # end in a CR, which would be part of its value), the result is the one field_lines gives
        # (tests/test_uwsgi_protocol.py checks that they agree on any input).
        text = block.decode("latin-1")
        headers = _CLEAN_FIELD_LINE.findall(text)
        if len(headers) != text.count("\n") + 1 or text.endswith("\r"):
            headers = field_lines(block)
    return ResponseHead(
        status=int(code),
        reason=(reason or b"").decode("latin-1"),
        headers=headers,
        http_version=f"{major.decode()}.{minor.decode()}",
    )


def field_lines(block: bytes) -> list[tuple[str, str]]:
    """The header fields of a response head without its status line (lines end in CRLF or LF)."""
    headers = []
    for line in _LINE_END.split(block):
        name, colon, value = line.partition(b":")
        if not colon or _TOKEN.fullmatch(name) is None:
            # RFC 9112 5.2 deprecates obs-fold (a line starting with whitespace): a proxy must reject or
            # unfold it, and a WSGI server never produces one, so it is an error like any malformed line.
            raise UwsgiProtocolError(f"malformed header line from upstream: {line[:100]!r}")
        headers.append((name.decode("latin-1"), value.strip(b" \t").decode("latin-1")))
    return headers
