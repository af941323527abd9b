"""The one reader of ``/proc/<pid>/stat`` and ``/proc/net/unix`` (Linux), and of a process's owner, children and
open files:
what the engine (finding, freezing and killing a run's processes; who serves a socket path a deploy would take),
the router (waiting for nginx's workers to be asleep) and ``up``'s page (when an app started) ask of a process.

A process's name (field 2 of ``stat``) is in parentheses and may itself hold spaces and ``)``, so the fields after
it are split from the *last* ``)`` (proc(5)). A process can exit between any two reads: each function answers
"gone" (empty, None) for it rather than raising.
"""

from __future__ import annotations

import os
from collections.abc import Iterator


def _fields(pid: int) -> list[bytes]:
    """The fields of ``/proc/<pid>/stat`` after the name: ``[state, ppid, pgrp, ...]``; empty if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return []


def state(pid: int) -> bytes:
    """The state letter of ``pid`` (R running or runnable, S asleep, D in uninterruptible sleep, T/t stopped, Z a
    zombie ...); empty when it is gone."""
    fields = _fields(pid)
    return fields[0] if fields else b""


def parent(pid: int) -> int | None:
    """The parent pid of ``pid`` (None if it is gone or has none: the kernel's own processes)."""
    fields = _fields(pid)
    return (int(fields[1]) or None) if len(fields) > 1 else None


def start_ticks(pid: int) -> int | None:
    """When ``pid`` started, in clock ticks after boot (field 22, ``starttime``); None if it is gone."""
    fields = _fields(pid)
    return int(fields[19]) if len(fields) > 19 else None


def owner(pid: int) -> int | None:
    """The real uid of ``pid`` (``Uid:`` in ``/proc/<pid>/status``; the owner of ``/proc/<pid>`` is root for a
    process that dropped privileges, which is then not dumpable); None if it is gone."""
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"Uid:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def children(pid: int) -> list[int] | None:
    """The children of ``pid`` (zombies included), from ``/proc/<pid>/task/*/children``, one small read a thread;
    empty if it is gone, None on a kernel built without those files (the caller scans instead)."""
    try:
        found: list[int] = []
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children", "rb") as f:
                found.extend(int(child) for child in f.read().split())
    except FileNotFoundError:
        return None if os.path.exists(f"/proc/{pid}") else []
    except OSError:
        return []
    return found


def pids() -> Iterator[int]:
    """The pid of every process visible now."""
    return (int(entry) for entry in os.listdir("/proc") if entry.isdigit())


def every_process() -> Iterator[tuple[int, bytes, int]]:
    """``(pid, state, parent pid)`` of every process visible now (those gone meanwhile are skipped)."""
    for pid in pids():
        fields = _fields(pid)
        if len(fields) > 1:
            yield pid, fields[0], int(fields[1])


def unix_socket_paths() -> dict[str, str]:
    """Every bound unix socket with a filesystem path, from ``/proc/net/unix``, by the name its holders' fds link
    to (``socket:[<inode>]``); empty where the file cannot be read. Paths are decoded as the OS decodes file names
    (``os.fsdecode``): any local user may bind a name that is not UTF-8."""
    paths: dict[str, str] = {}
    try:
        with open("/proc/net/unix", "rb") as f:
            next(f)  # the header
            for line in f:
                fields = line.rstrip(b"\n").split(maxsplit=7)
                if len(fields) == 8 and fields[7].startswith(b"/"):  # a line another user's name broke is skipped
                    paths[f"socket:[{fields[6].decode('ascii', 'replace')}]"] = os.fsdecode(fields[7])
    except (OSError, StopIteration):
        return {}
    return paths


def open_files(pid: int) -> list[str]:
    """What each open fd of ``pid`` links to (``/proc/<pid>/fd``); empty if it is gone or not ours to read."""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return []
    targets = []
    for fd in fds:
        try:
            targets.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:  # closed meanwhile
            continue
    return targets
