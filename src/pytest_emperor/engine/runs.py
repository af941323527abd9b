"""Run directories: one short-pathed private directory per emperor, and recovery of runs that were killed.

Layout, under ``<tmp>/pytest-emperor-<uid>/`` (short on purpose: unix socket paths must stay under 108 bytes,
and pytest's own tmp paths are far longer)::

    <tag>.lock      held (flock) for the whole life of the run
    <tag>/          the run dir: vassals/, logs/, emperor.log, sockets (one path a line), and uwsgi/: what the
                    uWSGI processes write (the stats socket, ``bound``: the sockets each master says it bound)

A lock that can be taken belongs to a run whose process is gone (flocks die with their owner), so the next run
on the machine kills that run's processes (found by their environment marker, see processes.py), unlinks its
sockets, and removes its directory. Live runs hold their lock and are never touched.

A socket file is unlinked only when it is provably this run's and provably dead. Ours: the run recorded the
file's identity (device, inode, ctime) while a process of the run was serving it: by each vassal's master right
after binding (bound_recorder.py), at each readiness, and from ``/proc/net/unix`` just before the run's processes
are killed. Dead: no process of the run is left, and the
file at the path is still that one. Whether a connect succeeds proves neither: a master between ``bind()`` and
``listen()`` refuses connections on a socket that is very much alive, and a process in its exit teardown still
accepts on one that is dead (docs/uwsgi-behaviour.md, "Recovery").

An emperor that drops privileges (``--uid``) gets the run handed over (``hand_over``) only as far as it needs:
``logs/`` and ``uwsgi/`` become its user's, the rest stays the caller's. What that user writes is a claim, never
an instruction: a socket it says it bound is unlinked only if it is a path the run predicted and the file there
is that user's; a log is read only if it is a regular file of that user's (docs/run-dir.md).

Every vassal's name and unix socket paths are reserved (``reserve``: ``<root>/name-<name>.reserved``, and one
file a socket path, named by its hash) while it is deployed, so that a vassal deployed under its production name
(``%n`` = ``shop``, no run tag) is refused while another run or xdist worker holds that name or one of its
sockets. A reservation is a flock, so it ends with its process; the next run's recovery removes the files a
killed one left (and its processes, first).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import secrets
import shutil
import socket
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from pytest_emperor import procfs
from pytest_emperor.engine.bound_recorder import CLAIMS_DIR, CLAIMS_FILE, identity_line
from pytest_emperor.engine.processes import kill_marked, processes_with_marker
from pytest_emperor.errors import UnsafePath

if TYPE_CHECKING:
    from filelock import FileLock

# Linux's sockaddr_un.sun_path is 108 bytes including the terminating NUL.
AF_UNIX_MAX = 107
#: The run dir's subdirectory the uWSGI processes write to: the emperor's stats socket, the masters' ``bound``.
UWSGI_DIR = CLAIMS_DIR
# A claims file larger than this is not read whole: nothing a run's vassals bind comes near it.
_CLAIMS_LIMIT = 1 << 20
# The suffix of a reservation's file in the runs root (``reserve``).
_RESERVED = ".reserved"


def runs_root() -> Path:
    """The per-user parent of all run dirs: ``$TMPDIR`` if short enough for socket paths, else ``/tmp``."""
    base = Path(tempfile.gettempdir())
    if len(str(base)) > 40:
        base = Path("/tmp")
    return base / f"pytest-emperor-{os.getuid()}"


def shared_runs_root() -> Path:
    """The runs root of emperors that drop privileges (``--uid``): beside the private one, and searchable (0711,
    not listable), since the user they drop to must reach the run dir handed to it (``RunDir.hand_over``)."""
    private = runs_root()
    root = private.with_name(f"{private.name}-shared")
    root.mkdir(mode=0o700, exist_ok=True)
    check_private_dir(root, "runs root")  # ours, not a symlink, before it is opened to search
    os.chmod(root, 0o711)
    return root


def socket_is_live(path: str | Path) -> bool:
    """True if something accepts connections on the unix socket ``path``."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(os.fspath(path))
        except OSError:
            return False
    return True


