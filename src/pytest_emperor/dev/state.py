"""The state dir of ``emperor-dev up`` (default ``./.emperor/``): one running ``up`` per dir, found by the others.

Layout::

    up.lock    held (flock) by the running ``up`` for its whole life: a second ``up`` is refused
    up.json    how to reach it: its pid, control socket, run dir (logs), router addresses; written once it
               listens, removed when it stops

flocks die with their owner, so a lock that can be taken with an ``up.json`` beside it was left by an ``up`` that
was killed: the next ``up`` recovers it (kills what is left of that run, removes its sockets and run dir).

The dir is trusted only as the runs root is (runs.check_private_dir): ours, written by nobody else, in a parent
nobody else can replace it in; ``up.json`` is read without following a symlink, written through a fresh file
(O_EXCL, O_NOFOLLOW), and what it says is never a path to remove: recovery removes only what lies under this
user's runs root, and only the control socket at this dir's own path.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import stat
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_emperor.engine.runs import (
    AF_UNIX_MAX,
    check_private_dir,
    create_private,
    open_owned,
    recover_abandoned,
    remove_stale_socket,
    runs_root,
    socket_is_live,
)
from pytest_emperor.errors import EmperorError, UnsafePath

if TYPE_CHECKING:
    from filelock import FileLock

DEFAULT_STATE_DIR = ".emperor"
STATE_FILE = "up.json"
LOCK_FILE = "up.lock"
CONTROL_SOCKET = "control.sock"
_STATE_LIMIT = 1 << 16  # up.json is a few hundred bytes: more is not one


# The states of an app that make ``emperor-dev status`` exit 1 (see cli.EXIT_CODES).
FAILED_STATES = frozenset({"cursed", "throttled", "error"})


class NotRunning(EmperorError):
    """No ``emperor-dev up`` is running on the state dir."""


class AlreadyRunning(EmperorError):
    """Another ``emperor-dev up`` holds the state dir."""


@dataclass(frozen=True)
class Instance:
    """What a running ``up`` publishes in ``up.json``."""

    pid: int
    control: str  # the control socket's path
    run_dir: str  # the emperor's run dir: logs/, emperor.log
    domain: str
    router_host: str
    router_port: int
    router_unix: str

    @classmethod
    def from_json(cls, text: str) -> Instance:
        """Parse ``up.json``; ValueError if it is not one."""
        data: Any = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("not an object")
        try:
            return cls(**data)
        except TypeError as exc:
            raise ValueError(str(exc)) from exc

    def to_json(self) -> str:
        """Serialize for ``up.json``."""
        return json.dumps(asdict(self), indent=2) + "\n"


class StateDir:
    """A state dir: lock it for an ``up``, publish the instance, or find the running one."""

    def __init__(self, path: Path) -> None:
        self.path = path.absolute()

    @functools.cached_property
    def _lock(self) -> FileLock:
        # Made on first use: the commands that only find the running ``up`` never import filelock (runs._file_lock).
        from filelock import FileLock

        return FileLock(str(self.path / LOCK_FILE), timeout=0)

    @property
    def state_file(self) -> Path:
        """``up.json``."""
        return self.path / STATE_FILE

    def read(self) -> Instance | None:
        """The instance recorded in ``up.json`` (live or left by a killed ``up``), None if there is none;
        UnsafePath if the state dir or the file is one another user could have planted."""
        if not os.path.lexists(self.path):
            return None
        check_private_dir(self.path, "state dir")
        try:
            with open_owned(self.state_file) as f:
                return Instance.from_json(f.read(_STATE_LIMIT).decode("utf-8", "replace"))
        except (FileNotFoundError, ValueError):
            return None

    def running(self) -> Instance:
        """The running instance; NotRunning (saying why) if there is none."""
        instance = self.read()
        if instance is None:
            raise NotRunning(f"no emperor-dev instance is running on {self.path} (start one with `emperor-dev up`)")
        if not socket_is_live(instance.control):
            raise NotRunning(
                f"no emperor-dev instance is running on {self.path}: `up` (pid {instance.pid}) is gone or stopping"
                " (the next `emperor-dev up` recovers what it left)"
            )
        return instance

    def acquire(self) -> list[str]:
        """Lock the state dir for this process's ``up``; AlreadyRunning if another holds it. Recover what a killed
        ``up`` left and return what was recovered, one line per item."""
        self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        check_private_dir(self.path, "state dir")
        lock = Path(self._lock.lock_file)
        try:
            st = os.lstat(lock)
        except FileNotFoundError:
            pass
        else:
            if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid():
                raise UnsafePath(
                    f"{lock} is not a lock file of yours ({stat.filemode(st.st_mode)}, owner uid {st.st_uid}): "
                    "another user may have planted it; remove it if no `emperor-dev up` runs there"
                )
        try:
            self._lock.acquire()
        except TimeoutError:  # filelock.Timeout: another up holds it
            holder = self.read()
            who = f"pid {holder.pid}" if holder is not None else "a process that is still starting"
            raise AlreadyRunning(
                f"another `emperor-dev up` ({who}) is already running on {self.path}: use `emperor-dev status`, "
                "`emperor-dev down` to stop it, or --state-dir to run a second one elsewhere"
            ) from None
        return self._recover()

    def _recover(self) -> list[str]:
        left = self.read()
        if left is None:
            return []
        # Its run's lock died with it, so the engine's own recovery (runs.py) treats the run as abandoned. Only
        # this user's runs root is recovered, never a directory up.json names: the file is a report, not an order.
        done = [f"recovered the state of a killed `up` (pid {left.pid})"]
        for run in recover_abandoned(runs_root()):
            if run.killed:
                done.append(f"killed leftover processes {run.killed} of {run.path}")
            done += [f"removed stale socket {path}" for path in run.sockets]
        own_control = str(self.path / CONTROL_SOCKET)  # one in the run dir went with it
        if left.control == own_control and remove_stale_socket(own_control):
            done.append(f"removed stale socket {own_control}")
        self.state_file.unlink(missing_ok=True)
        return done

    def control_path(self, run_dir: Path) -> str:
        """Where the control socket goes: the state dir, or the (short) run dir when the state dir's path would
        exceed the AF_UNIX limit; ``up.json`` records which."""
        path = self.path / CONTROL_SOCKET
        return str(path if len(os.fsencode(str(path))) <= AF_UNIX_MAX else run_dir / CONTROL_SOCKET)

    def publish(self, instance: Instance) -> None:
        """Write ``up.json`` atomically (readers never see half of it)."""
        tmp = self.state_file.with_name(STATE_FILE + ".tmp")
        create_private(tmp, instance.to_json().encode())  # never through a file planted at that name
        os.replace(tmp, self.state_file)

    def release(self) -> None:
        """Remove ``up.json`` and the lock file, then unlock (in that order, as runs.RunDir.close does, so a
        waiting ``up`` never takes a lock whose file is about to vanish), then the state dir if it is empty."""
        self.state_file.unlink(missing_ok=True)
        with contextlib.suppress(FileNotFoundError):
            Path(self._lock.lock_file).unlink()
        self._lock.release()
        with contextlib.suppress(OSError):
            self.path.rmdir()  # only if empty: nothing of this run is left, and nothing of the user's is touched
