"""Run directories: one short-pathed private directory per emperor, and recovery of runs that were killed.

Layout, under ``<tmp>/pytest-emperor-<uid>/`` (short on purpose: unix socket paths must stay under 108 bytes,
and pytest's own tmp paths are far longer)::

    <tag>.lock      held (flock) for the whole life of the run
    <tag>/          the run dir: vassals/, logs/, stats.sock, emperor.log, sockets (one path a line)

A lock that can be taken belongs to a run whose process is gone (flocks die with their owner), so the next run
on the machine kills that run's processes (found by their environment marker, see processes.py), unlinks the
sockets it recorded that are no longer served, and removes its directory. Live runs hold their lock and are never
touched; a socket that still answers is never unlinked.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from filelock import FileLock, Timeout

from pytest_emperor.processes import kill_all, processes_with_marker

# Linux's sockaddr_un.sun_path is 108 bytes including the terminating NUL.
AF_UNIX_MAX = 107


def runs_root() -> Path:
    """The per-user parent of all run dirs: ``$TMPDIR`` if short enough for socket paths, else ``/tmp``."""
    base = Path(tempfile.gettempdir())
    if len(str(base)) > 40:
        base = Path("/tmp")
    return base / f"pytest-emperor-{os.getuid()}"


def socket_is_live(path: str | Path) -> bool:
    """True if something accepts connections on the unix socket ``path``."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(os.fspath(path))
        except OSError:
            return False
    return True


def remove_stale_socket(path: str | Path) -> bool:
    """Unlink ``path`` if it is a unix socket nobody serves; a live one (not ours any more) is left alone."""
    try:
        if not stat.S_ISSOCK(os.lstat(path).st_mode) or socket_is_live(path):
            return False
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True


@dataclass
class RunDir:
    """A locked, private directory for one emperor run."""

    path: Path
    tag: str
    _lock: FileLock = field(repr=False)

    @classmethod
    def create(cls, root: Path | None = None) -> RunDir:
        """Recover abandoned runs under ``root``, then lock and create a fresh run dir there."""
        root = root or runs_root()
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        if root.stat().st_uid != os.getuid():
            raise PermissionError(f"{root} belongs to another user; set TMPDIR to a directory of your own")
        recover_abandoned(root)
        while True:
            tag = secrets.token_hex(3)
            lock = FileLock(str(root / f"{tag}.lock"), timeout=0)
            lock.acquire()
            path = root / tag
            try:
                path.mkdir(mode=0o700)
            except FileExistsError:  # a 24-bit tag collided with a live or kept run: draw again
                lock.release()
                continue
            return cls(path, tag, lock)

    @property
    def marker(self) -> str:
        """The value of the environment marker every process of this run carries."""
        return str(self.path)

    def record_socket(self, path: str) -> None:
        """Remember a socket a vassal of this run binds, so a later recovery can remove it if stale."""
        with (self.path / "sockets").open("a") as f:
            f.write(path + "\n")

    def recorded_sockets(self) -> list[str]:
        """The socket paths recorded so far."""
        return _recorded_sockets(self.path)

    def close(self, keep: bool = False) -> None:
        """Remove the run dir (unless ``keep``) and release its lock; a kept dir is never recovered."""
        lock_path = Path(self._lock.lock_file)
        if not keep:
            shutil.rmtree(self.path, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            lock_path.unlink()
        self._lock.release()


def _recorded_sockets(run_path: Path) -> list[str]:
    try:
        return [line for line in (run_path / "sockets").read_text().splitlines() if line]
    except FileNotFoundError:
        return []


@dataclass(frozen=True)
class Recovered:
    """What recovery found and removed for one abandoned run."""

    path: Path
    killed: list[int]
    sockets: list[str]


def recover_abandoned(root: Path) -> list[Recovered]:
    """Clean up every run under ``root`` whose owner died without cleaning up (see the module docstring)."""
    recovered = []
    for lock_path in sorted(root.glob("*.lock")):
        lock = FileLock(str(lock_path), timeout=0)
        try:
            lock.acquire()
        except Timeout:
            continue  # a live run holds it
        try:
            if not lock_path.exists():
                continue  # its owner closed it (unlink, then release) while we waited: not abandoned
            run_path = lock_path.with_suffix("")
            leftover = processes_with_marker(str(run_path))
            kill_all(leftover)
            removed = [p for p in _recorded_sockets(run_path) if remove_stale_socket(p)]
            shutil.rmtree(run_path, ignore_errors=True)
            with contextlib.suppress(FileNotFoundError):
                lock_path.unlink()
            recovered.append(Recovered(run_path, leftover, removed))
        finally:
            lock.release()
    return recovered
