"""The sans-IO request parser and nginx translation: every rule measured on nginx 1.22, plus properties.

The expected values here are nginx's own answers (probed through tests/test_router_parity.py's corpus); the
parity test checks the same cases end to end against a real nginx.
"""

from __future__ import annotations

import posixpath

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytest_emperor.http_translation import (
    HEADER_TOO_LARGE,
    BodyData,
    EndOfRequest,
    HttpError,
    Limits,
    RequestEvent,
    RequestHead,
    RequestParser,
    UwsgiEncoder,
    normalize_host,
    normalize_path,
    reason_phrase,
    uwsgi_vars,
)
from pytest_emperor.uwsgi_protocol import encode_request


def parse(raw: bytes, limits: Limits | None = None) -> list[RequestEvent]:
    return RequestParser(limits or Limits()).feed(raw)


def head_of(raw: bytes) -> RequestHead:
    events = parse(raw)
    assert isinstance(events[0], RequestHead)
    return events[0]


def status_of(raw: bytes, limits: Limits | None = None) -> int:
    with pytest.raises(HttpError) as info:
        parse(raw, limits)
    return info.value.status


H = b"Host: app.api.localhost\r\n"


def get(target: bytes = b"/", headers: bytes = H, version: bytes = b"HTTP/1.1") -> bytes:
    return b"GET " + target + b" " + version + b"\r\n" + headers + b"\r\n"


# -- request line ---------------------------------------------------------------------------------------------


def test_simple_get() -> None:
    events = parse(get(b"/a/b?x=1&y=%20", H + b"X-Trace: t\r\n"))
    assert events == [
        RequestHead(
            method="GET",
            request_uri="/a/b?x=1&y=%20",
            version="HTTP/1.1",
            headers=[("Host", "app.api.localhost"), ("X-Trace", "t")],
            host="app.api.localhost",
            path="/a/b",
            query="x=1&y=%20",
            content_length=None,
            chunked=False,
            keep_alive=True,
            expect_continue=False,
        ),
        EndOfRequest(),
    ]


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"get / HTTP/1.1\r\n" + H + b"\r\n", 400),  # methods are upper case
        (b"GET /\r\n" + H + b"\r\n", 400),  # HTTP/0.9 style
        (b"GET / HTTP/0.9\r\n" + H + b"\r\n", 400),
        (b"GET / HTTP/2.0\r\n" + H + b"\r\n", 505),
        (b"GET /x y HTTP/1.1\r\n" + H + b"\r\n", 400),  # spaces in the target: an error since nginx 1.21.1
        (b"GET /x\x01 HTTP/1.1\r\n" + H + b"\r\n", 400),
        (b"OPTIONS * HTTP/1.1\r\n" + H + b"\r\n", 400),
        (b"GET x HTTP/1.1\r\n" + H + b"\r\n", 400),
        (b"GET http://app.api.localhost/ HTTP/1.1\r\n\r\n", 400),  # absolute-form still needs a Host header
        (b"GET http://app.api.localhost#x HTTP/1.1\r\n" + H + b"\r\n", 400),
        (b"GET / HTTP/1.x\r\n" + H + b"\r\n", 400),
    ],
)
def test_bad_request_lines(raw: bytes, status: int) -> None:
    assert status_of(raw) == status


def test_request_line_tolerances() -> None:
    # Several spaces between the parts, and nginx's $server_protocol keeps trailing spaces.
    head = head_of(b"M-S_X  /x  HTTP/1.1 \r\n" + H + b"\r\n")
    assert (head.method, head.path, head.version) == ("M-S_X", "/x", "HTTP/1.1 ")
    # RFC 9112 2.2: empty lines before the request line are ignored; bare LF line ends are accepted.
    assert head_of(b"\r\n\n\r\nGET /y HTTP/1.1\nHost: a\n\n").path == "/y"


