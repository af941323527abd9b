"""Checkouts of revisions, made once per commit and kept for later runs (docs/revisions.md).

Layout, under ``$XDG_CACHE_HOME/pytest-emperor/revisions/`` (``~/.cache/...`` by default)::

    <commit>/<name>/             the checkout of the repository's top at that commit; <name> is the working
                                 tree's top dir's name, so an app at the top keeps its default vassal name
    <commit>/<name>.lock         held (flock) while the checkout is made or prepared: two processes asking for
                                 the same revision make it once, the second waits and reuses it
    <commit>/<name>.setup.json   the setup the checkout got ({"key", "done"}); absent: none, the files are the
                                 commit's as written
    <commit>/<name>.setup.log    the setup's output
    <commit>/.<name>.tmp-*/      a checkout being written (its index file and tree), renamed into place whole
    <commit>/<name>.group        the gid the checkout was given to (a run that drops privileges); absent: none
                                 (the cache root and <commit> then have that group and 0710: docs/revisions.md)

The user's cache dir, not ``up``'s state dir: a checkout belongs to a commit, not to one project dir or one run,
so every run, ``up`` and ``check`` of any clone reuses it, and it is rebuildable data that a cache cleaner may
drop. A checkout is code that runs, so the dir is trusted only as a run dir is (``runs.check_private_dir``).

A checkout is written aside and renamed into place, so a killed writer leaves only a ``.tmp`` dir that the next
maker (holding the lock) removes. The setup runs in place (a virtualenv records its own absolute path in its
scripts, ``pip install -e`` in its links, so it cannot be made aside and moved): ``setup.json`` says
``done: false`` while it runs, and a checkout whose setup did not finish, or got another setup, is removed and
written again before its setup runs.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import stat
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock, Timeout

from pytest_emperor.engine.naming import default_name, resolve_ini, routable_name
from pytest_emperor.engine.privileges import User, blocked
from pytest_emperor.engine.runs import check_private_dir, create_private
from pytest_emperor.errors import RevisionError, SetupError
from pytest_emperor.project_config import load_profile
from pytest_emperor.revisions.git import Revision, blob_ids, resolve, write_tree

#: The files a setup reads unless the profile lists its own ``setup-inputs``: what pip and venv are given.
DEFAULT_SETUP_INPUTS = ("requirements*.txt", "pyproject.toml")
# How long a process waits for another that is making the same checkout: its setup may install a virtualenv.
MAKE_WAIT = 900.0
_INTERRUPTS = {signal.SIGINT, signal.SIGTERM}
_SHOWN_LINES = 60  # of a failed setup's output in the error; the whole of it is in setup.log


def cache_root() -> Path:
    """Where checkouts are kept: ``$XDG_CACHE_HOME/pytest-emperor/revisions`` (default ``~/.cache/...``)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pytest-emperor" / "revisions"


def split_revision(arg: str) -> tuple[str, str | None]:
    """``"services/shop@v1.0"`` -> ``("services/shop", "v1.0")``; a path without ``@REV`` (or an existing path
    that holds an ``@``) -> ``(arg, None)``."""
    path, at, rev = arg.rpartition("@")
    if not at or not path or not rev or os.path.lexists(arg):
        return arg, None
    return path, rev


@dataclass(frozen=True)
class Checkout:
    """A revision's checkout: ``top`` is the repository's top at that commit, ``path`` the app in it, ``setup``
    the command it was prepared with (None: none)."""

    revision: Revision
    top: Path
    setup: str | None

    @property
    def path(self) -> Path:
        """The app (dir or ini) in the checkout, as the user's path is in the working tree."""
        return self.top / self.revision.relative

    @property
    def default_name(self) -> str:
        """The vassal name of this revision unless given one: the app's, then the revision (``shop-v1-0``)."""
        return routable_name(f"{default_name(resolve_ini(self.path))}-{self.revision.rev}")


