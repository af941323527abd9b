"""The engine against a real emperor: deploy, readiness, states, reload, remove, bad input, clean stop."""

from __future__ import annotations

import os
import shutil
import socket
import sys
import time
from pathlib import Path
from typing import Callable

import pytest
import requests
from conftest import HELLO

import pytest_emperor._protocol
from pytest_emperor._protocol.client import direct_session
from pytest_emperor.engine.binary import uwsgi_version
from pytest_emperor.engine.emperor import Emperor
from pytest_emperor.engine.emperor_log import EventKind
from pytest_emperor.engine.processes import processes_with_marker
from pytest_emperor.engine.runs import socket_is_live
from pytest_emperor.engine.vassal import VassalState
from pytest_emperor.engine.vassal_log import _REQUEST_LINE, LOG_SYNC_LIMIT
from pytest_emperor.errors import ConfigError, SocketInUse, VassalCursed, VassalTimeout

EXAMPLES = Path(__file__).resolve().parent.parent / "example_apps"

MakeApp = Callable[..., Path]


@pytest.mark.usefixtures("example_venvs")
@pytest.mark.parametrize(("app", "body"), [
    ("service1", b"hello from service1\n"),
    ("service2", b"hello from service2\n"),
    ("service3", b"hello from service3 at /\n"),
])
def test_example_apps_serve_through_their_own_unmodified_ini(live_emperor: Emperor, app: str, body: bytes) -> None:
    ini = EXAMPLES / app / "app.uwsgi.ini"
    before = (ini.read_bytes(), ini.stat().st_mtime_ns)
    vassal = live_emperor.deploy(EXAMPLES / app)
    assert vassal.state is VassalState.READY
    assert vassal.symlink.is_symlink() and os.readlink(vassal.symlink) == str(ini)
    # socket = /tmp/%n.api.sock, %n being the deployed (suffixed) name, exactly as uWSGI computed it
    assert vassal.socket_path == f"/tmp/{vassal.name}.api.sock" and socket_is_live(vassal.socket_path)
    assert vassal.name == app + live_emperor.name_suffix
    assert vassal.request("GET", "/").content == body
    assert vassal.pid is not None and vassal.pid in processes_with_marker(str(live_emperor.run_dir))
    assert (ini.read_bytes(), ini.stat().st_mtime_ns) == before  # the user's file is never touched


def test_seed_idiom_finds_the_app_root_through_the_symlink(live_emperor: Emperor, make_app: MakeApp) -> None:
    code = "import os\ndef application(e, sr):\n    sr('200 OK', [])\n    return [os.getcwd().encode()]\n"
    app = make_app("rooted", code=code)
    vassal = live_emperor.deploy(app, name="service1-beta")
    assert vassal.request().content == str(app).encode()
    assert vassal.socket_path == f"/tmp/service1-beta{live_emperor.name_suffix}.api.sock"


def test_http_socket_vassal_is_reached_over_http(live_emperor: Emperor, make_app: MakeApp, short_dir: Path) -> None:
    app = make_app(socket="", extra_ini=f"http-socket = {short_dir}/%n.http.sock")
    vassal = live_emperor.deploy(app)
    assert vassal.socket is not None and vassal.socket.protocol == "http"
    response = vassal.request("GET", "/over-http")
    assert (response.status_code, response.content) == (200, b"hello from /over-http")


def test_deploy_of_a_broken_config_fails_fast_with_its_error_lines(live_emperor: Emperor) -> None:
    start = time.monotonic()
    with pytest.raises(VassalCursed) as info:
        live_emperor.deploy(EXAMPLES / "broken-config", timeout=60)
    assert time.monotonic() - start < 10, "a curse must fail the wait at once, not at the timeout"
    assert "chdir(): No such file or directory" in str(info.value)
    assert any("chdir()" in line for line in info.value.lines)


def test_strict_mode_error_printed_before_logto_is_still_the_reason(live_emperor: Emperor, make_app: MakeApp
                                                                      ) -> None:
    app = make_app(extra_ini="strict = true\nwsgi-fil = app.py")
    with pytest.raises(VassalCursed, match=r"\[strict-mode\] unknown config directive: wsgi-fil"):
        live_emperor.deploy(app)


