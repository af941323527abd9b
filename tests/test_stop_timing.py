"""Stopping at uWSGI's own speed without cutting corners: the master woken out of its 1 s tick still exits on its
own (vacuum done, not a curse), background removals are waited for where they matter, and nothing is left."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import pytest

from pytest_emperor import procfs
from pytest_emperor.engine.emperor import Emperor
from pytest_emperor.engine.emperor_log import EventKind
from pytest_emperor.engine.events import EventLog
from pytest_emperor.engine.processes import (
    MARKER_ENV,
    _children_by_scan,
    catches,
    children_of,
    hasten_stop,
    is_unexeced_fork,
    kill_marked,
    processes_with_marker,
    wait_exit,
)
from pytest_emperor.engine.runs import bound_unix_paths
from pytest_emperor.engine.stats import StatsClient

MakeApp = Callable[..., Path]


def test_removal_lets_the_master_exit_on_its_own_with_vacuum(live_emperor: Emperor, make_app: MakeApp) -> None:
    vassal = live_emperor.deploy(make_app())
    assert vassal.socket_path is not None
    vassal.remove()
    log = vassal.log_text()
    # Woken, the master reaped its workers and ran vacuum itself: nothing was killed, and no curse was logged.
    assert "goodbye to uWSGI." in log and f"VACUUM: unix socket {vassal.socket_path} removed." in log, log
    assert "DAMN" not in log and "NO MERCY" not in log, log
    assert not any(e.is_death for e in vassal.events())
    assert [e.kind for e in vassal.events() if e.kind in (EventKind.STOPPING, EventKind.REMOVED)] == [
        EventKind.STOPPING,
        EventKind.REMOVED,
    ]


def test_background_removal_is_awaited_by_a_redeploy_of_the_same_name(live_emperor: Emperor, make_app: MakeApp) -> None:
    app = make_app()
    first = live_emperor.deploy(app)
    first_pid = first.pid
    first.remove(wait=False)
    assert first.name not in live_emperor.vassals  # forgotten at once
    second = live_emperor.deploy(app)  # same name, same socket: waits for the first to be gone, then binds it
    assert second.pid != first_pid and first_pid not in processes_with_marker(str(live_emperor.run_dir))
    assert second.request().status_code == 200
    removed = [e for e in live_emperor.events(first.id) if e.kind is EventKind.REMOVED]
    assert len(removed) == 1 and removed[0].seq < live_emperor.events(second.id, since=removed[0].seq)[0].seq


def test_background_removal_error_reaches_the_next_waiter(live_emperor: Emperor, make_app: MakeApp) -> None:
    vassal = live_emperor.deploy(make_app())
    os.kill(live_emperor.pid, signal.SIGKILL)  # nobody left to ask: the removal cannot even read the stats
    assert wait_exit(live_emperor.pid, 10)
    vassal.remove(wait=False)
    with pytest.raises(ConnectionRefusedError):
        live_emperor.vassals.finish_removals(vassal.name)
    live_emperor.finish_removals()  # reported once


def test_emperor_stop_wakes_every_vassal_and_leaves_nothing(uwsgi_bin: Path, make_app: MakeApp) -> None:
    with Emperor(uwsgi_bin, keep=True) as emperor:
        vassals = [emperor.deploy(make_app(f"app{i}")) for i in range(3)]
        vassals[0].remove(wait=False)  # still being removed when the emperor stops: awaited, not raced
    try:
        assert processes_with_marker(str(emperor.run_dir)) == []
        for vassal in vassals:
            assert vassal.socket_path is not None and not os.path.exists(vassal.socket_path)
            assert "VACUUM: unix socket" in vassal.log_path.read_text()
        log = emperor.log_path.read_text()
        assert "RAGNAROK EVOKED" in log and "The Emperor is buried." in log
        assert "curse the uwsgi instance" not in log and "NO MERCY" not in log, log
    finally:
        shutil.rmtree(emperor.run_dir)


def test_rings_never_make_the_emperor_write_into_a_closed_connection(live_emperor: Emperor) -> None:
    stats = StatsClient(str(live_emperor.stats_path), EventLog(live_emperor.log_path))
    for _ in range(50):
        stats.ring()
    stats.read()  # answered after every ring before it
    stats.close()
    assert "Broken pipe" not in live_emperor.log_path.read_text()


def test_a_hung_master_is_removed_and_its_socket_with_it(live_emperor: Emperor, make_app: MakeApp) -> None:
    code = "import threading\nprint('importing forever', flush=True)\nthreading.Event().wait()\n"
    vassal = live_emperor.deploy(make_app(code=code), wait=False)
    deadline = time.monotonic() + 30
    while "importing forever" not in vassal.log_text():  # polled: no event says the import has begun
        assert time.monotonic() < deadline, vassal.log_text()
        time.sleep(0.01)
    vassal.remove()  # a master stuck in its import does not read the emperor's stop
    assert vassal.socket_path is not None and not os.path.exists(vassal.socket_path)
    assert [p for p in processes_with_marker(str(live_emperor.run_dir)) if p != live_emperor.pid] == []


def test_a_starting_master_is_noted_frozen_before_the_kill(uwsgi_bin: Path) -> None:
    # A master between its bind() and Python's start catches no SIGINT, so hasten_stop kills it (no vacuum):
    # what it has bound must be noted while it cannot bind more. An exec-as-user hook holds it there (with
    # chown-socket, uWSGI runs that hook after the bind, not before it).
    work = Path(tempfile.mkdtemp(prefix="pe-", dir="/tmp"))
    sock, started = work / "m.sock", work / "started"
    user = pwd.getpwuid(os.getuid()).pw_name
    master = subprocess.Popen(
        [str(uwsgi_bin), "--master", "--socket", str(sock), "--chown-socket", user,
         "--exec-as-user", f"touch {started} && exec sleep 60"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while not started.exists():  # polled: the hook's file is the only sign
            assert master.poll() is None and time.monotonic() < deadline
            time.sleep(0.01)
        assert not catches(master.pid, signal.SIGINT)
        noted: list[tuple[bytes, set[str]]] = []
        hasten_stop([master.pid], grace=5, timeout=10,
                    note=lambda pids: noted.extend((procfs.state(pid), bound_unix_paths([pid])) for pid in pids))
        assert noted[:1] == [(b"T", {str(sock)})] and {state for state, _ in noted} == {b"T"}
        assert master.wait(5) == -signal.SIGKILL
    finally:
        master.kill()
        master.wait()
        shutil.rmtree(work)


def test_a_frozen_master_gets_its_sigint_once_resumed() -> None:
    # A Python SIGINT handler: the signal sent while the process was stopped must still arrive. The handler
    # exits at once (status 3): an uncaught KeyboardInterrupt would go through the interpreter's finalization,
    # which restores SIGINT's default disposition before the process is gone, and a round of hasten_stop in that
    # window sees a process that no longer catches SIGINT and kills it, as it must a master that has not started
    # Python (seen 4 times in 20 under Python 3.13, whose finalization is longer; under load on any Python).
    code = (
        "import os, signal, sys; signal.signal(signal.SIGINT, lambda *_: os._exit(3)); print(1, flush=True); "
        "sys.stdin.read()"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"1\n"
        states: list[bytes] = []
        hasten_stop([proc.pid], grace=5, timeout=10, note=lambda pids: states.extend(procfs.state(p) for p in pids))
        assert states[:1] == [b"T"] and set(states) == {b"T"}  # one round, or more if it is slow to exit
        assert proc.wait(5) == 3  # its SIGINT arrived: not the SIGKILL of the timeout
    finally:
        proc.kill()
        proc.wait()


def test_kill_marked_notes_each_round_frozen() -> None:
    marker = tempfile.mkdtemp(prefix="pe-", dir="/tmp")
    code = "import sys; print(1, flush=True); sys.stdin.read()"
    procs = [subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              env=dict(os.environ, **{MARKER_ENV: marker})) for _ in range(2)]
    try:
        for proc in procs:
            assert proc.stdout is not None and proc.stdout.readline() == b"1\n"
        noted: list[tuple[int, bytes]] = []
        killed = kill_marked(marker, note=lambda pids: noted.extend((p, procfs.state(p)) for p in pids))
        assert sorted(noted) == sorted((proc.pid, b"T") for proc in procs) and sorted(killed) == sorted(
            proc.pid for proc in procs
        )
        assert [proc.wait(5) for proc in procs] == [-signal.SIGKILL] * 2
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
        os.rmdir(marker)


def test_children_of_agrees_with_a_scan_of_proc() -> None:
    sleepers = [subprocess.Popen(["sleep", "30"]) for _ in range(3)]
    try:
        assert sorted(children_of(os.getpid())) == sorted(_children_by_scan(os.getpid())) != []
        sleepers[0].kill()
        wait_exit(sleepers[0].pid, 5)
        assert sleepers[0].pid not in children_of(os.getpid())  # a zombie is not a live child
    finally:
        for sleeper in sleepers:
            sleeper.kill()
            sleeper.wait()
    assert children_of(2**22 + 1) == []


def test_catches_reads_the_installed_handlers() -> None:
    code = "import signal, sys; signal.signal(signal.SIGUSR1, lambda *a: None); print(1, flush=True); sys.stdin.read()"
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"1\n"
        assert catches(proc.pid, signal.SIGUSR1) and catches(proc.pid, signal.SIGINT)  # Python's own handler
        assert not catches(proc.pid, signal.SIGUSR2) and not catches(proc.pid, signal.SIGHUP)
    finally:
        proc.kill()
        proc.wait()


def test_the_plugin_imports_no_machinery_without_emperor() -> None:
    code = (
        "import sys, pytest, pytest_emperor.plugin\n"
        "heavy = [m for m in ('requests', 'asyncio', 'filelock', 'pytest_emperor.engine.emperor',"
        " 'pytest_emperor.engine.vassal', 'pytest_emperor.routing.router') if m in sys.modules]\n"
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert out.strip() == "[]"


_FORKER = """
import os, signal, subprocess, sys
read_end, write_end = os.pipe()
pid = os.fork()
if pid == 0:  # a fork that never execs, like the emperor's between fork() and execvp(): Python's SIGINT handler
    try:
        os.read(read_end, 1)
    except KeyboardInterrupt:
        print("SIGINT ran the parent's handler", flush=True)
    os._exit(0)
execed = subprocess.Popen(["sleep", "60"])
print(pid, execed.pid, flush=True)
_, status = os.waitpid(pid, 0)
print("fork ended by signal", os.WTERMSIG(status) if os.WIFSIGNALED(status) else None, flush=True)
execed.kill()
"""


def test_a_fork_that_has_not_execd_is_killed_not_interrupted() -> None:
    # The emperor's fork before exec runs the emperor's own SIGINT handler: a shutdown of every vassal, logged and
    # written to their pipes (docs/uwsgi-behaviour.md, "The start-up races that stay handled"). hasten_stop kills it.
    proc = subprocess.Popen([sys.executable, "-c", _FORKER], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        fork, execed = map(int, proc.stdout.readline().split())
        assert is_unexeced_fork(fork)
        assert not is_unexeced_fork(execed) and not is_unexeced_fork(proc.pid)
        hasten_stop([fork], grace=1.0, timeout=3.0, note=lambda pids: None)
        assert proc.stdout.read().splitlines() == [f"fork ended by signal {int(signal.SIGKILL)}"]
    finally:
        proc.kill()
        proc.wait()
