"""The deploy plan: the one reader of an app's ini *as deployed* (a vassal symlink in a vassal directory).

The I/O half of :mod:`pytest_emperor.ini`: magic variables from the file system (every one uWSGI fills:
``%h``, ``%i``, ``%u``, ``%U``, ...), ``@(...)`` resolution run where the vassal runs, and the sockets the vassal
will bind. The engine plans a deploy with :func:`plan_deploy` before it links (``Emperor.deploy``);
``emperor-dev check`` reads through :func:`deployed`. Both go through :func:`read_ini`.
"""

from __future__ import annotations

import contextlib
import glob as globmod
import grp
import os
import pwd
import signal
import socket
import stat
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from pytest_emperor.engine.runs import AF_UNIX_MAX
from pytest_emperor.errors import ConfigError
from pytest_emperor.ini import SOCKET_OPTIONS, IniFile, MagicVars, Resolution, read_config

__all__ = [
    "DeployPlan",
    "Deployed",
    "SocketSpec",
    "VassalSource",
    "at_resolver",
    "bound_sockets",
    "deployed",
    "magic_for",
    "plan_deploy",
    "read_ini",
    "read_regular",
    "run_bounded",
    "socket_spec",
    "strip_one_eol",
]

# `@(exec://...)` commands are config-time helpers (dirname, realpath, cat ...); one that hangs would hang
# uWSGI at every start too, so a bound only keeps the checker from hanging with it.
EXEC_TIMEOUT = 30.0
# The largest config file or `@(file)` read: uWSGI has no bound (`@(/dev/zero)` grows until memory runs out);
# a real config is a few KiB.
MAX_READ = 1 << 20

_KINDS = (
    (stat.S_ISLNK, "a symbolic link"),
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISREG, "a regular file"),
)


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "a special file")


