"""The uwsgi wire protocol's request side, sans-IO (bytes out; no sockets here).

A request is a 4-byte header ``modifier1, u16le vars_size, modifier2`` (``struct uwsgi_header`` in
uwsgi.h; nginx writes ``len & 0xff, len >> 8``), then the vars block (``u16le key_len, key, u16le val_len,
val`` repeated, see ``uwsgi_parse_vars`` in core/protocol.c), then ``CONTENT_LENGTH`` bytes of body. The
response has no framing: it is the app's raw HTTP/1.x response and ends when uWSGI closes the connection, so
http.client reads it (client.py).

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
from typing import Union

__all__ = [
    "DOCUMENT_ROOT",
    "MAX_VARS_SIZE",
    "document_uri",
    "encode_request",
    "encode_vars",
    "header_var",
    "request_header",
    "wsgi_vars",
]

#: The vars block size is a u16 (uwsgi.h ``pktsize``); uWSGI logs ``uwsgi request is too big`` beyond it.
MAX_VARS_SIZE = 65535

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
