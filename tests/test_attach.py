"""``pytest --emperor --emperor-attach`` against a real ``emperor-dev up``: the tests use up's app and deploy into
up's emperor through its control socket, and up is the same afterwards (same pids, same apps), even when a test
fails or the pytest is killed.

Each test runs its own ``up`` (dev_helpers.Up: ``--port 0``, a private state dir and TMPDIR) on a copy of
service3, and pytest in a subprocess in that copy, so that its rootdir, its ``app.uwsgi.ini`` and its state dir
are those of a project a developer would attach to."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest
from dev_helpers import TIMEOUT, Up, cli, copy_example, env_for, names_for_test, up_process, workspace

__all__ = ["up_process", "workspace"]  # fixtures of dev_helpers.py

ATTACHED_TESTS = """\
import os
import re

import pytest

from pytest_emperor.engine.vassal import VassalState
from pytest_emperor.errors import ConfigError

TAG = rf"-pt{os.getpid()}x[0-9a-f]{{4}}"


def record(*names):
    with open(os.environ["RECORD"], "a") as f:
        f.write("".join(name + "\\n" for name in names))


def test_app_vassal_is_the_app_up_runs(app_vassal):
    assert (app_vassal.name, app_vassal.pid) == (os.environ["UP_APP"], int(os.environ["UP_APP_PID"]))
    assert app_vassal.state is VassalState.READY
    assert app_vassal.request("GET", "/direct").text == "hello from service3 at /direct\\n"
    assert app_vassal.http.get("/routed").text == "hello from service3 at /routed\\n"
    assert app_vassal.url == os.environ["UP_APP_URL"]


def test_deploys_go_into_up_under_tagged_names(deploy_app, broken_vassal):
    vassal = deploy_app(".")
    crashing = broken_vassal("crash-loop")
    throttled = broken_vassal("bad-config")
    record(vassal.name, crashing.name, throttled.name)
    assert re.fullmatch("service3" + TAG, vassal.name) and re.fullmatch("crash-loop" + TAG, crashing.name)
    assert vassal.request("GET", "/mine").text == "hello from service3 at /mine\\n"
    assert vassal.http.get("/routed").status_code == 200
    # Cursed twice before broken_vassal returned (up waited for it): started at least twice. Not its state now: a
    # crash loop is ready again between its deaths (a state check failed so, 1 run in 4 at load 12).
    assert crashing.log_text(since="deploy").count("*** Starting uWSGI") >= 2
    assert throttled.state is VassalState.THROTTLED
    assert "GET /mine" in vassal.log_text()
    with pytest.raises(ConfigError, match="refused under --emperor-attach"):
        deploy_app(".", exact=True)  # the exact names are up's own apps'


def test_isolation_needs_a_session_s_own_emperor(request):
    with pytest.raises(ConfigError, match="the isolation fixture needs the session's own emperor"):
        request.getfixturevalue("isolation")


def test_a_failing_test_s_deploys_are_removed_too(deploy_app):
    vassal = deploy_app(".", "fails")
    record(vassal.name)
    vassal.request("GET", "/before-failing")
    assert False, "fails on purpose"
"""

KILLED_TEST = """\
import threading


def test_killed_while_deployed(deploy_app):
    print("deployed", deploy_app(".").name, flush=True)
    threading.Event().wait()  # until the test suite SIGKILLs this pytest