def read_regular(path: str, limit: int = MAX_READ) -> bytes:
    """The bytes of ``path`` if it is a regular file of at most ``limit`` bytes; :class:`OSError` otherwise.

    Opened non-blocking, so a FIFO without a writer is refused instead of waited on, and checked with fstat()
    on the open descriptor (no swap between the test and the read)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(f"{_kind(st.st_mode)}, not a regular file: not read")
        if st.st_size > limit:
            raise OSError(f"{st.st_size} bytes, over the {limit}-byte limit of a config file: not read")
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(limit + 1)
        if len(data) > limit:  # grew since fstat()
            raise OSError(f"over the {limit}-byte limit of a config file: not read")
        return data
    finally:
        os.close(fd)


def run_bounded(
    command: str, cwd: str, timeout: float = EXEC_TIMEOUT, live: set[int] | None = None
) -> tuple[int | None, bytes]:
    """``/bin/sh -c command`` in ``cwd``: its exit status (None: killed at ``timeout``) and stdout.

    It runs in a process group of its own, killed when the command ends or times out, so a command that
    backgrounds a child (``sleep 100 &``) leaves nothing behind. ``live`` holds the group's id while it runs
    (a caller that gives up sooner kills what is in it)."""
    proc = subprocess.Popen(
        ["/bin/sh", "-c", command],
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    if live is not None:
        live.add(proc.pid)
    status: int | None
    try:
        out, _ = proc.communicate(timeout=timeout)
        status = proc.returncode
    except subprocess.TimeoutExpired:
        status = None
        out = b""
    finally:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        if proc.poll() is None or status is None:
            proc.kill()
            proc.communicate()
        if live is not None:
            live.discard(proc.pid)
    return status, out


def strip_one_eol(text: str) -> str:
    """Drop exactly one trailing ``\\n`` or ``\\r``, as core/uwsgi.c ``uwsgi_at_file_read`` does.

    Measured on 2.0.31: ``'hello\\n\\n'`` -> ``'hello\\n'``, ``'a\\r\\n'`` -> ``'a\\r'``.
    """
    return text[:-1] if text.endswith(("\n", "\r")) else text


def at_resolver(cwd: str) -> Callable[[str], str]:
    """A resolver for ``@(...)`` running where the vassal runs (``cwd``, the vassal directory).

    ``exec://cmd`` runs ``/bin/sh -c cmd`` and captures stdout, ignoring the exit status like core/io.c
    ``uwsgi_scheme_exec``; anything else is a file path read relative to ``cwd``. A missing file raises
    :class:`FileNotFoundError`, as it is fatal for uWSGI (exit 1). Other schemes raise :class:`ValueError`.
    """

    def resolve(spec: str) -> str:
        if spec.startswith("exec://"):
            _, out = run_bounded(spec[len("exec://") :], cwd)
            return strip_one_eol(out.decode("utf-8", "surrogateescape"))
        if "://" in spec:
            raise ValueError(f"@({spec}): only exec:// and plain files are supported")
        path = spec if os.path.isabs(spec) else os.path.join(cwd, spec)
        return strip_one_eol(read_regular(path).decode("utf-8", "surrogateescape"))

    return resolve


def magic_for(
    config_arg: str,
    *,
    cwd: str,
    version: str = "",
    binary_path: str = "",
    first: bool = True,
    staged: str | None = None,
) -> MagicVars:
    """The magic table uWSGI fills for ``config_arg`` opened in ``cwd`` on this machine.

    ``staged``: the file is not at ``cwd/config_arg`` yet but at this path, to be renamed there (a rename keeps
    the inode, so ``%i`` is exact)."""
    full = staged or os.path.join(cwd, config_arg)
    st = os.lstat(full)
    uid, gid = os.getuid(), os.getgid()
    return MagicVars.for_config(
        config_arg,
        cwd=cwd,
        is_symlink=os.path.islink(full),
        realpath=os.path.realpath(full),
        inode=st.st_ino,
        cpu_count=os.sysconf("SC_NPROCESSORS_ONLN"),
        hostname=socket.gethostname(),
        version=version,
        binary_path=binary_path,
        uid=uid,
        gid=gid,
        user=_user_name(uid),
        group=_group_name(gid),
        first=first,
    )


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:  # a uid without a passwd entry (containers): uWSGI leaves %U empty then
        return ""


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return ""


def read_ini(
    config_arg: str,
    *,
    cwd: str,
    section: str = "uwsgi",
    version: str = "",
    binary_path: str = "",
    env: Mapping[str, str] | None = None,
    staged: str | None = None,
    stop_at_missing: bool = True,
) -> IniFile:
    """Read ``config_arg`` (relative to ``cwd``) with the magic variables uWSGI would give it there
    (``version``/``binary_path`` fill ``%V``/``%b`` when the caller knows the binary), following its includes
    and logic blocks under ``env`` (default: this process's environment, which a vassal inherits).
    ``staged``: see :func:`magic_for`; ``stop_at_missing``: see :func:`read_config`."""
    source = VassalSource(cwd, os.environ if env is None else env, version=version, binary_path=binary_path)
    text = read_regular(staged).decode("utf-8", "surrogateescape") if staged else source.read(config_arg)
    magic = magic_for(config_arg, cwd=cwd, version=version, binary_path=binary_path, staged=staged)
    return read_config(text, magic=magic, section=section, source=source, stop_at_missing=stop_at_missing)


@dataclass(frozen=True)
class Deployed:
    """An ini file seen through a vassal symlink: the parsed file and an ``@(...)`` resolver for it."""

    ini: IniFile
    link: Path
    vassal_dir: Path
    resolver: Callable[[str], str]


@contextlib.contextmanager
def deployed(
    ini_path: Path,
    name: str,
    *,
    vassal_dir: Path | None = None,
    version: str = "",
    binary_path: str = "",
    env: Mapping[str, str] | None = None,
    stop_at_missing: bool = True,
) -> Iterator[Deployed]:
    """Read ``ini_path`` as the emperor runs it: ``<vassal_dir>/<name>.ini -> ini_path``, cwd = vassal dir.

    Without ``vassal_dir`` a private temporary one is made and removed afterwards, so ``%p``, ``%n`` and
    ``@(exec://dirname $(realpath %P))`` see a real symlink; nothing next to ``ini_path`` is touched.
    """
    with contextlib.ExitStack() as stack:
        vdir = vassal_dir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="emperor-check-")))
        vdir = Path(os.path.realpath(vdir))  # the emperor chdir()s into the realpath of its directory
        link = vdir / f"{name}.ini"
        link.symlink_to(Path(ini_path).resolve())
        stack.callback(link.unlink)
        ini = read_ini(
            link.name,
            cwd=str(vdir),
            version=version,
            binary_path=binary_path,
            env=env,
            stop_at_missing=stop_at_missing,
        )
        yield Deployed(ini=ini, link=link, vassal_dir=vdir, resolver=at_resolver(str(vdir)))


@dataclass(frozen=True)
class SocketSpec:
    """The socket a vassal binds: its address (a unix path, or ``host:port``) and the protocol spoken on it."""

    address: str
    protocol: str  # "uwsgi" or "http"
    line: int  # the ini line that sets it
    file: str = ""  # the included file that sets it ("": the app's ini)
    option: str = "socket"  # the option that sets it: socket, uwsgi-socket or http-socket

    @property
    def is_unix(self) -> bool:
        """True for a unix socket path (uWSGI treats an address with ``:`` as TCP)."""
        return ":" not in self.address

    def connect_address(self) -> str | tuple[str, int]:
        """The address in the form the clients take."""
        if self.is_unix:
            return self.address
        host, _, port = self.address.rpartition(":")
        return (host or "127.0.0.1", int(port))


@dataclass(frozen=True)
class DeployPlan:
    """An app's ini as it will run once linked as ``link``: the parsed file and every socket it will bind.

    ``staged`` is the vassal's symlink, already made under a name the emperor ignores (``<name>.ini.plan``);
    deploying renames it to ``link`` (:meth:`commit`), so its inode, ``%i``, is the one predicted.
    """

    ini: Path
    link: Path
    staged: Path
    config: IniFile
    sockets: list[SocketSpec]

    def commit(self) -> bool:
        """Put the staged link in place; False if it is gone (a redeploy after ``stop()``: link afresh)."""
        try:
            os.rename(self.staged, self.link)
        except FileNotFoundError:
            return False
        return True

    def discard(self) -> None:
        """Remove the staged link of a deploy that will not happen."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.staged)


def plan_deploy(
    ini: Path, link: Path, *, env: Mapping[str, str] | None = None, version: str = "", binary_path: str = ""
) -> DeployPlan:
    """Read ``ini`` as uWSGI will once it is opened as the symlink ``link`` from the vassal dir (which the
    emperor enters by its realpath), with the running binary's ``version`` and ``binary_path`` for ``%V``/``%b``,
    and predict its sockets; ConfigError names the file and line of a problem."""
    __tracebackhide__ = True
    env = os.environ if env is None else env
    staged = link.with_name(link.name + ".plan")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(staged)  # left by a deploy that failed before linking
    os.symlink(ini, staged)
    try:
        config = read_ini(
            link.name, cwd=str(link.parent), env=env, staged=str(staged), version=version, binary_path=binary_path
        )
        if not config.options:
            raise ConfigError(
                f"{ini}:1: no option in a [{config.section}] section, so uWSGI would start with none of them; put "
                f"the options under a [{config.section}] header"
            )
        sockets = _predict_sockets(config, ini, link, env)
    except BaseException:
        os.unlink(staged)
        raise
    return DeployPlan(ini, link, staged, config, sockets)


def _at_resolver_before_link(link: Path, target: Path) -> Callable[[str], str]:
    """Evaluate ``@(...)`` the way the vassal will, before its symlink exists under its name.

    Linking first would let the emperor start the vassal before the checks that must precede it (a live socket
    of someone else's would be stolen). But the production idiom ``@(exec://dirname $(realpath %P))`` needs the link:
    so a command naming the link's path runs against a stand-in link to the same target in a private directory.
    """
    resolve = at_resolver(str(link.parent))

    def run(spec: str) -> str:
        if str(link) not in spec or link.is_symlink():
            return resolve(spec)
        with tempfile.TemporaryDirectory(prefix="pe-link-") as directory:
            stand_in = Path(directory) / link.name
            stand_in.symlink_to(target)
            return resolve(spec.replace(str(link), str(stand_in)))

    return run


def _predict_sockets(config: IniFile, ini: Path, link: Path, env: Mapping[str, str]) -> list[SocketSpec]:
    """Every socket the vassal deployed as ``link`` will bind, in order, fully expanded (they are repeatable);
    ConfigError for one uWSGI cannot bind or must not."""
    resolver = _at_resolver_before_link(link, ini)

    def expand(value: str) -> str:
        needed = config.needs_at_resolver(value)  # most values need no @(exec://...) run
        return config.expand(value, env=env, at_resolver=resolver if needed else None)

    protocol = config.last("protocol")
    protocol = expand(protocol) if protocol else ""
    sockets = []
    base: str | None = None
    for option in config.options:
        if option.key not in SOCKET_OPTIONS:
            continue
        address = expand(option.value)
        if ":" not in address:
            size = len(os.fsencode(address))
            if size > AF_UNIX_MAX:
                raise ConfigError(
                    f"{ini}:{option.line}: socket path {address!r} is {size} bytes, over the AF_UNIX limit of "
                    f"{AF_UNIX_MAX} (sun_path is 108 bytes with its NUL): use a shorter directory or vassal name"
                )
            if base is None:
                chdir = config.last("chdir")
                base = os.path.join(link.parent, expand(chdir)) if chdir else str(link.parent)
            _refuse_non_socket(os.path.join(base, address), ini, option.line)
        spec = socket_spec(option.key, address, option.line, protocol=protocol, bind_dir=base or "", file=option.file)
        sockets.append(spec)
    return sockets


def bound_sockets(resolution: Resolution, vassal_dir: str) -> list[SocketSpec]:
    """The sockets a vassal with these options binds (:func:`socket_spec`), from its options after the passes,
    run from ``vassal_dir`` (``""``: unknown, relative paths stay relative to ``chdir``). ``emperor-dev check``
    predicts them so, from what it resolved without running anything."""
    protocol = resolution.last("protocol") or ""
    chdir = resolution.last("chdir")
    bind_dir = os.path.join(vassal_dir, chdir) if chdir else vassal_dir
    return [
        socket_spec(o.key, o.value, o.line, protocol=protocol, bind_dir=bind_dir, file=o.file)
        for o in resolution.options
        if o.key in SOCKET_OPTIONS and not o.synthetic
    ]


def socket_spec(key: str, address: str, line: int, *, protocol: str, bind_dir: str, file: str = "") -> SocketSpec:
    """What the socket option ``key = address`` (its value expanded) binds, in a vassal whose ``protocol`` option
    is ``protocol``: ``http-socket`` speaks HTTP, ``uwsgi-socket`` uwsgi, and ``socket`` the ``protocol`` option's
    (uwsgi unless it is ``http``; core/socket.c gives it only to a socket of no protocol of its own,
    docs/uwsgi-behaviour.md). A relative unix path binds in ``bind_dir`` (``chdir``, applied before the sockets
    are bound, else the vassal dir, the emperor's cwd): the clients, the liveness check and the cleanup reach it
    there, whatever their own cwd, when the full path still fits sun_path."""
    speaks = "http" if key == "socket" and protocol == "http" else SOCKET_OPTIONS[key]
    if ":" not in address:
        full = os.path.join(bind_dir, address)
        if len(os.fsencode(full)) <= AF_UNIX_MAX:
            address = full
    return SocketSpec(address, speaks, line, file, key)


def _refuse_non_socket(path: str, ini: Path, line: int) -> None:
    """ConfigError when ``path`` holds anything but a socket: uWSGI unlinks what is at a unix socket's path
    before bind() (docs/uwsgi-behaviour.md, "A socket path is unlinked before bind"), so a deploy would delete a
    user's file (or, as root, ``/dev/null``)."""
    try:
        st = os.lstat(path)
    except OSError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise ConfigError(
            f"{ini}:{line}: socket path {path!r} holds {_kind(st.st_mode)}, not a socket: uWSGI would delete it "
            "to bind there; pick a socket path where nothing else lives"
        )


class VassalSource:
    """:class:`~pytest_emperor.ini.ConfigSource` for a vassal running in ``cwd`` with environment ``env``."""

    def __init__(self, cwd: str, env: Mapping[str, str], *, version: str = "", binary_path: str = "") -> None:
        self.cwd = cwd
        self.env = env
        self.version = version
        self.binary_path = binary_path

    def _path(self, path: str) -> str:
        return os.path.join(self.cwd, path)

    def read(self, path: str) -> str:
        """The file's text (relative to the vassal dir)."""
        return read_regular(self._path(path)).decode("utf-8", "surrogateescape")

    def magic(self, path: str) -> MagicVars | None:
        """The magic letters uWSGI fills for ``path``; None where its realpath() fails (uWSGI exits then)."""
        if not os.path.lexists(self._path(path)):
            return None
        return magic_for(path, cwd=self.cwd, version=self.version, binary_path=self.binary_path, first=False)

    def real(self, path: str) -> str:
        """The real path findings point at."""
        return os.path.realpath(self._path(path))

    def getenv(self, name: str) -> str | None:
        """The vassal's environment variable."""
        return self.env.get(name)

    def test(self, kind: str, path: str) -> bool:
        """uwsgi_file_exists / uwsgi_is_file / uwsgi_is_dir (stat follows symlinks)."""
        full = self._path(path)
        return {"exists": os.path.exists, "file": os.path.isfile, "dir": os.path.isdir}[kind](full)

    def glob(self, pattern: str) -> list[str]:
        """glob(3) with GLOB_MARK | GLOB_NOCHECK, run in the vassal dir."""
        prefix = "" if pattern.startswith("/") else self.cwd.rstrip("/") + "/"
        found = sorted(globmod.glob(prefix + pattern))
        return [f[len(prefix) :] + ("/" if os.path.isdir(f) else "") for f in found] or [pattern]

    def hostname(self) -> str:
        """This machine's host name."""
        return socket.gethostname()