def test_cursed_vassal_is_throttled_then_blacklisted_name_can_be_redeployed(
    live_emperor: Emperor, make_app: MakeApp
) -> None:
    broken = live_emperor.deploy(EXAMPLES / "broken-config", name="phoenix", wait=False)
    broken.wait_cursed()
    live_emperor.wait_event(lambda e: e.vassal == broken.id and e.kind is EventKind.THROTTLED, since=0, timeout=30,
                            what="the throttling line")
    assert broken.curses >= 3
    assert broken.state in (VassalState.THROTTLED, VassalState.STARTING, VassalState.CURSED)
    entry = broken.blacklist or live_emperor.stats().blacklist.get(broken.id)
    broken.remove()
    assert broken.state is VassalState.STOPPED
    # The emperor still blacklists the name; a good app deployed under it must start anyway, and at once.
    assert entry is not None or broken.id in live_emperor.stats().blacklist
    start = time.monotonic()
    reborn = live_emperor.deploy(make_app(), name="phoenix", timeout=20)
    assert reborn.state is VassalState.READY
    assert time.monotonic() - start < 5


def test_reload_really_reloads(live_emperor: Emperor, make_app: MakeApp) -> None:
    def version(body: str) -> str:
        return f"def application(e, sr):\n    sr('200 OK', [])\n    return [b'{body}']\n"

    # Each version has another length: Python's own .pyc check (source mtime in seconds and size) would
    # otherwise take a same-second, same-size edit for the cached module.
    app = make_app(code=version("v1"))
    vassal = live_emperor.deploy(app)
    assert vassal.request().content == b"v1"
    (app / "app.py").write_text(version("v22"))
    vassal.reload()
    assert vassal.request().content == b"v22"
    (app / "app.py").write_text(version("v333"))
    vassal.reload()  # a second reload within the same second must work too (mtimes are whole seconds)
    assert vassal.request().content == b"v333"
    reloads = [e for e in vassal.events() if e.kind is EventKind.RELOADING]
    assert len(reloads) == 2


def test_remove_returns_once_vassal_and_socket_are_gone(live_emperor: Emperor, make_app: MakeApp) -> None:
    vassal = live_emperor.deploy(make_app())
    pid, socket_path = vassal.pid, vassal.socket_path
    assert pid is not None and socket_path is not None
    vassal.remove()
    assert vassal.state is VassalState.STOPPED
    assert not os.path.exists(socket_path)
    assert pid not in processes_with_marker(str(live_emperor.run_dir))
    assert vassal.id not in live_emperor.stats().vassals


def test_remove_cleans_the_socket_of_a_config_without_vacuum(live_emperor: Emperor, make_app: MakeApp) -> None:
    app = make_app()
    ini = app / "app.uwsgi.ini"
    ini.write_text(ini.read_text().replace("vacuum = true\n", ""))
    vassal = live_emperor.deploy(app)
    assert vassal.socket_path is not None
    vassal.remove()
    assert not os.path.exists(vassal.socket_path)


def test_live_socket_of_someone_else_is_an_error_and_untouched(live_emperor: Emperor, make_app: MakeApp,
                                                               short_dir: Path) -> None:
    app = make_app(extra_ini=f"socket = {short_dir}/%n.sock")  # a second socket: both are checked
    path = short_dir / f"app{live_emperor.name_suffix}.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(str(path))
        server.listen()
        with pytest.raises(SocketInUse, match=rf"app.uwsgi.ini:\d+: .*would bind {path}"):
            live_emperor.deploy(app)
        assert socket_is_live(path)
    assert not any(live_emperor.vassal_dir.iterdir())


@pytest.mark.parametrize(
    "line", ["socket = /tmp/pe-%h-%n.sock", "uwsgi-socket = /tmp/pe-%h-%i-%n.sock", "socket = /tmp/pe-%V-%n.sock"]
)
def test_the_deploy_plan_predicts_the_socket_uwsgi_binds(live_emperor: Emperor, make_app: MakeApp, line: str) -> None:
    # Every magic variable (%h the hostname, %i the inode of the vassal's link, %V the binary's version): the
    # deploy waits on a probe through the predicted socket, and uWSGI's own bind must be that path.
    vassal = live_emperor.deploy(make_app("magic", extra_ini=line, socket=""))
    template = line.split(" = ")[1]
    expected = (
        template.replace("%h", socket.gethostname())
        .replace("%i", str(os.lstat(vassal.symlink).st_ino))
        .replace("%V", uwsgi_version(live_emperor.uwsgi))
        .replace("%n", vassal.name)
    )
    assert vassal.socket is not None and vassal.socket.address == expected
    assert socket_is_live(expected)
    assert vassal.request("GET", "/").status_code == 200
    vassal.remove()
    assert not os.path.exists(expected)


