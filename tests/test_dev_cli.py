"""``emperor-dev``: the pure parts (app arguments, control codec, reload decisions, log tailing) unit-tested, and
the real CLI run in subprocesses against copies of the example apps, with a real emperor and router.

Every ``up`` here runs with ``--port 0``, its own state dir and its own short TMPDIR (so the emperor's run dir
and everything left-over checks look at are this test's only), and deploys under names unique to the test
(the apps bind ``/tmp/%n.api.sock``, shared by the whole machine).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from plugin_helpers import write_app

from pytest_emperor._protocol.client import direct_session
from pytest_emperor.dev.apps import (
    AppSpec,
    default_apps,
    discover_apps,
    resolve_apps,
    split_app_arg,
)
from pytest_emperor.dev.control import AppStatus, ControlProtocolError, decode, encode
from pytest_emperor.dev.logs import LogLine, LogTail, RetryMuter, describe
from pytest_emperor.dev.output import Output, plain_table
from pytest_emperor.dev.state import AlreadyRunning, Instance, NotRunning, StateDir, app_state
from pytest_emperor.dev.watch import apps_to_restart
from pytest_emperor.engine.emperor_log import EmperorEvent, EventKind
from pytest_emperor.engine.processes import processes_with_marker, wait_exit
from pytest_emperor.errors import ConfigError
from pytest_emperor.project_config import load_project

EXAMPLES = Path(__file__).resolve().parent.parent / "example_apps"
CLI = [sys.executable, "-m", "pytest_emperor.dev"]
TIMEOUT = 60.0  # generous: two cores shared with other agents' test runs


# -- apps: arguments and config -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arg", "expected"),
    [
        ("service1", (None, "service1")),
        ("beta=service1", ("beta", "service1")),
        ("beta=../x/service1", ("beta", "../x/service1")),
        ("./a=b", (None, "./a=b")),  # a path that holds '=': the part before it has a '/'
        ("dir/app.uwsgi.ini", (None, "dir/app.uwsgi.ini")),
        ("=service1", (None, "=service1")),
    ],
)
def test_split_app_arg(arg: str, expected: tuple[str | None, str]) -> None:
    assert split_app_arg(arg) == expected


def test_resolve_apps_names_dirs_files_and_aliases(tmp_path: Path) -> None:
    write_app(tmp_path / "My_App", tmp_path, "hello")
    write_app(tmp_path / "other", tmp_path, "hello")
    specs = resolve_apps(["My_App", "beta=My_App", "other/app.uwsgi.ini"], tmp_path)
    assert [s.name for s in specs] == ["my-app", "beta", "other"]
    assert specs[0].ini == specs[1].ini == tmp_path / "My_App" / "app.uwsgi.ini"
    assert specs[2].app_dir == tmp_path / "other"


def test_resolve_apps_refuses_two_apps_under_one_name(tmp_path: Path) -> None:
    write_app(tmp_path / "a" / "svc", tmp_path, "hello")
    write_app(tmp_path / "b" / "svc", tmp_path, "hello")
    with pytest.raises(ConfigError, match=r"two apps would be named 'svc'.*NAME=PATH"):
        resolve_apps(["a/svc", "b/svc"], tmp_path)


def test_resolve_apps_says_what_is_missing(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"has no app\.uwsgi\.ini"):
        resolve_apps(["empty"], tmp_path)
    with pytest.raises(ConfigError, match="does not exist"):
        resolve_apps(["x=nowhere"], tmp_path)


def test_default_apps_prefers_emperor_dev_toml_then_pyproject_then_discovery(tmp_path: Path) -> None:
    write_app(tmp_path / "one", tmp_path, "hello")
    write_app(tmp_path / "two", tmp_path, "hello")
    write_app(tmp_path / ".hidden", tmp_path, "hello")
    (tmp_path / "notanapp").mkdir()
    assert discover_apps(tmp_path) == ["one", "two"]
    assert [s.name for s in default_apps(tmp_path)] == ["one", "two"]
    (tmp_path / "pyproject.toml").write_text('[tool.emperor-dev]\napps = ["two", "b=one"]\n')
    assert [s.name for s in default_apps(tmp_path)] == ["two", "b"]
    (tmp_path / "emperor-dev.toml").write_text('apps = ["one"]\n')
    assert [s.name for s in default_apps(tmp_path)] == ["one"]
    assert load_project(tmp_path).apps_source == tmp_path / "emperor-dev.toml"


def test_config_errors_name_the_file(tmp_path: Path) -> None:
    (tmp_path / "emperor-dev.toml").write_text("apps = 'one'\n")
    with pytest.raises(ConfigError, match=r"emperor-dev.toml: \"apps\" must be a list"):
        default_apps(tmp_path)
    (tmp_path / "emperor-dev.toml").write_text("apps = [\n")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        default_apps(tmp_path)


def test_pyproject_without_the_table_falls_back_to_discovery(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    with pytest.raises(ConfigError, match="no apps to run"):
        default_apps(tmp_path)
    write_app(tmp_path / "svc", tmp_path, "hello")
    assert [s.name for s in default_apps(tmp_path)] == ["svc"]


# -- control codec ----------------------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(), children, max_size=3),
    max_leaves=10,
)


@given(st.dictionaries(st.text(), json_values, max_size=5))
def test_control_messages_round_trip_as_one_line(message: dict[str, object]) -> None:
    line = encode(message)
    assert line.count(b"\n") == 1 and line.endswith(b"\n")
    assert decode(line) == message


@pytest.mark.parametrize(
    ("line", "error"),
    [
        (b'{"cmd": "status"}', "incomplete"),
        (b"nope\n", "not JSON"),
        (b"[1]\n", "not a JSON object"),
        (b"", "incomplete"),
    ],
)
def test_control_decode_rejects(line: bytes, error: str) -> None:
    with pytest.raises(ControlProtocolError, match=error):
        decode(line)


def test_app_status_round_trips() -> None:
    status = AppStatus("svc", "http://svc.api.localhost:1/", "cursed", None, "/a/app.uwsgi.ini", "/tmp/s", "uwsgi",
                       ["chdir(): No such file"])  # fmt: skip
    assert AppStatus.from_dict(decode(encode(status.to_dict()))) == status


# -- state dir --------------------------------------------------------------------------------------------------


def make_instance(state: StateDir, run_dir: Path, pid: int = 1) -> Instance:
    return Instance(pid=pid, control=str(state.path / "control.sock"), run_dir=str(run_dir), domain="api.localhost",
                    router="nginx", router_host="127.0.0.1", router_port=1, router_unix="/nowhere")  # fmt: skip


def test_state_dir_lock_refuses_a_second_holder_and_is_released(tmp_path: Path) -> None:
    first, second = StateDir(tmp_path / "state"), StateDir(tmp_path / "state")
    assert first.acquire() == []
    first.publish(make_instance(first, tmp_path / "run", pid=4242))
    with pytest.raises(AlreadyRunning, match=r"pid 4242.*emperor-dev down"):
        second.acquire()
    with pytest.raises(NotRunning, match=r"pid 4242\) is gone"):
        second.running()  # nobody listens on its control socket
    first.release()
    assert not (tmp_path / "state").exists()  # nothing left, not even the empty dir
    with pytest.raises(NotRunning, match="no emperor-dev instance is running"):
        second.running()
    assert second.acquire() == []
    second.release()


def test_state_dir_recovers_a_killed_up(tmp_path: Path) -> None:
    state_path = tmp_path / "state"
    # A process that takes the state dir, publishes itself and is SIGKILLed: its flock dies with it, up.json stays.
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_UP, str(state_path), str(tmp_path / "runs" / "abc123")], check=False
    )
    assert killed.returncode == -signal.SIGKILL
    state = StateDir(state_path)
    left = state.read()
    assert left is not None
    recovered = state.acquire()
    assert recovered[0] == f"recovered the state of a killed `up` (pid {left.pid})"
    assert state.read() is None
    state.release()


KILLED_UP = """
import os, signal, sys
from pathlib import Path
from pytest_emperor.dev.state import Instance, StateDir
state = StateDir(Path(sys.argv[1]))
state.acquire()
state.publish(Instance(pid=os.getpid(), control=sys.argv[1] + "/control.sock", run_dir=sys.argv[2],
                       domain="api.localhost", router="nginx", router_host="127.0.0.1", router_port=1,
                       router_unix="/nowhere"))
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_control_socket_moves_to_the_run_dir_when_the_state_dir_is_too_deep() -> None:
    deep = StateDir(Path("/tmp") / ("d" * 110))
    assert deep.control_path(Path("/tmp/r")) == "/tmp/r/control.sock"
    shallow = StateDir(Path("/tmp/s"))
    assert shallow.control_path(Path("/tmp/r")) == "/tmp/s/control.sock"


