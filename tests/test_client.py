"""The requests adapters against a real uwsgi (uwsgi protocol and http-socket) and against real dead sockets."""

from __future__ import annotations

import importlib.util
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from hypothesis import given
from hypothesis import strategies as st
from router_fixtures import ECHO_APP, free_tcp_port, run_process, short_tmp_dir, uwsgi_binary
from uwsgi_decode import decode_request

from pytest_emperor._protocol.client import (
    Address,
    EmperorSession,
    UpstreamError,
    UwsgiAdapter,
    check_request_arguments,
    direct_session,
    routed_session,
    uwsgi_packet,
)

HOST = "svc.api.localhost"


@pytest.fixture(scope="module")
def tmp() -> Iterator[Path]:
    with short_tmp_dir() as path:
        yield path


def _uwsgi(option: str, address: str) -> list[str]:
    return [
        str(uwsgi_binary()), option, address, "--wsgi-file", str(ECHO_APP / "app.py"),
        "--master", "--processes", "1", "--need-app",
    ]


@pytest.fixture(scope="module")
def uwsgi_sock(tmp: Path) -> Iterator[str]:
    sock = str(tmp / "x.sock")
    with run_process(_uwsgi("--socket", sock), sock, tmp / "uwsgi.log"):
        yield sock


@pytest.fixture(scope="module")
def http_sock(tmp: Path) -> Iterator[str]:
    sock = str(tmp / "h.sock")
    with run_process(_uwsgi("--http-socket", sock), sock, tmp / "http.log"):
        yield sock


@pytest.fixture(scope="module")
def http_tcp(tmp: Path) -> Iterator[tuple[str, int]]:
    address = ("127.0.0.1", free_tcp_port())
    with run_process(_uwsgi("--http-socket", f"{address[0]}:{address[1]}"), address, tmp / "tcp.log"):
        yield address


@pytest.fixture(params=["uwsgi", "http-unix", "http-tcp"])
def session(request: pytest.FixtureRequest) -> Iterator[EmperorSession]:
    """A direct session to each kind of vassal socket."""
    if request.param == "uwsgi":
        address: Address = request.getfixturevalue("uwsgi_sock")
    else:
        address = request.getfixturevalue("http_sock" if request.param == "http-unix" else "http_tcp")
    with direct_session(address, "uwsgi" if request.param == "uwsgi" else "http", f"http://{HOST}/") as s:
        yield s


def environ(response: requests.Response) -> dict[str, str]:
    data: dict[str, str] = response.json()["environ"]
    return data


def test_uwsgi_vars_are_nginx_uwsgi_params(uwsgi_sock: str) -> None:
    with direct_session(uwsgi_sock, "uwsgi", f"http://{HOST}/") as s:
        response = s.get("/some/path", params={"a": "1", "b": "x y"}, headers=[("X-Trace", "t1"), ("X_Dropped", "no")])
    assert (response.status_code, response.reason) == (200, "OK")
    env = environ(response)
    assert env["REQUEST_METHOD"] == "GET"
    assert env["PATH_INFO"] == "/some/path"
    assert env["QUERY_STRING"] == "a=1&b=x+y"
    assert env["REQUEST_URI"] == "/some/path?a=1&b=x+y"
    assert env["HTTP_HOST"] == env["SERVER_NAME"] == HOST
    assert env["SERVER_PORT"] == "80"
    assert env["HTTP_X_TRACE"] == "t1"
    assert "HTTP_X_DROPPED" not in env  # nginx drops underscore headers
    assert env["CONTENT_LENGTH"] == env["CONTENT_TYPE"] == ""
    assert env["DOCUMENT_ROOT"] == "/usr/share/nginx/html"


@pytest.mark.parametrize(
    ("target", "path_info", "query", "request_uri"),
    [
        ("/echo?x=1", "/echo", "x=1", "/echo?x=1"),  # a 404 users met: the query is not part of PATH_INFO
        ("/p%20q?a=%20", "/p q", "a=%20", "/p%20q?a=%20"),  # $document_uri is decoded, $query_string is not
        ("/a%2Fb", "/a/b", "", "/a%2Fb"),
        ("/x//y/./z", "/x/y/z", "", "/x//y/z"),  # requests (like curl) resolves dot segments; nginx merges //
        ("health", "/health", "", "/health"),  # relative to the session's base URL
    ],
)
def test_path_and_query_are_split_as_nginx_does(
    uwsgi_sock: str, target: str, path_info: str, query: str, request_uri: str
) -> None:
    with direct_session(uwsgi_sock, "uwsgi", f"http://{HOST}/") as session:
        env = environ(session.get(target))
    assert env["PATH_INFO"] == path_info
    assert env["QUERY_STRING"] == query
    assert env["REQUEST_URI"] == request_uri