def checkout(
    path: Path,
    rev: str,
    *,
    root: Path | None = None,
    note: Callable[[str], None] = lambda _: None,
    readable_by: User | None = None,
) -> Checkout:
    """The checkout of revision ``rev`` of the app at ``path``, made (and prepared by the project's ``setup``)
    unless the cache holds it; ``note`` is told what takes time: waiting for another process making it, a setup.
    ``readable_by``: the user a run drops privileges to, whose group is given read of the checkout (and search of
    the cache dirs to it), no one else; RevisionError if that user still cannot reach it."""
    __tracebackhide__ = True
    revision = resolve(path, rev)
    cache = _private(root or cache_root())
    base = cache / revision.commit
    base.mkdir(mode=0o700, exist_ok=True)
    name = revision.top.name
    lock = FileLock(str(base / f"{name}.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        note(f"waiting for another process making {revision} (it holds {lock.lock_file})")
        try:
            lock.acquire(timeout=MAKE_WAIT)
        except Timeout:
            raise RevisionError(
                f"{revision}: another process has been making its checkout for {MAKE_WAIT:.0f} s and still holds "
                f"{lock.lock_file}; stop it, or see what its setup does"
            ) from None
    try:
        made = _made(revision, base, name, note)
        if readable_by is not None:
            _give(made.top, (cache, base), readable_by.gid)
    finally:
        lock.release()
    if readable_by is not None:
        _reachable(made, cache, readable_by)
    return made


def _private(root: Path) -> Path:
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    check_private_dir(root, "revisions cache")
    return root


def _give(tree: Path, dirs: tuple[Path, ...], gid: int) -> None:
    """Give group ``gid`` read of ``tree`` (setup's output included: a virtualenv the vassal runs) and search of
    ``dirs`` above it, taking every other user's bits away; the caller holds the checkout's lock. The tree is
    walked once per group: ``<name>.group`` records it, and a checkout written again (``_write``) loses it."""
    for directory in dirs:  # search only: the group cannot list the cache, only reach a checkout it is given
        os.chown(directory, -1, gid)
        directory.chmod(0o710)
    given = tree.with_name(tree.name + ".group")
    if given.exists() and given.read_text() == str(gid):
        return
    for where, subdirs, files in os.walk(tree):
        for entry in (where, *(os.path.join(where, name) for name in (*subdirs, *files))):
            os.chown(entry, -1, gid, follow_symlinks=False)
            st = os.lstat(entry)
            if not stat.S_ISLNK(st.st_mode):  # a link's own mode is never used
                # like chmod g=rX,o=: read, search for dirs and for what the owner may run; nothing for others
                run = 0o010 if stat.S_ISDIR(st.st_mode) or st.st_mode & 0o100 else 0
                os.chmod(entry, (st.st_mode & 0o700) | 0o040 | run)
    given.write_text(str(gid))


def _reachable(made: Checkout, cache: Path, user: User) -> None:
    """RevisionError unless ``user`` may read the checkout's ini, every dir above it searchable by them."""
    __tracebackhide__ = True
    why = blocked(user, resolve_ini(made.path), "r")
    if why is None:
        return
    if blocked(user, cache.parent, "x") is not None:  # above the cache: the home dir, not the cache's to open
        fix = (f"set XDG_CACHE_HOME to a dir {user.name} can search, e.g. XDG_CACHE_HOME=/var/cache (checkouts "
               "are given to its group alone)")
    else:  # in the cache: regrouped since, by a run dropping to another group
        fix = f"run again: it is given back to {user.name}'s group (one drop group at a time shares the cache)"
    raise RevisionError(
        f"{made.revision}: the emperor drops privileges to {user.name} (emperor-args), who cannot read its "
        f"checkout: {why}; {fix}"
    )


@dataclass(frozen=True)
class _Setup:
    command: str
    directory: Path  # where it runs, from the top
    key: str  # the command, its dir and the content of the files it reads


def _made(revision: Revision, base: Path, name: str, note: Callable[[str], None]) -> Checkout:
    """The checkout under ``base``, made and prepared as needed; the caller holds its lock."""
    __tracebackhide__ = True
    tree = base / name
    state_file = base / f"{name}.setup.json"
    for unfinished in base.glob(f".{name}.tmp-*"):  # a maker killed mid-way (its lock died with it)
        shutil.rmtree(unfinished)
    if not tree.is_dir():
        state_file.unlink(missing_ok=True)
        _write(revision, base, name)
    setup = _setup_of(revision, tree)
    state = _state(state_file)
    wanted = None if setup is None else {"key": setup.key, "done": True}
    if state != wanted:
        if state is not None:  # a setup that did not finish, or another one: start again from the commit's files
            _discard(tree, base, name)
            state_file.unlink()
            _write(revision, base, name)
        if setup is not None:
            _write_state(state_file, {"key": setup.key, "done": False})
            note(f"preparing {revision}: {setup.command}")
            _run_setup(revision, setup, tree, base / f"{name}.setup.log")
            _write_state(state_file, {"key": setup.key, "done": True})
    return Checkout(revision, tree, None if setup is None else setup.command)


def _write(revision: Revision, base: Path, name: str) -> None:
    (base / f"{name}.group").unlink(missing_ok=True)  # fresh files: given to no group yet
    aside = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=base))
    write_tree(revision, aside / "tree", aside / "index")
    (aside / "tree").rename(base / name)
    shutil.rmtree(aside)


def _discard(tree: Path, base: Path, name: str) -> None:
    # Renamed first, so that a kill during the removal leaves a .tmp dir (removed next time), not half a tree.
    aside = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=base))
    tree.rename(aside / "old")
    shutil.rmtree(aside)


