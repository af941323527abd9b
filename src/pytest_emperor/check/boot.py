"""The boot check: deploy every app as production does (a symlink named after the deploy name) under one private
emperor, all at once, wait until each is ready or cursed, probe each over the uwsgi protocol (what nginx's
``uwsgi_pass`` speaks) on the socket the router reaches, and turn what went wrong into findings that carry uWSGI's
own lines and point at the option they blame.

The app's own options stay in force (its ``logto`` included); only the deploy name gets the emperor's per-run
suffix, so a check never binds a running instance's socket. The emperor, its vassals and its run dir are gone
when this returns; nothing in the app dir is written (the symlinks live in the emperor's private vassal dir).
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import requests

from pytest_emperor._protocol.client import direct_session
from pytest_emperor.check.privileges import User
from pytest_emperor.check.rules import SOCKET_KEYS, AppConfig, Finding, finding, section_line, where
from pytest_emperor.convention import DEFAULT_SOCKET_DIR, DEFAULT_TIMEOUT, routed_socket
from pytest_emperor.engine.deploy_plan import SocketSpec
from pytest_emperor.engine.emperor import Emperor
from pytest_emperor.engine.naming import routable_name
from pytest_emperor.engine.runs import open_owned
from pytest_emperor.engine.vassal import Vassal
from pytest_emperor.engine.vassal_log import is_error_line
from pytest_emperor.errors import EmperorError, UnsafePath, VassalCursed, VassalError, VassalTimeout

__all__ = ["BootTarget", "boot_all"]

# The python plugin's own words for "started without an app" (uWSGI 2.0 plugins/python/pyloader.c, wsgi_handlers.c)
_NO_APP = re.compile(r"no app loaded|unable to load app|no python application found|failed to open python file")
_CALLABLE = re.compile(r"callable not found or import error")
# uWSGI error lines that name the option without quoting its value (core/uwsgi.c, core/utils.c, core/logging.c)
_OPTION_WORDS = (
    # a request larger than buffer-size: uWSGI resets the connection (core/protocol.c)
    (re.compile(r"invalid request block size"), ("buffer-size",)),
    (re.compile(r"\bchdir\(\)"), ("chdir",)),
    (re.compile(r"unable to find user|setuid\(\)"), ("uid",)),
    (re.compile(r"unable to find group|setgid\(\)"), ("gid",)),
    (re.compile(r"bind\(\)|socket\(\)|listen\(\)"), ("socket", "uwsgi-socket", "http-socket")),
    (re.compile(r"unable to open log|logto|\[core/logging\.c"), ("logto",)),
    (re.compile(r"failed to open python file"), ("wsgi-file", "file")),
    # before the import errors: a missing virtualenv is `ModuleNotFoundError: No module named 'encodings'`
    (re.compile(r"virtualenv|encodings|PYTHONHOME|home ="), ("home", "virtualenv", "venv", "pyhome")),
    (re.compile(r"callable not found|ImportError|ModuleNotFoundError"), ("module", "wsgi", "wsgi-file")),
)


@dataclass(frozen=True)
class BootTarget:
    """One app to boot: its ini, its static view (for blaming lines) and its deploy name."""

    ini: Path
    app: AppConfig


def _blame(app: AppConfig, lines: Sequence[str]) -> tuple[str, int]:
    """The file and line of the option uWSGI's error lines are about; the section header when none is named."""
    if _missing_import(app, lines) is not None:
        # the app's own import failed: not `module`'s fault, but the environment's
        home = next(
            (app.ini.option(k) for k in ("home", "virtualenv", "venv", "pyhome") if app.ini.option(k)), None
        )
        if home is not None:
            return where(app, home.file), home.line
    if any("socket option is missing" in text for text in lines):
        # no socket option survived: the usual cause is an `if-*` block left open above it
        opened = next((p for p in app.ini.problems if p.code == "open-logic"), None)
        if opened is not None:
            return where(app, opened.file), opened.line
    options = [o for o in app.resolution.options if not o.synthetic and o.line > 0]
    failed = [text for text in lines if is_error_line(text)]  # not `chdir() to /app`, a line of every start
    for text in failed:
        # a quoted value is the surest sign: `open("/nope/app.log")`, `realpath() of x failed`
        hits = [o for o in options if len(o.value) >= 3 and o.value in text]
        if hits:
            best = max(hits, key=lambda o: len(o.value))
            return where(app, best.file), best.line
    for pattern, keys in _OPTION_WORDS:
        if any(pattern.search(text) for text in failed):
            for key in keys:
                option = app.ini.option(key)
                if option is not None:
                    return where(app, option.file), option.line
    return app.path, section_line(app)


