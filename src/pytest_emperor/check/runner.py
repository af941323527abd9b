"""Run ``emperor-dev check`` over files: read each ini as deployed, apply the static and path rules, optionally
boot it, then apply suppressions and ``--select``/``--ignore``."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import stat
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from pytest_emperor.check.boot import BootTarget, boot_all
from pytest_emperor.check.evaluate import Evaluator, RecordingEnv, mask
from pytest_emperor.check.options import BinaryFacts, binary_facts
from pytest_emperor.check.paths import Production, check_paths, resolved_paths
from pytest_emperor.check.privileges import User, check_privileges, emperor_user, parse_emperor_args
from pytest_emperor.check.rules import (
    SOCKET_KEYS,
    AppConfig,
    Finding,
    Kind,
    apply_suppressions,
    check_apps,
    filter_codes,
    finding,
    section_line,
    where,
)
from pytest_emperor.convention import APP_INI, DEFAULT_SOCKET_DIR, DEFAULT_TIMEOUT
from pytest_emperor.engine.deploy_plan import EXEC_TIMEOUT, SocketSpec, bound_sockets, deployed, read_regular
from pytest_emperor.engine.naming import app_inis, default_name
from pytest_emperor.errors import InputError
from pytest_emperor.ini.values import references

__all__ = ["APP_INI", "CheckResult", "CheckSettings", "InputError", "find_inis", "run_check"]


@dataclass(frozen=True)
class CheckSettings:
    """The resolved command-line/pyproject settings of one run."""

    name: str | None = None
    socket_dir: str = DEFAULT_SOCKET_DIR
    boot: bool = True
    probe: str = "/"
    expect_status: int | None = None
    timeout: float = DEFAULT_TIMEOUT
    select: tuple[str, ...] = ()
    ignore: tuple[str, ...] = ()
    uwsgi: Path | None = None
    emperor_args: tuple[str, ...] = ()  # production's emperor flags, e.g. ("--uid", "www-data", "--gid", "www-data")
    nginx_user: str = "www-data"
    convention: bool | None = None  # every file is a vassal of the convention (None: app.uwsgi.ini files are)
    run_commands: bool = False  # --exec: run the config's @(exec://...) commands (trusted repos only)
    exec_timeout: float = EXEC_TIMEOUT
    check_timeout: float = 60.0  # the static part of the whole check
    production_env: Mapping[str, str] | None = None  # None: not stated
    production_paths: tuple[str, ...] = ()
    production_users: tuple[str, ...] | None = None
    production_features: tuple[str, ...] = ()  # build features and plugins of production's uwsgi (pcre, ssl, http)


@dataclass(frozen=True)
class CheckResult:
    """What was checked and what was found, sorted by file, line and code."""

    files: tuple[str, ...]
    findings: tuple[Finding, ...]
    boot: str = ""  # whether the boot check ran, and on how many apps, for the report
    rule_sets: str = ""  # which rule set applied to which files, for the report

    @property
    def summary(self) -> str:
        """The lines the report ends with: the rule sets, then the boot check."""
        return "\n".join(line for line in (self.rule_sets, self.boot) if line)

    @property
    def internal_error(self) -> bool:
        """The checker itself failed somewhere (X002): the CLI exits 2."""
        return any(f.code == "X002" for f in self.findings)


def find_inis(path: Path) -> list[Path]:
    """``path`` as ini files: an ini file, an app dir (its app.uwsgi.ini), or a dir of app dirs."""
    if path.is_file():
        return [path]
    if path.exists() and not path.is_dir():
        raise InputError(f"{path}: not a regular file (a device or a FIFO): not read")
    if path.is_dir():
        found = app_inis(path)
        if found:
            return found
        raise InputError(f"{path}: no {APP_INI} in it or in its sub-directories")
    raise InputError(f"{path}: no such file or directory")


def _display(path: Path) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:
        return str(path)


def _deploy_name(ini: Path, explicit: str | None) -> str:
    """The name ``ini`` is judged under (its ``%n``): an app dir's config deploys under the name the engine gives
    it (``naming.default_name``), any other config under its file's."""
    if explicit:
        return explicit
    return default_name(Path(os.path.abspath(ini))) if ini.name == APP_INI else ini.stem