def test_socket_path_over_the_af_unix_limit_is_a_clear_error(live_emperor: Emperor, make_app: MakeApp) -> None:
    app = make_app(socket="/tmp/" + "d" * 90 + "/%n.api.sock")
    with pytest.raises(ConfigError, match=r"app.uwsgi.ini:\d+: socket path '/tmp/d+/app-\w+.api.sock' is 1\d\d "
                                          r"bytes, over the AF_UNIX limit of 107"):
        live_emperor.deploy(app)


@pytest.mark.parametrize(("name", "why"), [
    ("Upper", "cannot be routed"), ("a.b", "cannot be routed"), ("x" * 64, "cannot be routed"),
    ("-lead", "cannot be routed"),
])
def test_unroutable_names_are_refused(live_emperor: Emperor, make_app: MakeApp, name: str, why: str) -> None:
    with pytest.raises(ConfigError, match=why):
        live_emperor.deploy(make_app(), name=name)


def test_missing_app_and_dangling_symlink(live_emperor: Emperor, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"has no app\.uwsgi\.ini"):
        live_emperor.deploy(tmp_path)
    with pytest.raises(ConfigError, match="does not exist"):
        live_emperor.deploy(tmp_path / "nowhere")
    dangling = tmp_path / "app.uwsgi.ini"
    dangling.symlink_to(tmp_path / "gone.ini")
    with pytest.raises(ConfigError, match="dangling symlink"):
        live_emperor.deploy(tmp_path)


def test_ini_without_a_uwsgi_section_is_refused(live_emperor: Emperor, tmp_path: Path) -> None:
    (tmp_path / "app.uwsgi.ini").write_text("[app]\nsocket = /tmp/%n.api.sock\nmodule = app\n")
    with pytest.raises(ConfigError, match=r"app\.uwsgi\.ini:1: no option in a \[uwsgi\] section"):
        live_emperor.deploy(tmp_path)
    assert not any(live_emperor.vassal_dir.iterdir())


def test_wait_ready_timeout_says_what_was_awaited(live_emperor: Emperor, make_app: MakeApp) -> None:
    code = "import threading\nthreading.Event().wait()\n"  # the app never finishes importing
    vassal = live_emperor.deploy(make_app(code=code), wait=False)
    with pytest.raises(VassalTimeout, match=r"timed out after 1.5s waiting for vassal app-\w+ to be ready"):
        vassal.wait_ready(timeout=1.5)


def test_stop_leaves_nothing(uwsgi_bin: Path, make_app: MakeApp) -> None:
    with Emperor(uwsgi_bin) as emperor:
        vassals = [emperor.deploy(make_app(f"app{i}")) for i in range(2)]
        run_dir, sockets = emperor.run_dir, [v.socket_path for v in vassals]
        stats_path = emperor.stats_path
    assert processes_with_marker(str(run_dir)) == []
    assert not run_dir.exists() and not stats_path.exists()
    assert not any(os.path.exists(s) for s in sockets if s)


def test_keep_keeps_the_run_dir_with_its_logs(uwsgi_bin: Path, make_app: MakeApp) -> None:
    with Emperor(uwsgi_bin, keep=True) as emperor:
        vassal = emperor.deploy(make_app())
        vassal.request("GET", "/kept")
        vassal.sync_log()
    try:
        log = vassal.log_path.read_text()
        assert "GET /kept" in log, log
        assert "has been spawned" in emperor.log_path.read_text()
        assert processes_with_marker(str(emperor.run_dir)) == []
    finally:
        shutil.rmtree(emperor.run_dir)


def test_vassal_is_reached_through_the_router_with_its_host(live_emperor: Emperor, make_app: MakeApp) -> None:
    vassal = live_emperor.deploy(make_app(), name="routed")
    assert vassal.host == f"routed{live_emperor.name_suffix}.api.localhost"
    response = vassal.http.get("/through/the/router")
    assert (response.status_code, response.content) == (200, b"hello from /through/the/router")
    assert live_emperor.front is not None
    host, port = live_emperor.front().tcp_address
    assert vassal.url == f"http://{vassal.host}:{port}/"
    by_tcp = requests.get(f"http://{host}:{port}/x", headers={"Host": vassal.host}, timeout=10)
    assert by_tcp.content == b"hello from /x"
    unknown = requests.get(f"http://{host}:{port}/", headers={"Host": "nobody.api.localhost"}, timeout=10)
    assert unknown.status_code == 404 and f">{vassal.name}</a>" in unknown.text  # the apps deployed are listed


