"""``emperor-dev up``'s page, looked at as a person does: a real ``up`` (subprocess, real emperor and nginx) and a
real headless Chromium (Debian's, through Playwright) on ``http://localhost:<port>/``. And the page's parts that
need no browser: its document, the request counts it reads, the processes it reads memory of."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from browser_helpers import chromium, see, tab
from dev_helpers import EXAMPLES, Up, assert_nothing_left, cli, copy_example, names_for_test, up_process, workspace

from pytest_emperor._protocol.client import direct_session
from pytest_emperor.dev.control import AppStatus
from pytest_emperor.dev.logs import LogLine
from pytest_emperor.dev.page import UpPage, process_facts
from pytest_emperor.engine.emperor_log import EventKind
from pytest_emperor.engine.processes import is_sleeping
from pytest_emperor.routing.route_table import OWN_PAGE_URI, RouteTable
from pytest_emperor.routing.routes import RouteMap

if TYPE_CHECKING:
    from playwright.sync_api import Locator, Page

__all__ = ["chromium", "tab", "up_process", "workspace"]  # fixtures

# Untrusted text as an app's error line: it must show as these characters, and never run or become an element.
HOSTILE = (
    """<img src=x onerror="document.body.dataset.pwned='img'"><script>document.body.dataset.pwned='script'</script>"""
)


def row(page: Page, name: str, cell: str) -> Locator:
    return page.locator(f'tr.app[data-app="{name}"] td.{cell}')


def test_the_page_shows_every_app_a_fixed_app_turns_ready_without_a_reload_and_log_lines_stay_text(
    workspace: Path, up_process: list[Up], tab: Page, tmp_path: Path
) -> None:
    good, broken = names_for_test()
    hostile = f"x{good}"
    copy_example(workspace, "service3", "service3")
    app = copy_example(workspace, "broken-config", "broken-config")
    shutil.copy(EXAMPLES / "service3" / "hello.py", app / "hello.py")
    bad = copy_example(workspace, "service3", "hostile")
    (bad / "hello.py").write_text(f"raise RuntimeError({HOSTILE!r})\n")
    up = Up(workspace, f"{good}=service3", f"{broken}=broken-config", f"{hostile}=hostile")
    up_process.append(up)
    up.started()
    assert up.instance is not None
    port = up.instance.router_port
    assert up.get(good, "/one")[0] == 200

    response = tab.goto(f"http://localhost:{port}/")
    assert response is not None and response.status == 200
    statuses = {a["name"]: a for a in json.loads(cli(workspace, "status", "--json").stdout)["apps"]}
    # Every app, in up's order, each with what `status` says of it.
    see(tab, tab.locator("tr.app td.name"), [good, broken, hostile], "the three apps' rows", tmp_path)
    see(tab, row(tab, good, "state"), "ready", f"{good} ready", tmp_path)
    see(tab, row(tab, good, "pid"), str(statuses[good]["pid"]), f"{good}'s pid", tmp_path)
    link = row(tab, good, "url").locator("a")
    assert link.get_attribute("href") == statuses[good]["url"] == f"http://{good}.api.localhost:{port}/"
    see(tab, row(tab, good, "requests"), re.compile(r"^[1-9]\d*$"), f"{good}'s request count", tmp_path)
    see(tab, row(tab, good, "memory"), re.compile(r"^\d+\.\d MB$"), f"{good}'s memory", tmp_path)
    see(tab, row(tab, good, "up"), re.compile(r"^\d+[smhd]"), f"{good}'s uptime", tmp_path)
    for name in (broken, hostile):
        see(tab, row(tab, name, "state"), re.compile("^(cursed|throttled)$"), f"{name} failing", tmp_path)
    errors = tab.locator(f'tr.errors[data-app="{broken}"] pre')
    see(tab, errors, re.compile(r"chdir\(\): No such file or directory"), f"{broken}'s error lines", tmp_path)
    see(tab, tab.locator("#summary"), re.compile(rf"^3 apps: .*1 ready.*{broken}.*{hostile}"), "the summary", tmp_path)
    see(tab, tab.locator("#events li").first, re.compile(r"\d\d:\d\d:\d\d  \S+: \S"), "an emperor event", tmp_path)

    # The hostile app's traceback line shows as its text: no element was made of it, no script of it ran.
    hostile_errors = tab.locator(f'tr.errors[data-app="{hostile}"] pre')
    see(tab, hostile_errors, re.compile(re.escape(HOSTILE)), f"{hostile}'s error line, as text", tmp_path)
    assert tab.locator("tr.errors img, tr.errors script, #events img, #events script").count() == 0
    assert tab.evaluate("document.body.dataset.pwned") is None

    # Fixed, the broken app's row turns ready in the page as it is: no reload.
    tab.evaluate("window.loadedOnce = true")
    ini = app / "app.uwsgi.ini"
    ini.write_text(ini.read_text().replace("%(app_root)/does-not-exist", "%(app_root)"))
    see(tab, row(tab, broken, "state"), "ready", f"{broken} ready once its ini is fixed", tmp_path)
    assert tab.evaluate("window.loadedOnce") is True
    see(tab, tab.locator(f'tr.errors[data-app="{broken}"] pre'), "", f"{broken}'s error lines gone", tmp_path)
    assert tab.locator(f'tr.errors[data-app="{broken}"]').is_hidden()

    # up stopped: the page says it is not answering rather than showing the last states as current.
    up.stopped(signal.SIGINT)
    see(tab, tab.locator("#connection"), re.compile("emperor-dev up is not answering"), "the stop noticed", tmp_path)
    assert_nothing_left(up, [good, broken, hostile])


def test_an_unknown_host_lists_the_running_apps_and_only_this_machines_names_get_the_page(
    workspace: Path, up_process: list[Up], tab: Page, tmp_path: Path
) -> None:
    good, other = names_for_test()
    copy_example(workspace, "service3", "service3")
    up = Up(workspace, f"{good}=service3", f"{other}=service3")
    up_process.append(up)
    up.started()
    assert up.instance is not None
    port = up.instance.router_port

    response = tab.goto(f"http://nosuch-{good}.api.localhost:{port}/")
    assert response is not None and response.status == 404
    see(tab, tab.locator("p").first, f"no such app: Host 'nosuch-{good}.api.localhost' routes to no app of this run.",
        "the 404 page", tmp_path)
    see(tab, tab.locator("li a"), sorted([good, other]), "the running apps", tmp_path)
    assert tab.locator(f"li a:text-is('{good}')").get_attribute("href") == f"http://{good}.api.localhost:{port}/"
    tab.locator(f"a[href='http://localhost:{port}/']").click()  # on to the page, where their states are
    see(tab, tab.locator("tr.app td.state"), ["ready", "ready"], "both apps ready on the page", tmp_path)

    # A name from outside (a DNS rebinding of a web page's own name to this machine) gets the 404 page, not the
    # page and its document; this machine's names do, with headers that forbid any script but its own.
    with direct_session(("127.0.0.1", port), "http", "http://rebound.example/", timeout=30) as session:
        for path in ("/", "/up.json", "/page.js"):
            foreign = session.get(path)
            assert foreign.status_code == 404 and "routes to no app of this run" in foreign.text, path
    with direct_session(("127.0.0.1", port), "http", f"http://localhost:{port}/", timeout=30) as session:
        own = session.get("/up.json")
        assert own.status_code == 200 and own.headers["Content-Type"] == "application/json"
        assert [app["name"] for app in own.json()["apps"]] == [good, other]
        assert own.headers["Cache-Control"] == "no-store" and own.headers["X-Content-Type-Options"] == "nosniff"
        page = session.get("/")
        assert "script-src 'self'" in page.headers["Content-Security-Policy"] and "<table id=\"apps\">" in page.text
        assert session.get("/page.js").headers["Content-Type"] == "text/javascript"
        assert session.post("/up.json").status_code == 405  # nothing to act on: the page only reads
    up.stopped(signal.SIGTERM)
    assert_nothing_left(up, [good, other])


# -- without a browser ------------------------------------------------------------------------------------------


def test_the_document_counts_requests_from_request_lines_and_keeps_events(tmp_path: Path) -> None:
    # An app's master, whose memory stays put between two looks once it says so: a `sleep` looked at before its
    # exec (or while loading) had another size at the second look (the document was rewritten, 1 CI env in 5).
    code = "import sys; print('ready', flush=True); sys.stdin.read()"
    master = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert master.stdout is not None and master.stdout.readline() == b"ready\n"
        deadline = time.monotonic() + 10
        while not is_sleeping(master.pid) and time.monotonic() < deadline:  # blocked in its read, not in Python
            time.sleep(0.005)
        check_the_document(tmp_path, master.pid)
    finally:
        master.kill()
        master.wait()


def check_the_document(tmp_path: Path, master: int) -> None:
    apps = [AppStatus("a", "http://a.api.localhost:1/", "ready", master, "/x/app.uwsgi.ini", None, None, [], True)]
    page = UpPage(tmp_path / "page", lambda: apps, {"pid": 1}).install()
    assert json.loads((page.directory / "up.json").read_text()) == {"up": {"pid": 1}, "apps": [], "events": []}
    assert sorted(p.name for p in page.directory.iterdir()) == ["index.html", "page.css", "page.js", "up.json"]
    page.feed([
        LogLine("a", "[pid: 7|app: 0|req: 1/41] 127.0.0.1 () {36 vars in 462 bytes} [date] GET / => generated 2 bytes"),
        LogLine("a", "[pid: 8|app: 0|req: 3/42] 127.0.0.1 () {36 vars in 462 bytes} [date] GET /x => generated 2"),
        LogLine("a", "a line of its own that says req: 1/99]"),
        LogLine("a", "ready", EventKind.READY),
    ])
    assert page.refresh() is True
    written = json.loads((page.directory / "up.json").read_text())
    assert written["apps"][0]["requests"] == 42
    assert written["apps"][0]["memory"] > 0 and abs(written["apps"][0]["started"] - time.time()) < 3600 * 24 * 365
    assert [(e["app"], e["text"], e["kind"]) for e in written["events"]] == [("a", "ready", "ready")]
    assert page.refresh() is False  # nothing changed: not rewritten
    assert page.writes == 2
    # At start, the count already logged: the latest request line near the end of each app's log.
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "a.log").write_text("[pid: 7|app: 0|req: 1/7] 127.0.0.1 () GET /\n" + "x" * 100_000 + "\n"
                                "[pid: 7|app: 0|req: 2/8] 127.0.0.1 () GET /\nnot a request line\n")
    page.count_logged(logs)
    page.refresh()
    assert json.loads((page.directory / "up.json").read_text())["apps"][0]["requests"] == 8


def test_the_page_reads_nothing_of_another_users_process() -> None:
    if os.getuid() != 0:
        pytest.skip("needs root, to run a process as another user")
    # Popen returns once the child runs `sleep` as that user.
    other = subprocess.Popen(["sleep", "60"], user=65534, group=65534, extra_groups=[])
    try:
        assert os.stat(f"/proc/{other.pid}").st_uid == 65534
        assert process_facts(other.pid) is None
        assert process_facts(os.getpid()) is not None
    finally:
        other.kill()
        other.wait()



def test_only_a_router_given_a_page_serves_one(tmp_path: Path) -> None:
    table = RouteTable(tmp_path / "routes", RouteMap.for_domain())
    table.serve_on(8080)  # the plugin's router: this machine's names get the 404 page like any other Host
    assert OWN_PAGE_URI not in table.server_directives()
    assert "http://localhost:8080/" not in (tmp_path / "routes" / "no-such-app.html").read_text()
    table.serve_on(8080, tmp_path / "page")
    assert f'alias "{tmp_path / "page"}/";' in table.server_directives()
    assert 'Their states and errors: <a href="http://localhost:8080/">' in (
        tmp_path / "routes" / "no-such-app.html"
    ).read_text()