def test_absolute_form_host_wins_and_request_uri_is_its_path() -> None:
    head = head_of(b"GET http://Echo.api.localhost:99/abs?x HTTP/1.1\r\nHost: other.api.localhost\r\n\r\n")
    assert (head.host, head.request_uri, head.path, head.query) == (
        "echo.api.localhost",
        "/abs?x",
        "/abs",
        "x",
    )
    assert ("Host", "other.api.localhost") in head.headers  # HTTP_HOST stays the header, as in nginx
    bare = head_of(b"GET http://echo.api.localhost HTTP/1.1\r\n" + H + b"\r\n")
    assert (bare.host, bare.request_uri, bare.path, bare.query) == ("echo.api.localhost", "/", "/", "")
    query = head_of(b"GET http://echo.api.localhost?a=1 HTTP/1.1\r\n" + H + b"\r\n")
    assert (query.request_uri, query.path, query.query) == ("?a=1", "/", "a=1")
    http10 = head_of(b"GET http://echo.api.localhost/p HTTP/1.0\r\n\r\n")
    assert (http10.host, http10.path) == ("echo.api.localhost", "/p")


@pytest.mark.parametrize(
    ("target", "path", "query"),
    [
        (b"/a#frag?x=1", "/a", ""),
        (b"/a?x=1#f", "/a", "x=1"),
        (b"/a?", "/a", ""),
        (b"/a?b?c", "/a", "b?c"),
    ],
)
def test_fragment_and_query(target: bytes, path: str, query: str) -> None:
    head = head_of(get(target))
    assert (head.path, head.query, head.request_uri) == (path, query, target.decode())


# -- paths ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("/", "/"),
        ("/a/../echo/./x%20y//z", "/echo/x y/z"),
        ("//x//y/", "/x/y/"),
        ("/a/%2e%2e/b%2Fc/%2e", "/b/c/"),
        ("/a/.", "/a/"),
        ("/a/..", "/"),
        ("/a/b/..", "/a/"),
        ("/..a/.b/...", "/..a/.b/..."),
        ("/caf\xe9/%C3%A9%25", "/caf\xe9/\xc3\xa9%"),
        ("/%25%32%46", "/%2F"),  # decoded once only
        ("/a+b", "/a+b"),
    ],
)
def test_normalize_path(raw: str, expected: str) -> None:
    assert normalize_path(raw) == expected


@pytest.mark.parametrize("raw", ["/..", "/../a", "/a/../..", "/%2e%2e/", "/a%00b", "/a%zz", "/a%", "/a%4"])
def test_bad_paths(raw: str) -> None:
    with pytest.raises(HttpError) as info:
        normalize_path(raw)
    assert info.value.status == 400


segment = st.sampled_from(["a", "b", ".", "..", "", "%2e", "%2F", "x y", "%41"])


@given(st.lists(segment, max_size=8))
def test_normalized_paths_are_canonical(segments: list[str]) -> None:
    raw = "/" + "/".join(segments)
    try:
        result = normalize_path(raw)
    except HttpError as exc:
        assert exc.status == 400
        return
    assert result.startswith("/")
    assert "//" not in result
    assert all(part not in (".", "..") for part in result.split("/"))
    # Without escapes left to decode, normalising again changes nothing, and it agrees with posixpath.
    if "%" not in result:
        assert normalize_path(result) == result
        assert posixpath.normpath(result).lstrip("/") == result.rstrip("/").lstrip("/")


# -- hosts ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Echo-Probe.API.localhost:8080", "echo-probe.api.localhost"),
        ("echo.api.localhost.", "echo.api.localhost"),
        ("[::1]:80", "[::1]"),
        ("a\\b.api.localhost", "a\\b.api.localhost"),  # no path separator on Unix: nginx accepts it
        ("x.api.localhost:abc", "x.api.localhost"),
    ],
)
def test_normalize_host(raw: str, expected: str) -> None:
    assert normalize_host(raw) == expected


@pytest.mark.parametrize("raw", ["", ".", "a/b.api.localhost", "a..api.localhost", "a\0b", ":80"])
def test_bad_hosts(raw: str) -> None:
    with pytest.raises(HttpError, match="invalid host header"):
        normalize_host(raw)


def test_host_rules() -> None:
    assert status_of(get(headers=b"")) == 400  # HTTP/1.1 needs a Host
    assert head_of(get(headers=b"", version=b"HTTP/1.0")).host == ""
    assert status_of(get(headers=H + H)) == 400
    assert status_of(get(headers=b"Host: a/b\r\n")) == 400


# -- headers ----------------------------------------------------------------------------------------------------


def test_invalid_header_names_are_dropped_silently() -> None:
    head = head_of(get(headers=H + b"X_Under: 1\r\nX.Dot: 2\r\nCaf\xe9: 3\r\nContent_Length: 9\r\nOk: 4\r\n"))
    assert head.headers == [("Host", "app.api.localhost"), ("Ok", "4")]
    assert head.content_length is None  # the underscore spelling is not Content-Length


