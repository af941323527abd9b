"""Coverage of the code the vassals run: ``pytest --emperor --cov`` as users run it, with the real uWSGI.

A generated repo holds a bottle app (``wsgi-file``, in the bottle venv of example_apps/service1) and a Flask
app (``module``, ``lazy-apps``, in the flask venv of example_apps/service2), each with branches reached only over
HTTP. Each line of their source says whether the tests run it: ``# missed`` lines must be reported missing, every
other statement executed, exactly.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import EXAMPLES
from coverage import CoverageData
from dev_helpers import Up, copy_example, names_for_test, up_process, workspace
from dev_helpers import assert_nothing_left as assert_nothing_left_dev
from plugin_helpers import Sandbox, assert_nothing_left

from pytest_emperor.testing.coverage import SETTINGS_ENV, CoverageSettings, VassalCoverage

__all__ = ["up_process", "workspace"]  # fixtures of dev_helpers.py, used here

RUN_TIMEOUT = 180  # a whole -n 2 run with two venv apps, each reloaded, on a loaded 2-core machine

BOTTLE_APP = """\
import bottle

app = application = bottle.Bottle()


@app.route("/<word>")
def word(word):
    if word == "alpha":
        return "first branch"
    if word == "beta":
        return "never asked for"  # missed
    return "after reload"
"""

FLASK_APP = """\
import uwsgi
from flask import Flask

uwsgi.atexit = lambda: None  # an app's own hook replaces the one the bootstrap chained: Python's atexit still saves
app = Flask(__name__)


@app.get("/<word>")
def word(word):
    if word == "beta":
        return "never asked for"  # missed
    if word == "gamma":
        return "second branch"
    return "after reload"
"""

# Its only worker is killed on purpose after serving /lost: that process's data is lost, and nothing else (the
# worker the master forks in its place has the import-time lines, and answers the 404).
VICTIM_APP = """\
def application(environ, start_response):
    if environ["PATH_INFO"] == "/lost":
        start_response("200 OK", [])  # missed
        return [b"lost"]  # missed
    start_response("404 Not Found", [])
    return [b""]