"""


def attached_pytest(*args: str) -> list[str]:
    return [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:xdist", "--emperor", "--emperor-attach",
            *args]


def run_pytest(workspace: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        attached_pytest(*args), cwd=workspace / "apps" / "service3", env=dict(env_for(workspace), **env),
        capture_output=True, text=True, timeout=TIMEOUT * 3, check=False,
    )


def up_state(workspace: Path) -> tuple[int, list[tuple[str, int | None, str]]]:
    """up's pid, and each app's name, master pid and state, from ``emperor-dev status --json``."""
    document = json.loads(cli(workspace, "status", "--json").stdout)
    return document["pid"], [(app["name"], app["pid"], app["state"]) for app in document["apps"]]


def start_up(workspace: Path, up_process: list[Up]) -> tuple[str, Up]:
    good, _ = names_for_test()
    app = copy_example(workspace, "service3", "service3")
    (app / "pytest.ini").write_text("[pytest]\n")  # the app's dir is the rootdir, as in a project of its own
    up = Up(workspace, f"{good}=service3")
    up_process.append(up)
    up.started()
    return good, up


def scratch_dirs() -> list[Path]:
    return list(Path(tempfile.gettempdir()).glob("pytest-emperor-attach-*"))


def test_attached_tests_use_ups_app_deploy_into_it_and_leave_it_unchanged(
    workspace: Path, up_process: list[Up]
) -> None:
    good, up = start_up(workspace, up_process)
    before = up_state(workspace)
    assert before[1] == [(good, before[1][0][1], "ready")]
    (workspace / "apps" / "service3" / "test_attached.py").write_text(ATTACHED_TESTS)
    record = workspace / "deployed.txt"

    result = run_pytest(
        workspace, "-rA", RECORD=str(record), UP_APP=good, UP_APP_PID=str(before[1][0][1]),
        UP_APP_URL=f"http://{good}.api.localhost:{up.instance.router_port}/" if up.instance is not None else "",
    )

    assert "1 failed, 3 passed" in result.stdout, result.stdout + result.stderr
    assert "AssertionError: fails on purpose" in result.stdout
    assert "GET /before-failing" in result.stdout  # the failing test's report has the log of what it deployed
    deployed = record.read_text().split()
    assert len(deployed) == 4 and deployed[3].startswith("fails-pt")
    assert up_state(workspace) == before  # same up, same apps, same pids: what the tests deployed is gone
    for name in deployed:
        assert not Path(f"/tmp/{name}.api.sock").exists(), name
    tag = deployed[0].rpartition("-")[2]
    assert [path for path in scratch_dirs() if tag in path.name] == []  # the broken vassal's files too
    assert up.get(good) == (200, "hello from service3 at /\n")


def test_without_a_running_up_attaching_is_a_usage_error_saying_how_to_start_one(workspace: Path) -> None:
    copy_example(workspace, "service3", "service3")
    (workspace / "apps" / "service3" / "test_attached.py").write_text(ATTACHED_TESTS)

    result = run_pytest(workspace)

    assert result.returncode == pytest.ExitCode.USAGE_ERROR, result.stdout + result.stderr
    state = workspace / "state"
    assert (
        "--emperor-attach needs the running `emperor-dev up` of this project: no emperor-dev instance is running "
        f"on {state}"
    ) in result.stderr
    assert f"Start one in {workspace} (or set EMPEROR_DEV_STATE_DIR to its --state-dir)" in result.stderr


def test_the_next_attach_removes_what_a_killed_pytest_deployed(workspace: Path, up_process: list[Up]) -> None:
    start_up(workspace, up_process)
    before = up_state(workspace)
    (workspace / "apps" / "service3" / "test_killed.py").write_text(KILLED_TEST)
    killed = subprocess.Popen(
        [*attached_pytest("-s"), "test_killed.py"], cwd=workspace / "apps" / "service3",
        env=env_for(workspace), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    deadline = threading.Timer(TIMEOUT, killed.kill)  # a pytest that never deploys ends the loop below
    deadline.start()
    try:
        assert killed.stdout is not None
        seen = []
        for line in killed.stdout:  # the test prints its deploy's name once the vassal is ready
            seen.append(line)
            deployed = re.search(r"deployed (\S+)", line)
            if deployed:
                break
        else:
            raise AssertionError("the attached pytest exited before deploying:\n" + "".join(seen))
        name = deployed[1]
        os.kill(killed.pid, signal.SIGKILL)
        killed.wait(TIMEOUT)
    finally:
        deadline.cancel()
        if killed.poll() is None:
            killed.kill()
            killed.wait()
        assert killed.stdout is not None
        killed.stdout.close()
    left = up_state(workspace)
    assert name in [app[0] for app in left[1]]  # killed: nothing of it ran its teardown

    (workspace / "apps" / "service3" / "test_killed.py").unlink()
    (workspace / "apps" / "service3" / "test_noop.py").write_text("def test_noop(app_vassal):\n    pass\n")
    unmeasured = run_pytest(workspace, "test_noop.py")  # pytest-cov installed, --cov not asked: nothing to say
    assert unmeasured.returncode == 0 and "not measured" not in unmeasured.stdout, unmeasured.stdout
    again = run_pytest(workspace, "test_noop.py", "--cov=.")

    assert again.returncode == 0, again.stdout + again.stderr
    assert "the apps are not measured under --emperor-attach: run `emperor-dev up --cov`" in again.stdout
    assert up_state(workspace) == before
    assert not Path(f"/tmp/{name}.api.sock").exists()