def test_bodies_json_files_and_generators(session: EmperorSession) -> None:
    binary = bytes(range(256)) * 300
    sent = session.post("/", data=binary, headers={"Content-Type": "application/x"})
    assert sent.status_code == 200
    assert sent.json()["body"].encode("latin-1") == binary
    assert environ(sent)["CONTENT_LENGTH"] == str(len(binary))
    assert environ(sent)["CONTENT_TYPE"] == "application/x"
    text = session.post("/", data=json.dumps({"é": 1}))  # a str body is sent as UTF-8, as requests sends it
    assert text.json()["body"].encode("latin-1").decode() == '{"\\u00e9": 1}'
    as_json = session.put("/", json={"a": [1, 2]})
    assert json.loads(as_json.json()["body"]) == {"a": [1, 2]}
    assert environ(as_json)["CONTENT_TYPE"] == "application/json"
    form = session.post("/", data={"k": "v w"})
    assert form.json()["body"] == "k=v+w"
    upload = session.post("/", files={"f": ("a.txt", b"content")})
    assert b'filename="a.txt"' in upload.json()["body"].encode("latin-1")
    chunked = session.post("/", data=iter([b"ab", b"cd"]))
    # Like nginx, the uwsgi adapter buffers a chunked body and sends its length; uWSGI's http-socket does not
    # de-chunk (its wsgi.input is empty without --http-chunked-input), which is what the app would see there.
    uwsgi = isinstance(session.get_adapter("http://h/"), UwsgiAdapter)
    assert chunked.json()["body"] == ("abcd" if uwsgi else "")


def test_query_in_the_path_reaches_http_socket_apps(session: EmperorSession) -> None:
    env = environ(session.get("/echo?x=1", params={"y": "2"}))
    assert (env["PATH_INFO"], env["QUERY_STRING"]) == ("/echo", "x=1&y=2")


def test_large_streamed_and_head_responses(session: EmperorSession) -> None:
    big = session.get("/", params={"size": "3000000"})
    assert len(big.content) == 3_000_000 and big.headers["content-length"] == "3000000"
    streamed = session.get("/", params={"chunks": "50", "chunk_size": "1000"}, stream=True)
    assert b"".join(streamed.iter_content(4096)) == b"".join(bytes([48 + i % 10]) * 1000 for i in range(50))
    head = session.head("/", params={"size": "10"})
    assert head.status_code == 200 and head.content == b""


def test_headers_cookies_and_redirects(session: EmperorSession) -> None:
    repeated = session.get("/", params=[("header", "X-Out:1"), ("header", "x-out:2"), ("status", "201")])
    assert repeated.status_code == 201 and repeated.headers["X-OUT"] == "1, 2"
    session.get("/", params={"header": "Set-Cookie:sid=abc; Path=/"})
    assert session.cookies.get("sid") == "abc"
    assert environ(session.get("/next"))["HTTP_COOKIE"] == "sid=abc"
    moved = {"status": "302", "header": "Location:/moved"}
    assert session.get("/", params=moved, allow_redirects=False).status_code == 302
    followed = session.get("/", params=moved)
    assert followed.status_code == 200 and environ(followed)["PATH_INFO"] == "/moved"
    assert [r.status_code for r in followed.history] == [302]


def test_absolute_url_host_is_the_host_header(session: EmperorSession) -> None:
    env = environ(session.get("http://other.example:8080/x"))  # a direct session sends every URL to its socket
    assert env["HTTP_HOST"] == "other.example:8080" and env["PATH_INFO"] == "/x"


