"""procfs against real processes: a sleeping child, a zombie, a stopped one, one that is gone; and how an error
message names a process."""

from __future__ import annotations

import os
import pwd
import signal
import subprocess
import sys

from pytest_emperor import procfs
from pytest_emperor.engine.processes import described, wait_exit


def test_state_and_parent_of_real_processes() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert procfs.parent(child.pid) == os.getpid()
        assert procfs.state(child.pid) in (b"R", b"S")
        assert child.pid in {pid for pid, _, parent in procfs.every_process() if parent == os.getpid()}
        child.send_signal(signal.SIGSTOP)
        assert wait_exit(child.pid, 0) is False
        while procfs.state(child.pid) != b"T":  # the kernel stops it at its next return to user space
            pass
        child.kill()
        assert wait_exit(child.pid, 10)
        assert procfs.state(child.pid) == b"Z"  # exited, not reaped: still listed, as a zombie
        assert procfs.parent(child.pid) == os.getpid()
    finally:
        child.kill()
        child.wait()
    assert procfs.state(child.pid) == b""  # reaped: gone
    assert procfs.parent(child.pid) is None
    assert child.pid not in {pid for pid, _, _ in procfs.every_process()}


def test_a_name_with_parentheses_and_spaces_is_skipped_whole() -> None:
    # the name field (comm) can be set by the process itself: ") R 1 " must not shift the fields after it
    code = "import ctypes, time; ctypes.CDLL(None).prctl(15, b') Z 1 (', 0, 0, 0); print(flush=True); time.sleep(60)"
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None and child.stdout.readline() == b"\n"  # renamed by now
        with open(f"/proc/{child.pid}/comm", "rb") as f:
            assert f.read() == b") Z 1 (\n"
        assert procfs.state(child.pid) in (b"R", b"S")
        assert procfs.parent(child.pid) == os.getpid()
    finally:
        child.kill()
        child.wait()


def test_a_process_is_named_on_one_printable_line_for_an_error_message() -> None:
    argv = [sys.executable, "-c", "print(flush=True);input()", "\x1b[31mred\nline", "x" * 100]
    child = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None and child.stdout.readline() == b"\n"
        text = described(child.pid)
    finally:
        child.kill()
        child.wait()
    user = pwd.getpwuid(os.getuid()).pw_name
    assert text.startswith(f"pid {child.pid} ({user}: {sys.executable} -c print(flush=True);input() ")
    assert "\\x1b[31mred line xx" in text and text.endswith("…)") and len(text) < 120
    assert text.isprintable()
    assert described(child.pid) == f"pid {child.pid} (gone)"