# -- what restarts on a change ----------------------------------------------------------------------------------


def test_apps_to_restart(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    apps = {"a": AppSpec("a", a / "app.uwsgi.ini"), "a2": AppSpec("a2", a / "app.uwsgi.ini"),
            "b": AppSpec("b", b / "app.uwsgi.ini")}  # fmt: skip
    assert apps_to_restart([b / "app.uwsgi.ini"], apps, code=False) == {"b"}
    assert apps_to_restart([a / "app.uwsgi.ini"], apps, code=False) == {"a", "a2"}
    assert apps_to_restart([a / "pkg" / "views.py"], apps, code=False) == set()
    assert apps_to_restart([a / "pkg" / "views.py"], apps, code=True) == {"a", "a2"}
    assert apps_to_restart([a / "README.md", a / "other.ini"], apps, code=True) == set()
    for ignored in ("venv-flask/lib/x.py", "__pycache__/x.py", ".git/x.py", "lib/site-packages/x.py"):
        assert apps_to_restart([a / ignored], apps, code=True) == set(), ignored
    assert apps_to_restart([tmp_path / "x.py"], apps, code=True) == set()


# -- logs -------------------------------------------------------------------------------------------------------


def test_log_tail_reads_only_complete_new_lines(tmp_path: Path) -> None:
    (tmp_path / "logs").mkdir()
    log = tmp_path / "logs" / "svc.log"
    log.write_bytes(b"old\n")
    tail = LogTail(tmp_path, from_end=True)
    assert tail.read() == []
    with log.open("ab") as f:
        f.write(b"one\r\ntw")
    assert tail.read() == [LogLine("svc", "one")]
    with log.open("ab") as f:
        f.write(b"o\n\n")
    assert tail.read() == [LogLine("svc", "two"), LogLine("svc", "")]
    log.write_bytes(b"new\n")  # truncated (a new file): start over
    assert tail.read() == [LogLine("svc", "new")]


def test_log_tail_turns_emperor_lines_into_events_and_filters_by_app(tmp_path: Path) -> None:
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "a.log").write_text("a says\n")
    (tmp_path / "logs" / "b.log").write_text("b says\n")
    prefix = "Fri Nov 27 22:20:58 2026 - "
    (tmp_path / "emperor.log").write_text(
        f"{prefix}[emperor] curse the uwsgi instance a.ini (pid: 12)\n"
        f"{prefix}[emperor] vassal b.ini is ready to accept requests\n"
        "*** has_emperor mode detected (fd: 7) ***\n[uWSGI] getting INI configuration from a.ini\n"
        "[strict-mode] unknown config directive: x\n"
    )
    everything = LogTail(tmp_path).read()
    assert LogLine("a", "a says") in everything and LogLine("b", "b says") in everything
    curse = next(line for line in everything if line.kind is EventKind.CURSED)
    assert (curse.app, curse.event) == ("a", True) and "(pid 12)" in curse.text
    assert LogLine("a", "[strict-mode] unknown config directive: x") in everything
    only_a = LogTail(tmp_path, app="a").read()
    assert {line.app for line in only_a} == {"a"}
    assert len(only_a) == 3