def _routed(vassal: Vassal, socket_dir: str) -> SocketSpec | None:
    expected = routed_socket(vassal.name, socket_dir)
    return next((s for s in vassal.sockets if s.address == expected), None) or (
        vassal.sockets[0] if vassal.sockets else None
    )


_NO_MODULE = re.compile(r"No module named '([^']+)'")


def _missing_import(app: AppConfig, lines: Sequence[str]) -> str | None:
    """The module the app imports that is not installed: named by Python, and not the app's own ``module``."""
    module = (app.resolution.last("module") or app.resolution.last("wsgi") or "").partition(":")[0]
    for text in lines:
        m = _NO_MODULE.search(text)
        if m and m.group(1) != "encodings" and m.group(1).split(".")[0] != module.split(".")[0]:
            return m.group(1)
    return None


def _no_app_message(app: AppConfig, line: str, lines: Sequence[str] = ()) -> str:
    module = app.resolution.last("module") or app.resolution.last("wsgi")
    missing = _missing_import(app, lines)
    if missing is not None:
        app_name = module or app.resolution.last("wsgi-file") or "the app"
        return (
            f"`{app_name}` imports `{missing}`, which is not installed where uWSGI looks (the virtualenv of "
            f"`home`, `pythonpath`) (uWSGI: {line.strip()})"
        )
    if module and _CALLABLE.search(line):
        name, _, callable_ = module.partition(":")
        callable_ = callable_ or app.resolution.last("callable") or "application"
        return f"`{name}` has no callable `{callable_}`, or importing `{name}` failed (uWSGI: {line.strip()})"
    return line.strip()


def _after_ready(
    target: BootTarget,
    vassal: Vassal,
    log: _AppLog,
    *,
    socket_dir: str,
    probe: str,
    expect_status: int | None,
    timeout: float,
) -> list[Finding]:
    app = target.app
    findings: list[Finding] = []
    lines = [*vassal.output_lines(), *log.lines()]
    no_app = [x for x in lines if _NO_APP.search(x) or _CALLABLE.search(x)]
    if no_app:
        path, line = _blame(app, no_app)
        message = _no_app_message(app, no_app[0], lines)
        findings.append(finding("B002", path, line, message, vassal.error_lines()))
    routed = _routed(vassal, socket_dir)
    if routed is None:
        return findings
    at = (app.path, section_line(app))
    # the deployed name has the run's suffix, so the socket is matched by its line, not its value
    spec_line = next((o for o in app.resolution.options if o.line == routed.line and o.key in SOCKET_KEYS), None)
    if spec_line is not None:
        at = (where(app, spec_line.file), spec_line.line)
    try:
        # nginx's uwsgi_pass speaks the uwsgi protocol whatever the socket was declared as
        with direct_session(routed.connect_address(), "uwsgi", f"http://{vassal.host}/", timeout) as session:
            response = session.get(probe, allow_redirects=False)
    except (requests.RequestException, ValueError) as exc:
        message = f"GET {probe} over the uwsgi protocol (as nginx sends it) to {routed.address}: no response: {exc}"
        return [*findings, finding("B003", *at, message, vassal.error_lines())]
    bad = response.status_code != expect_status if expect_status is not None else response.status_code >= 500
    if bad:
        want = f"expected {expect_status}" if expect_status is not None else "expected no 5xx"
        message = f"GET {probe} -> {response.status_code} {response.reason} ({want})"
        findings.append(finding("B003", *at, message, vassal.error_lines()))
    return findings


