"""``base_url`` (pytest-base-url's fixture, or pytest-playwright's own without it) is the app under test's URL
when the user gave none, so a browser test opens the app with no glue: run for real, ``pytest --emperor`` in a
subprocess on a generated app repo, with a real headless Chromium (Debian's) for the browser test."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import pytest_playwright.pytest_playwright
from browser_helpers import CHROMIUM
from components import require_component
from plugin_helpers import Sandbox, assert_nothing_left, write_app

RUN_TIMEOUT = 240
# Without pytest-base-url, pytest-playwright registers a base_url of its own (its --base-url, ini, fixture).
PROVIDERS = {"pytest-base-url": (), "pytest-playwright's own": ("-p", "no:base_url")}


@pytest.fixture
def repo(pytester: pytest.Pytester, box: Sandbox, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An app repo where pytest runs: ``app.uwsgi.ini`` + ``hello.py`` at its root."""
    root = pytester.path / "hello"
    write_app(root, box.sockets, "repo app")
    (root / "pytest.ini").write_text("[pytest]\n")
    monkeypatch.chdir(root)
    return root


def write_test(repo: Path, source: str) -> None:
    (repo / "test_app.py").write_text(textwrap.dedent(source))


def run(pytester: pytest.Pytester, box: Sandbox, *args: str) -> pytest.RunResult:
    """``pytest --emperor`` in the repo, routed to where its app binds."""
    routing = ["--emperor-server-name", r"~^(?<app>[^.]+)\.api\.localhost$",
               "--emperor-socket-template", f"{box.sockets}/$app.api.sock"]
    return pytester.runpytest_subprocess("--emperor", *routing, *args, timeout=RUN_TIMEOUT)


@pytest.mark.usefixtures("uwsgi_bin")
@pytest.mark.parametrize("provider", list(PROVIDERS))
def test_base_url_is_the_app_under_tests_url(
    pytester: pytest.Pytester, repo: Path, box: Sandbox, provider: str
) -> None:
    if provider != "pytest-base-url" and not hasattr(pytest_playwright.pytest_playwright, "_BaseUrlFallback"):
        pytest.skip("this pytest-playwright needs pytest-base-url for base_url (the last on Python 3.9 does)")
    write_test(repo, """
        import requests

        def test_base_url(base_url, app_vassal):
            assert base_url == app_vassal.url
            assert requests.get(base_url + "ping", timeout=30).text == "repo app at /ping\\n"
        """)
    result = run(pytester, box, *PROVIDERS[provider])
    result.assert_outcomes(passed=1)
    assert_nothing_left(box)


@pytest.mark.usefixtures("uwsgi_bin")
def test_a_base_url_the_user_gave_wins(pytester: pytest.Pytester, repo: Path, box: Sandbox) -> None:
    write_test(repo, """
        def test_base_url(base_url):
            assert base_url == "http://example.invalid/"
        """)
    result = run(pytester, box, "--base-url", "http://example.invalid/")
    result.assert_outcomes(passed=1)
    assert_nothing_left(box)


@pytest.mark.usefixtures("uwsgi_bin")
def test_only_the_tests_that_ask_for_base_url_deploy_the_app(
    pytester: pytest.Pytester, repo: Path, box: Sandbox
) -> None:
    # pytest-base-url checks base_url for every test: a broken app would fail tests that never use it.
    write_app(repo, box.sockets, "repo app", chdir="/does-not-exist")
    write_test(repo, """
        def test_needs_no_app():
            pass

        def test_asks_for_it(base_url):
            pass
        """)
    result = run(pytester, box)
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*ERROR at setup of test_asks_for_it*", "*chdir*"])
    assert_nothing_left(box)


@pytest.mark.usefixtures("uwsgi_bin")
def test_a_playwright_test_opens_the_app_with_no_glue(pytester: pytest.Pytester, repo: Path, box: Sandbox) -> None:
    if not CHROMIUM.exists():
        require_component("chromium", f"no {CHROMIUM} (apt-get install chromium)")
    (repo / "conftest.py").write_text(textwrap.dedent(f"""
        import pytest

        @pytest.fixture(scope="session")
        def browser_type_launch_args(browser_type_launch_args):
            return {{**browser_type_launch_args, "executable_path": "{CHROMIUM}"}}
        """))
    write_test(repo, """
        from playwright.sync_api import expect

        def test_in_a_browser(page):
            page.goto("/hello")
            expect(page.locator("body")).to_have_text("repo app at /hello")
        """)
    result = run(pytester, box)
    result.assert_outcomes(passed=1)
    assert_nothing_left(box)
