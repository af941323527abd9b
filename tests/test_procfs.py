"""procfs against real processes: a sleeping child, a stopped one, a zombie, one that is gone; and how an error
message names a process."""

from __future__ import annotations

import os
import pwd
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from pytest_emperor import procfs
from pytest_emperor.engine.processes import described, wait_exit

DEADLINE = 30.0
# prints a line once it runs its own code (its start-up reads are over), then waits for its stdin to close
WAITING = [sys.executable, "-c", "import sys; print(flush=True); sys.stdin.read()"]


def started(argv: list[str]) -> subprocess.Popen[bytes]:
    child = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert child.stdout is not None and child.stdout.readline() == b"\n"
    return child


def test_state_and_parent_of_real_processes() -> None:
    child = started(WAITING)
    try:
        assert procfs.parent(child.pid) == os.getpid()
        assert procfs.state(child.pid) in (b"R", b"S")
        assert child.pid in {pid for pid, _, parent in procfs.every_process() if parent == os.getpid()}
        assert child.pid in (procfs.children(os.getpid()) or [])  # this process's threads' children included
        assert procfs.owner(child.pid) == os.getuid()
        assert (procfs.start_ticks(child.pid) or 0) >= (procfs.start_ticks(os.getpid()) or 0) > 0
        child.send_signal(signal.SIGSTOP)
        deadline = time.monotonic() + DEADLINE
        while procfs.state(child.pid) != b"T":  # the kernel stops it at its next return to user space
            assert time.monotonic() < deadline, procfs.state(child.pid)
        child.kill()
        assert wait_exit(child.pid, DEADLINE)
        assert procfs.state(child.pid) == b"Z"  # exited, not reaped: still listed, as a zombie
        assert procfs.parent(child.pid) == os.getpid()
    finally:
        child.kill()
        child.wait()
    assert procfs.state(child.pid) == b""  # reaped: gone
    assert procfs.parent(child.pid) is None and procfs.owner(child.pid) is None
    assert child.pid not in set(procfs.pids())
    assert procfs.children(child.pid) == []  # gone: none


def test_a_name_with_parentheses_and_spaces_is_skipped_whole() -> None:
    # the name field (comm) can be set by the process itself: ") Z 1 (" must not shift the fields after it
    code = "import ctypes, sys; ctypes.CDLL(None).prctl(15, b') Z 1 (', 0, 0, 0); print(flush=True); sys.stdin.read()"
    child = started([sys.executable, "-c", code])
    try:
        with open(f"/proc/{child.pid}/comm", "rb") as f:
            assert f.read() == b") Z 1 (\n"
        assert procfs.state(child.pid) in (b"R", b"S")
        assert procfs.parent(child.pid) == os.getpid()
    finally:
        child.kill()
        child.wait()


def test_a_process_is_named_on_one_printable_line_for_an_error_message() -> None:
    child = started(["/bin/sh", "-c", "echo; cat", "\x1b[31mred\nline", "x" * 100])
    try:
        text = described(child.pid)
    finally:
        child.kill()
        child.wait()
    user = pwd.getpwuid(os.getuid()).pw_name
    assert text.startswith(f"pid {child.pid} ({user}: /bin/sh -c echo; cat \\x1b[31mred line xxx")
    assert text.endswith("…)") and len(text) < 120 and text.isprintable()
    assert described(child.pid) == f"pid {child.pid} (gone)"


def test_a_socket_name_that_is_not_utf8_is_read_as_the_os_decodes_file_names(tmp_path: Path) -> None:
    path = os.fsencode(tmp_path) + b"/caf\xe9.sock"  # any local user may bind such a name
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as bound:
        bound.bind(path)
        assert os.fsdecode(path) in procfs.unix_socket_paths().values()
