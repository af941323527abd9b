"""Production's privilege drop: the user an emperor started with ``--uid``/``--gid`` runs as, and its vassals
with it. The run dir is handed to that user (``RunDir.hand_over``, docs/run-dir.md); ``emperor-dev check``
also judges what the drop implies for an app's files (check/privileges.py).
"""

from __future__ import annotations

import grp
import os
import pwd
import shlex
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pytest_emperor.errors import ConfigError

__all__ = ["User", "allowed", "blocked", "drop_of", "emperor_user", "nginx_worker_of", "parse_emperor_args"]


@dataclass(frozen=True)
class User:
    """A user as the kernel sees it: uid, primary gid and every group it is in."""

    name: str
    uid: int
    gid: int
    groups: frozenset[int]

    @classmethod
    def lookup(cls, user: str, group: str | None = None) -> User:
        """``user`` (name or number) with its groups; ``group`` overrides the primary group. KeyError if unknown."""
        entry = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
        gid = entry.pw_gid
        if group is not None:
            gid = int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
        groups = {gid, *(g.gr_gid for g in grp.getgrall() if entry.pw_name in g.gr_mem)}
        return cls(entry.pw_name, entry.pw_uid, gid, frozenset(groups))


def allowed(user: User, st: os.stat_result, bits: str) -> bool:
    """Whether the mode bits of ``st`` give ``user`` each of ``bits`` (``"r"``, ``"w"``, ``"x"``), as the kernel
    decides for a user that is not root: the owner's bits, else the group's, else the others'."""
    shift = 6 if st.st_uid == user.uid else 3 if st.st_gid in user.groups else 0
    want = sum({"r": 4, "w": 2, "x": 1}[b] for b in bits)
    return (st.st_mode >> shift) & want == want


def blocked(user: User, path: Path, bits: str) -> str | None:
    """Why ``user`` cannot get ``bits`` on ``path`` (the first ancestor lacking search permission first), None if
    it can or the path is missing."""
    path = Path(os.path.abspath(path))
    for parent in reversed(path.parents):
        try:
            if not allowed(user, parent.stat(), "x"):
                return f"`{parent}` is not searchable by {user.name}"
        except OSError:
            return None  # a missing path is another rule's (E50x)
    try:
        st = path.stat()
    except OSError:
        return None
    if not allowed(user, st, bits):
        return f"`{path}` ({stat.filemode(st.st_mode)}, uid {st.st_uid}) lacks `{bits}` for {user.name}"
    return None


def parse_emperor_args(args: str | Sequence[str]) -> tuple[list[str], str | None, str | None]:
    """The emperor's extra flags as a list, and the ``--uid``/``--gid`` among them (``--uid=x`` or ``--uid x``)."""
    items = shlex.split(args) if isinstance(args, str) else list(args)
    found: dict[str, str] = {}
    for index, item in enumerate(items):
        for flag in ("uid", "gid"):
            if item == f"--{flag}" and index + 1 < len(items):
                found[flag] = items[index + 1]
            elif item.startswith(f"--{flag}="):
                found[flag] = item.partition("=")[2]
    return items, found.get("uid"), found.get("gid")


def emperor_user(uid: str | None, gid: str | None) -> User | None:
    """The user production's emperor drops to (None when it stays root). KeyError if unknown here."""
    if uid is None:
        return None
    return User.lookup(uid, gid)


def drop_of(args: Sequence[str], source: str) -> User | None:
    """The user an emperor run with ``args`` drops to, None when it does not drop (no ``--uid``, or the caller's
    own). ConfigError, naming ``source`` (where the args were set) and the fix, for a user unknown here or a
    caller that is not root: uWSGI can only drop privileges it has, and running the apps as the caller instead
    would hide what production's drop does to them."""
    _, uid, gid = parse_emperor_args(args)
    try:
        user = emperor_user(uid, gid)
    except KeyError:
        raise ConfigError(
            f"emperor-args ({source}) drop to --uid {uid}{f' --gid {gid}' if gid else ''}, which this machine does "
            f"not know: create that user (useradd --system {uid}) or change emperor-args"
        ) from None
    if user is None or (user.uid == os.geteuid() and user.gid == os.getegid()):
        return None
    if os.geteuid() != 0:
        me = pwd.getpwuid(os.geteuid()).pw_name
        raise ConfigError(
            f"emperor-args ({source}) drop privileges to {user.name} (--uid), which only root can do; this runs as "
            f"{me}: run as root (as CI containers do), or override emperor-args for this run (--emperor-args '' "
            "on the command line), and the apps then run as you, not as production runs them"
        )
    return user


def nginx_worker_of(user: str | None, source: str) -> User | None:
    """The user nginx's workers are to run as (``nginx-user``, set in ``source``), None when unset or the caller.
    ConfigError for a user unknown here or a caller that is not root (nginx then ignores its ``user`` directive,
    and its workers would reach the apps' sockets as the caller, not as production's do)."""
    if user is None:
        return None
    try:
        found = User.lookup(user)
    except KeyError:
        raise ConfigError(
            f"nginx-user ({source}) is {user}, which this machine does not know: create that user "
            f"(useradd --system {user}) or change nginx-user"
        ) from None
    if found.uid == os.geteuid():
        return None
    if os.geteuid() != 0:
        me = pwd.getpwuid(os.geteuid()).pw_name
        raise ConfigError(
            f"nginx-user ({source}) runs nginx's workers as {found.name}, which only root can do; this runs as {me}: "
            "run as root (as CI containers do), or leave nginx-user out for this run"
        )
    return found
