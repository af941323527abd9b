"""``emperor-dev up`` and the commands that talk to it, run for real in subprocesses against copies of the
example apps, with a real emperor and router.

Every ``up`` here runs with ``--port 0``, its own state dir and its own short TMPDIR (so the emperor's run dir
and everything left-over checks look at are this test's only), and deploys under names unique to the test
(the apps bind ``/tmp/%n.api.sock``, shared by the whole machine)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
from dev_helpers import EXAMPLES, Up, assert_nothing_left, cli, copy_example, names_for_test, up_process, workspace

from pytest_emperor.dev.logs import LogLine, LogTail
from pytest_emperor.engine.emperor_log import EventKind
from pytest_emperor.engine.events import EventLog
from pytest_emperor.engine.processes import children_of, command_line, processes_with_marker, wait_exit

__all__ = ["up_process", "workspace"]  # fixtures of dev_helpers.py


def test_up_serves_through_the_router_isolates_a_broken_app_and_stops_clean_on_ctrl_c(
    workspace: Path, up_process: list[Up]
) -> None:
    good, broken = names_for_test()
    copy_example(workspace, "service3", "service3")
    copy_example(workspace, "broken-config", "broken-config")
    up = Up(workspace, f"{good}=service3", f"{broken}=broken-config")
    up_process.append(up)
    summary = up.started().expect(r"apps ready\.")
    assert re.search(rf"^{good}\s+http://{good}\.api\.localhost:\d+/\s+ready\s+\d+$", "\n".join(up.lines), re.M)
    assert re.search(rf"^{broken}\s+http://{broken}\.api\.localhost:\d+/\s+(cursed|throttled)\s", "\n".join(up.lines),
                     re.M)
    assert up.expect(rf"^{broken}\s+\| chdir\(\): No such file or directory")  # its error lines, under the table
    # Each app was announced as soon as it settled, before the table that waits for all of them.
    header = next(i for i, line in enumerate(up.lines) if line.startswith("NAME "))
    assert any(re.match(rf"^emperor\s+\| {good}: ready$", line) for line in up.lines[:header]), up.lines

    assert up.get(good, "/hello") == (200, "hello from service3 at /hello\n")
    status, body = up.get(broken)
    assert status == 502 and broken in body

    done = cli(workspace, "status", "--json")
    apps = {app["name"]: app for app in json.loads(done.stdout)["apps"]}
    assert apps[good]["state"] == "ready" and apps[good]["pid"] > 0
    assert apps[broken]["state"] in ("cursed", "throttled")
    # As the exit codes say: 1 with an app cursed or throttled, and why on stderr; the table says the same.
    assert done.returncode == 1 and f"not every app is running: {broken} ({apps[broken]['state']})" in done.stderr
    table = cli(workspace, "status")
    assert table.returncode == 1 and re.search(rf"^{broken}\s.*\s(cursed|throttled)\s", table.stdout, re.M)
    assert any("chdir" in line for line in apps[broken]["errors"])
    # The good app keeps answering while the broken one is retried.
    assert up.get(good, "/still")[0] == 200

    up.stopped(signal.SIGINT)
    assert up.lines[-1] == "stopped: the apps, the router and the emperor are gone"
    # The broken app, retried every second, was muted rather than flooding the stream with uWSGI's banner.
    assert f"{broken} is muted while the emperor retries it (all of it: emperor-dev logs {broken})" in up.lines
    assert not [line for line in up.lines[summary:] if line.startswith(broken) and "Starting uWSGI" in line]
    assert_nothing_left(up, [good, broken])


def test_other_terminals_add_reload_rm_request_logs_and_down(workspace: Path, up_process: list[Up]) -> None:
    good, _ = names_for_test()
    extra = f"x{good}"
    copy_example(workspace, "service3", "service3")
    up = Up(workspace, f"{good}=service3")
    up_process.append(up)
    up.started()

    added = cli(workspace, "add", "service3", "--name", extra)
    assert added.returncode == 0, added.stderr
    assert re.search(rf"{extra}\s+http://{extra}\.api\.localhost:\d+/\s+ready", added.stdout)
    assert up.get(extra, "/added") == (200, "hello from service3 at /added\n")

    via_router = cli(workspace, "request", extra, "/r?q=1", "-i")
    assert via_router.returncode == 0, via_router.stderr
    assert via_router.stdout.startswith("HTTP/1.1 200 OK\n") and via_router.stdout.endswith("at /r\n")
    direct = cli(workspace, "request", extra, "/d", "--direct", "-X", "POST", "-d", "body", "-H", "X-A: 1")
    assert (direct.returncode, direct.stdout) == (0, "hello from service3 at /d\n")
    missing = cli(workspace, "request", "nosuchapp", "/")
    assert missing.returncode == 1 and missing.stdout == ""
    assert "no app named 'nosuchapp' is running (running: " in missing.stderr and extra in missing.stderr
    refused = cli(workspace, "request", extra, "/", "-X", "TRACE", "--fail")  # nginx itself answers TRACE with 405
    assert refused.returncode == 1 and "405 Not Allowed" in refused.stdout
    assert f"{extra} answered 405 Not Allowed to TRACE / (--fail)" in refused.stderr

    logs = cli(workspace, "logs", extra)
    assert logs.returncode == 0 and "GET /r?q=1" in logs.stdout
    assert all(line.startswith(f"{extra} ") or line.startswith("emperor ") for line in logs.stdout.splitlines())

    mark = len(up.lines)
    reloaded = cli(workspace, "reload", extra)
    assert reloaded.returncode == 0, reloaded.stderr
    up.expect(rf"^emperor\s+\| {extra}: reloading", after=mark)
    assert up.get(extra)[0] == 200

    removed = cli(workspace, "rm", extra)
    assert (removed.returncode, removed.stdout) == (0, f"removed {extra}\n")
    names = [app["name"] for app in json.loads(cli(workspace, "status", "--json").stdout)["apps"]]
    assert names == [good]
    assert not Path(f"/tmp/{extra}.api.sock").exists()
    again = cli(workspace, "rm", extra)
    assert again.returncode == 1 and f"no app named '{extra}' is running" in again.stderr

    # An app that runs but binds a socket the router does not send its Host to: add and status say so, exit 1.
    wrong = f"w{good}"
    ini = copy_example(workspace, "service3", "misrouted") / "app.uwsgi.ini"
    ini.write_text(ini.read_text().replace("socket = /tmp/%n.api.sock", "socket = /tmp/%n.sock"))
    misrouted = cli(workspace, "add", "misrouted", "--name", wrong)
    assert misrouted.returncode == 1
    assert f"{wrong} is ready but not usable: not routed: " in misrouted.stderr
    assert f"/tmp/{wrong}.sock" in misrouted.stderr and "requests through the router will get 502" in misrouted.stderr
    status = cli(workspace, "status")
    assert status.returncode == 1 and f"{wrong} (not routed)" in status.stderr
    assert cli(workspace, "rm", wrong).returncode == 0
    assert not Path(f"/tmp/{wrong}.sock").exists()

    down = cli(workspace, "down")
    assert (down.returncode, down.stdout) == (0, "stopped\n")
    up.stopped()
    assert_nothing_left(up, [good, extra])


def test_a_broken_app_comes_back_when_its_ini_is_fixed(workspace: Path, up_process: list[Up]) -> None:
    good, broken = names_for_test()
    copy_example(workspace, "service3", "service3")
    app = copy_example(workspace, "broken-config", "broken-config")
    shutil.copy(EXAMPLES / "service3" / "hello.py", app / "hello.py")
    up = Up(workspace, f"{good}=service3", f"{broken}=broken-config")
    up_process.append(up)
    up.started()
    assert up.get(broken)[0] == 502
    mark = len(up.lines)
    ini = app / "app.uwsgi.ini"
    ini.write_text(ini.read_text().replace("%(app_root)/does-not-exist", "%(app_root)"))
    up.expect(rf"^emperor\s+\| {broken}: ready", after=mark)
    assert up.get(broken, "/fixed") == (200, "hello from service3 at /fixed\n")
    assert not [line for line in up.lines[mark:] if "reload failed" in line], up.lines[mark:]
    up.stopped(signal.SIGTERM)
    assert_nothing_left(up, [good, broken])


def test_the_stream_shows_a_ready_only_once_the_run_has_acted_on_it(tmp_path: Path) -> None:
    """The stream reads emperor.log: a "ready" in it before the app is routed let a request sent on seeing it get
    the 502 of an app still down (test_a_broken_app_comes_back_when_its_ini_is_fixed, 1 run in 70 under load)."""
    events = EventLog(tmp_path / "emperor.log")
    tail = LogTail(tmp_path)
    shown_while_acting: list[list[LogLine]] = []
    ready = b"Sun Dec  6 04:00:55 2026 - [emperor] vassal app.ini is ready to accept requests\n"
    events.follow([ready], lambda event: shown_while_acting.append(tail.read()))
    assert shown_while_acting == [[]]
    assert tail.read() == [LogLine("app", "ready", EventKind.READY)]


def test_reload_flag_reloads_only_the_app_whose_code_changed(workspace: Path, up_process: list[Up]) -> None:
    one, two = (f"{n}-code" for n in names_for_test())
    first = copy_example(workspace, "service3", "first")
    copy_example(workspace, "service3", "second")
    up = Up(workspace, "--reload", f"{one}=first", f"{two}=second")
    up_process.append(up)
    up.started()
    mark = len(up.lines)
    hello = first / "hello.py"
    hello.write_text(hello.read_text().replace("hello from service3", "hello again"))
    up.expect(rf"^emperor\s+\| {one}: reloading", after=mark)
    end = up.expect(rf"^emperor\s+\| {one}: ready", after=mark)
    assert up.get(one, "/v2") == (200, "hello again at /v2\n")
    assert up.get(two, "/v1") == (200, "hello from service3 at /v1\n")
    assert not any(re.search(rf"\| {two}: (reloading|ready)", line) for line in up.lines[mark:end])
    up.stopped()
    assert_nothing_left(up, [one, two])


def test_a_second_up_is_refused_and_a_killed_up_is_recovered(workspace: Path, up_process: list[Up]) -> None:
    good, _ = names_for_test()
    copy_example(workspace, "service3", "service3")
    first = Up(workspace, f"{good}=service3")
    up_process.append(first)
    first.started()
    second = cli(workspace, "up", "--port", "0", f"{good}=service3")
    assert second.returncode == 4
    assert f"already running on {workspace / 'state'}" in second.stderr and f"pid {first.process.pid}" in second.stderr

    first.kill()  # SIGKILL: no clean-up of its own
    assert first.instance is not None
    killed_run = first.instance.run_dir
    # The emperor stops on its parent-death signal; wait for it rather than race the next `up` against it.
    for pid in processes_with_marker(killed_run):
        assert wait_exit(pid, 30), f"process {pid} of the killed run still runs"
    third = Up(workspace, f"{good}=service3")
    up_process.append(third)
    third.started()
    third.expect(rf"recovered the state of a killed `up` \(pid {first.process.pid}\)")
    assert not Path(killed_run).exists()
    assert third.get(good)[0] == 200
    third.stopped(signal.SIGTERM)
    assert_nothing_left(third, [good])


def test_bare_up_discovers_apps_beside_a_pyproject_with_only_check_settings(
    workspace: Path, up_process: list[Up]
) -> None:
    good, _ = names_for_test()
    copy_example(workspace, "service3", good)
    (workspace / "apps" / "pyproject.toml").write_text('[tool.emperor-dev.check]\nstatic = true\n')
    up = Up(workspace)
    up_process.append(up)
    up.started()
    assert up.get(good)[0] == 200
    up.stopped()
    assert_nothing_left(up, [good])


@pytest.mark.parametrize(
    "args",
    [
        ["status"], ["status", "--json"], ["logs"], ["add", "."], ["rm", "x"], ["reload", "x"], ["down"],
        ["request", "x"],
    ],
)
def test_every_command_says_when_no_instance_is_running(workspace: Path, args: list[str]) -> None:
    done = cli(workspace, *args)
    assert done.returncode == 3, done
    assert "no emperor-dev instance is running" in done.stderr


def test_up_without_apps_is_a_usage_error(workspace: Path) -> None:
    done = cli(workspace, "up", "--port", "0")
    assert done.returncode == 2
    assert "no apps to run" in done.stderr
    assert not (workspace / "state").exists()


def test_up_by_a_site_file_says_how_curl_opens_its_production_urls(workspace: Path, up_process: list[Up]) -> None:
    curl = shutil.which("curl")
    assert curl is not None, "curl opens the printed URL as a user would (apt-get install curl; .ci/run does)"
    good, _ = names_for_test()
    copy_example(workspace, "service3", "service3")
    up = Up(workspace, "--nginx-site", str(Path(__file__).parent / "sites" / "seed.conf"), f"{good}=service3")
    up_process.append(up)
    up.started()
    row = re.search(rf"^{good}\s+(http://{good}\.api\.mycompany\.com:\d+/)\s+ready", "\n".join(up.lines), re.M)
    assert row is not None, up.lines
    hint = next((line for line in up.lines if "curl --resolve" in line), None)
    assert hint is not None and "--host-resolver-rules='MAP *.api.mycompany.com 127.0.0.1'" in hint, up.lines
    resolve = re.search(r"curl --resolve '([^']+)' URL", hint)
    assert resolve is not None, hint
    # curl as the user runs it: its own resolver, which asks DNS for any name --resolve does not give.
    opened = subprocess.run([curl, "-sS", "--resolve", resolve.group(1), row.group(1) + "hello"],
                            capture_output=True, text=True, timeout=30, check=False)
    assert (opened.returncode, opened.stdout) == (0, "hello from service3 at /hello\n"), opened.stderr
    up.stopped(signal.SIGINT)
    assert_nothing_left(up, [good])


def up_with_a_frozen_emperor(workspace: Path, up_process: list[Up]) -> tuple[Up, str, int]:
    """A running ``up`` of one app whose emperor is SIGSTOPped: its shutdown cannot begin, so a stop hangs (for
    SHUTDOWN_GRACE, 5 s, then kills the run by itself); the up, the app's name and the emperor's pid."""
    good, _ = names_for_test()
    copy_example(workspace, "service3", "service3")
    up = Up(workspace, f"{good}=service3")
    up_process.append(up)
    up.started()
    emperor = next(pid for pid in children_of(up.process.pid) if b"--emperor" in command_line(pid).split(b"\0"))
    os.kill(emperor, signal.SIGSTOP)
    return up, good, emperor


def test_a_second_ctrl_c_forces_a_stop_that_hangs_and_still_leaves_nothing(
    workspace: Path, up_process: list[Up]
) -> None:
    up, good, emperor = up_with_a_frozen_emperor(workspace, up_process)
    try:
        up.process.send_signal(signal.SIGINT)
        after = up.expect(r"^SIGINT: stopping every app \(Ctrl-C again to force\)$")
        up.process.send_signal(signal.SIGINT)
        up.expect(r"^forcing: killing every process of the run$", after=after)
    finally:
        os.kill(emperor, signal.SIGCONT)  # a no-op once killed
    assert up.wait() == 130, "\n".join(up.lines[-30:])  # as a shell's 128 + SIGINT
    assert up.lines[-1] == "stopped: the apps, the router and the emperor are gone"
    assert_nothing_left(up, [good])


def test_a_stop_the_emperor_does_not_answer_kills_it_and_says_so(workspace: Path, up_process: list[Up]) -> None:
    up, good, _ = up_with_a_frozen_emperor(workspace, up_process)
    up.stopped(signal.SIGINT)  # one Ctrl-C: what it asked for is done, once the grace is over
    assert up.lines[-2:] == [
        "the emperor did not stop within 5 s of its SIGINT: every process of the run was killed",
        "stopped: the apps, the router and the emperor are gone",
    ]
    assert_nothing_left(up, [good])
