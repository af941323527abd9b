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
import pwd
import select
import signal
import time
from collections.abc import Callable, Iterable, Iterator

from pytest_emperor import procfs
from pytest_emperor.engine.bound_recorder import MARKER_ENV as MARKER_ENV  # the one definition

_PR_SET_PDEATHSIG = 1


def processes_with_marker(value: str) -> list[int]:
    """PIDs of live (non-zombie) processes whose environment holds ``MARKER_ENV=value``."""
    me = os.getpid()
    # the marker first: one read per process, as the state is read only for the few that carry it
    return [
        pid for pid in procfs.pids()
        if pid != me and carries_marker(pid, value) and procfs.state(pid) not in (b"Z", b"")
    ]


def carries_marker(pid: int, value: str) -> bool:
    """True if process ``pid``'s environment holds ``MARKER_ENV=value``; False if it does not, is gone, is not
    ours to read, or has released its memory (see ``of_run``)."""
    env = _environ(pid)
    return env is not None and f"{MARKER_ENV}={value}".encode() in env


def of_run(pid: int, value: str) -> bool:
    """True if process ``pid`` is one of the run whose marker is ``value``: it carries the marker, or it has
    released its memory, and with it the environment to read the marker from (its exit teardown, a zombie), and
    its parent is one of the run. A process is only ever reparented to an ancestor or init, so such a parent
    started it (docs/uwsgi-behaviour.md, "exit teardown")."""
    env = _environ(pid)
    if env is not None:
        return f"{MARKER_ENV}={value}".encode() in env
    parent = procfs.parent(pid)
    return parent is not None and of_run(parent, value)


def _environ(pid: int) -> list[bytes] | None:
    """The environment of ``pid``, or None once its memory is released: then the kernel fails the open with
    ESRCH (6.x) or reads nothing (older kernels). Empty if it is gone or not ours to read."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            data = f.read()
    except ProcessLookupError:
        return None
    except OSError:
        return []
    return data.split(b"\0") if data else None


def kill_marked(value: str, timeout: float = 5.0, note: Callable[[list[int]], None] | None = None) -> list[int]:
    """SIGKILL every process carrying the marker ``value`` until a scan finds none; return the pids killed.
    ``note`` is called with each round's pids while they are frozen, right before their kill (see ``frozen``).

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
        held = [_Process(pid) for pid in pids] if note is not None else []
        try:
            with frozen(held):  # a no-op without a note
                if note is not None:
                    note(pids)
                alive = kill_all(pids, timeout=max(deadline - time.monotonic(), 0))
        finally:
            for process in held:
                process.close()
        if alive:
            break  # unkillable (uninterruptible sleep): nothing more to do here, the caller sees them alive
    return killed


def children_of(pid: int) -> list[int]:
    """PIDs of the live children of ``pid``: from ``/proc/<pid>/task/*/children`` (``procfs.children``), else
    from a scan of every ``/proc/*/stat`` (kernels built without that file)."""
    listed = procfs.children(pid)
    if listed is None:
        return _children_by_scan(pid)
    return [child for child in listed if procfs.state(child) not in (b"Z", b"")]


def _children_by_scan(pid: int) -> list[int]:
    return [child for child, state, parent in procfs.every_process() if parent == pid and state != b"Z"]


def is_sleeping(pid: int) -> bool:
    """True if ``pid`` is blocked in the kernel (state S or D), i.e. not running Python code right now."""
    return procfs.state(pid) in (b"S", b"D")


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
    return procfs.state(pid) not in (b"Z", b"")


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


def catches(pid: int, sig: int) -> bool:
    """True if ``pid`` has a handler installed for ``sig`` (``SigCgt`` in ``/proc/<pid>/status``)."""
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"SigCgt:"):
                    return bool(int(line.split()[1], 16) >> (sig - 1) & 1)
    except (OSError, ValueError, IndexError):
        pass
    return False


def described(pid: int) -> str:
    """``pid 123 (alice: python3 -m http.server 80)``: a process as an error message names it, for a person to find
    it (its command line cut at 80 characters; ``?`` for what could not be read)."""
    uid = procfs.owner(pid)
    if uid is None:
        return f"pid {pid} (gone)"
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = f"uid {uid}"
    command = " ".join(command_line(pid).decode(errors="replace").replace("\0", " ").split()) or "?"  # one line
    command = "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode() for ch in command)  # no ESC
    return f"pid {pid} ({user}: {command if len(command) <= 80 else command[:79] + '…'})"


def is_unexeced_fork(pid: int) -> bool:
    """True if ``pid`` is a fork of its parent that has not exec'd yet: its command line is still its parent's.
    (A uWSGI vassal is exec'd with ``--ini <name>``, its emperor runs with ``--emperor``: never the same.)"""
    parent = procfs.parent(pid)
    if parent is None:
        return False
    own = command_line(pid)
    return own != b"" and own == command_line(parent)


# How often a uWSGI process that was asked to stop is woken (see hasten_stop): short against the 1 s waits it cuts,
# long enough that the signals cost nothing.
WAKE_TICK = 0.02


