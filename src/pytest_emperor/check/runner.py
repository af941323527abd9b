"""Run ``emperor-dev check`` over files: read each ini as deployed, apply the static and path rules, optionally
boot it, then apply suppressions and ``--select``/``--ignore``."""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pytest_emperor.check.boot import BootTarget, boot_all
from pytest_emperor.check.options import BinaryFacts, binary_facts
from pytest_emperor.check.paths import check_paths, resolved_paths
from pytest_emperor.check.privileges import User, check_privileges, emperor_user, parse_emperor_args
from pytest_emperor.check.rules import (
    SOCKET_KEYS,
    AppConfig,
    Finding,
    apply_suppressions,
    check_apps,
    filter_codes,
    finding,
)
from pytest_emperor.convention import APP_INI, DEFAULT_SOCKET_DIR, DEFAULT_TIMEOUT
from pytest_emperor.engine.deploy_plan import deployed
from pytest_emperor.engine.naming import app_inis
from pytest_emperor.errors import InputError

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


@dataclass(frozen=True)
class CheckResult:
    """What was checked and what was found, sorted by file, line and code."""

    files: tuple[str, ...]
    findings: tuple[Finding, ...]
    boot: str = ""  # whether the boot check ran, and on how many apps, for the report

    @property
    def internal_error(self) -> bool:
        """The checker itself failed somewhere (X002): the CLI exits 2."""
        return any(f.code == "X002" for f in self.findings)


def find_inis(path: Path) -> list[Path]:
    """``path`` as ini files: an ini file, an app dir (its app.uwsgi.ini), or a dir of app dirs."""
    if path.is_file():
        return [path]
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
    if explicit:
        return explicit
    return ini.parent.resolve().name if ini.name == APP_INI else ini.stem


def _world_writable(directories: set[str]) -> frozenset[str]:
    out = set()
    for d in directories:
        try:
            if os.stat(d).st_mode & stat.S_IWOTH:
                out.add(d)
        except OSError:
            continue
    return frozenset(out)


def _load(
    ini: Path,
    name: str,
    settings: CheckSettings,
    facts: BinaryFacts | None,
    user: User | None = None,
    nginx: User | None = None,
) -> tuple[AppConfig | None, list[Finding]]:
    display = _display(ini)
    try:
        raw = ini.read_bytes().decode("utf-8", "surrogateescape")
    except OSError as exc:
        raise InputError(f"{display}: {exc.strerror}") from exc
    binary = str(settings.uwsgi) if settings.uwsgi else ""
    version = facts.version if facts else ""
    with deployed(ini, name, version=version, binary_path=binary) as d:
        try:
            resolution = d.ini.resolve(env=os.environ, at_resolver=d.resolver)
        except (OSError, ValueError) as exc:  # @(missing-file) is fatal for uWSGI too (exit 1)
            return None, [finding("X001", display, 1, f"resolving @(...): {exc}")]
        sockets = {o.value.rpartition("/")[0] or "/" for o in resolution.options if o.key in SOCKET_KEYS}
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
        )
        python = facts.python_version if facts else ""
        found = check_paths(app, cwd=d.vassal_dir, python_version=python, dropped=user is not None)
        if user is not None:
            paths = {"": ini.resolve(), **resolved_paths(app, d.vassal_dir)}
            found += check_privileges(app, cwd=d.vassal_dir, user=user, nginx=nginx, paths=paths)
        return app, found


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
    for ini in inis:
        try:
            app, found = _load(ini, _deploy_name(ini, settings.name), settings, facts, user, nginx)
        except InputError:
            raise
        except Exception as exc:  # a finding with exit 2, never a traceback
            app, found = None, [finding("X002", _display(ini), 1, f"{type(exc).__name__}: {exc}")]
        findings.extend(found)
        if app is not None:
            loaded.append((ini, app))
    apps = [app for _, app in loaded]
    findings.extend(check_apps(apps))
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
    return CheckResult(tuple(_display(i) for i in inis), tuple(kept), boot)