def test_describe_skips_chatter() -> None:
    assert describe(EmperorEvent(1, EventKind.SPAWNED, "a.ini", "x")) is None
    assert describe(EmperorEvent(1, EventKind.SHUTDOWN, None, "x")) is None
    line = describe(EmperorEvent(1, EventKind.THROTTLED, "a.ini", "x"))
    assert line is not None and "emperor-dev logs a" in line.text


def test_retry_muter_mutes_a_throttled_app_until_it_starts() -> None:
    muter = RetryMuter()
    stream = [
        LogLine("a", "banner"),
        LogLine("a", "cursed", EventKind.CURSED),
        LogLine("a", "throttled", EventKind.THROTTLED),
        LogLine("a", "banner again"),
        LogLine("a", "cursed again", EventKind.CURSED),
        LogLine("a", "throttled again", EventKind.THROTTLED),
        LogLine("b", "b is fine"),
        LogLine("a", "ready", EventKind.READY),
        LogLine("a", "serving"),
    ]
    shown = [line.text for line in stream if muter.keep(line)]
    assert shown == ["banner", "cursed", "throttled", "b is fine", "ready", "serving"]
    already = RetryMuter(["a"])  # ``up`` starts streaming after the throttling it already showed in its table
    assert [already.keep(line) for line in stream] == [False] * 6 + [True] * 3