# (st_dev, st_ino, st_ctime_ns) of a socket file: a new bind at the same path is a new file, and an inode number
# reused after an unlink comes with a new ctime.
SocketIdentity = tuple[int, int, int]


def socket_identity(path: str | Path) -> SocketIdentity | None:
    """The identity of the unix socket file at ``path`` (not following a symlink), None if there is none."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_ctime_ns) if stat.S_ISSOCK(st.st_mode) else None


def remove_stale_socket(path: str | Path, identity: SocketIdentity | None = None) -> bool:
    """Unlink the unix socket ``path``: with ``identity``, only if the file there is still that one (the caller
    has made sure nothing of its own serves it any more); without, only if nobody accepts connections on it,
    which only a caller that owns the path (under a lock it holds) may rely on. Never follows a symlink."""
    if identity is not None:
        if socket_identity(path) != identity:
            return False
    elif socket_identity(path) is None or socket_is_live(path):
        return False
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True


def bound_unix_paths(pids: list[int]) -> set[str]:
    """The filesystem paths of the unix sockets that ``pids`` hold bound (listening or not yet), from
    ``/proc/net/unix`` (which lists each bound socket's sockfs inode and path) and the processes' fds."""
    paths = procfs.unix_socket_paths()
    return {paths[target] for pid in pids for target in procfs.open_files(pid) if target in paths}


def socket_holders(path: str) -> list[int]:
    """The processes holding a unix socket bound at ``path`` or where it leads (a symlink's target), among those
    this user may look into: the listener, and any process that holds a connection accepted on it."""
    spellings = {path, os.path.realpath(path)}
    names = {name for name, bound in procfs.unix_socket_paths().items() if bound in spellings}
    return [pid for pid in procfs.pids() if names.intersection(procfs.open_files(pid))] if names else []


def check_private_dir(path: Path, what: str = "directory") -> None:
    """Refuse (UnsafePath) a directory the caller would trust that another local user could have planted or could
    replace: a symlink (lstat, never followed), one that is not the caller's or that others may write to, or one
    in a parent others may write to without the sticky bit (they could rename it away and put theirs there)."""
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o022:
        kind = "a symlink" if stat.S_ISLNK(st.st_mode) else "not a private directory of yours"
        raise UnsafePath(
            f"the {what} {path} is {kind} (owner uid {st.st_uid}, mode {stat.filemode(st.st_mode)}): another user "
            "may have planted it; remove it if it is yours, or use a directory of your own"
        )
    parent = os.stat(path.parent)
    sticky = parent.st_mode & stat.S_ISVTX
    if parent.st_uid not in (0, os.getuid()) or (parent.st_mode & 0o022 and not sticky):
        raise UnsafePath(
            f"the {what} {path} is in {path.parent} (owner uid {parent.st_uid}, mode "
            f"{stat.filemode(parent.st_mode)}), where another user could replace it: use a directory of your own"
        )


def open_owned(path: Path, owner: int | None = None) -> BinaryIO:
    """The regular file ``path`` opened for reading without following a symlink, and only if it belongs to the
    caller, to the owner of its directory (the user a run's ``logs/`` and ``uwsgi/`` were handed to, who cannot
    chown them back) or to ``owner``: UnsafePath for anything else there (a symlink, a FIFO, another user's file,
    hard links included), FileNotFoundError if nothing is. For every file of a run or state dir that a less
    trusted process could have put there."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafePath(f"{path} is a symlink: not followed (another user may have planted it)") from None
        raise
    f = os.fdopen(fd, "rb")
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_uid not in (os.getuid(), os.lstat(path.parent).st_uid, owner):
        f.close()
        raise UnsafePath(
            f"{path} is not a regular file of the run's (owner uid {st.st_uid}, mode {stat.filemode(st.st_mode)}):"
            " not read"
        )
    return f


def create_private(path: Path, data: bytes = b"") -> None:
    """Create the file ``path`` anew (O_EXCL, O_NOFOLLOW: never through what is there, which is removed first;
    unlink does not follow a symlink) holding ``data``, mode 0600."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with open(fd, "wb") as f:  # writes all of it (a setup's output), closes the fd whatever happens
        f.write(data)


def _file_lock(path: Path) -> FileLock:
    """A non-blocking lock on ``path`` (acquire() raises filelock.Timeout, a TimeoutError, when it is held).
    filelock is imported here, not with the module: ``pytest --emperor-attach`` reads a state dir through this
    module and never locks one, and filelock costs ~10 ms to import. 0600: in the shared runs root (searchable by
    a dropped user) no one else may open and hold a run's lock, which would make a killed run look alive to the next
    one's recovery (docs/run-dir.md)."""
    from filelock import FileLock

    return FileLock(str(path), timeout=0, mode=0o600)


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
        recover_abandoned(root)
        while True:
            tag = secrets.token_hex(3)
            lock_path = root / f"{tag}.lock"
            lock = _file_lock(lock_path)
            # Another process's recovery (recover_abandoned, at its own start) may take this fresh lock file for an
            # abandoned run's between its creation and our lock: it then holds it, or has removed it. Either way
            # the tag is drawn again (two xdist workers starting together: a worker's session failed so, on CI).
            try:
                lock.acquire()
            except TimeoutError:  # filelock.Timeout
                continue
            if not lock_path.exists():
                lock.release()
                continue
            path = root / tag
            try:
                path.mkdir(mode=0o700)
            except FileExistsError:  # a 24-bit tag collided with a live or kept run: draw again
                lock.release()
                continue
            (path / UWSGI_DIR).mkdir(mode=0o700)
            create_private(path / UWSGI_DIR / CLAIMS_FILE)
            return cls(path, tag, lock)

    def hand_over(self, owner: tuple[int, int]) -> None:
        """Give an emperor that drops privileges to ``owner`` (uid, gid) what it needs, and nothing more: the
        run dir stays the caller's (searchable, not listable), ``vassals/`` readable by ``owner``'s group,
        ``logs/`` (each vassal's ``logto``) and ``uwsgi/`` (its stats socket, the masters' claims) its own."""
        os.chmod(self.path, 0o711)
        os.chown(self.path / "vassals", -1, owner[1])
        os.chmod(self.path / "vassals", 0o750)
        for name in ("logs", UWSGI_DIR):
            os.chown(self.path / name, *owner)
        os.chown(self.path / UWSGI_DIR / CLAIMS_FILE, *owner)

    @property
    def marker(self) -> str:
        """The value of the environment marker every process of this run carries."""
        return str(self.path)

    def record_socket(self, path: str) -> None:
        """Remember a socket path a vassal of this run will bind. Recording the path claims nothing: only an
        identity recorded by ``record_bound`` lets the run's clean-up unlink the file."""
        with (self.path / "sockets").open("a") as f:
            f.write(path + "\n")

    def record_bound(self, paths: list[str] | set[str]) -> None:
        """Record the identity of the socket files at ``paths``, which a process of this run serves now."""
        _record_bound(self.path, paths)

    def unlink_dead_socket(self, path: str) -> bool:
        """Unlink ``path`` once the vassal that served it is gone: if the file there is one the run recorded
        while a process of it served it, else (never seen bound) only if nobody accepts connections on it."""
        identity = _unlinkable(self.path, path, _recorded_sockets(self.path).get(path, set()))
        if identity is not None:
            return remove_stale_socket(path, identity)
        if vassal_uid(self.path) is not None and socket_identity(path) is not None:
            return False  # a dead socket of the vassals' user's is theirs to remove, another's never ours
        return remove_stale_socket(path)

    def note_bound(self, pids: list[int] | None = None) -> None:
        """Record the identity of every recorded socket path a process of this run (or one of ``pids``) serves
        right now: called before the run signals its processes, since a master stopped before its own record
        (bound_recorder.py) would leave a file nobody could prove the run's."""
        _note_bound(self.path, pids)

    def kill(self) -> list[int]:
        """SIGKILL every process of the run, each frozen and its sockets noted first (``note_bound``); return
        the pids killed."""
        return kill_marked(self.marker, note=self.note_bound)

    def kill_and_unlink(self) -> tuple[list[int], list[str]]:
        """Kill every process of the run, then unlink the sockets that were provably its own; return both."""
        return _kill_and_unlink(self.path)

    def close(self, keep: bool = False) -> None:
        """Remove the run dir (unless ``keep``) and release its lock; a kept dir is never recovered."""
        lock_path = Path(self._lock.lock_file)
        if not keep:
            shutil.rmtree(self.path, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            lock_path.unlink()
        self._lock.release()


def vassal_uid(run_path: Path) -> int | None:
    """The user the run's vassals run as when it is not the caller (the owner of ``uwsgi/``, which only the
    caller could have chowned), else None."""
    try:
        uid = os.lstat(run_path / UWSGI_DIR).st_uid
    except OSError:
        return None
    return None if uid == os.getuid() else uid


def _parse_identities(text: str, into: dict[str, set[SocketIdentity]], *, only: set[str] | None = None) -> None:
    for line in text.splitlines():
        path, _, ident = line.partition("\t")
        if only is not None and path not in only:
            continue
        known = into.setdefault(path, set())
        with contextlib.suppress(ValueError):
            dev, ino, ctime = (int(part) for part in ident.split())
            known.add((dev, ino, ctime))


def _recorded_sockets(run_path: Path) -> dict[str, set[SocketIdentity]]:
    """Each recorded path with the identities recorded for it (none for a path never seen bound): the caller's
    own records (``sockets``), and the masters' claims (``uwsgi/bound``) for the paths the caller predicted.
    A claim names an identity; whether the file there may be unlinked is decided by ``_unlinkable``."""
    recorded: dict[str, set[SocketIdentity]] = {}
    try:
        _parse_identities((run_path / "sockets").read_text(), recorded)
    except FileNotFoundError:
        return recorded
    with contextlib.suppress(OSError), open_owned(run_path / UWSGI_DIR / CLAIMS_FILE) as claims:
        _parse_identities(claims.read(_CLAIMS_LIMIT).decode("utf-8", "replace"), recorded, only=set(recorded))
    return recorded


def _unlinkable(run_path: Path, path: str, known: set[SocketIdentity]) -> SocketIdentity | None:
    """The identity of the socket file at ``path`` if the run may unlink it: one it recorded, and, when its
    vassals run as another user, a file of that user's (a root-owned socket is never theirs to have bound)."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    identity = (st.st_dev, st.st_ino, st.st_ctime_ns)
    if not stat.S_ISSOCK(st.st_mode) or identity not in known:
        return None
    vassals = vassal_uid(run_path)
    return identity if vassals is None or st.st_uid == vassals else None


def _record_bound(run_path: Path, paths: list[str] | set[str]) -> None:
    vassals = vassal_uid(run_path)
    lines = []
    for path in paths:
        try:
            st = os.lstat(path)
        except OSError:
            continue
        theirs = vassals is None or st.st_uid == vassals
        if stat.S_ISSOCK(st.st_mode) and theirs and "\n" not in path and "\t" not in path:
            lines.append(identity_line(path, st))
    if lines:
        with (run_path / "sockets").open("a") as f:
            f.writelines(lines)


def _note_bound(run_path: Path, pids: list[int] | None = None) -> None:
    bound = bound_unix_paths(processes_with_marker(str(run_path)) if pids is None else pids)
    _record_bound(run_path, bound & _recorded_sockets(run_path).keys())


def _kill_and_unlink(run_path: Path) -> tuple[list[int], list[str]]:
    marker = str(run_path)
    killed = kill_marked(marker, note=lambda pids: _note_bound(run_path, pids))  # noted while they still serve them
    removed: list[str] = []
    if processes_with_marker(marker):
        return killed, removed  # one would not die: its sockets may still be in use
    for path, known in _recorded_sockets(run_path).items():
        identity = _unlinkable(run_path, path, known)
        if identity is not None and remove_stale_socket(path, identity):
            removed.append(path)
    return killed, removed


@dataclass(frozen=True)
class Recovered:
    """What recovery found and removed for one abandoned run."""

    path: Path
    killed: list[int]
    sockets: list[str]


def recover_abandoned(root: Path) -> list[Recovered]:
    """Clean up every run under ``root`` whose owner died without cleaning up (see the module docstring).
    ``root`` must be a private directory of the caller's (UnsafePath otherwise): only what lies under it is
    ever removed."""
    if not os.path.lexists(root):
        return []
    check_private_dir(root, "runs root")
    recovered = []
    for lock_path in sorted(root.glob("*.lock")):
        lock = _file_lock(lock_path)
        try:
            lock.acquire()
        except TimeoutError:  # filelock.Timeout: a live run holds it
            continue
        try:
            if not lock_path.exists():
                continue  # its owner closed it (unlink, then release) while we waited: not abandoned
            run_path = lock_path.with_suffix("")
            leftover, removed = _kill_and_unlink(run_path)
            shutil.rmtree(run_path, ignore_errors=True)
            with contextlib.suppress(FileNotFoundError):
                lock_path.unlink()
            recovered.append(Recovered(run_path, leftover, removed))
        finally:
            lock.release()
    _sweep_reservations(root)
    return recovered


@dataclass
class Reservation:
    """A vassal name or socket path this process holds (an exclusive flock on its file in the runs root) until
    ``release()``, or until the process dies."""

    key: str
    path: Path
    _fd: int = field(repr=False)

    def release(self) -> None:
        """Give the name or path up: the file goes first, then the lock (whoever opened the file meanwhile sees
        that it is gone once it gets the lock, and takes a new one). Safe to call twice."""
        if self._fd < 0:
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        os.close(self._fd)
        self._fd = -1


def _reservation_file(root: Path, key: str) -> Path:
    # a vassal name is one DNS label (naming.py), readable as a file name; a socket path is hashed
    if "/" in key:
        return root / f"socket-{hashlib.sha256(os.fsencode(key)).hexdigest()[:32]}{_RESERVED}"
    return root / f"name-{key}{_RESERVED}"


def _lock_file(path: Path, *, create: bool) -> int | None:
    """An fd of ``path`` locked (flock, exclusive) by this process; None if another holds it, or if it is gone
    (``create=False``)."""
    while True:
        flags = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC | (os.O_CREAT if create else 0)
        try:
            fd = os.open(path, flags, 0o600)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        try:
            same = os.path.samestat(os.fstat(fd), os.lstat(path))
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)  # released (unlinked) between our open and our lock: that file is no one's any more
        if not create:
            return None


def reserve(root: Path, key: str, holder: str) -> Reservation | str:
    """Reserve ``key`` (a vassal name or a unix socket path) for this process under the runs root ``root``,
    saying ``holder`` to whoever asks for it next; or, if another holds it, that one's ``holder`` text.

    A reservation a killed run left (its file was not removed) is taken over after that run is recovered: its
    processes may still serve the socket."""
    path = _reservation_file(root, key)
    fd = _lock_file(path, create=True)
    if fd is None:
        try:
            with open_owned(path) as f:  # written right after its lock is taken: empty only for a moment
                return f.read(4096).decode("utf-8", "replace").strip() or "another run, starting"
        except FileNotFoundError:
            return reserve(root, key, holder)  # released meanwhile
    if os.fstat(fd).st_size:  # a holder died without releasing it
        recover_abandoned(root)
        # only then: ext4 flushes a file truncated to 0 and written again at its close (auto_da_alloc), 3 ms
        os.ftruncate(fd, 0)
    os.pwrite(fd, f"{holder}\n".encode(), 0)
    return Reservation(key, path, fd)


def _sweep_reservations(root: Path) -> None:
    """Remove the reservation files of holders that died without releasing them (nobody holds their lock)."""
    for path in root.glob(f"*{_RESERVED}"):
        fd = _lock_file(path, create=False)
        if fd is not None:
            Reservation("", path, fd).release()
