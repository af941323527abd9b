"""Run dirs and recovery: a run that was SIGKILLed is cleaned up by the next one; live runs never are."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest
from filelock import FileLock

from pytest_emperor.engine.emperor import Emperor
from pytest_emperor.engine.processes import MARKER_ENV, kill_marked, processes_with_marker
from pytest_emperor.engine.runs import (
    RunDir,
    _recorded_sockets,
    recover_abandoned,
    remove_stale_socket,
    runs_root,
    socket_identity,
    socket_is_live,
)
from pytest_emperor.testing.broken import deploy_broken


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
    # no one else may open the lock (and hold it: a killed run would look alive), the shared runs root included
    assert (short_dir / f"{run.tag}.lock").stat().st_mode & 0o777 == 0o600
    run.record_socket("/tmp/a.sock")
    assert list(_recorded_sockets(run.path)) == ["/tmp/a.sock"]
    run.close()
    assert list(short_dir.iterdir()) == []



def test_a_fresh_lock_another_process_is_recovering_makes_create_draw_again(
    short_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Another process's recovery lists the lock file create has just made and locks it first (it holds it while
    # it looks for the run): create must not fail on that, but draw another tag.
    tags = iter(["aaaaaa", "bbbbbb"])
    monkeypatch.setattr(secrets, "token_hex", lambda n: next(tags))
    with FileLock(str(short_dir / "aaaaaa.lock"), timeout=0):  # the recovering process's lock
        run = RunDir.create(short_dir)
    try:
        assert run.tag == "bbbbbb"
    finally:
        run.close()

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


def test_socket_with_identity_is_removed_only_if_still_that_file(short_dir: Path) -> None:
    path = short_dir / "s.sock"
    listening_socket(path).close()
    old = socket_identity(path)
    assert old is not None
    os.unlink(path)
    with listening_socket(path):  # someone else's now, at the same path
        assert not remove_stale_socket(path, old) and path.exists()
    new = socket_identity(path)
    assert new is not None and new != old
    link = short_dir / "link.sock"
    link.symlink_to(path)  # a symlink is never followed: it has no socket identity of its own
    assert socket_identity(link) is None and not remove_stale_socket(link, new) and link.is_symlink()
    assert remove_stale_socket(path, new) and not path.exists()


def abandoned_run(root: Path) -> RunDir:
    """A run whose owner 'died': its lock released without any clean-up, as a SIGKILL leaves it."""
    run = RunDir.create(root)
    run._lock.release()
    return run


# Binds a unix socket at argv[1] (and listens unless argv[2] is "no-listen"), touches argv[3] MiB of memory,
# says so, then waits.
SERVE = """
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.bind(sys.argv[1])
if sys.argv[2] != "no-listen":
    s.listen()
ballast = bytearray(int(sys.argv[3]) << 20)
for i in range(0, len(ballast), 4096):
    ballast[i] = 1
print("bound", flush=True)
sys.stdin.readline()
"""


def serving(path: str, *, listen: bool = True, mib: int = 0, marker: str | None = None) -> subprocess.Popen[str]:
    """A process holding a unix socket bound at ``path`` (with ``MARKER_ENV=marker`` if given), once bound."""
    env = dict(os.environ, **({MARKER_ENV: marker} if marker else {}))
    proc = subprocess.Popen([sys.executable, "-c", SERVE, path, "listen" if listen else "no-listen", str(mib)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None and proc.stdout.readline() == "bound\n"
    return proc


def in_exit_teardown(pid: int) -> bool:
    """True while ``pid`` is exiting: its memory is released (its environ unreadable) but it is not a zombie yet,
    so it still holds its files."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            f.read()
        return False
    except ProcessLookupError:
        pass
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return False


def test_socket_held_by_a_process_in_exit_teardown_is_removed(short_dir: Path) -> None:
    # The race behind a flaky recovery: a worker of the dead run, ended by the emperor's graceful shutdown, still
    # accepts connections on its listening socket while its memory is torn down, and no marker scan sees it then.
    # "A connect succeeds" must not stop recovery from removing a socket that is provably the run's.
    run = abandoned_run(short_dir)
    path = str(short_dir / "app.sock")
    run.record_socket(path)
    # Tearing down 512 MiB takes milliseconds, and a loaded machine may not run this test inside them (it missed
    # them once in a dozen stress runs). Catching a worker there is the set-up, not what is tested: a missed
    # window means a fresh worker, not a retried assertion.
    for _ in range(10):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # the previous attempt's socket: this test's own
        worker = serving(path, mib=512, marker=run.marker)
        run.record_bound([path])
        worker.kill()
        while worker.poll() is None and not in_exit_teardown(worker.pid):
            pass  # polled: no event marks the teardown
        if worker.poll() is None:
            break  # caught in its exit teardown
    else:
        pytest.fail("never caught a worker in its exit teardown in 10 tries")
    try:
        recovered = recover_abandoned(short_dir)
        assert [r.path for r in recovered] == [run.path]
        assert recovered[0].sockets == [path] and not os.path.exists(path)
    finally:
        worker.wait()