def test_routed_session_sends_only_routed_hosts_to_the_router(http_sock: str, http_tcp: tuple[str, int]) -> None:
    # http_sock plays the router; the TCP one plays "the network" (a host the routes do not accept).
    with routed_session(http_sock, lambda host: host.endswith(".api.localhost"), f"http://{HOST}:1234/") as s:
        routed = s.get("/r")
        assert environ(routed)["HTTP_HOST"] == f"{HOST}:1234"
        assert environ(s.get("http://b.api.localhost:1/"))["HTTP_HOST"] == "b.api.localhost:1"
        network = s.get(f"http://{http_tcp[0]}:{http_tcp[1]}/n")
        assert environ(network)["HTTP_HOST"] == f"{http_tcp[0]}:{http_tcp[1]}"


def test_missing_and_refused_sockets_name_the_address(tmp: Path) -> None:
    missing = str(tmp / "nope.sock")
    with pytest.raises(UpstreamError, match=r"unix:.*nope\.sock: cannot connect") as info:
        direct_session(missing, "uwsgi", "http://h/").get("/")
    assert info.value.address == missing
    with pytest.raises(requests.ConnectionError, match=r"unix:.*nope\.sock: cannot connect"):
        direct_session(missing, "http", "http://h/").get("/")
    dead = str(tmp / "dead.sock")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(dead)  # a socket file nobody listens on: connect() gets ECONNREFUSED, as after a crash
    listener.close()
    with pytest.raises(UpstreamError, match=r"dead\.sock: cannot connect: Connection refused"):
        direct_session(dead, "uwsgi", "http://h/").get("/")
    port = free_tcp_port()
    with pytest.raises(requests.ConnectionError, match=f"127.0.0.1:{port}: cannot connect"):
        direct_session(("127.0.0.1", port), "http", "http://h/").get("/")


@pytest.mark.parametrize("protocol", ["uwsgi", "http"])
def test_silent_upstream_times_out(tmp: Path, protocol: str) -> None:
    path = str(tmp / f"silent-{protocol}.sock")
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(path)
        listener.listen(1)  # accepts (in the backlog) but never answers
        with pytest.raises(requests.ReadTimeout):
            direct_session(path, protocol, "http://h/").get("/", timeout=0.3)
    Path(path).unlink()


def test_garbage_response_is_a_connection_error(tmp: Path) -> None:
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
        with pytest.raises(UpstreamError, match="closed the connection before a complete response head"):
            direct_session(path, "uwsgi", "http://h/").get("/", timeout=5)
        thread.join(5)
    Path(path).unlink()


# -- wrong arguments fail before any I/O, naming the argument ---------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"query": {"limit": "1"}}, "query= is not a request argument.*use params="),
        ({"body": b"x"}, r"body= is not a request argument.*use data="),
        ({"params": 3}, "params= takes a mapping"),
        ({"headers": "Accept: x"}, "headers= takes a mapping or a list of"),
        ({"headers": [("A", "b", "c")]}, "headers= takes a mapping or a list of"),
        ({"headers": {"X-N": 1}}, "headers= names and values must be str or bytes"),
        ({"data": b"x", "json": {}}, "data=.*or json=.*not both"),
        ({"data": 123}, "data= takes bytes, a str"),
        ({"cookies": "a=b"}, "cookies= takes a mapping"),
        ({"auth": "user:pw"}, r"auth= takes a \(user, password\) pair"),
        ({"files": "f.txt"}, "files= takes a mapping"),
        ({"timeout": "5"}, "timeout= takes seconds"),
        ({"timeout": -1}, "timeout= takes seconds"),
        ({"timeout": (1, 2, 3)}, "timeout= takes seconds"),
        ({"allow_redirects": "no"}, "allow_redirects= takes True or False"),
        ({"follow": True}, "unexpected keyword argument 'follow'"),
    ],
)
def test_wrong_arguments_are_type_errors_before_io(tmp: Path, kwargs: dict[str, Any], message: str) -> None:
    never = direct_session(str(tmp / "never-connected.sock"), "uwsgi", "http://h/")  # would fail on connect
    with pytest.raises(TypeError, match=message):
        never.request("GET", "/", **kwargs)


def test_method_and_url_types() -> None:
    never = direct_session("/nonexistent/never.sock", "uwsgi", "http://h/")
    with pytest.raises(TypeError, match="method takes a string"):
        never.request(None, "/")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="url takes a string"):
        never.get(["/"])  # type: ignore[arg-type]