def _world_writable(directories: set[str]) -> frozenset[str]:
    out = set()
    for d in directories:
        try:
            if os.stat(d).st_mode & stat.S_IWOTH:
                out.add(d)
        except OSError:
            continue
    return frozenset(out)


def _repo_root(ini: Path) -> Path:
    """The repository the file belongs to: the nearest directory above it with a ``.git``, else its own dir."""
    start = ini.resolve().parent
    return next((d for d in (start, *start.parents) if (d / ".git").exists()), start)


_EMPEROR_LINE = re.compile(r"(?m)^[ \t]*emperor[ \t]*=")


def _kind(ini: Path, raw: str, settings: CheckSettings, fragments: set[Path]) -> Kind:
    if _EMPEROR_LINE.search(raw):
        return Kind.EMPEROR
    if ini.resolve() in fragments:
        return Kind.FRAGMENT
    if settings.convention is True or (settings.convention is None and ini.name == APP_INI):
        return Kind.CONVENTION
    return Kind.UWSGI


# How long a check that gave up waits for the file in hand to be finished (and its temp dir removed)
_WIND_DOWN = 10.0


def _evaluated(app: AppConfig, evaluator: Evaluator, env: Mapping[str, str], stated: bool) -> list[Finding]:
    """I109/W109 for each `$(VAR)` left unset, I110/W111/E112 for each `@(...)` not evaluated or failing, each
    on the line of the option it is in."""
    found: list[Finding] = []

    def line_of(text: str) -> tuple[str, int]:
        option = next((o for o in app.ini.options if text in o.value), None)
        return (where(app, option.file), option.line) if option else (app.path, section_line(app))

    unset: set[str] = set()
    for option in app.resolution.options:
        for name in references(option.value, "$"):
            if name not in env and name not in unset and " " not in name and "(" not in name:
                unset.add(name)
                code = "W109" if stated else "I109"
                found.append(finding(code, *line_of(f"$({name})"), f"`$({name})` in `{option.key}`"))
    codes = {"not-run": "I110", "failed": "W111", "timeout": "W111", "unreadable": "E112"}
    for run in evaluator.runs:
        if run.outcome in codes:
            detail = f": {run.detail}" if run.detail else ""
            found.append(finding(codes[run.outcome], *line_of(f"@({run.spec}"), f"`@({run.spec})`{detail}"))
    return found


def _socket_paths(app: AppConfig, bound: Sequence[SocketSpec]) -> list[Finding]:
    """E313: a unix socket path where something other than a socket is (uWSGI deletes it at bind), where the
    deploy plan says the vassal binds it (``bound``, in the check's vassal dir)."""
    found = []
    written = {(o.file, o.line): o.value for o in app.resolution.options if o.key in SOCKET_KEYS}
    for sock in bound:
        value = written.get((sock.file, sock.line), sock.address)
        if not sock.is_unix or not value:
            continue
        if not value.startswith("/") and app.kind is not Kind.CONVENTION:
            continue  # relative to a directory only the deployment knows
        try:
            st = os.lstat(sock.address)
        except OSError:
            continue
        if not stat.S_ISSOCK(st.st_mode):
            what = "a directory" if stat.S_ISDIR(st.st_mode) else "a file or device"
            message = f"`{sock.option} = {value}`: {what} is there"
            found.append(finding("E313", where(app, sock.file), sock.line, message))
    return found