def test_foreign_socket_between_bind_and_listen_is_left_alone(short_dir: Path) -> None:
    # Another run's master bound the path the dead run had predicted and has not listened yet: a connect is
    # refused, exactly as on a dead socket, but the file is not the dead run's.
    run = abandoned_run(short_dir)
    path = str(short_dir / "app.sock")
    run.record_socket(path)
    foreign = serving(path, listen=False)
    try:
        assert not socket_is_live(path)
        recovered = recover_abandoned(short_dir)
        assert [r.path for r in recovered] == [run.path] and recovered[0].sockets == []
        assert os.path.exists(path)
    finally:
        foreign.kill()
        foreign.wait()
        os.unlink(path)


def test_processes_forked_during_recovery_are_killed_too(short_dir: Path) -> None:
    # A master respawns workers; a fork after the marker scan must not survive the recovery.
    run = abandoned_run(short_dir)
    script = (
        "import os, time\nprint('x', flush=True)\n"
        "for _ in range(2000):\n    if os.fork() == 0:\n        time.sleep(60)\n        os._exit(0)\n"
        "    time.sleep(0.0005)\ntime.sleep(60)\n"
    )
    forker = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                              env=dict(os.environ, **{MARKER_ENV: run.marker}))
    assert forker.stdout is not None
    forker.stdout.readline()
    try:
        recover_abandoned(short_dir)
        assert processes_with_marker(run.marker) == []
    finally:
        kill_marked(run.marker)
        forker.wait()


# A run that deploys a vassal and starts a process that ignores SIGINT (as a wedged vassal would), then waits
# to be SIGKILLed.
KILLED_RUN = """
import os, signal, subprocess, sys, threading
from pathlib import Path
from pytest_emperor.engine.emperor import Emperor
from pytest_emperor.engine.processes import MARKER_ENV
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
                                                ) -> None:
    sockets = short_dir / "s"
    sockets.mkdir()
    app = make_app(extra_ini=f"socket = {sockets}/%n.api.sock")
    root = short_dir / "runs"
    owner = subprocess.Popen([sys.executable, "-c", KILLED_RUN, str(root), str(app)], stdout=subprocess.PIPE,
                             text=True)
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
                            env=dict(os.environ, **{MARKER_ENV: str(short_dir)}))
    other = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                             env=dict(os.environ, **{MARKER_ENV: str(short_dir) + "-other"}))
    try:
        for proc in (mine, other):
            assert proc.stdout is not None
            proc.stdout.readline()
        assert processes_with_marker(str(short_dir)) == [mine.pid]
    finally:
        for proc in (mine, other):
            proc.kill()
            proc.wait()



def test_a_stopped_emperor_leaves_no_file_descriptor(short_dir: Path, uwsgi_bin: Path) -> None:
    before = set(os.listdir("/proc/self/fd"))
    with Emperor(uwsgi_bin, runs_root=short_dir / "runs", timeout=30) as emperor:
        pass
    left = {fd: os.readlink(f"/proc/self/fd/{fd}") for fd in set(os.listdir("/proc/self/fd")) - before}
    assert left == {} and not emperor.running  # while the object lives on: not left to the garbage collector


def test_sockets_of_a_crash_looping_vassal_are_removed(uwsgi_bin: Path) -> None:
    # Its master is SIGKILLed a second after each start (no vacuum then), and each respawned master binds a new
    # file: each is recorded when that master reports ready, so whichever is left at the end is removed, even
    # when no master is alive to be seen serving it at the stop.
    with Emperor(uwsgi_bin) as emperor:
        vassal = deploy_broken(emperor, "crash-loop")
        path = vassal.socket_path
        assert path is not None
        vassal.wait_cursed()  # stopped just after a death: no master may be serving the file now
    assert not os.path.exists(path)


def test_a_master_records_its_socket_as_soon_as_it_has_bound_it(uwsgi_bin: Path) -> None:
    # A hung vassal binds its socket, then blocks importing its app: never ready, so only the master's own
    # record (bound_recorder.py, before the app loads) makes the file provably the run's, before the stop.
    with Emperor(uwsgi_bin) as emperor:
        vassal = deploy_broken(emperor, "hang")
        path = vassal.socket_path
        assert path is not None
        deadline = time.monotonic() + 20
        while (identity := socket_identity(path)) is None or identity not in _recorded_sockets(emperor.run_dir).get(
            path, set()
        ):  # polled: nothing tells the test when the master got there
            assert time.monotonic() < deadline, f"{path} never recorded: {_recorded_sockets(emperor.run_dir)}"
            time.sleep(0.01)
    assert not os.path.exists(path)


def test_a_socket_name_that_is_not_utf8_never_stops_a_clean_up(short_dir: Path, uwsgi_bin: Path) -> None:
    # /proc/net/unix lists every user's sockets; one bound at a name that is not UTF-8 (anyone may bind one) made
    # the stop's record of what the run serves raise, so the hung vassal's socket was left behind.
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as planted:
        planted.bind(os.fsencode(short_dir) + b"/caf\xe9.sock")
        with Emperor(uwsgi_bin) as emperor:
            vassal = deploy_broken(emperor, "hang")  # never ready: only the stop's record makes its file the run's
            path = vassal.socket_path
            assert path is not None
    assert not os.path.exists(path)