def test_stream_says_removed_only_when_an_operator_removed_it_and_stays_quiet_while_muted() -> None:
    muter = RetryMuter()
    stream = [
        LogLine("a", "cursed", EventKind.CURSED),
        LogLine("a", "removed", EventKind.REMOVED),  # the emperor's removal before its retry: not true for the app
        LogLine("a", "throttled", EventKind.THROTTLED),
        LogLine("a", "maximum throttle reached", EventKind.MAX_THROTTLE),
        LogLine("a", "throttled", EventKind.THROTTLED),
        LogLine("a", "maximum throttle reached", EventKind.MAX_THROTTLE),
        LogLine("a", "stopping", EventKind.STOPPING),  # `emperor-dev rm a`: its state changes
        LogLine("a", "removed", EventKind.REMOVED),
    ]
    shown = [line.text for line in stream if muter.keep(line)]
    assert shown == ["cursed", "throttled", "removed"]


def event(kind: EventKind, died: bool = False) -> EmperorEvent:
    return EmperorEvent(1, kind, "a.ini", "x", died=died)


@pytest.mark.parametrize(
    ("stats", "kinds", "expected"),
    [
        ("starting", [], "starting"),
        ("starting", [EventKind.CURSED], "cursed"),
        ("cursed", [EventKind.CURSED], "cursed"),
        # Between two retries the stats alternate; the state does not.
        ("starting", [EventKind.CURSED, EventKind.THROTTLED, EventKind.CURSED], "throttled"),
        ("throttled", [EventKind.CURSED, EventKind.THROTTLED, EventKind.CURSED], "throttled"),
        ("cursed", [EventKind.CURSED, EventKind.THROTTLED], "throttled"),
        # A ready or a reload ends the episode.
        ("starting", [EventKind.CURSED, EventKind.THROTTLED, EventKind.READY], "starting"),
        ("starting", [EventKind.THROTTLED, EventKind.RELOADING, EventKind.CURSED], "cursed"),
        ("ready", [EventKind.CURSED, EventKind.THROTTLED], "ready"),
        ("stopped", [EventKind.THROTTLED], "stopped"),
    ],
)
def test_app_state_is_one_truth_over_a_retry_episode(stats: str, kinds: list[EventKind], expected: str) -> None:
    assert app_state(stats, [event(kind) for kind in kinds]) == expected


def test_a_removal_without_a_curse_is_a_death_in_the_stream() -> None:
    line = describe(event(EventKind.REMOVED, died=True))
    assert line is not None and line.kind is EventKind.CURSED and RetryMuter().keep(line)


def test_plain_table_and_prefixed_lines_are_aligned_without_escape_codes(tmp_path: Path) -> None:
    apps = [
        AppStatus("service1", "http://service1.api.localhost:8080/", "ready", 12, "/x", None, None),
        AppStatus("b", "http://b.api.localhost:8080/", "cursed", None, "/y", None, None, ["chdir(): boom"]),
    ]
    assert plain_table(apps).splitlines() == [
        "NAME      URL                                  STATE   PID",
        "service1  http://service1.api.localhost:8080/  ready   12",
        "b         http://b.api.localhost:8080/         cursed  -",
    ]
    with (tmp_path / "out").open("w") as stream:
        output = Output(stream)
        output.add_names(["service1", "b"])
        output.table(apps)
        output.log_line(LogLine("b", "cursed", EventKind.CURSED))
    text = (tmp_path / "out").read_text()
    assert "\x1b" not in text
    assert text.splitlines()[-2:] == ["b        | chdir(): boom", "emperor  | b: cursed"]


# -- the real CLI -----------------------------------------------------------------------------------------------


@pytest.fixture
def workspace(uwsgi_bin: Path) -> Iterator[Path]:
    """A short private dir under /tmp: ``apps/`` (copies of example apps), ``tmp/`` (the runs' TMPDIR), state."""
    path = Path(tempfile.mkdtemp(prefix="edev-", dir="/tmp"))
    (path / "tmp").mkdir()
    (path / "apps").mkdir()
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def copy_example(workspace: Path, example: str, as_dir: str) -> Path:
    """A copy of an example app (its pytest files are not needed); service1/2 would need their venvs."""
    target = workspace / "apps" / as_dir
    shutil.copytree(EXAMPLES / example, target, ignore=shutil.ignore_patterns("test_*", "pytest.ini", "__pycache__"))
    return target


