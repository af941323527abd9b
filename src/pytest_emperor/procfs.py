"""The one reader of ``/proc`` (Linux) for what the engine and the router ask of it: a process's state letter and
parent (``/proc/<pid>/stat``: finding, freezing and killing a run's processes; waiting for nginx's workers to be
asleep), its open files, and the bound unix sockets (``/proc/net/unix``: what a run's processes serve, and who
serves a socket path a deploy would take).

A process's name (field 2) is in parentheses and may itself hold spaces and ``)``, so the fields after it are
split from the *last* ``)`` (proc(5)). Every function answers "gone" (empty, None) rather than raising: a process
can exit between any two reads.
"""

from __future__ import annotations

import os
from collections.abc import Iterator


def _fields(pid: int | str) -> list[bytes]:
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
    to (``socket:[<inode>]``); empty where the file cannot be read."""
    paths: dict[str, str] = {}
    try:
        with open("/proc/net/unix") as f:
            next(f)  # the header
            for line in f:
                fields = line.split(maxsplit=7)
                if len(fields) == 8 and fields[7].startswith("/"):
                    paths[f"socket:[{fields[6]}]"] = fields[7].rstrip("\n")
    except OSError:
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