def _load(
    ini: Path,
    name: str,
    settings: CheckSettings,
    facts: BinaryFacts | None,
    user: User | None = None,
    nginx: User | None = None,
    fragments: frozenset[Path] | set[Path] = frozenset(),
    secrets: set[str] | None = None,
    live: set[int] | None = None,
) -> tuple[AppConfig | None, list[Finding]]:
    display = _display(ini)
    try:
        raw = read_regular(str(ini)).decode("utf-8", "surrogateescape")
    except OSError as exc:
        return None, [finding("X001", display, 1, exc.strerror or str(exc))]
    binary = str(settings.uwsgi) if settings.uwsgi else ""
    version = facts.version if facts else ""
    env = RecordingEnv(os.environ, settings.production_env or {})
    kind = _kind(ini, raw, settings, set(fragments))
    with deployed(
        ini, name, version=version, binary_path=binary, env=env, stop_at_missing=kind is Kind.CONVENTION
    ) as d:
        evaluator = Evaluator(str(d.vassal_dir), run_commands=settings.run_commands, timeout=settings.exec_timeout)
        if live is not None:
            evaluator.live = live
        resolution = d.ini.resolve(env=env, at_resolver=evaluator)
        vassal_dir = str(d.vassal_dir)
        bound = bound_sockets(resolution, vassal_dir)
        sockets = {s.address.rpartition("/")[0] or "/" for s in bound if s.is_unix}
        app = AppConfig(
            path=display,
            name=name,
            ini=d.ini,
            resolution=resolution,
            raw_text=raw,
            known_options=facts.options if facts else None,
            python_embedded=facts.python_embedded if facts else False,
            socket_dir=settings.socket_dir,
            world_writable_dirs=_world_writable(sockets),
            kind=kind,
            features=frozenset(settings.production_features),
        )
        python = facts.python_version if facts else ""
        production = Production(
            here=kind is Kind.CONVENTION,
            repo=_repo_root(ini),
            paths=settings.production_paths,
            users=settings.production_users,
        )
        found = _evaluated(app, evaluator, env, settings.production_env is not None)
        found += _socket_paths(app, bound)
        if kind in (Kind.CONVENTION, Kind.UWSGI):
            found += check_paths(
                app, cwd=d.vassal_dir, python_version=python, dropped=user is not None, production=production
            )
        if user is not None and kind is Kind.CONVENTION:
            paths = {"": ini.resolve(), **resolved_paths(app, d.vassal_dir)}
            found += check_privileges(app, cwd=d.vassal_dir, user=user, nginx=nginx, paths=paths)
        # the vassal dir of a check is a temp dir of its own: production's is the emperor's
        found = [replace(f, message=f.message.replace(vassal_dir, "<vassal dir>")) for f in found]
        if secrets is not None:
            secrets.update(evaluator.secrets, env.read)
        return app, found


def _fragments(inis: Sequence[Path]) -> set[Path]:
    """The files the emperor configs among ``inis`` read into every vassal (``vassals-include``/``-inherit``)."""
    out: set[Path] = set()
    for ini in inis:
        try:
            text = read_regular(str(ini)).decode("utf-8", "surrogateescape")
        except OSError:
            continue
        if not _EMPEROR_LINE.search(text):
            continue
        for m in re.finditer(r"(?m)^[ \t]*vassals-(?:include|inherit)[ \t]*=[ \t]*(\S+)", text):
            target = Path(m.group(1))
            out.add((target if target.is_absolute() else ini.parent / target).resolve())
    return out


def _mask(findings: Sequence[Finding], secrets: set[str]) -> list[Finding]:
    """Findings with every value read from the environment or an `@(file)` replaced by ``***``."""
    return [
        replace(f, message=mask(f.message, secrets), details=tuple(mask(d, secrets) for d in f.details))
        for f in findings
    ]


def _rule_sets(kinds: dict[str, Kind]) -> str:
    parts = []
    for kind in Kind:
        files = [path for path, k in kinds.items() if k is kind]
        if files:
            shown = ", ".join(files[:3]) + (f" and {len(files) - 3} more" if len(files) > 3 else "")
            parts.append(f"{kind} rules: {shown}")
    return "; ".join(parts)