def _state(state_file: Path) -> dict[str, object] | None:
    try:
        state = json.loads(state_file.read_text())
    except FileNotFoundError:
        return None
    except ValueError:
        return {}  # unreadable: not a setup that finished
    return state if isinstance(state, dict) else {}


def _write_state(state_file: Path, state: dict[str, object]) -> None:
    fresh = state_file.with_name(state_file.name + ".new")
    fresh.write_text(json.dumps(state))
    fresh.replace(state_file)


def _setup_of(revision: Revision, tree: Path) -> _Setup | None:
    """The setup of the checkout: the ``setup`` of the nearest profile from the app's dir up to the top, in the
    revision's own files, else in the working tree's (a revision made before the profile had one)."""
    __tracebackhide__ = True
    app = tree / revision.relative
    app_dir = revision.relative if app.is_dir() else revision.relative.parent
    for top in (tree, revision.top):
        for directory in (app_dir, *app_dir.parents):
            if not (top / directory).is_dir():
                continue
            profile = load_profile(top / directory).values
            if "setup" in profile:
                command = profile["setup"].value
                inputs = profile["setup-inputs"].value if "setup-inputs" in profile else DEFAULT_SETUP_INPUTS
                read = blob_ids(revision, directory, inputs)
                key = json.dumps({"command": command, "dir": directory.as_posix(), "inputs": read})
                return _Setup(command, directory, hashlib.sha256(key.encode()).hexdigest())
    return None


def _run_setup(revision: Revision, setup: _Setup, tree: Path, log: Path) -> None:
    """Run the setup in its dir of the checkout, its output kept in ``log`` and shown only if it fails."""
    __tracebackhide__ = True
    cwd = tree / setup.directory
    # Ctrl-C or SIGTERM (which the front doors turn into one) must find the setup's process group known to this
    # frame: held back until the Popen has returned, they are raised inside the try below, never between.
    held = signal.pthread_sigmask(signal.SIG_BLOCK, _INTERRUPTS)
    try:
        process = subprocess.Popen(
            ["/bin/sh", "-c", setup.command], cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=lambda: signal.pthread_sigmask(signal.SIG_SETMASK, held),  # the setup's mask as ours was
        )
        try:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)
            output, _ = process.communicate()
        except BaseException:  # Ctrl-C, SIGTERM: nothing of the setup (pip and its children) outlives the run
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            raise
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)
    # 0600, made anew (a log of before would keep its mode): a drop's group may search the commit's dir (_give),
    # and a setup's output may hold an index's token
    create_private(log, output)
    if process.returncode != 0:
        lines = output.decode(errors="replace").rstrip("\n").splitlines()
        shown = "\n".join(lines[-_SHOWN_LINES:])
        cut = f"(the last {_SHOWN_LINES} of {len(lines)} lines; all in {log})\n" if len(lines) > _SHOWN_LINES else ""
        raise SetupError(
            f"{revision}: its setup failed (exit {process.returncode}) in {cwd}:\n  $ {setup.command}\n{cut}{shown}\n"
            "fix the setup in [tool.emperor-dev] (setup = ...) or what it installs; the next run starts it again "
            "from the commit's files"
        )


def kept(root: Path | None = None) -> list[tuple[Path, str]]:
    """Each checkout in the cache and what setup it got: "no setup", "prepared", or "setup unfinished"."""
    root = root or cache_root()
    found = []
    for tree in sorted(p for p in root.glob("*/*") if p.is_dir() and not p.name.startswith(".")):
        state = _state(tree.with_name(tree.name + ".setup.json"))
        found.append((tree, "no setup" if state is None else "prepared" if state.get("done") else "setup unfinished"))
    return found


def clean(root: Path | None = None) -> tuple[list[Path], list[Path]]:
    """Remove every checkout in the cache: (the checkouts removed, the ones left because a process is making
    them). The empty lock files stay: a process waiting on one must never end up holding a lock nobody else
    sees."""
    root = root or cache_root()
    removed: list[Path] = []
    busy: list[Path] = []
    if not root.is_dir():
        return removed, busy
    check_private_dir(root, "revisions cache")
    for lock_file in sorted(root.glob("*/*.lock")):
        base, name = lock_file.parent, lock_file.name[: -len(".lock")]
        lock = FileLock(str(lock_file))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            busy.append(base / name)
            continue
        try:
            for unfinished in base.glob(f".{name}.tmp-*"):
                shutil.rmtree(unfinished)
            if (base / name).is_dir():
                _discard(base / name, base, name)
                removed.append(base / name)
            for extra in (".setup.json", ".setup.json.new", ".setup.log", ".group"):
                (base / f"{name}{extra}").unlink(missing_ok=True)
        finally:
            lock.release()
    return removed, busy
