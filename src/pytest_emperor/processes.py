"""Process plumbing: find a run's processes by an environment marker, wait for exits, kill what is left.

Every process a run starts (the emperor, and through fork/exec every vassal master and worker) inherits the
environment variable ``MARKER_ENV=<run dir>``. That marker, read back from ``/proc/<pid>/environ``, is how a run
finds its own processes (and only its own: a production emperor or another run has no marker or another value),
including after the pytest process that started them was SIGKILLed.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import signal
import time
from collections.abc import Callable, Iterable

MARKER_ENV = "PYTEST_EMPEROR_RUN"

_PR_SET_PDEATHSIG = 1


def processes_with_marker(value: str) -> list[int]:
    """PIDs of live (non-zombie) processes whose environment holds ``MARKER_ENV=value``."""
    needle = f"{MARKER_ENV}={value}".encode()
    me = os.getpid()
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                env = f.read().split(b"\0")
            with open(f"/proc/{entry}/stat", "rb") as f:
                state = f.read().rsplit(b")", 1)[1].split()[0]
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if needle in env and state != b"Z":
            pids.append(int(entry))
    return pids


def kill_marked(value: str, timeout: float = 5.0) -> list[int]:
    """SIGKILL every process carrying the marker ``value`` until a scan finds none; return the pids killed.

    One scan is not enough: a process of the run can fork between the scan and its kill (a master respawning a
    worker), and the child carries the marker too. Scanning again after each round ends once nothing is left
    to fork. A process already in its exit teardown cannot be found (``/proc/<pid>/environ`` fails with ESRCH
    once its memory is released) but may still hold its listening sockets for milliseconds: callers decide
    about sockets by their recorded identity, never by whether a connect still succeeds
    (docs/uwsgi-behaviour.md, "Recovery").
    """
    killed: list[int] = []
    deadline = time.monotonic() + timeout
    while pids := processes_with_marker(value):
        killed += [pid for pid in pids if pid not in killed]
        if kill_all(pids, timeout=max(deadline - time.monotonic(), 0)):
            break  # unkillable (uninterruptible sleep): nothing more to do here, the caller sees them alive
    return killed


def children_of(pid: int) -> list[int]:
    """PIDs of the live children of ``pid`` (from ``/proc/*/stat``, which every Linux kernel has)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != b"Z":
            found.append(int(entry))
    return found


def is_sleeping(pid: int) -> bool:
    """True if ``pid`` is blocked in the kernel (state S or D), i.e. not running Python code right now."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] in (b"S", b"D")
    except OSError:
        return False


def command_line(pid: int) -> bytes:
    """The raw ``/proc/<pid>/cmdline`` of a process (empty if it is gone)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""


def wait_exit(pid: int, timeout: float) -> bool:
    """Wait until ``pid`` is gone (exited; not reaped, which is its parent's job); True if it did in time.

    Uses a pidfd, which becomes readable when the process exits: an event, not a poll. Kernels before 5.3 fall
    back to a tight ``kill(pid, 0)`` poll.
    """
    try:
        fd = os.pidfd_open(pid)  # type: ignore[attr-defined,unused-ignore]
    except ProcessLookupError:
        return True
    except (AttributeError, OSError):
        return _poll_until(lambda: not _alive(pid), timeout)
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return bool(poller.poll(max(timeout, 0) * 1000))
    finally:
        os.close(fd)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return False


def _poll_until(done: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def kill_all(pids: Iterable[int], sig: int = signal.SIGKILL, timeout: float = 5.0) -> list[int]:
    """Send ``sig`` to each pid and wait for them to be gone; return those still alive after ``timeout``."""
    pids = list(pids)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
    deadline = time.monotonic() + timeout
    return [pid for pid in pids if not wait_exit(pid, deadline - time.monotonic())]


def _prctl() -> Callable[..., int] | None:
    try:
        return ctypes.CDLL(None, use_errno=True).prctl  # type: ignore[no-any-return,unused-ignore]
    except (OSError, AttributeError):  # not Linux: the next run's recovery still cleans up
        return None


# Looked up once here: a preexec_fn runs between fork and exec, where a dlopen in a process that has threads (the
# emperor's log reader, the router's) may deadlock on a lock another thread held at fork time.
_PRCTL = _prctl()


def die_with_parent(sig: int = signal.SIGINT) -> Callable[[], None]:
    """A ``preexec_fn`` asking the kernel to send ``sig`` to the child when its parent dies (Linux only).

    For the emperor, SIGINT is its graceful shutdown: if pytest is SIGKILLed the vassals are still stopped, and
    the next run removes what is left on disk.
    """

    def preexec() -> None:
        if _PRCTL is not None:
            _PRCTL(_PR_SET_PDEATHSIG, sig, 0, 0, 0)

    return preexec
