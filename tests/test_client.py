"""The blocking client against a real uwsgi (uwsgi protocol and http-socket) and against real dead sockets."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from router_fixtures import ECHO_APP, free_tcp_port, run_process, short_tmp_dir, uwsgi_binary

from pytest_emperor.client import Response, UpstreamError, http_request, uwsgi_request


@pytest.fixture(scope="module")
def tmp() -> Iterator[Path]:
    with short_tmp_dir() as path:
        yield path


def _uwsgi(tmp: Path, option: str, address: str) -> list[str]:
    return [
        str(uwsgi_binary()),
        option,
        address,
        "--wsgi-file",
        str(ECHO_APP / "app.py"),
        "--master",
        "--processes",
        "1",
        "--need-app",
    ]


@pytest.fixture(scope="module")
def uwsgi_sock(tmp: Path) -> Iterator[str]:
    sock = str(tmp / "x.sock")
    with run_process(_uwsgi(tmp, "--socket", sock), sock, tmp / "uwsgi.log"):
        yield sock


@pytest.fixture(scope="module")
def http_sock(tmp: Path) -> Iterator[str]:
    sock = str(tmp / "h.sock")
    with run_process(_uwsgi(tmp, "--http-socket", sock), sock, tmp / "http.log"):
        yield sock


@pytest.fixture(scope="module")
def http_tcp(tmp: Path) -> Iterator[tuple[str, int]]:
    address = ("127.0.0.1", free_tcp_port())
    with run_process(_uwsgi(tmp, "--http-socket", f"{address[0]}:{address[1]}"), address, tmp / "tcp.log"):
        yield address


def test_uwsgi_request_sends_nginx_like_vars(uwsgi_sock: str) -> None:
    response = uwsgi_request(
        uwsgi_sock,
        "GET",
        "/some/path",
        query="a=1&b=%20",
        headers=[("X-Trace", "t1"), ("X_Dropped", "no")],
        host="svc.api.localhost",
    )
    assert (response.status, response.reason) == (200, "OK")
    environ = response.json()["environ"]
    assert environ["REQUEST_METHOD"] == "GET"
    assert environ["PATH_INFO"] == "/some/path"
    assert environ["QUERY_STRING"] == "a=1&b=%20"
    assert environ["REQUEST_URI"] == "/some/path?a=1&b=%20"
    assert environ["HTTP_HOST"] == "svc.api.localhost"
    assert environ["SERVER_NAME"] == "svc.api.localhost"
    assert environ["HTTP_X_TRACE"] == "t1"
    assert "HTTP_X_DROPPED" not in environ  # nginx drops underscore headers
    assert environ["CONTENT_LENGTH"] == environ["CONTENT_TYPE"] == ""


def test_uwsgi_request_body_and_response_helpers(uwsgi_sock: str) -> None:
    body = bytes(range(256)) * 300
    response = uwsgi_request(
        uwsgi_sock,
        "POST",
        "/",
        body=body,
        headers=[("Content-Type", "application/x")],
        query="header=X-Out:1&header=x-out:2&status=201",
    )
    assert response.status == 201
    assert response.header("x-OUT") == "1, 2"
    assert response.header("missing") is None
    data = response.json()
    assert data["body"].encode("latin-1") == body
    assert data["environ"]["CONTENT_LENGTH"] == str(len(body))
    assert data["environ"]["CONTENT_TYPE"] == "application/x"
    assert response.text.startswith('{"body"')


def test_uwsgi_request_large_and_streamed_responses(uwsgi_sock: str) -> None:
    big = uwsgi_request(uwsgi_sock, query="size=3000000")
    assert len(big.body) == 3_000_000 and big.header("Content-Length") == "3000000"
    assert big.body[:20] == b"0123456789abcdef0123"
    streamed = uwsgi_request(uwsgi_sock, query="chunks=50&chunk_size=1000")
    assert streamed.header("Content-Length") is None
    assert streamed.body == b"".join(bytes([48 + i % 10]) * 1000 for i in range(50))


@pytest.mark.parametrize("fixture", ["http_sock", "http_tcp"])
def test_http_request(fixture: str, request: pytest.FixtureRequest) -> None:
    address = request.getfixturevalue(fixture)
    response = http_request(
        address,
        "PUT",
        "/p%20q",
        query="x=1",
        body=b"hello",
        headers=[("X-Rep", "a"), ("X-Rep", "b")],
        host="h.example",
    )
    assert response.status == 200
    data = response.json()
    assert data["body"] == "hello"
    assert data["environ"]["REQUEST_METHOD"] == "PUT"
    assert data["environ"]["PATH_INFO"] == "/p q"  # uWSGI's http-socket decodes, like nginx
    assert data["environ"]["HTTP_HOST"] == "h.example"
    assert data["environ"]["CONTENT_LENGTH"] == "5"
    assert data["environ"]["HTTP_X_REP"] in ("a, b", "b", "a")
    head = http_request(address, "HEAD", "/", query="size=10")
    assert head.status == 200 and head.body == b""
    assert isinstance(head, Response)


def test_text_uses_declared_charset() -> None:
    response = Response(200, "OK", [("Content-Type", "text/plain; charset=latin-1")], "é".encode("latin-1"))
    assert response.text == "é"
    assert Response(200, "OK", [], "é".encode()).text == "é"


def test_missing_socket_names_the_address(tmp: Path) -> None:
    missing = str(tmp / "nope.sock")
    for call in (uwsgi_request, http_request):
        with pytest.raises(UpstreamError, match=r"unix:.*nope\.sock: cannot connect") as info:
            call(missing)
        assert info.value.address == missing


def test_refused_unix_and_tcp(tmp: Path) -> None:
    dead = str(tmp / "dead.sock")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(dead)  # a socket file nobody listens on: connect() gets ECONNREFUSED, as after a crash
    listener.close()
    with pytest.raises(UpstreamError, match=r"dead\.sock: cannot connect: Connection refused"):
        uwsgi_request(dead)
    port = free_tcp_port()
    with pytest.raises(UpstreamError, match=f"127.0.0.1:{port}: cannot connect"):
        http_request(("127.0.0.1", port))


@pytest.mark.parametrize("call", [uwsgi_request, http_request])
def test_silent_upstream_times_out(tmp: Path, call: object) -> None:
    path = str(tmp / "silent.sock")
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(path)
        listener.listen(1)  # accepts (in the backlog) but never answers
        with pytest.raises(UpstreamError, match=r"silent\.sock: no complete response within 0.3 s"):
            call(path, timeout=0.3)  # type: ignore[operator]
    Path(path).unlink()


def test_garbage_response_is_an_upstream_error(tmp: Path) -> None:
    path = str(tmp / "garbage.sock")
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(path)
        listener.listen(1)

        def answer() -> None:  # a peer that reads the request and answers something that is not HTTP
            conn, _ = listener.accept()
            with conn:
                conn.recv(65536)
                conn.sendall(b"SMTP ready\r\n\r\n")

        thread = threading.Thread(target=answer)
        thread.start()
        with pytest.raises(UpstreamError, match="invalid response: malformed status line"):
            uwsgi_request(path, timeout=5)
        thread.join(5)
    Path(path).unlink()
