"""A requests user's first tests, written as a new user wrote them, run with ``pytest --emperor`` in a
generated app repo against the real uWSGI: each failure that user met is one of these tests, and they pass
unchanged. Also: the same against an ``http-socket`` vassal, httpx, and per-test logs."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from plugin_helpers import Sandbox, assert_nothing_left
from router_fixtures import ECHO_APP

RUN_TIMEOUT = 120

# The production style, with the echo app (answers its WSGI environ and body as JSON).
INI = """\
[uwsgi]
app_root = @(exec://dirname $(realpath %P))
chdir = %(app_root)
{socket_option} = {sockets}/%n.api.sock
wsgi-file = app.py
master = true
vacuum = true
need-app = true
processes = 2
"""

FIRST_TESTS = '''
import json

import pytest
import requests


def env(response):
    return response.json()["environ"]


def test_headers_as_a_mapping(app_vassal):
    response = app_vassal.request("GET", "/", headers={"Accept": "application/json"})
    assert env(response)["HTTP_ACCEPT"] == "application/json"


def test_headers_as_pairs(app_vassal):
    response = app_vassal.request("GET", "/", headers=[("Accept", "application/json")])
    assert env(response)["HTTP_ACCEPT"] == "application/json"


def test_params(app_vassal):
    assert env(app_vassal.request("GET", "/items", params={"limit": "1"}))["QUERY_STRING"] == "limit=1"


def test_a_str_body(app_vassal):
    response = app_vassal.request("POST", "/items", data=json.dumps({"name": "tea"}))
    assert json.loads(response.json()["body"]) == {"name": "tea"}


def test_json(app_vassal):
    response = app_vassal.request("POST", "/items", json={"name": "tea"})
    assert json.loads(response.json()["body"]) == {"name": "tea"}
    assert env(response)["CONTENT_TYPE"] == "application/json"


def test_query_in_the_path(app_vassal):
    response = app_vassal.request("GET", "/echo?x=1")
    assert (env(response)["PATH_INFO"], env(response)["QUERY_STRING"]) == ("/echo", "x=1")


def test_one_response_type(app_vassal):
    direct = app_vassal.request("GET", "/")
    routed = app_vassal.http.get("/")
    assert type(direct) is type(routed) is requests.Response
    assert direct.status_code == routed.status_code == 200
    assert direct.json()["environ"]["HTTP_HOST"] == app_vassal.host


def test_absolute_urls(app_vassal):
    assert requests.get(app_vassal.url + "health", timeout=10).status_code == 200
    through = app_vassal.http.get(app_vassal.url + "health")
    assert env(through)["PATH_INFO"] == "/health"
    assert env(app_vassal.session.get("/health"))["PATH_INFO"] == "/health"


def test_redirects(app_vassal):
    moved = app_vassal.http.get("/", params={"status": "302", "header": "Location:/there"}, allow_redirects=False)
    assert moved.status_code == 302 and moved.headers["Location"] == "/there"
    assert env(app_vassal.http.get("/", params={"status": "302", "header": "Location:/there"}))["PATH_INFO"] == "/there"


def test_wrong_arguments_say_what_to_pass(app_vassal):
    with pytest.raises(TypeError, match="use params="):
        app_vassal.request("GET", "/", query={"limit": "1"})
    with pytest.raises(TypeError, match="headers= takes a mapping"):
        app_vassal.http.get("/", headers="Accept: application/json")


def test_logs_one(app_vassal):
    app_vassal.request("GET", "/only-in-test-one")
    assert "GET /only-in-test-one" in app_vassal.log_text()


def test_logs_two(app_vassal):
    app_vassal.http.get("/only-in-test-two")
    assert "GET /only-in-test-two" in app_vassal.log_text()
    assert "/only-in-test-one" not in app_vassal.log_text()
    assert "/only-in-test-one" in app_vassal.log_text(since="deploy")
    assert not any("only-in-test-one" in line for line in app_vassal.error_lines(limit=1000))
    with pytest.raises(TypeError, match="since= takes"):
        app_vassal.log_text(since="yesterday")


def test_http_socket_vassal(deploy_app):
    vassal = deploy_app("over-http")
    response = vassal.session.post("/p", params={"q": "1"}, json=[1])
    assert (env(response)["PATH_INFO"], env(response)["QUERY_STRING"]) == ("/p", "q=1")
    assert vassal.request("GET", "/r").json()["environ"]["SERVER_PROTOCOL"] == "HTTP/1.1"


def test_httpx(app_vassal, deploy_app):
    httpx = pytest.importorskip("httpx")
    routed = app_vassal.httpx.get("/x", params={"a": "1"})
    assert isinstance(routed, httpx.Response) and env(routed)["QUERY_STRING"] == "a=1"
    direct = app_vassal.httpx_direct.post("/y?b=2", json={"k": "v"})
    assert (env(direct)["PATH_INFO"], env(direct)["QUERY_STRING"]) == ("/y", "b=2")
    assert json.loads(direct.json()["body"]) == {"k": "v"}
    assert app_vassal.httpx.get(app_vassal.url + "abs").status_code == 200
    over_http = deploy_app("over-http")
    assert env(over_http.httpx_direct.get("/h?c=3"))["QUERY_STRING"] == "c=3"


def test_timeouts(app_vassal):
    # Last: the app is still sleeping after the test, and its request line comes later.
    with pytest.raises(requests.Timeout):
        app_vassal.request("GET", "/", params={"sleep": "2"}, timeout=0.2)
'''




def write_repo(root: Path, box: Sandbox) -> None:
    """An app repo: the echo app at its root (uwsgi socket) and in ``over-http/`` (http-socket)."""
    for directory, option in ((root, "socket"), (root / "over-http", "http-socket")):
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "app.uwsgi.ini").write_text(INI.format(socket_option=option, sockets=box.sockets))
        (directory / "app.py").write_text((ECHO_APP / "app.py").read_text())
    # The router finds the sockets where this sandbox's apps bind them.
    (root / "pytest.ini").write_text(
        "[pytest]\n"
        "emperor_server_name = ~^(?<app>[^.]+)\\.api\\.localhost$\n"
        f"emperor_socket_template = {box.sockets}/$app.api.sock\n"
    )


@pytest.mark.usefixtures("uwsgi_bin")
def test_a_requests_users_first_tests_pass(
    pytester: pytest.Pytester, box: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = pytester.path / "shop"
    write_repo(root, box)
    (root / "test_first.py").write_text(textwrap.dedent(FIRST_TESTS))
    monkeypatch.chdir(root)
    result = pytester.runpytest_subprocess("--emperor", "-p", "no:cacheprovider", timeout=RUN_TIMEOUT)
    result.assert_outcomes(passed=FIRST_TESTS.count("\ndef test_"))
    assert_nothing_left(box)
