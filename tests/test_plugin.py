"""The pytest plugin as users run it: ``pytest --emperor`` in a generated app repo, with the real uWSGI.

Each test writes a small repo in the production style into ``pytester.path`` (``app.uwsgi.ini`` at its root, a
WSGI ``hello.py``, a ``pytest.ini``, test files using the fixtures) and runs pytest on it in a subprocess, in
a private sandbox (plugin_helpers.py), then checks what the run reported and that it left nothing behind.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import stat
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from plugin_helpers import SYNC_PY, Run, Sandbox, assert_nothing_left, report_sections, write_app

from pytest_emperor.engine.emperor import Emperor
from pytest_emperor.engine.naming import routable_name

# Generous for a loaded 2-core machine: a run here takes 3-15 s.
RUN_TIMEOUT = 90

# Publishes where its vassal lives, then blocks until the outer test signals this pytest.
BLOCKING_TEST = """
import os
import re
import threading

from pe_sync import publish


def test_blocks(app_vassal, emperor):
    assert app_vassal.request("GET", "/").status_code == 200
    publish(os.environ["PE_RUN"], run_dir=str(emperor.run_dir), socket=app_vassal.socket_path)
    threading.Event().wait()
"""

# Passes on its own: what a later run of the same repo runs.
PASSING_TEST = """
def test_answers(app_vassal):
    assert app_vassal.request("GET", "/").content == b"repo app at /\\n"
"""




@pytest.fixture
def repo(pytester: pytest.Pytester, box: Sandbox, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A generated app repo, where pytest runs: ``app.uwsgi.ini`` + ``hello.py`` at its root, ``other/`` a second
    app. Named ``hello``: pytester's own directory names (the test's name) are too long for a DNS label."""
    root = pytester.path / "hello"
    write_app(root, box.sockets, "repo app")
    write_app(root / "other", box.sockets, "other app")
    (root / "pe_sync.py").write_text(SYNC_PY)
    (root / "pytest.ini").write_text("[pytest]\n")
    monkeypatch.chdir(root)  # runpytest_subprocess runs in the current directory
    return root


def write_tests(repo: Path, **files: str) -> None:
    """Write test modules ``<name>.py`` into ``repo``."""
    for name, source in files.items():
        (repo / f"{name}.py").write_text(textwrap.dedent(source))


@pytest.fixture
def runs(box: Sandbox) -> Iterator[list[Run]]:
    """The Popen-started runs of a test; any still running at its end is killed."""
    started: list[Run] = []
    yield started
    for run in started:
        run.kill()


def start(runs: list[Run], box: Sandbox, repo: Path, name: str, *args: str) -> Run:
    """Start ``pytest --emperor *args`` in ``repo`` as run ``name`` (its ``PE_RUN``), killed after the test."""
    run = Run.start(box, repo, ["--emperor", *args], name)
    runs.append(run)
    return run


def test_a_failed_app_fails_every_test_the_same_way(pytester: pytest.Pytester, repo: Path, box: Sandbox) -> None:
    write_tests(repo, test_app="""
        import pytest

        @pytest.mark.parametrize("n", range(4))
        def test_uses_app_vassal(app_vassal, n):
            pass
        """
    )
    result = pytester.runpytest_subprocess("--emperor", "--emperor-app", "nope", "--tb=long", timeout=RUN_TIMEOUT)
    result.assert_outcomes(errors=4)
    reports = re.split(r"_+ ERROR at setup of test_uses_app_vassal", result.stdout.str())[1:]
    assert len(reports) == 4 and all("nope does not exist" in r for r in reports)
    # Raised afresh each time: the stored error must not carry every earlier test's frames along.
    frames = [r.count("pytest_emperor/plugin/") for r in reports]
    assert len(set(frames)) == 1 and frames[0] > 0, frames
    assert_nothing_left(box)