def env_for(workspace: Path) -> dict[str, str]:
    return dict(os.environ, TMPDIR=str(workspace / "tmp"), EMPEROR_DEV_STATE_DIR=str(workspace / "state"))


def cli(workspace: Path, *args: str, timeout: float = TIMEOUT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], cwd=workspace / "apps", env=env_for(workspace), capture_output=True,
                          text=True, timeout=timeout, check=False)  # fmt: skip


class Up:
    """A running ``emperor-dev up`` whose stdout (piped, so plain text) is read line by line by a thread."""

    def __init__(self, workspace: Path, *args: str) -> None:
        self.workspace = workspace
        self.process = subprocess.Popen(
            [*CLI, "up", "--port", "0", *args], cwd=workspace / "apps", env=env_for(workspace),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._eof = False
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.instance: Instance | None = None

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def expect(self, pattern: str, *, after: int = 0, timeout: float = TIMEOUT) -> int:
        """Wait for a line (after line number ``after``) matching ``pattern``; return the next line's number."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for i, line in enumerate(self.lines[after:], start=after):
                    if regex.search(line):
                        return i + 1
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._eof:
                    why = "up exited" if self._eof else f"timed out after {timeout} s"
                    raise AssertionError(f"{why} waiting for {pattern!r}; output:\n" + "\n".join(self.lines[-60:]))
                self._cond.wait(remaining)

    def started(self) -> Up:
        """Wait for the table and its summary line; read the instance it published."""
        self.expect(r"apps ready\. Ctrl-C stops them all")
        self.instance = StateDir(self.workspace / "state").read()
        assert self.instance is not None and self.instance.pid == self.process.pid
        return self

    def stop(self, sig: int = signal.SIGINT, timeout: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        finally:
            self._reader.join(5)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._reader.join(5)

    def get(self, name: str, path: str = "/") -> tuple[int, str]:
        """A request through the router's TCP port, as a browser would send it."""
        assert self.instance is not None
        address = ("127.0.0.1", self.instance.router_port)
        with direct_session(address, "http", f"http://{name}.api.localhost/", timeout=30) as session:
            response = session.get(path)
        return response.status_code, response.content.decode()


@pytest.fixture
def up_process(workspace: Path) -> Iterator[list[Up]]:
    """Every ``Up`` a test starts, SIGKILLed after it if still running (the emperor then stops its vassals on its
    parent-death signal, and the next run recovers the rest)."""
    started: list[Up] = []
    yield started
    for up in started:
        up.kill()


def assert_nothing_left(up: Up, names: list[str]) -> None:
    """No process of the run, no run dir, no control socket, no state, no app socket of the test's names."""
    assert up.instance is not None
    run_dir = up.instance.run_dir
    assert processes_with_marker(run_dir) == []
    assert not Path(run_dir).exists()
    assert not Path(up.instance.control).exists()
    assert not (up.workspace / "state").exists()
    assert [p for p in (up.workspace / "tmp").rglob("*") if p.suffix in (".lock", ".sock")] == []
    for name in names:
        assert not Path(f"/tmp/{name}.api.sock").exists(), name


def names_for_test() -> tuple[str, str]:
    tag = uuid.uuid4().hex[:6]
    return f"s3-{tag}", f"bc-{tag}"


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
                     re.M)  # fmt: skip
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

    assert up.stop(signal.SIGINT) == 0
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
    missing = cli(workspace, "request", "nosuchapp", "/", "--fail")
    assert missing.returncode == 1 and "502 Bad Gateway" in missing.stdout
    assert "nosuchapp answered 502 Bad Gateway to GET / (--fail)" in missing.stderr

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

    down = cli(workspace, "down")
    assert (down.returncode, down.stdout) == (0, "stopped\n")
    assert up.stop() == 0
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
    assert up.stop(signal.SIGTERM) == 0
    assert_nothing_left(up, [good, broken])


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
    assert up.stop() == 0
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
    assert third.stop(signal.SIGTERM) == 0
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
    assert up.stop() == 0
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