def test_control_characters_other_than_nul_and_cr_pass_in_values() -> None:
    assert head_of(get(headers=H + b"X-Ctl: a\x01b\x7fc\r\n")).headers[1] == ("X-Ctl", "a\x01b\x7fc")


def test_header_values_and_spelling() -> None:
    head = head_of(get(headers=H + b"x-lower: a\r\nX-Empty:\r\nX-Sp: \t padded \t\r\nNoColon\r\nX-V: caf\xe9\r\n"))
    assert head.headers[1:] == [
        ("x-lower", "a"),
        ("X-Empty", ""),
        ("X-Sp", "\t padded \t"),
        ("NoColon", ""),
        ("X-V", "caf\xe9"),
    ]


@pytest.mark.parametrize(
    "line",
    [b"Sp ace: 1", b" Folded", b"\tcontinued", b": empty", b"X-Ctl\x01: a", b"X\x7f: a", b"X-A: a\x00b", b"X-A: a\rb"],
)
def test_malformed_header_lines_are_400(line: bytes) -> None:
    assert status_of(get(headers=H + line + b"\r\n")) == 400


# -- framing ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        (b"Content-Length: 2\r\nContent-Length: 2\r\n", 400),
        (b"Content-Length: 2\r\nTransfer-Encoding: chunked\r\n", 400),
        (b"Content-Length: +2\r\n", 400),
        (b"Content-Length: -1\r\n", 400),
        (b"Content-Length: 1e3\r\n", 400),
        (b"Content-Length: \xb2\r\n", 400),
        (b"Transfer-Encoding: gzip, chunked\r\n", 501),
        (b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", 400),
        (b"Content-Length: 1048577\r\n", 413),
    ],
)
def test_framing_errors(headers: bytes, status: int) -> None:
    assert status_of(b"POST / HTTP/1.1\r\n" + H + headers + b"\r\n") == status