@pytest.mark.usefixtures("uwsgi_bin")
def test_emperor_run_passes_and_leaves_nothing(pytester: pytest.Pytester, repo: Path, box: Sandbox) -> None:
    write_tests(repo, test_app="""
        from pe_sync import publish

        def test_app_vassal_answers(app_vassal, emperor):
            response = app_vassal.request("GET", "/ping")
            assert response.status_code == 200
            assert response.content == b"repo app at /ping\\n"
            publish("app", name=app_vassal.name, socket=app_vassal.socket_path, run_dir=str(emperor.run_dir))

        def test_deploy_second_app(deploy_app):
            other = deploy_app("other")
            assert other.request("GET", "/x").content == b"other app at /x\\n"
            publish("other", name=other.name, socket=other.socket_path)
        """
    )
    result = pytester.runpytest_subprocess("--emperor", timeout=RUN_TIMEOUT)
    result.assert_outcomes(passed=2)
    records = box.records()
    # The run honoured TMPDIR: otherwise the leftover check below would look in the wrong place.
    assert Path(records["app"].pop("run_dir")).parent == box.runs_root
    assert records["app"]["name"].startswith(routable_name(repo.name) + "-")
    assert records["other"]["name"].startswith("other-")
    for record in records.values():
        assert record["socket"] == f"{box.sockets}/{record['name']}.api.sock"
    assert_nothing_left(box)


def test_without_emperor_option_tests_are_skipped(
    pytester: pytest.Pytester, repo: Path, box: Sandbox
) -> None:
    write_tests(repo, test_app="""
        def test_uses_app_vassal(app_vassal):
            pass

        def test_uses_deploy_app(deploy_app):
            pass

        def test_uses_emperor(emperor):
            pass
        """
    )
    result = pytester.runpytest_subprocess("-rs", timeout=RUN_TIMEOUT)
    result.assert_outcomes(skipped=3)
    result.stdout.fnmatch_lines(["SKIPPED [[]1[]] test_app.py:*: *--emperor*"] * 3)
    result.stdout.fnmatch_lines(["pytest-emperor: 3 skipped, each needs a uWSGI emperor: run pytest with --emperor"])
    assert not box.runs_root.exists(), "an emperor run was started without --emperor"
    assert_nothing_left(box)


@pytest.mark.usefixtures("uwsgi_bin")
def test_failing_test_report_has_its_vassal_log_and_emperor_lines(
    pytester: pytest.Pytester, repo: Path, box: Sandbox
) -> None:
    write_tests(repo, test_report="""
        from pe_sync import publish

        def test_earlier(app_vassal):
            assert app_vassal.request("GET", "/log", params="logged-by-the-earlier-test").status_code == 200
            assert "app-log: logged-by-the-earlier-test" in app_vassal.log_text()  # so its absence below counts

        def test_fails(app_vassal, deploy_app):
            assert app_vassal.request("GET", "/log", params="logged-by-the-failing-test").status_code == 200
            other = deploy_app("other")
            publish("failing", app=app_vassal.name, other=other.name)
            raise AssertionError("failing on purpose")
        """
    )
    result = pytester.runpytest_subprocess("--emperor", timeout=RUN_TIMEOUT)
    result.assert_outcomes(passed=1, failed=1)
    names = box.records()["failing"]
    sections = report_sections(result.stdout.lines)
    log = sections.get(f"vassal {names['app']} log")
    assert log is not None, f"no vassal log section; sections: {list(sections)}"
    assert "app-log: logged-by-the-failing-test" in log
    assert "app-log: logged-by-the-earlier-test" not in log, "the section has lines of an earlier test"
    about = sections.get(f"emperor about {names['other']}")
    assert about is not None, f"no emperor section; sections: {list(sections)}"
    assert f"vassal {names['other']}.ini is ready to accept requests" in about
    assert_nothing_left(box)


@pytest.mark.usefixtures("uwsgi_bin")
def test_a_vassal_of_a_module_scoped_fixture_has_per_test_logs_and_report(
    pytester: pytest.Pytester, repo: Path, box: Sandbox
) -> None:
    # Deployed once per module with emperor.deploy(), not by this plugin's fixtures: each test still sees only its
    # own lines, and a failing test that takes the vassal as an argument gets its log section.
    write_tests(repo, test_module="""
        import pytest

        from pe_sync import publish

        @pytest.fixture(scope="module")
        def other(emperor):
            vassal = emperor.deploy("other")
            yield vassal
            vassal.remove()

        def test_earlier(other):
            assert other.request("GET", "/log", params="logged-by-the-earlier-test").status_code == 200
            assert "app-log: logged-by-the-earlier-test" in other.log_text()

        def test_fails(other):
            assert "logged-by-the-earlier-test" not in other.log_text()
            assert "logged-by-the-earlier-test" in other.log_text(since="deploy")
            assert other.request("GET", "/log", params="logged-by-the-failing-test").status_code == 200
            publish("failing", name=other.name)
            raise AssertionError("failing on purpose")
        """
    )
    result = pytester.runpytest_subprocess("--emperor", timeout=RUN_TIMEOUT)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*AssertionError: failing on purpose*"])
    log = report_sections(result.stdout.lines).get(f"vassal {box.records()['failing']['name']} log")
    assert log is not None and "app-log: logged-by-the-failing-test" in log, log
    assert "logged-by-the-earlier-test" not in log
    assert_nothing_left(box)