# Each request's log line is written 0.3 s after its response (uwsgi.after_req_hook runs before log_request,
# once the connection is closed), so a log read right after a response races with it.
LATE_LOG_APP = (
    HELLO
    + """
import time
import uwsgi

uwsgi.after_req_hook = lambda: time.sleep(0.3)
"""
)


def test_log_text_waits_for_the_line_of_each_answered_request(live_emperor: Emperor, make_app: MakeApp) -> None:
    vassal = live_emperor.deploy(make_app(code=LATE_LOG_APP, extra_ini="processes = 1"))
    vassal.request("GET", "/first")
    assert "GET /first" in vassal.log_text()
    # A client the vassal object does not know of (curl, plain requests) logs lines too: its line must not be
    # taken for the line of the next request (with one worker, it is written before that request is served).
    plain = direct_session(vassal.socket.connect_address(), "uwsgi", f"http://{vassal.host}/")
    assert plain.get("/plain").status_code == 200
    vassal.request("GET", "/second?x=1")
    text = vassal.log_text()
    assert "GET /plain" in text and "GET /second?x=1" in text, text


def test_log_text_does_not_wait_when_request_logging_is_off(live_emperor: Emperor, make_app: MakeApp) -> None:
    vassal = live_emperor.deploy(make_app(extra_ini="disable-logging = true"))
    vassal.request("GET", "/quiet")
    started = time.monotonic()
    assert "GET /quiet" not in vassal.log_text()
    assert time.monotonic() - started < LOG_SYNC_LIMIT / 2


def test_httpx_without_httpx_says_how_to_get_it(
    live_emperor: Emperor, make_app: MakeApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    vassal = live_emperor.deploy(make_app(), wait=False)
    monkeypatch.setitem(sys.modules, "httpx", None)  # what `import httpx` meets where it is not installed
    monkeypatch.delitem(sys.modules, "pytest_emperor._protocol.httpx_transport", raising=False)
    monkeypatch.delattr(pytest_emperor._protocol, "httpx_transport", raising=False)  # else `from` finds it there
    with pytest.raises(ModuleNotFoundError, match=r"vassal\.httpx needs httpx.*pip install 'pytest-emperor\[httpx\]'"):
        vassal.httpx  # noqa: B018


@pytest.mark.parametrize(
    "line",
    [
        b"[pid: 9|app: 0|req: 1/1] 127.0.0.1 () {36 vars in 466 bytes} [Mon Nov 30 22:53:30 2026] GET /x?y=1 => "
        b"generated 2 bytes in 0 msecs (HTTP/1.1 200) 2 headers in 83 bytes (1 switches on core 0)",
        # no app loaded (a failed import without need-app): uWSGI 2.0.31's own line
        b"[pid: 25214|app: -1|req: -1/1] 127.0.0.1 () {36 vars in 466 bytes} [Mon Nov 30 22:53:30 2026] GET / => "
        b"generated 21 bytes in 0 msecs (HTTP/1.1 500) 2 headers in 83 bytes (0 switches on core 0)",
    ],
)
def test_request_log_lines_are_recognised(line: bytes) -> None:
    # an unrecognised line makes log_text() wait LOG_SYNC_LIMIT for it, then stop waiting for that vassal
    match = _REQUEST_LINE.search(line)
    assert match is not None and match[1] == b"GET" and match[2] in (b"/x?y=1", b"/")


def test_a_bare_emperor_s_own_router_is_deprecated(uwsgi_bin: Path, make_app: MakeApp) -> None:
    # The router is the front door's now; a bare Emperor that starts its own keeps working for one release.
    with pytest.warns(DeprecationWarning, match=r"Emperor\(router_options=\.\.\.\) is deprecated"):
        emperor = Emperor(uwsgi_bin, router_options={"workers": 1}, timeout=30)
    with emperor:
        vassal = emperor.deploy(make_app())
        with pytest.warns(DeprecationWarning, match="Emperor.router is deprecated"):
            assert vassal.http.get("/x").content == b"hello from /x"
        with pytest.warns(DeprecationWarning, match="Vassal.emperor is deprecated"):
            assert vassal.emperor is emperor
    assert not emperor.running