def test_http10_with_transfer_encoding_is_400() -> None:
    assert status_of(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n") == 400


def test_body_limit_is_configurable() -> None:
    raw = b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5000000\r\n\r\n"
    assert isinstance(parse(raw, Limits(max_body_size=0))[0], RequestHead)  # 0 = no limit, like nginx
    assert status_of(raw, Limits(max_body_size=100)) == 413


def test_keep_alive_and_expect() -> None:
    assert head_of(get()).keep_alive
    assert not head_of(get(headers=H + b"Connection: close\r\n")).keep_alive
    assert not head_of(get(version=b"HTTP/1.0")).keep_alive
    assert head_of(get(headers=H + b"Connection: Keep-Alive\r\n", version=b"HTTP/1.0")).keep_alive
    assert head_of(get(headers=H + b"Expect: 100-Continue\r\n")).expect_continue
    assert not head_of(get(headers=H + b"Expect: 100-continue\r\n", version=b"HTTP/1.0")).expect_continue
    assert not head_of(get(headers=H + b"Expect: something\r\n")).expect_continue


# -- size limits ------------------------------------------------------------------------------------------------


def test_long_request_line_is_414_even_before_it_ends() -> None:
    parser = RequestParser()
    with pytest.raises(HttpError) as info:
        parser.feed(b"GET /" + b"a" * 9000)
    assert info.value.status == 414 and reason_phrase(414) == "Request-URI Too Large"
    assert status_of(get(b"/" + b"a" * 9000)) == 414


def test_long_header_line_is_400_with_nginx_title() -> None:
    for raw in (get(headers=H + b"X-Big: " + b"b" * 9000 + b"\r\n"), get()[:-2] + b"X-Big: " + b"b" * 9000):
        with pytest.raises(HttpError) as info:
            RequestParser().feed(raw)
        assert (info.value.status, info.value.title) == (400, HEADER_TOO_LARGE)


def test_total_header_size_limit() -> None:
    lines = [b"X-H%d: %s\r\n" % (i, b"b" * 7000) for i in range(5)]
    with pytest.raises(HttpError) as info:
        parse(get(headers=H + b"".join(lines)))  # 35 KiB: over nginx's 4 buffers of 8 KiB
    assert (info.value.status, info.value.title) == (400, HEADER_TOO_LARGE)
    assert isinstance(parse(get(headers=H + b"".join(lines[:4])))[0], RequestHead)


# -- bodies -----------------------------------------------------------------------------------------------------


def body_of(events: list[RequestEvent]) -> bytes:
    return b"".join(e.data for e in events if isinstance(e, BodyData))


def test_content_length_body_and_pipelining() -> None:
    raw = b"POST /a HTTP/1.1\r\n" + H + b"Content-Length: 5\r\n\r\nhello" + get(b"/b")
    events = parse(raw)
    kinds = [type(e).__name__ for e in events]
    assert kinds == ["RequestHead", "BodyData", "EndOfRequest", "RequestHead", "EndOfRequest"]
    assert body_of(events) == b"hello"


def test_chunked_body_with_extensions_and_trailers() -> None:
    raw = b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: Chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n"
    raw += b"0\r\nTrailer: x\r\n\r\n"
    events = parse(raw)
    assert body_of(events) == b"hello world"
    assert isinstance(events[-1], EndOfRequest)


@pytest.mark.parametrize(
    "chunks", [b"zz\r\nhello\r\n0\r\n\r\n", b"5\r\nhelloXX\r\n0\r\n\r\n", b"-1\r\n", b"1" * 20 + b"\r\n"]
)
def test_bad_chunks(chunks: bytes) -> None:
    assert status_of(b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n" + chunks) == 400


def test_chunked_body_over_limit_is_413() -> None:
    raw = b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n" + b"40\r\n" + b"x" * 64 + b"\r\n"
    assert status_of(raw + b"41\r\n", Limits(max_body_size=100)) == 413


def test_parser_state_properties() -> None:
    parser = RequestParser()
    assert parser.idle
    parser.feed(b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 3\r\n\r\nab")
    assert not parser.idle
    parser.feed(b"c")
    assert parser.idle


def chunk_encode(body: bytes, sizes: list[int]) -> bytes:
    out, pos = b"", 0
    for size in sizes:
        piece = body[pos : pos + size]
        if piece:
            out += b"%x\r\n%b\r\n" % (len(piece), piece)
        pos += size
    if pos < len(body):
        out += b"%x\r\n%b\r\n" % (len(body) - pos, body[pos:])
    return out + b"0\r\n\r\n"


@given(
    st.binary(max_size=300),
    st.lists(st.integers(1, 50), max_size=10),
    st.lists(st.integers(0, 2000), max_size=8),
    st.booleans(),
)
def test_any_split_any_chunking_same_result(body: bytes, sizes: list[int], cuts: list[int], chunked: bool) -> None:
    if chunked:
        raw = b"PUT /p HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n" + chunk_encode(body, sizes)
    else:
        raw = b"PUT /p HTTP/1.1\r\n" + H + b"Content-Length: %d\r\n\r\n" % len(body) + body
    raw += get(b"/next")
    bounds = [0, *sorted(c % (len(raw) + 1) for c in cuts), len(raw)]
    parser = RequestParser()
    events: list[RequestEvent] = []
    for a, b in zip(bounds, bounds[1:]):
        events += parser.feed(raw[a:b])
    heads = [e for e in events if isinstance(e, RequestHead)]
    assert [h.path for h in heads] == ["/p", "/next"]
    assert body_of(events) == body
    assert sum(isinstance(e, EndOfRequest) for e in events) == 2
    assert parser.idle


# -- translation ------------------------------------------------------------------------------------------------


def test_uwsgi_vars_like_nginx() -> None:
    raw = b"POST /a/../b%20c?q=1 HTTP/1.1\r\nHost: Svc.api.localhost:8080\r\nContent-Type: text/plain\r\n"
    raw += b"Transfer-Encoding: chunked\r\nX-Rep: a\r\nX-Rep: b\r\n\r\n"
    head = head_of(raw)
    result = uwsgi_vars(
        head,
        body_length=11,
        server_name=r"~^(?<app>[^.]+)\.api\.localhost$",
        server_port="8080",
        remote_addr="127.0.0.1",
        remote_port="5555",
    )
    assert result == [
        ("QUERY_STRING", "q=1"),
        ("REQUEST_METHOD", "POST"),
        ("CONTENT_TYPE", "text/plain"),
        ("CONTENT_LENGTH", "11"),  # nginx buffers a chunked body and sends its length
        ("REQUEST_URI", "/a/../b%20c?q=1"),
        ("PATH_INFO", "/b c"),
        ("DOCUMENT_ROOT", "/usr/share/nginx/html"),
        ("SERVER_PROTOCOL", "HTTP/1.1"),
        ("REQUEST_SCHEME", "http"),
        ("REMOTE_ADDR", "127.0.0.1"),
        ("REMOTE_PORT", "5555"),
        ("SERVER_PORT", "8080"),
        ("SERVER_NAME", r"~^(?<app>[^.]+)\.api\.localhost$"),
        ("HTTP_HOST", "Svc.api.localhost:8080"),
        ("HTTP_CONTENT_TYPE", "text/plain"),
        ("HTTP_TRANSFER_ENCODING", "chunked"),
        ("HTTP_X_REP", "a"),
        ("HTTP_X_REP", "b"),
    ]


def test_content_length_var_is_the_header_as_sent() -> None:
    head = head_of(b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 0\r\n\r\n")
    kwargs = {"server_name": "s", "server_port": "", "remote_addr": "unix:", "remote_port": ""}
    assert dict(uwsgi_vars(head, body_length=0, **kwargs))["CONTENT_LENGTH"] == "0"
    assert dict(uwsgi_vars(head_of(get()), body_length=0, **kwargs))["CONTENT_LENGTH"] == ""


# -- the router's encoder: the reference (encode_request(uwsgi_vars(...))) in fewer operations -------------------

CONNECTION = {"server_name": "~^(?<app>[^.]+)\\.x$", "server_port": "8080", "remote_addr": "::1", "remote_port": "7"}


def reference_packet(head: RequestHead, body: bytes, connection: dict[str, str]) -> bytes:
    return encode_request(uwsgi_vars(head, body_length=len(body), **connection), body)


# Any text (non-latin-1 and huge strings included), header names from the tokens the parser lets through
# plus '_' (dropped), in any case (Content-Type detection).
text = st.text(max_size=40) | st.sampled_from(["", "x" * 70_000, "caf\u00e9", "\u20ac"])
header_name = st.from_regex(r"[A-Za-z0-9_-]{1,12}", fullmatch=True) | st.sampled_from(
    ["Content-Type", "content-TYPE", "Content_Type", "X-A"]
)


@given(
    method=st.sampled_from(["GET", "POST", "M-S_X"]),
    path=text,
    query=text,
    request_uri=text,
    version=st.sampled_from(["HTTP/1.1", "HTTP/1.0 "]),
    headers=st.lists(st.tuples(header_name, text), max_size=6),
    content_length=st.none() | st.sampled_from(["0", "12"]),
    chunked=st.booleans(),
    body=st.binary(max_size=20),
    connection=st.fixed_dictionaries({k: text for k in CONNECTION}),
)
def test_encoder_equals_the_reference(
    method: str,
    path: str,
    query: str,
    request_uri: str,
    version: str,
    headers: list[tuple[str, str]],
    content_length: str | None,
    chunked: bool,
    body: bytes,
    connection: dict[str, str],
) -> None:
    head = RequestHead(
        method=method,
        request_uri=request_uri,
        version=version,
        headers=headers,
        host="h",
        path=path,
        query=query,
        content_length=content_length,
        chunked=chunked,
        keep_alive=True,
        expect_continue=False,
    )
    encoder = UwsgiEncoder(**connection)
    try:
        expected = reference_packet(head, body, connection)
    except ValueError as exc:  # over the u16 limits: both refuse, with the same message
        with pytest.raises(ValueError) as info:
            encoder.encode(head, body)
        assert str(info.value) == str(exc)
    else:
        assert encoder.encode(head, body) == expected


def test_encoder_on_parsed_requests() -> None:
    raw = b"POST /a/../b%20c?q=1 HTTP/1.1\r\nHost: Svc.api.localhost:8080\r\ncontent-type: text/plain\r\n"
    raw += b"Content-Type: second\r\nTransfer-Encoding: chunked\r\nX-Rep: a\r\nX-Rep: b\r\n\r\n"
    for head in (head_of(raw), head_of(get()), head_of(b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 0\r\n\r\n")):
        for body in (b"", b"hello world"):
            assert UwsgiEncoder(**CONNECTION).encode(head, body) == reference_packet(head, body, CONNECTION)