@pytest.mark.usefixtures("uwsgi_bin")
def test_failing_test_report_has_the_request_lines_uwsgi_logs_after_responding(
    pytester: pytest.Pytester, repo: Path, box: Sandbox
) -> None:
    """uWSGI logs a request's line after it has closed the connection; with work after the response ("late-log",
    see plugin_helpers.HELLO_PY) that line comes half a second late, when the next test has begun. It belongs to
    the test that made the request, not to the next one."""
    write_tests(repo, test_report="""
        import time

        from pe_sync import publish

        def test_earlier(app_vassal):
            assert app_vassal.request("GET", "/", params="late-log-of-the-earlier-test").status_code == 200

        def test_fails(app_vassal):
            publish("failing", name=app_vassal.name)
            # Until the earlier test's request line is in the log (polled: no file events in the stdlib).
            deadline = time.monotonic() + 30
            while "late-log-of-the-earlier-test" not in app_vassal.log_text(0):
                assert time.monotonic() < deadline, "the earlier request's line never came"
                time.sleep(0.01)
            assert app_vassal.request("GET", "/", params="late-log-of-the-failing-test").status_code == 200
            raise AssertionError("failing on purpose")
        """
    )
    result = pytester.runpytest_subprocess("--emperor", timeout=RUN_TIMEOUT)
    result.assert_outcomes(passed=1, failed=1)
    name = box.records()["failing"]["name"]
    log = report_sections(result.stdout.lines).get(f"vassal {name} log", "")
    has = {"its own request's line": "late-log-of-the-failing-test" in log,
           "the earlier test's request line": "late-log-of-the-earlier-test" in log}
    assert has == {"its own request's line": True, "the earlier test's request line": False}, log
    assert_nothing_left(box)