def boot_all(
    targets: Sequence[BootTarget],
    *,
    uwsgi: Path,
    socket_dir: str = DEFAULT_SOCKET_DIR,
    probe: str = "/",
    expect_status: int | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    emperor_args: Sequence[str] = (),
    as_user: User | None = None,
) -> list[Finding]:
    """Findings B001-B004 for every target, booted in parallel under one emperor (X002 if the check itself
    broke: the caller exits 2 then). ``emperor_args`` go to that emperor as production passes them; when they
    drop privileges to ``as_user``, the run dir is handed to that user (and lives in a root of its own)."""
    findings: list[Finding] = []
    owner = (as_user.uid, as_user.gid) if as_user is not None else None
    try:
        with contextlib.ExitStack() as stack:
            runs_root = None
            if as_user is not None:
                runs_root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="emperor-check-")))
                # ours (RunDir insists), but searchable: the dropped emperor enters the run dir handed to it
                os.chmod(runs_root, 0o711)
            emperor = stack.enter_context(
                Emperor(
                    uwsgi,
                    timeout=timeout,
                    keep_app_logto=True,
                    extra_args=emperor_args,
                    run_owner=owner,
                    runs_root=runs_root,
                )
            )
            deployed: list[tuple[BootTarget, Vassal, _AppLog]] = []
            for target in targets:
                log = _AppLog(target.app, emperor.vassal_dir.resolve(), as_user.uid if as_user else None)
                try:
                    # under the name `up` and deploy_app give the dir (my_shop -> my-shop): one DNS label
                    name = routable_name(target.app.name)
                    deployed.append((target, emperor.deploy(target.ini, name=name, wait=False), log))
                except EmperorError as exc:  # refused before linking: socket path too long, name unroutable, in use
                    app = target.app
                    findings.append(finding("X001", app.path, section_line(app), str(exc).splitlines()[0]))
            for target, vassal, log in deployed:
                findings.extend(_wait_and_probe(target, vassal, log, socket_dir, probe, expect_status, timeout))
    except Exception as exc:  # a finding with exit 2, never a traceback
        findings.append(finding("X002", targets[0].app.path if targets else "", 1, f"{type(exc).__name__}: {exc}"))
    return findings


class _AppLog:
    """The app's own ``logto`` file (kept in force, as in production): what the vassal appends to it. Read only
    if it is a regular file of ours, its directory's owner's or the vassals' user's (``owner``): a vassal that
    dropped privileges may have swapped it for a symlink to a file it cannot read."""

    def __init__(self, app: AppConfig, vassal_dir: Path, owner: int | None = None) -> None:
        target = app.resolution.last("logto")
        self.path = vassal_dir / target if target and ("/" in target or ":" not in target) else None
        self.owner = owner
        self.offset = self._size()

    def _size(self) -> int:
        try:
            return self.path.stat().st_size if self.path else 0
        except OSError:
            return 0

    def lines(self) -> list[str]:
        if self.path is None:
            return []
        try:
            with open_owned(self.path, self.owner) as f:
                f.seek(self.offset)
                return f.read().decode("utf-8", "replace").splitlines()[-200:]
        except UnsafePath as exc:
            return [f"(not read: {exc})"]
        except OSError:
            return []


def _wait_and_probe(
    target: BootTarget, vassal: Vassal, log: _AppLog, socket_dir: str, probe: str, expect_status: int | None,
    timeout: float,
) -> list[Finding]:
    app = target.app
    # No vassal.remove(): leaving the emperor stops every vassal at once (and removes their sockets), where a
    # remove() per vassal waits for each one's exit in turn (measured: 5.4 of 5.7 s for the 6 example apps).
    try:
        vassal.wait_ready(timeout)
    except VassalCursed as exc:
        lines = [*exc.lines, *log.lines()]
        path, line = _blame(app, lines)
        no_app = [text for text in lines if _CALLABLE.search(text)]  # under need-app: cursed, not served
        message = _no_app_message(app, no_app[0], lines) if no_app else str(exc).splitlines()[0]
        return [finding("B001", path, line, message, lines)]
    except VassalTimeout as exc:
        lines = [*exc.lines, *log.lines()]
        path, line = _blame(app, lines)
        return [finding("B004", path, line, f"{timeout:g}s: {str(exc).splitlines()[0]}", lines)]
    except VassalError as exc:  # accepting per the emperor, but its own probe could not connect
        lines = [*exc.lines, *log.lines()]
        path, line = _blame(app, lines)
        return [finding("B003", path, line, str(exc).splitlines()[0], lines)]
    return _after_ready(
        target, vassal, log, socket_dir=socket_dir, probe=probe, expect_status=expect_status, timeout=timeout
    )
