"""``emperor-dev``'s control protocol (one JSON object a line) and its state dir (lock, recovery, socket path)."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytest_emperor.dev.control import AppStatus, ControlProtocolError, decode, encode
from pytest_emperor.dev.state import AlreadyRunning, Instance, NotRunning, StateDir

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
                       ["chdir(): No such file"])
    assert AppStatus.from_dict(decode(encode(status.to_dict()))) == status


# -- state dir --------------------------------------------------------------------------------------------------


def make_instance(state: StateDir, run_dir: Path, pid: int = 1) -> Instance:
    return Instance(pid=pid, control=str(state.path / "control.sock"), run_dir=str(run_dir), domain="api.localhost",
                    router_host="127.0.0.1", router_port=1, router_unix="/nowhere")


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
                       domain="api.localhost", router_host="127.0.0.1", router_port=1,
                       router_unix="/nowhere"))
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_control_socket_moves_to_the_run_dir_when_the_state_dir_is_too_deep() -> None:
    deep = StateDir(Path("/tmp") / ("d" * 110))
    assert deep.control_path(Path("/tmp/r")) == "/tmp/r/control.sock"
    shallow = StateDir(Path("/tmp/s"))
    assert shallow.control_path(Path("/tmp/r")) == "/tmp/s/control.sock"
