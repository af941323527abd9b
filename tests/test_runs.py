"""Run dirs and recovery: a run that was SIGKILLed is cleaned up by the next one; live runs never are."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Callable

import pytest

from pytest_emperor.processes import MARKER_ENV, processes_with_marker
from pytest_emperor.runs import RunDir, recover_abandoned, remove_stale_socket, runs_root, socket_is_live


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A short private dir under /tmp (socket paths must stay under 108 bytes; tmp_path is too long)."""
    path = Path(tempfile.mkdtemp(prefix="pe-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def listening_socket(path: Path) -> socket.socket:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen()
    return server


def test_runs_root_is_short_and_per_user() -> None:
    root = runs_root()
    assert root.name == f"pytest-emperor-{os.getuid()}"
    assert len(str(root)) < 60


def test_create_and_close(short_dir: Path) -> None:
    run = RunDir.create(short_dir)
    assert run.path.is_dir() and (short_dir / f"{run.tag}.lock").exists()
    run.record_socket("/tmp/a.sock")
    assert run.recorded_sockets() == ["/tmp/a.sock"]
    run.close()
    assert list(short_dir.iterdir()) == []


def test_kept_run_dir_is_not_recovered(short_dir: Path) -> None:
    run = RunDir.create(short_dir)
    run.close(keep=True)
    assert recover_abandoned(short_dir) == []
    assert run.path.is_dir()


def test_live_run_is_never_touched(short_dir: Path) -> None:
    live = RunDir.create(short_dir)
    try:
        assert recover_abandoned(short_dir) == []
        assert live.path.is_dir()
    finally:
        live.close()


def test_stale_socket_is_removed_live_one_never(short_dir: Path) -> None:
    live_path, stale_path = short_dir / "live.sock", short_dir / "stale.sock"
    with listening_socket(live_path):
        listening_socket(stale_path).close()  # the file stays, nobody serves it
        assert remove_stale_socket(stale_path) and not stale_path.exists()
        assert not remove_stale_socket(live_path) and socket_is_live(live_path)
    regular = short_dir / "file"
    regular.write_text("not a socket")
    assert not remove_stale_socket(regular) and regular.exists()


# A run that deploys a vassal and starts a process that ignores SIGINT (as a wedged vassal would), then waits
# to be SIGKILLed.
KILLED_RUN = """
import os, signal, subprocess, sys, threading
from pathlib import Path
from pytest_emperor.emperor import Emperor
from pytest_emperor.processes import MARKER_ENV
emperor = Emperor(runs_root=Path(sys.argv[1])).start()
vassal = emperor.deploy(sys.argv[2])
wedged = subprocess.Popen(
    [sys.executable, "-c", "import signal, threading; signal.signal(signal.SIGINT, signal.SIG_IGN); "
     "print('x', flush=True); threading.Event().wait()"],
    env=dict(os.environ, **{MARKER_ENV: str(emperor.run_dir)}), start_new_session=True, stdout=subprocess.PIPE)
wedged.stdout.readline()
print(emperor.run_dir, vassal.socket_path, wedged.pid, flush=True)
threading.Event().wait()
"""


def test_sigkilled_run_is_recovered_by_the_next(short_dir: Path, make_app: Callable[..., Path], uwsgi_bin: Path
                                                ) -> None:  # fmt: skip
    sockets = short_dir / "s"
    sockets.mkdir()
    app = make_app(extra_ini=f"socket = {sockets}/%n.api.sock")
    root = short_dir / "runs"
    owner = subprocess.Popen([sys.executable, "-c", KILLED_RUN, str(root), str(app)], stdout=subprocess.PIPE,
                             text=True)  # fmt: skip
    assert owner.stdout is not None
    run_dir, socket_path, wedged = owner.stdout.readline().split()
    # A socket of someone else's, recorded by the dead run by mistake: recovery must leave it alone.
    foreign = sockets / "foreign.sock"
    with listening_socket(foreign):
        with open(Path(run_dir) / "sockets", "a") as f:
            f.write(f"{foreign}\n")
        owner.send_signal(signal.SIGKILL)
        owner.wait(timeout=10)
        assert processes_with_marker(run_dir), "the run's processes should outlive its owner until recovery"

        recovered = recover_abandoned(root)

        assert [r.path for r in recovered] == [Path(run_dir)]
        assert int(wedged) in recovered[0].killed
        assert processes_with_marker(run_dir) == []
        assert not Path(run_dir).exists() and list(root.iterdir()) == []
        assert not os.path.exists(socket_path)
        assert socket_is_live(foreign)


def test_marker_finds_only_its_own_processes(short_dir: Path) -> None:
    script = "import threading; print('x', flush=True); threading.Event().wait()"
    mine = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                            env=dict(os.environ, **{MARKER_ENV: str(short_dir)}))  # fmt: skip
    other = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                             env=dict(os.environ, **{MARKER_ENV: str(short_dir) + "-other"}))  # fmt: skip
    try:
        for proc in (mine, other):
            assert proc.stdout is not None
            proc.stdout.readline()
        assert processes_with_marker(str(short_dir)) == [mine.pid]
    finally:
        for proc in (mine, other):
            proc.kill()
            proc.wait()