def run_check(paths: Sequence[Path], settings: CheckSettings) -> CheckResult:
    """Check every ini under ``paths``; raises :class:`InputError` for unusable input."""
    inis = [ini for p in paths for ini in find_inis(p)]
    if settings.name and len(inis) > 1:
        raise InputError("--name applies to one app; it was given with several")
    facts = binary_facts(settings.uwsgi) if settings.uwsgi else None
    _, uid, gid = parse_emperor_args(settings.emperor_args)
    try:
        user = emperor_user(uid, gid)
    except KeyError as exc:
        raise InputError(f"--emperor-args: no such user or group on this machine: {exc}") from exc
    try:
        nginx = User.lookup(settings.nginx_user)
    except KeyError:
        nginx = None  # no such user here: the socket rule is skipped rather than guessed
    loaded: list[tuple[Path, AppConfig]] = []
    findings: list[Finding] = []
    secrets: set[str] = set()
    live: set[int] = set()  # process groups of the --exec commands running now
    fragments = _fragments(inis)

    current: list[Path] = []  # the file being read

    def load_all() -> None:
        try:
            for ini in inis:
                if done.is_set():
                    return
                current[:] = [ini]
                try:
                    app, found = _load(
                        ini, _deploy_name(ini, settings.name), settings, facts, user, nginx, fragments, secrets, live
                    )
                except Exception as exc:  # a finding with exit 2, never a traceback
                    app, found = None, [finding("X002", _display(ini), 1, f"{type(exc).__name__}: {exc}")]
                findings.extend(found)
                if app is not None:
                    loaded.append((ini, app))
        finally:
            finished.set()

    # Every read is bounded, but a whole check gets a deadline too: a finding says so instead of a hang. (The
    # worker's own event says when it is done: Thread.is_alive() is wrong after a join() that Ctrl-C broke.)
    done, finished = threading.Event(), threading.Event()
    threading.Thread(target=load_all, daemon=True, name="emperor-dev-check").start()
    try:
        timed_out = not finished.wait(settings.check_timeout)
    finally:  # a deadline or an interrupt (SIGTERM, Ctrl-C)
        done.set()
        if not finished.is_set():
            for group in list(live):  # a command still running goes with the check, never outlives it
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(group, signal.SIGKILL)
            # every read is bounded: the file in hand is finished, and its temp vassal dir removed
            finished.wait(_WIND_DOWN)
    if timed_out:
        pending = _display(current[0]) if current else ""
        message = f"{settings.check_timeout:g} s, while reading {pending}"
        findings = [*findings, finding("X003", pending, 1, message)]
        return CheckResult(tuple(_display(i) for i in inis), tuple(_mask(findings, secrets)), "")
    apps = [app for _, app in loaded]
    findings.extend(check_apps(apps))
    kinds = {app.path: app.kind for app in apps}
    rule_sets = _rule_sets(kinds)
    # the boot check runs vassals of the convention: other configs are run by a deployment it cannot know
    loaded = [(ini, app) for ini, app in loaded if app.kind is Kind.CONVENTION]
    if not settings.boot:
        boot = "boot check: skipped (--static)"
    elif not settings.uwsgi:
        boot = "boot check: skipped (no uwsgi binary)"
    else:
        # an app uWSGI would exit on while reading its config is cursed anyway: booting it adds nothing
        bootable = [BootTarget(ini, app) for ini, app in loaded]
        as_root = os.geteuid() == 0
        findings.extend(
            boot_all(
                bootable,
                uwsgi=settings.uwsgi,
                socket_dir=settings.socket_dir,
                probe=settings.probe,
                expect_status=settings.expect_status,
                timeout=settings.timeout,
                emperor_args=settings.emperor_args if as_root else (),
                as_user=user if as_root else None,
            )
        )
        boot = f"boot check: ran on {len(bootable)} app{'s' if len(bootable) != 1 else ''}"
        if settings.emperor_args:
            # only root can start an emperor that drops to another user, as production's does
            applied = "under" if as_root else "not root, so without"
            boot += f" ({applied} --emperor-args {' '.join(settings.emperor_args)})"
    raw_texts = {app.path: app.raw_text for app in apps}
    for app in apps:  # suppression comments in included files count too
        raw_texts.update((path, text) for path, text in app.ini.texts.items() if path)
    kept = filter_codes(apply_suppressions(findings, raw_texts), settings.select, settings.ignore)
    kept.sort(key=lambda f: (f.path, f.line, f.code))
    return CheckResult(tuple(_display(i) for i in inis), tuple(_mask(kept, secrets)), boot, rule_sets)