def test_missing_uwsgi_binary_is_a_usage_error(pytester: pytest.Pytester, repo: Path, box: Sandbox) -> None:
    write_tests(repo, test_app=PASSING_TEST)
    result = pytester.runpytest_subprocess(
        "--emperor", "--emperor-uwsgi", "/nonexistent", timeout=RUN_TIMEOUT
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*/nonexistent*does not exist*", "*pip install uwsgi*"])
    assert_nothing_left(box)


def test_uwsgi_script_is_rejected(
    pytester: pytest.Pytester, repo: Path, box: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What the pyuwsgi wheel installs as `uwsgi`: a Python console script, with which every vassal is cursed.
    script = pytester.path / "uwsgi"
    script.write_text(f"#!{sys.executable}\nimport sys\nfrom pyuwsgi import run\nsys.exit(run())\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("EMPEROR_UWSGI", str(script))
    write_tests(repo, test_app=PASSING_TEST)
    result = pytester.runpytest_subprocess("--emperor", timeout=RUN_TIMEOUT)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*{script}*EMPEROR_UWSGI*not the compiled uWSGI*", "*pip install uwsgi*"])
    assert_nothing_left(box)


XDIST_TEST = """
import os
import re

from pe_sync import await_records, publish


def test_same_app(app_vassal, deploy_app, request):
    other = deploy_app("other")
    me = os.environ["PYTEST_XDIST_WORKER"]
    mine = {app_vassal.socket_path, other.socket_path}
    publish(request.path.stem, worker=me, sockets=sorted(mine))
    # Hold on until the other worker has its vassals up too, so both sets are live at the same time.
    peers = await_records(lambda r: r["worker"] != me, "a test of the other worker to have its vassals ready")
    for peer in peers:
        assert not mine & set(peer["sockets"]), f"socket clash with {peer}"
    assert app_vassal.request("GET", "/").content == b"repo app at /\\n"
    assert other.request("GET", "/").content == b"other app at /\\n"
"""


@pytest.mark.usefixtures("uwsgi_bin")
def test_xdist_workers_never_share_a_socket(pytester: pytest.Pytester, repo: Path, box: Sandbox) -> None:
    files = {f"test_w{i}": XDIST_TEST for i in range(4)}
    write_tests(repo, **files)
    result = pytester.runpytest_subprocess("--emperor", "-n", "2", timeout=RUN_TIMEOUT)
    result.assert_outcomes(passed=4)
    records = box.records()
    assert sorted(records) == sorted(files)
    owners: dict[str, set[str]] = {}
    for record in records.values():
        for socket in record["sockets"]:
            owners.setdefault(socket, set()).add(record["worker"])
    assert {w for ws in owners.values() for w in ws} == {"gw0", "gw1"}
    shared = {s: ws for s, ws in owners.items() if len(ws) > 1}
    assert not shared, f"sockets used by more than one worker: {shared}"
    assert_nothing_left(box)


OVERLAP_TEST = """
import os
import re

from pe_sync import await_records, publish


def test_overlaps(app_vassal):
    me, peer = os.environ["PE_RUN"], os.environ["PE_PEER"]
    publish(me, run=me, socket=app_vassal.socket_path)
    [other] = await_records(lambda r: r.get("run") == peer, f"run {peer} to have its vassal ready")
    assert other["socket"] != app_vassal.socket_path
    # Still ours once the other run's vassal is up: it did not take over our socket.
    assert app_vassal.request("GET", "/").content == b"repo app at /\\n"
"""


@pytest.mark.usefixtures("uwsgi_bin")
def test_two_concurrent_runs_of_one_repo(
    pytester: pytest.Pytester, repo: Path, box: Sandbox, runs: list[Run], monkeypatch: pytest.MonkeyPatch
) -> None:
    write_tests(repo, test_overlap=OVERLAP_TEST)
    # Both in the same TMPDIR, as two runs of one user are: each must leave the other's live run dir alone.
    monkeypatch.setenv("PE_PEER", "b")
    first = start(runs, box, repo, "a")
    monkeypatch.setenv("PE_PEER", "a")
    second = start(runs, box, repo, "b")
    assert (first.wait(RUN_TIMEOUT), second.wait(RUN_TIMEOUT)) == (0, 0), first.text() + second.text()
    records = box.records()
    assert records["a"]["socket"] != records["b"]["socket"]
    assert_nothing_left(box)


@pytest.mark.usefixtures("uwsgi_bin")
@pytest.mark.parametrize(
    "interrupt",
    [
        # Ctrl-C: the terminal sends SIGINT to the whole foreground process group (the emperor has its own).
        pytest.param(lambda pid: os.killpg(pid, signal.SIGINT), id="ctrl-c"),
        # `kill`, a CI runner's timeout, systemd: SIGTERM to pytest.
        pytest.param(lambda pid: os.kill(pid, signal.SIGTERM), id="sigterm"),
    ],
)
def test_interrupted_run_leaves_nothing(
    pytester: pytest.Pytester, repo: Path, box: Sandbox, runs: list[Run], interrupt: Callable[[int], None]
) -> None:
    write_tests(repo, test_block=BLOCKING_TEST)
    run = start(runs, box, repo, "blocked")
    blocked = run.wait_for_record(box, "blocked")
    assert Path(blocked["run_dir"]).parent == box.runs_root
    assert Path(blocked["socket"]).parent == box.sockets
    interrupt(run.proc.pid)
    assert run.wait(RUN_TIMEOUT) == pytest.ExitCode.INTERRUPTED, run.text()
    assert_nothing_left(box)


@pytest.mark.usefixtures("uwsgi_bin")
def test_killed_run_is_cleaned_up_by_the_next(
    pytester: pytest.Pytester, repo: Path, box: Sandbox, runs: list[Run]
) -> None:
    write_tests(repo, test_block=BLOCKING_TEST, test_ok=PASSING_TEST)
    killed = start(runs, box, repo, "killed", "test_block.py")
    first = killed.wait_for_record(box, "killed")
    assert Path(first["run_dir"]).parent == box.runs_root
    killed.proc.kill()
    assert killed.wait(RUN_TIMEOUT) == -signal.SIGKILL
    # Nothing could remove it: the emperor (sent SIGINT by the kernel as its parent died) does not own it.
    assert Path(first["run_dir"]).is_dir()
    result = pytester.runpytest_subprocess("--emperor", "test_ok.py", timeout=RUN_TIMEOUT)
    result.assert_outcomes(passed=1)
    assert not Path(first["run_dir"]).exists()
    assert not Path(first["socket"]).exists()
    assert_nothing_left(box)


@pytest.mark.usefixtures("uwsgi_bin")
def test_ini_options_and_command_line_precedence(
    pytester: pytest.Pytester, box: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An app.uwsgi.ini right above the test too: a configured app must still win over the nearest one.
    repo = pytester.path
    write_app(repo, box.sockets, "nearest app")
    write_app(repo / "apps" / "outside", box.sockets, "outside app")
    write_app(repo / "apps" / "second", box.sockets, "second app")
    write_app(repo / "apps" / "third", box.sockets, "third app")
    (repo / "pe_sync.py").write_text(SYNC_PY)
    # The profile pytest shares with up and check; pytest.ini's copies of its keys are deprecated, and still win.
    (repo / "pyproject.toml").write_text(
        '[tool.emperor-dev]\ntimeout = 45\napps = ["apps/outside"]\ndomain = "profile.example"\n'
    )
    write_tests(repo, test_options="""
        import os

        from pe_sync import publish

        def test_options(app_vassal, emperor):
            body = app_vassal.request("GET", "/").content.decode()
            publish(os.environ["PE_RUN"], timeout=emperor.timeout, host=app_vassal.host, body=body)
        """
    )
    (repo / "pytest.ini").write_text("[pytest]\n")
    for run, args in {
        "ini": [],
        "cli": ["--emperor-timeout", "50", "--emperor-domain", "cli.example", "--emperor-app", "apps/second"],
    }.items():
        monkeypatch.setenv("PE_RUN", run)
        pytester.runpytest_subprocess("--emperor", *args, timeout=RUN_TIMEOUT).assert_outcomes(passed=1)
    (repo / "pytest.ini").write_text("[pytest]\nemperor_timeout = 55\nemperor_apps = apps/third\n")
    monkeypatch.setenv("PE_RUN", "deprecated")
    result = pytester.runpytest_subprocess("--emperor", timeout=RUN_TIMEOUT)
    result.assert_outcomes(passed=1, warnings=2)
    result.stdout.fnmatch_lines([
        "*DeprecationWarning: pytest-emperor: the ini key emperor_timeout in pytest.ini is deprecated: set timeout = "
        "... in [[]tool.emperor-dev[]] (pyproject.toml) or emperor-dev.toml*",
    ])
    deprecated = box.records()["deprecated"]
    assert (deprecated["timeout"], deprecated["body"]) == (55, "third app at /\n")
    assert deprecated["host"].endswith(".profile.example")  # not set in the ini: the profile's
    records = box.records()
    assert records["ini"]["timeout"] == 45
    assert records["ini"]["host"].startswith("outside-")
    assert records["ini"]["host"].endswith(".profile.example")
    assert records["ini"]["body"] == "outside app at /\n"
    assert records["cli"]["timeout"] == 50
    assert records["cli"]["host"].startswith("second-")
    assert records["cli"]["host"].endswith(".cli.example")
    assert records["cli"]["body"] == "second app at /\n"
    assert_nothing_left(box)


@pytest.mark.usefixtures("uwsgi_bin")
def test_cursed_deploy_fails_fast_with_the_vassal_error(
    pytester: pytest.Pytester, repo: Path, box: Sandbox
) -> None:
    # The vassal exits at start-up: its chdir target does not exist.
    write_app(repo / "broken", box.sockets, "never", chdir="%(app_root)/does-not-exist")
    write_tests(repo, test_cursed="""
        import time

        import pytest
        from pe_sync import publish
        from pytest_emperor import VassalCursed

        def test_cursed(deploy_app):
            started = time.monotonic()
            with pytest.raises(VassalCursed) as raised:
                deploy_app("broken")
            publish("cursed", seconds=time.monotonic() - started, message=str(raised.value))
        """
    )
    result = pytester.runpytest_subprocess("--emperor", "--emperor-timeout", "60", timeout=RUN_TIMEOUT)
    result.assert_outcomes(passed=1)
    cursed = box.records()["cursed"]
    # A curse is seen within a second or so; the 60 s timeout is what a wait that missed it would take.
    assert cursed["seconds"] < 15, cursed
    assert "broken-" in cursed["message"]
    assert "chdir(): No such file or directory" in cursed["message"], cursed["message"]
    assert_nothing_left(box)


@pytest.mark.usefixtures("uwsgi_bin")
def test_leftover_check_sees_a_live_run(box: Sandbox, tmp_path: Path) -> None:
    """The check every test above ends with would catch a run's processes, run dir and sockets."""
    app = write_app(tmp_path / "live", box.sockets, "live app")
    with Emperor(runs_root=box.runs_root) as emperor:
        emperor.deploy(app)
        with pytest.raises(AssertionError) as left:
            assert_nothing_left(box)
    for what in ("processes of the run still alive", f"left in {box.runs_root}", "live-"):
        assert what in str(left.value)
    assert_nothing_left(box)


def test_running_from_a_dir_below_the_app_names_the_app_and_the_rootdir(
    pytester: pytest.Pytester, repo: Path, box: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No pytest.ini: pytest takes where it runs (tests/) as the rootdir, which app.uwsgi.ini is above.
    (repo / "pytest.ini").unlink()
    (repo / "tests").mkdir()
    write_tests(repo / "tests", test_app="def test_uses_app_vassal(app_vassal):\n    pass\n")
    monkeypatch.chdir(repo / "tests")
    result = pytester.runpytest_subprocess("--emperor", timeout=RUN_TIMEOUT)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([f"*{repo / 'app.uwsgi.ini'} is above the rootdir*run pytest from {repo}*"])


@pytest.mark.usefixtures("uwsgi_bin")
def test_a_cursed_deploy_reads_as_the_tests_own_failure(pytester: pytest.Pytester, repo: Path, box: Sandbox) -> None:
    write_app(repo / "broken", box.sockets, "never", chdir="%(app_root)/does-not-exist")
    write_tests(repo, test_cursed="def test_deploys_a_broken_app(deploy_app):\n    deploy_app('broken')\n")
    result = pytester.runpytest_subprocess("--emperor", timeout=RUN_TIMEOUT)
    result.assert_outcomes(failed=1)
    # led by what `emperor-dev check` finds in the ini, then uWSGI's verdict
    result.stdout.fnmatch_lines([
        ">       deploy_app('broken')",
        "E       *VassalCursed: broken/app.uwsgi.ini:3: E501 the `chdir` directory does not exist*",
        "E           fix: *",
        "E       vassal broken-* was cursed by the emperor while starting*",
    ])
    # pytest shows only the test's own frame: none of the plugin's.
    failure = result.stdout.str().split("FAILURES")[1].split("-- vassal broken-")[0]
    assert "pytest_emperor/" not in failure and ">       deploy_app('broken')" in failure, failure
    assert_nothing_left(box)


# -- the run's names resolve without DNS (routing/resolve.py) ------------------------------------------------------

# Plain requests, as a team's own tests make them: no fixture session, the URL's name resolved by the process.
PLAIN_REQUESTS = """
import pytest
import requests


@pytest.mark.parametrize("run", range(2))
def test_plain_requests(app_vassal, run):
    assert app_vassal.host.endswith({domain!r})
    for _ in range(20):
        assert requests.get(app_vassal.url, timeout=10).content == b"repo app at /\\n"
"""
# The seed's production site block, routing to this sandbox's sockets.
SITE = """\
server {{
    listen 80;
    server_name ~^(?<app>[^.]+)\\.api\\.mycompany\\.com$;
    location / {{
        include uwsgi_params;
        uwsgi_pass unix:{sockets}/$app.api.sock;
    }}
}}
"""


def sandbox_routing(box: Sandbox) -> list[str]:
    """The default routing, to the sandbox's sockets (where the repo's apps bind)."""
    return ["--emperor-server-name", r"~^(?<app>[^.]+)\.api\.localhost$",
            "--emperor-socket-template", f"{box.sockets}/$app.api.sock"]


@pytest.mark.usefixtures("uwsgi_bin")
@pytest.mark.parametrize(
    ("domain", "workers"), [(".api.localhost", []), (".api.mycompany.com", []), (".api.mycompany.com", ["-n", "2"])]
)
def test_plain_requests_to_the_runs_names_ask_no_dns(
    pytester: pytest.Pytester, repo: Path, box: Sandbox, domain: str, workers: list[str]
) -> None:
    """2 x 20 plain ``requests.get(vassal.url)`` under ``pytest --emperor``, traced by strace (every process of
    the run, each xdist worker too): not one datagram or connection to port 53, for the default domain and a site
    file's production one."""
    strace = shutil.which("strace")
    assert strace is not None, "strace is needed to count DNS queries (apt-get install strace; .ci/run does)"
    write_tests(repo, test_plain=PLAIN_REQUESTS.format(domain=domain))
    if domain == ".api.localhost":
        routing = sandbox_routing(box)
    else:
        (repo / "api.conf").write_text(SITE.format(sockets=box.sockets))
        routing = ["--emperor-nginx-site", "api.conf"]
    trace = box.root / "strace.txt"
    result = pytester.run(
        strace, "-f", "-qq", "-o", str(trace), "-e", "trace=connect,sendto,sendmsg,sendmmsg",
        sys.executable, "-m", "pytest", "--emperor", "-p", "no:cacheprovider", *routing, *workers,
        "test_plain.py", timeout=RUN_TIMEOUT,
    )
    result.assert_outcomes(passed=2)
    calls = trace.read_text().splitlines()
    # The trace saw the requests' own connections to the router (on loopback TCP): it can see a DNS query too.
    assert sum('sin_addr=inet_addr("127.0.0.1")' in call for call in calls if "connect(" in call) >= 40
    dns = [call for call in calls if "htons(53)" in call]
    assert not dns, f"{len(dns)} DNS queries during the run, the first: {dns[0]}"
    assert_nothing_left(box)


# -- the router's lines in a failing test's report ------------------------------------------------------------------


@pytest.mark.usefixtures("uwsgi_bin")
def test_failing_test_report_has_the_routers_lines_for_its_requests_only(
    pytester: pytest.Pytester, repo: Path, box: Sandbox
) -> None:
    write_tests(repo, test_router="""
        import requests

        def test_earlier_through_the_router(app_vassal):
            assert requests.get(app_vassal.url + "earlier", timeout=10).status_code == 200

        def test_fails_through_the_router(app_vassal):
            # nginx writes an access line after the response: the report waits until the router has logged
            # what it answered (the 413's line comes once the session's close ends nginx's lingering close).
            with requests.Session() as session:
                assert session.get(app_vassal.url + "first", timeout=10).status_code == 200
                assert session.post(app_vassal.url + "big", data=b"x" * 100, timeout=10).status_code == 413
            raise AssertionError("failing on purpose")

        def test_fails_without_the_router(app_vassal):
            assert app_vassal.request("GET", "/direct").status_code == 200
            raise AssertionError("failing on purpose")
        """
    )
    routing = [*sandbox_routing(box), "--emperor-max-body-size", "10"]
    result = pytester.runpytest_subprocess("--emperor", *routing, timeout=RUN_TIMEOUT)
    result.assert_outcomes(passed=1, failed=2)
    parts = re.split(r"^_+ (test_\w+) _+$", result.stdout.str(), flags=re.M)
    reports = {name: report_sections(text.splitlines()) for name, text in zip(parts[1::2], parts[2::2])}
    through = reports["test_fails_through_the_router"]
    router = through.get("router")
    assert router is not None, f"no router section; sections: {list(through)}"
    assert re.search(r'^access\.log:\n.*"GET /first HTTP/1\.1" 200 ', router, re.M), router
    assert '"POST /big HTTP/1.1" 413 ' in router, router
    assert re.search(r"^error\.log:\n.*\[error\] .*client intended to send too large body: 100 bytes", router, re.M)
    # The test before's line, written after the client had its response, is logged before this test's mark.
    assert "/earlier" not in router, "the section has lines of an earlier test"
    without = reports["test_fails_without_the_router"]
    assert "router" not in without and without, without
    assert_nothing_left(box)
