"""The sans-IO uwsgi request codec: exact bytes, every error, and hypothesis round trips."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st
from uwsgi_decode import decode_request

from pytest_emperor._protocol.uwsgi import (
    MAX_VARS_SIZE,
    document_uri,
    encode_request,
    encode_vars,
    header_var,
    wsgi_vars,
)

# -- encoding: exact bytes ----


def test_encode_vars_exact_bytes() -> None:
    assert encode_vars([("A", "bc"), ("KEY", "")]) == b"\x01\x00A\x02\x00bc\x03\x00KEY\x00\x00"
    assert encode_vars([]) == b""


def test_encode_request_header_is_modifier1_u16le_modifier2() -> None:
    data = encode_request([("K", "v" * 300)], b"BODY", modifier1=5, modifier2=9)
    size = 2 + 1 + 2 + 300
    # nginx writes `modifier1, len & 0xff, len >> 8, modifier2` (ngx_http_uwsgi_module.c).
    assert data[:4] == bytes([5, size & 0xFF, size >> 8, 9])
    assert data[4 : 4 + size] == encode_vars([("K", "v" * 300)])
    assert data[4 + size :] == b"BODY"


def test_latin1_text_is_one_byte_per_char_and_other_text_is_utf8() -> None:
    assert encode_vars([("K", "é")]) == b"\x01\x00K\x01\x00\xe9"
    assert encode_vars([("K", "€")]) == b"\x01\x00K\x03\x00\xe2\x82\xac"
    assert encode_vars([(b"K", b"\xff\x00")]) == b"\x01\x00K\x02\x00\xff\x00"


def test_empty_key_rejected() -> None:
    with pytest.raises(ValueError, match="cannot be empty"):
        encode_vars([("", "x")])


def test_size_limits() -> None:
    with pytest.raises(ValueError, match="longer than 65535"):
        encode_vars([("K", "x" * 65536)])
    with pytest.raises(ValueError, match="longer than 65535"):
        encode_vars([("K" * 65536, "")])
    # The largest single value that fits: 2 + 1 + 2 + 65530 = 65535 exactly.
    assert len(encode_vars([("K", "x" * 65530)])) == MAX_VARS_SIZE
    with pytest.raises(ValueError, match="65536 bytes, over the protocol's 65535"):
        encode_request([("K", "x" * 65531)])


@pytest.mark.parametrize("modifiers", [(-1, 0), (0, 256), (256, 0)])
def test_modifiers_are_bytes(modifiers: tuple[int, int]) -> None:
    with pytest.raises(ValueError, match="modifiers are bytes"):
        encode_request([], b"", *modifiers)


# -- decoding ----


def test_decode_request_exact() -> None:
    data = b"\x00\x0b\x00\x00" + b"\x01\x00A\x01\x00b\x01\x00C\x00\x00" + b"rest"
    assert decode_request(data) == (0, 0, [("A", "b"), ("C", "")], b"rest")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "needs 4 bytes, got 0"),
        (b"\x00\x05\x00", "needs 4 bytes, got 3"),
        (b"\x00\x05\x00\x00abc", "announces 5 bytes but only 3 follow"),
        (b"\x00\x01\x00\x00\x01", "truncated in the length of a key"),
        (b"\x00\x03\x00\x00\x05\x00A", "key at offset 6 needs 5 bytes, the block has 1"),
        (b"\x00\x04\x00\x00\x00\x00\x00\x00", "empty uwsgi var key at offset 4"),
        (b"\x00\x04\x00\x00\x01\x00A\x00", "truncated in the length of a value of b'A'"),
        (b"\x00\x06\x00\x00\x01\x00A\x09\x00x", "value of b'A' at offset 9 needs 9 bytes"),
    ],
)
def test_decode_errors(data: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        decode_request(data)


latin1_text = st.text(st.characters(max_codepoint=255), max_size=40)
pairs = st.lists(st.tuples(latin1_text.filter(bool), latin1_text), max_size=20)


@given(pairs, st.binary(max_size=200), st.integers(0, 255), st.integers(0, 255))
def test_round_trip(vars: list[tuple[str, str]], body: bytes, m1: int, m2: int) -> None:
    assert decode_request(encode_request(vars, body, m1, m2)) == (m1, m2, vars, body)


@given(st.lists(st.tuples(st.text(min_size=1, max_size=10), st.text(max_size=10)), max_size=10))
def test_any_text_arrives_as_its_wire_bytes_read_as_latin1(vars: list[tuple[str, str]]) -> None:
    def wire(text: str) -> str:
        try:
            return text.encode("latin-1").decode("latin-1")
        except UnicodeEncodeError:
            return text.encode("utf-8").decode("latin-1")

    _, _, decoded, _ = decode_request(encode_request(vars))
    assert decoded == [(wire(k), wire(v)) for k, v in vars]


@given(st.binary(max_size=64))
def test_decode_never_fails_other_than_value_error(data: bytes) -> None:
    try:
        m1, m2, vars, rest = decode_request(data)
    except ValueError:
        return
    # Whatever decodes re-encodes to the same bytes.
    assert encode_request(vars, rest, m1, m2) == data


# -- wsgi_vars ----


def test_wsgi_vars_matches_uwsgi_params_order_and_values() -> None:
    result = wsgi_vars(
        "POST",
        "/a b",
        "x=1",
        [("Content-Type", "text/plain"), ("X-Trace", "7"), ("X_Under", "no"), ("Host", "h")],
        5,
        server_name="srv",
        server_port="8080",
        remote_addr="10.0.0.1",
    )
    assert result == [
        ("QUERY_STRING", "x=1"),
        ("REQUEST_METHOD", "POST"),
        ("CONTENT_TYPE", "text/plain"),
        ("CONTENT_LENGTH", "5"),
        ("REQUEST_URI", "/a b?x=1"),
        ("PATH_INFO", "/a b"),
        ("DOCUMENT_ROOT", "/usr/share/nginx/html"),
        ("SERVER_PROTOCOL", "HTTP/1.1"),
        ("REQUEST_SCHEME", "http"),
        ("REMOTE_ADDR", "10.0.0.1"),
        ("REMOTE_PORT", "0"),
        ("SERVER_PORT", "8080"),
        ("SERVER_NAME", "srv"),
        ("HTTP_CONTENT_TYPE", "text/plain"),
        ("HTTP_X_TRACE", "7"),
        ("HTTP_HOST", "h"),
    ]


def test_wsgi_vars_defaults_and_overrides() -> None:
    plain = dict(wsgi_vars("GET", "/"))
    assert plain["CONTENT_LENGTH"] == plain["CONTENT_TYPE"] == plain["QUERY_STRING"] == ""
    assert plain["REQUEST_URI"] == "/" and "HTTPS" not in plain
    tls = dict(wsgi_vars("GET", "/", scheme="https", request_uri="/%2e/", content_length="0"))
    assert (tls["HTTPS"], tls["REQUEST_SCHEME"], tls["REQUEST_URI"], tls["CONTENT_LENGTH"]) == (
        "on",
        "https",
        "/%2e/",
        "0",
    )


def test_header_var() -> None:
    assert header_var("x-Forwarded-for") == "HTTP_X_FORWARDED_FOR"


def test_header_packing_is_little_endian() -> None:
    assert struct.unpack("<BHB", encode_request([("K", "v" * 1000)])[:4]) == (0, 1005, 0)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("/", "/"),
        ("/a%20b", "/a b"),
        ("/a//b/./c/../d", "/a/b/d"),
        ("/a/%2E%2E/b", "/b"),
        ("/a/b/..", "/a/"),
        ("/a%2Fb", "/a/b"),
    ],
)
def test_document_uri_decodes_and_normalises_like_nginx(raw: str, expected: str) -> None:
    assert document_uri(raw) == expected


@pytest.mark.parametrize("raw", ["/..", "/a/../..", "/%zz", "/%4", "/a%00b"])
def test_document_uri_refuses_what_nginx_answers_400(raw: str) -> None:
    with pytest.raises(ValueError, match="client sent"):
        document_uri(raw)


@given(st.lists(st.text(alphabet="abc.", min_size=1, max_size=4), max_size=6))
def test_document_uri_result_has_no_dot_segments_or_empty_segments(segments: list[str]) -> None:
    raw = "/" + "/".join(segments)
    try:
        result = document_uri(raw)
    except ValueError:
        return
    inner = result.split("/")[1:-1]
    assert result.startswith("/") and "." not in inner and ".." not in inner and "" not in inner