"""

INI = """\
[uwsgi]
app_root = @(exec://dirname $(realpath %P))
chdir = %(app_root)
{home}
socket = {sockets}/%n.api.sock
{loader}
master = true
need-app = true
{extra}
"""

TESTS = """\
import signal


def test_bottle(deploy_app):
    app = deploy_app("bottleapp")
    assert app.request("GET", "/alpha").content == b"first branch"
    app.reload()
    assert app.request("GET", "/zeta").content == b"after reload"


def test_flask(deploy_app):
    app = deploy_app("flaskapp")
    assert app.request("GET", "/gamma").content == b"second branch"
    app.reload()
    assert app.request("GET", "/zeta").content == b"after reload"


def test_victim(deploy_app):
    app = deploy_app("victim")
    assert app.request("GET", "/lost").content == b"lost"
    app.kill_worker(signal.SIGKILL)  # the only worker, which served /lost: its data dies with it
    assert app.request("GET", "/other").status_code == 404


def test_helper(broken_vassal):
    broken_vassal("worker-crash")  # its app lives in the run dir: never measured
"""


def write_repo(root: Path, sockets: Path) -> None:
    """The generated repo: three app dirs and their tests."""
    apps = {
        "bottleapp": (
            BOTTLE_APP,
            f"home = {EXAMPLES}/service1/venv-bottle",
            "wsgi-file = app.py",
            "processes = 2\nthreads = 2",
        ),
        "flaskapp": (
            FLASK_APP,
            f"home = {EXAMPLES}/service2/venv-flask",
            "module = app:app",
            "processes = 2\nlazy-apps = true\nskip-atexit-teardown = true",
        ),
        # skip-atexit would make its workers _exit without saving: measured all the same (testing/coverage.py).
        "victim": (VICTIM_APP, "", "wsgi-file = app.py", "processes = 1\nskip-atexit = true"),
    }
    for name, (code, home, loader, extra) in apps.items():
        (root / name).mkdir(parents=True)
        (root / name / "app.py").write_text(code)
        ini = INI.format(home=home, sockets=sockets, loader=loader, extra=extra)
        (root / name / "app.uwsgi.ini").write_text(ini)
    (root / "test_apps.py").write_text(TESTS)
    (root / "pytest.ini").write_text("[pytest]\n")


def statements_and_missed(source: str) -> tuple[set[int], set[int]]:
    """The lines of ``source`` holding a statement (per coverage.py's own parser) and those marked ``# missed``."""
    from coverage.parser import PythonParser

    parser = PythonParser(text=source)
    parser.parse_source()
    missed = {n for n, line in enumerate(source.splitlines(), 1) if line.endswith("# missed")}
    return set(parser.statements), missed




@pytest.mark.usefixtures("example_venvs", "uwsgi_bin")
def test_vassal_lines_in_the_report_exactly(
    pytester: pytest.Pytester, box: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = pytester.path / "shop"
    write_repo(root, box.sockets)
    monkeypatch.chdir(root)
    result = pytester.runpytest_subprocess(
        "--emperor", "-p", "xdist", "-n", "2", "-p", "no:cacheprovider",
        "--cov", "--cov-branch",
        "--cov-report=json:cov.json", "--cov-report=term-missing",
        timeout=RUN_TIMEOUT,
    )
    result.assert_outcomes(passed=4)
    report = json.loads((root / "cov.json").read_text())["files"]
    data = CoverageData(basename=str(root / ".coverage"))
    data.read()
    assert [f for f in data.measured_files() if "/worker-crash/" in f] == [], "a broken_vassal helper was measured"
    assert "No data was collected" not in result.stdout.str() + result.stderr.str()
    for app, source in (("bottleapp", BOTTLE_APP), ("flaskapp", FLASK_APP), ("victim", VICTIM_APP)):
        statements, missed = statements_and_missed(source)
        measured = report[f"{app}/app.py"]
        assert set(measured["missing_lines"]) == missed, (app, measured)
        assert set(measured["executed_lines"]) == statements - missed, (app, measured)
    assert "bottleapp/app.py" in result.stdout.str()  # the term report has them too
    assert not list(box.tmpdir.glob("pytest-emperor-cov-*")), "the coverage dir was left behind"
    assert not list(root.glob(".coverage.*")), "data files left uncombined"
    assert_nothing_left(box)


@pytest.mark.usefixtures("example_venvs")
def test_bootstrap_without_coverage_says_so(tmp_path: Path) -> None:
    """In a venv without coverage.py (the bottle venv) and nothing on the path to find it, the bootstrap says why
    it measures nothing, in stderr (the vassal's log) and the problems file, and the process carries on."""
    cov = VassalCoverage(CoverageSettings(None, [], None, [], False, None))
    try:
        (cov.path_dir / "coverage").unlink()
        python = EXAMPLES / "service1" / "venv-bottle" / "bin" / "python"
        env = dict(os.environ, **{SETTINGS_ENV: str(cov.settings_path)}, PYTHONPATH=str(cov.path_dir))
        code = "import _pytest_emperor_cov as b; assert b.COVERAGE is None; print('app still runs')"
        done = subprocess.run([python, "-c", code], env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert done.stdout == "app still runs\n"
        assert re.search(r"pytest-emperor coverage: pid \d+: not measured: coverage.py cannot be imported", done.stderr)
        good, problems = cov.collect()
        assert good == []
        assert len(problems) == 1 and "cannot be imported" in problems[0]
    finally:
        cov.close()
    assert not cov.dir.exists()


def test_settings_are_made_absolute(tmp_path: Path) -> None:
    """A vassal runs in its own chdir: source dirs and include/omit patterns are taken from the measuring
    process's directory, package names and wildcard patterns are kept."""
    from coverage import Coverage

    (tmp_path / "src").mkdir()
    (tmp_path / ".coveragerc").write_text("[run]\nomit = tests/*\n    */vendored/*\nbranch = true\n")
    (tmp_path / "app.py").write_text("")  # what `wsgi-file = app.py` loads under a name of uWSGI's own
    config = Coverage(
        source=["src", "mypackage", "app"], include=["src/*"], config_file=str(tmp_path / ".coveragerc")
    ).config
    settings = CoverageSettings.from_config(config, tmp_path)
    assert settings.source == [str(tmp_path / "src"), "mypackage", str(tmp_path)]
    alone = CoverageSettings.from_config(Coverage(source=["app"]).config, tmp_path)
    assert (alone.source, alone.include) == (None, [str(tmp_path / "app.py")])
    assert settings.include == [f"{tmp_path}/src/*"]
    assert settings.omit == [f"{tmp_path}/tests/*", "*/vendored/*"]
    assert settings.branch is True
    assert settings.config_file == str(tmp_path / ".coveragerc")


def test_a_cut_short_data_file_is_left_out_with_a_reason(tmp_path: Path) -> None:
    cov = VassalCoverage(CoverageSettings(None, [], None, [], False, None))
    try:
        (cov.data_dir / ".coverage.host.pid1.Xabc").write_bytes(b"SQLite format 3\0" + b"\0" * 50)
        good, problems = cov.collect()
        assert good == []
        assert len(problems) == 1 and ".coverage.host.pid1.Xabc" in problems[0]
    finally:
        cov.close()


def test_emperor_dev_up_cov_writes_a_combined_coverage_on_stop(workspace: Path, up_process: list[Up]) -> None:
    name, _ = names_for_test()
    app = copy_example(workspace, "service3", "service3")
    up = Up(workspace, f"{name}=service3", "--cov=service3")
    up_process.append(up)
    up.started()
    assert up.get(name, "/hello") == (200, "hello from service3 at /hello\n")
    up.stopped(signal.SIGINT)
    up.expect(rf"coverage: the data of \d+ app processes combined into {workspace}/apps/\.coverage$")
    data = CoverageData(basename=str(workspace / "apps" / ".coverage"))
    data.read()
    hello = str(app / "hello.py")
    assert data.measured_files() == {hello}
    statements, _ = statements_and_missed((app / "hello.py").read_text())
    assert statements - set(data.lines(hello) or ()) == set()  # the request ran every line: none missing
    assert not list((workspace / "tmp").glob("pytest-emperor-cov-*")), "the coverage dir was left behind"
    assert_nothing_left_dev(up, [name])


def test_combine_into_takes_only_the_vassals_files(tmp_path: Path) -> None:
    """No vassal data: the target is emptied, and a stray ``.coverage.*`` beside it (another tool's) is not taken."""
    stray = CoverageData(basename=str(tmp_path / ".coverage.stray"))
    stray.add_lines({str(tmp_path / "x.py"): [1]})
    stray.write()
    cov = VassalCoverage(CoverageSettings(None, [], None, [], False, None))
    try:
        assert cov.combine_into(tmp_path / ".coverage") == (0, [])
    finally:
        cov.close()
    assert (tmp_path / ".coverage.stray").exists()
    assert not (tmp_path / ".coverage").exists()


@pytest.mark.usefixtures("example_venvs", "uwsgi_bin")
def test_the_coverage_benchmark_runs() -> None:
    # A smoke run (its figures are the benchmark's business): a benchmark nothing runs breaks unseen.
    script = EXAMPLES.parent / "benchmarks" / "coverage.py"
    done = subprocess.run([sys.executable, str(script), "--requests", "5"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "requests: 5 per side" in done.stdout
