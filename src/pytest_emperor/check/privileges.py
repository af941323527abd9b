"""What production's emperor flags imply (``--emperor-args "--uid www-data --gid www-data"``): the vassals then
run as that user, so the app dir, module, virtualenv and ``logto`` must be reachable by it, the routed socket
must be connectable by nginx's worker user, and a vassal's own ``uid``/``gid`` cannot take effect.

Permission checks are computed from the file modes (owner, group, other bits, every ancestor directory needing
search permission), the way the kernel decides for a non-root user; nothing is opened as that user.
"""

from __future__ import annotations

import re
from pathlib import Path

from pytest_emperor.check.rules import SOCKET_KEYS, AppConfig, Finding, finding, where
from pytest_emperor.convention import routed_socket
from pytest_emperor.engine.privileges import User, blocked, emperor_user, parse_emperor_args

__all__ = ["User", "check_privileges", "emperor_user", "parse_emperor_args"]

_DEFAULT_UMASK = 0o022  # uWSGI keeps the emperor's umask unless `umask` is set; 022 is the usual one


def check_privileges(
    app: AppConfig, *, cwd: Path, user: User, nginx: User | None, paths: dict[str, Path]
) -> list[Finding]:
    """E601-E603, W604 for ``app`` run by an emperor that dropped to ``user``; ``paths`` maps option names to
    the files the path rules resolved (``chdir``, ``home``, ``wsgi-file``, ``module``), and ``""`` to the ini."""
    r = app.resolution
    found: list[Finding] = []

    def at(key: str) -> tuple[str, int]:
        option = app.ini.option(key)
        return (where(app, option.file), option.line) if option else (app.path, 1)

    why = blocked(user, paths.pop("", Path(app.path)), "r")
    if why:  # uWSGI cannot even open the config: nothing in it applies, the vassal is cursed at once
        return [finding("E601", app.path, 1, f"the config itself: {why}")]
    for key, target in paths.items():
        why = blocked(user, target, "rx" if target.is_dir() else "r")
        if why:
            found.append(finding("E601", *at(key), why))
    logto = r.last("logto")
    if logto and ("/" in logto or ":" not in logto):
        log = cwd / logto
        why = blocked(user, log, "w") if log.exists() else blocked(user, log.parent, "wx")
        if why:
            found.append(finding("E602", *at("logto"), why))
    for key in ("uid", "gid"):
        value = r.last(key)
        if value:
            # a non-root emperor spawns its vassals as itself, and uWSGI switches users only when started as root
            message = f"`{key} = {value}` is ignored: the vassal runs as {user.name} (the emperor's `--uid`)"
            found.append(finding("W604", *at(key), message))
    if nginx is not None:
        sockets = [o for o in r.options if o.key in SOCKET_KEYS and not o.synthetic and o.value.startswith("/")]
        expected = routed_socket(app.name, app.socket_dir)
        routed = next((o for o in sockets if o.value == expected), sockets[0] if sockets else None)
        if routed is not None:
            found.extend(_socket_reachable(app, routed.value, user, nginx))
    return found


def _socket_reachable(app: AppConfig, path: str, user: User, nginx: User) -> list[Finding]:
    r = app.resolution
    mode_text = r.last("chmod-socket")
    if mode_text is None:
        umask_text = r.last("umask")
        umask = int(umask_text, 8) if umask_text and re.fullmatch(r"[0-7]{1,4}", umask_text) else _DEFAULT_UMASK
        mode, how = 0o777 & ~umask, f"no `chmod-socket`: {0o777 & ~umask:o} from the umask"
    else:
        # core/socket.c: a bare `chmod-socket` is 666; otherwise an octal mode
        mode = 0o666 if mode_text == "" else int(mode_text, 8) if re.fullmatch(r"[0-7]{3,4}", mode_text) else 0
        how = f"`chmod-socket = {mode_text or '(666)'}`"
    owner_uid, owner_gid = user.uid, user.gid
    chown = r.last("chown-socket")
    if chown:
        name, _, group = chown.partition(":")
        try:
            other = User.lookup(name, group or None)
            owner_uid, owner_gid = other.uid, other.gid
        except KeyError:
            pass  # E311's kind of problem; judged with the emperor's user
    shift = 6 if owner_uid == nginx.uid else 3 if owner_gid in nginx.groups else 0
    if (mode >> shift) & 2:  # connect() on a unix socket needs write permission
        if shift and mode & 0o002 and mode_text is not None:
            # nginx reaches it as its owner or group: the world bit only opens the app to every local user
            option = app.ini.option("chmod-socket")
            place = (where(app, option.file), option.line) if option else (app.path, 1)
            who = "owner" if shift == 6 else "group"
            message = (
                f"`{path}` would be {mode:o}: nginx's worker ({nginx.name}) connects as its {who}, so every other "
                "local user can reach the app too"
            )
            return [finding("W605", *place, message)]
        return []
    key = "chmod-socket" if mode_text is not None else next(k for k in SOCKET_KEYS if app.ini.option(k))
    option = app.ini.option(key)
    place = (where(app, option.file), option.line) if option else (app.path, 1)
    message = (
        f"`{path}` would be {mode:o} owned by uid {owner_uid} ({how}); nginx's worker ({nginx.name}) "
        "cannot connect (502)"
    )
    return [finding("E603", *place, message)]