@given(st.lists(st.tuples(st.sampled_from(["Accept", "accept", "X-A", "x-a"]), st.text("abc", max_size=3))))
def test_header_pairs_become_one_field_per_name(pairs: list[tuple[str, str]]) -> None:
    merged = check_request_arguments({"headers": list(pairs)})["headers"]
    for name in {n.lower() for n, _ in pairs}:
        (key,) = [k for k in merged if k.lower() == name]
        assert merged[key] == ", ".join(v for n, v in pairs if n.lower() == name)


@given(st.text(st.characters(codec="latin-1", exclude_characters="#?"), max_size=20), st.text("ab=&%20", max_size=8))
def test_uwsgi_packet_splits_target_like_nginx(path: str, query: str) -> None:
    from urllib.parse import quote

    raw = "/" + quote(path, safe="/")
    url = f"http://h{raw}" + (f"?{query}" if query else "")
    try:
        packet = uwsgi_packet("GET", url, [], b"")
    except ValueError:
        return  # a path climbing above the root: nginx's 400
    _, _, pairs, _ = decode_request(packet)
    variables = dict(pairs)
    assert variables["REQUEST_URI"] == raw + (f"?{query}" if query else "")
    assert variables["QUERY_STRING"] == query
    assert "?" not in variables["PATH_INFO"] or "?" in path


def test_none_header_drops_a_session_default(uwsgi_sock: str) -> None:
    with direct_session(uwsgi_sock, "uwsgi", f"http://{HOST}/") as s:
        assert "HTTP_USER_AGENT" in environ(s.get("/"))
        assert "HTTP_USER_AGENT" not in environ(s.get("/", headers={"User-Agent": None}))


def test_old_response_name_is_a_deprecated_alias() -> None:
    import pytest_emperor

    with pytest.warns(DeprecationWarning, match="status_code, not status"):
        assert pytest_emperor.Response is requests.Response
    with pytest.raises(AttributeError):
        pytest_emperor.NoSuchName  # noqa: B018


# -- httpx over the same transports ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["uwsgi", "http"])
def test_httpx_direct_client(kind: str, request: pytest.FixtureRequest) -> None:
    httpx = pytest.importorskip("httpx")
    from pytest_emperor._protocol.httpx_transport import direct_client

    address = request.getfixturevalue("uwsgi_sock" if kind == "uwsgi" else "http_tcp")
    with direct_client(address, kind, f"http://{HOST}/", timeout=10) as client:
        response = client.post("/a%20b?x=1", json={"k": 1}, headers=[("X-Rep", "1")])
        assert isinstance(response, httpx.Response) and response.status_code == 200
        env = response.json()["environ"]
        assert (env["PATH_INFO"], env["QUERY_STRING"], env["HTTP_HOST"]) == ("/a b", "x=1", HOST)
        assert json.loads(response.json()["body"]) == {"k": 1}
        big = client.get("/", params={"size": "100000"})
        assert len(big.content) == 100000


def test_httpx_errors_name_the_address(tmp: Path) -> None:
    httpx = pytest.importorskip("httpx")
    from pytest_emperor._protocol.httpx_transport import direct_client

    missing = str(tmp / "nope.sock")
    with pytest.raises(httpx.ConnectError, match=r"unix:.*nope\.sock: cannot connect"):
        direct_client(missing, "uwsgi", "http://h/", timeout=5).get("/")
    path = str(tmp / "silent-httpx.sock")
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(path)
        listener.listen(1)
        with pytest.raises(httpx.ReadTimeout):
            direct_client(path, "uwsgi", "http://h/", timeout=0.3).get("/")
    Path(path).unlink()


@pytest.mark.parametrize("fixture", ["http_sock", "http_tcp"])
def test_many_requests_to_an_http_socket_never_hit_a_closing_connection(
    fixture: str, request: pytest.FixtureRequest
) -> None:
    # uWSGI's http-socket closes every connection unannounced: a reused pooled connection failed ~1 run in 4.
    address = request.getfixturevalue(fixture)
    with direct_session(address, "http", f"http://{HOST}/") as s:
        assert all(s.get("/", params={"size": "10"}).status_code == 200 for _ in range(300))
    if importlib.util.find_spec("httpx") is not None:
        from pytest_emperor._protocol.httpx_transport import direct_client

        with direct_client(address, "http", f"http://{HOST}/", timeout=10) as client:
            assert all(client.get("/", params={"size": "10"}).status_code == 200 for _ in range(300))