class _Process:
    """A process about to be signalled (a vassal master being stopped), held by a pidfd (where the kernel has
    them) so that a pid reused after it was reaped is never signalled."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        try:
            self.fd: int | None = os.pidfd_open(pid)  # type: ignore[attr-defined,unused-ignore]
        except ProcessLookupError:
            self.fd, self.gone = None, True
            return
        except (AttributeError, OSError):
            self.fd = None
        self.gone = False

    def exited(self) -> bool:
        if not self.gone:
            if self.fd is not None:
                poller = select.poll()  # not select(): fds past FD_SETSIZE
                poller.register(self.fd, select.POLLIN)
                self.gone = bool(poller.poll(0))
            else:
                self.gone = not _alive(self.pid)
        return self.gone

    def signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            if self.fd is not None:
                signal.pidfd_send_signal(self.fd, sig)  # type: ignore[attr-defined,unused-ignore]
            else:
                os.kill(self.pid, sig)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


# How long a SIGSTOP may take to stop a process (one in uninterruptible sleep stops only when it leaves it).
FREEZE_LIMIT = 1.0


@contextlib.contextmanager
def frozen(held: list[_Process]) -> Iterator[None]:
    """SIGSTOP each process, enter once the kernel has stopped it (or it is gone; ``FREEZE_LIMIT`` at most), and
    SIGCONT them on the way out: a signal sent meanwhile is delivered then.

    A stopped process binds nothing, so a snapshot of the sockets it holds stays true until it is resumed or
    killed. That is what makes "record what it serves, then signal it" race-free: a uWSGI master still starting
    dies of SIGINT or SIGKILL without vacuum, and one that bound its socket between the snapshot and the signal
    would leave a file nobody could prove the run's (docs/uwsgi-behaviour.md, "Recovery").
    """
    for process in held:
        process.signal(signal.SIGSTOP)
    _poll_until(lambda: all(process.exited() or procfs.state(process.pid) in (b"T", b"t", b"") for process in held),
                FREEZE_LIMIT)
    try:
        yield
    finally:
        for process in held:
            process.signal(signal.SIGCONT)


def hasten_stop(
    masters: Iterable[int],
    *,
    grace: float,
    timeout: float,
    note: Callable[[list[int]], None] | None = None,
    each_tick: Callable[[], None] | None = None,
) -> None:
    """Make uWSGI masters that were asked to stop exit now rather than at their next 1 s tick; return once they
    are gone (docs/uwsgi-behaviour.md, "Start, stop and removal timing").

    A master asked to stop (the emperor's stop byte, or SIGINT) SIGINTs its workers, which exit at once, but it
    reaps them only when its 1 s event wait times out: SIGCHLD is not handled, so it does not wake it. A SIGINT
    does (a dying master's handler returns at once), and the master then reaps, vacuums and exits. A signal that
    lands between its last check and its wait is lost, hence one every ``WAKE_TICK`` until it is gone.

    A master still importing its app reads no stop, but its embedded Python catches SIGINT: the import gets a
    KeyboardInterrupt and the master goes on to its loop (or exits). One that does not catch SIGINT at all is
    not that far (Python not started, or re-exec'ing for a reload): SIGINT would kill it alone, so it is killed
    with its children (the caller removes the socket file vacuum would have). Either may have bound its socket
    without having recorded it yet, so ``note``, if given, is called with the masters ``frozen`` before each
    round of signals, and what to send each is decided while they are. A process listed while the emperor had
    just forked it, not yet the vassal it execs (:func:`is_unexeced_fork`), is killed: it runs the emperor's
    own SIGINT handler, which logs a shutdown of every vassal (read as their stops) and writes the stop byte to
    every pipe it still holds (docs/uwsgi-behaviour.md, "The start-up races that stay handled"). Children still
    alive ``grace`` seconds in ignored their SIGINT (uWSGI's worker start-up race): killed, the master then exits
    normally. Anything left after ``timeout`` is killed. ``each_tick`` runs once a tick (the emperor's wake-up).
    """
    held = [_Process(pid) for pid in masters]
    start = time.monotonic()
    try:
        while True:
            live = [m for m in held if not m.exited()]
            with frozen(live) if note is not None else contextlib.nullcontext():
                # One that exited while being frozen is not frozen but a zombie (or gone): it holds nothing to
                # note and needs no signal.
                live = [m for m in live if not m.exited()]
                if note is not None:
                    note([master.pid for master in live])
                _signal_round(live, time.monotonic() - start, grace, timeout)
            if each_tick is not None:
                each_tick()
            live = [m for m in live if not m.exited()]
            if not live:
                return
            wait_exit(live[0].pid, WAKE_TICK)
    finally:
        for master in held:
            master.close()


def _signal_round(live: list[_Process], elapsed: float, grace: float, timeout: float) -> None:
    for master in live:
        if elapsed > timeout or not catches(master.pid, signal.SIGINT) or is_unexeced_fork(master.pid):
            kill_all([*children_of(master.pid), master.pid])
            continue
        if elapsed > grace:
            kill_all(children_of(master.pid))
        master.signal(signal.SIGINT)


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
