"""The path rules: ``chdir``, ``wsgi-file``, ``module`` and the virtualenv, resolved the way uWSGI resolves
them for the deployed symlink (the values come from :class:`~pytest_emperor.ini.Resolution`) and looked up
on this machine's file system."""

from __future__ import annotations

import ast
import grp
import os
import pwd
import re
from dataclasses import dataclass
from pathlib import Path

from pytest_emperor.check.rules import AppConfig, Finding, finding, undetermined, where

__all__ = ["Production", "check_paths", "resolved_paths", "venv_python_version"]


@dataclass(frozen=True)
class Production:
    """What the check knows of the production host. ``here``: this machine stands for it (a vassal of the
    convention, deployed from this repo as `emperor-dev up` runs it); else only paths inside ``repo`` and the
    stated ``paths``/``users`` are judged, and the rest is info naming what is missing here."""

    here: bool = True
    repo: Path = Path("/")
    paths: tuple[str, ...] = ()
    users: tuple[str, ...] | None = None  # None: not stated

    def judged(self, path: Path) -> bool:
        """Whether a missing ``path`` is a finding: it is in the repo, or production's paths are stated."""
        if self.here:
            return True
        inside = os.path.commonpath([str(self.repo), os.path.abspath(path)]) == str(self.repo)
        return inside or bool(self.paths)

    def exists_there(self, path: Path) -> bool:
        """``path`` lies under a path production is stated to have."""
        text = os.path.abspath(path)
        return any(text == p.rstrip("/") or text.startswith(p.rstrip("/") + "/") for p in self.paths)


_HOME_KEYS = ("home", "virtualenv", "venv", "pyhome")


def venv_python_version(home: Path) -> str | None:
    """``major.minor`` of the Python a virtualenv was made with: ``pyvenv.cfg``, else its ``lib/pythonX.Y``."""
    cfg = home / "pyvenv.cfg"
    if cfg.is_file():
        for line in cfg.read_text(errors="replace").splitlines():
            key, _, value = line.partition("=")
            if key.strip() in ("version", "version_info"):
                m = re.match(r"\s*(\d+\.\d+)", value)
                if m:
                    return m.group(1)
    libs = sorted(p.name for p in (home / "lib").glob("python3.*")) if (home / "lib").is_dir() else []
    return libs[-1][len("python") :] if libs else None


def _module_file(base: Path, module: str) -> Path | None:
    dotted = module.split(":", 1)[0].strip()
    if not dotted:
        return None
    rel = Path(*dotted.split("."))
    for candidate in (base / rel).with_suffix(".py"), base / rel / "__init__.py":
        if candidate.is_file():
            return candidate
    return None


def _defines(source: Path, name: str) -> bool | None:
    """Whether ``source`` binds ``name`` at module level; None when it cannot be told statically."""
    try:
        tree = ast.parse(source.read_bytes(), str(source))
    except (OSError, SyntaxError, ValueError):
        return None  # a syntax error is the boot check's to report, with Python's own message
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name == name:
            return True
        if isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(n, ast.Name) and n.id == name for t in targets for n in ast.walk(t)):
                return True
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                if alias.name == "*":
                    return None
                if (alias.asname or alias.name.split(".")[0]) == name:
                    return True
        if not isinstance(node, (ast.Expr, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Assign,
                                 ast.AnnAssign, ast.Import, ast.ImportFrom, ast.AugAssign)):
            return None  # an if/try/for/with at top level may bind it: not judged
    return False


def _app_names(source: Path) -> list[str]:
    """The module-level names of ``source`` that look like its WSGI app (``app = Flask(__name__)``, ``def
    wsgi_app(environ, start_response)``): bound by an assignment or a ``def``, with ``app`` in the name."""
    try:
        tree = ast.parse(source.read_bytes(), str(source))
    except (OSError, SyntaxError, ValueError):
        return []
    names = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            names.append(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.extend(t.id for t in targets if isinstance(t, ast.Name))
    return sorted({n for n in names if "app" in n.lower()}, key=lambda n: (n != "app", n))


def check_paths(
    app: AppConfig, *, cwd: Path, python_version: str, dropped: bool = False, production: Production | None = None
) -> list[Finding]:
    """Findings E501-E505, E310 and E311 for ``app`` deployed with working directory ``cwd`` (the vassal dir), by
    an emperor that ``dropped`` its privileges (``--emperor-args --uid``) or not; I315/I316 where only the
    ``production`` host can tell."""
    prod = production or Production()
    r = app.resolution
    findings: list[Finding] = []

    def at(key: str) -> tuple[str, int]:
        option = app.ini.option(key)
        return (where(app, option.file), option.line) if option else (app.path, 1)

    def missing(code: str, key: str, path: Path, message: str) -> Finding | None:
        """``code`` for a missing ``path``, I315 when only production can tell, None when it is there."""
        if prod.exists_there(path):
            return None
        if not prod.judged(path):
            return finding("I315", *at(key), f"`{key}`: `{path}` is not on this machine")
        return finding(code, *at(key), message)

    findings.extend(_logto_and_ids(app, cwd, dropped, prod))
    if not prod.here:
        # a config run from an unknown directory: its relative paths cannot be looked up here
        chdir_value = r.last("chdir")
        if chdir_value is None or not chdir_value.startswith("/"):
            keys = ("chdir", *_HOME_KEYS, "wsgi-file", "file")
            relative = [k for k in keys if (r.last(k) or "/").strip()[:1] not in ("/", "")]
            relative = [k for k in relative if not undetermined(r.last(k) or "")]
            if relative:
                findings.append(finding("I316", *at(relative[0]), ", ".join(f"`{k} = {r.last(k)}`" for k in relative)))
            if chdir_value is None or relative:
                return findings
    if any(undetermined(r.last(k) or "") for k in ("chdir", *_HOME_KEYS, "wsgi-file", "file", "module")):
        return findings  # I109/I110 say which value is unknown; nothing is looked up against a guess
    base = cwd
    chdir = r.last("chdir")
    if chdir:
        target = cwd / chdir  # an absolute chdir replaces cwd
        if target.is_dir():
            base = target
        else:
            # the app files cannot be looked up relative to a directory that is not there
            missed = missing("E501", "chdir", target, f"`{chdir}`")
            return [*findings, missed] if missed else findings
    home_key = next((k for k in _HOME_KEYS if r.last(k)), None)
    home = base / str(r.last(home_key)) if home_key else None
    if home_key and home is not None:
        if not home.is_dir():
            missed = missing("E504", home_key, home, f"`{home}`")
            findings.extend([missed] if missed else [])
            home = None
        else:
            made_with = venv_python_version(home)
            embedded = ".".join(python_version.split(".")[:2])
            if made_with and embedded and made_with != embedded:
                message = f"`{home}` is Python {made_with}, uwsgi embeds {embedded}"
                findings.append(finding("E505", *at(home_key), message))
    callable_ = r.last("callable") or "application"
    source: Path | None = None
    wsgi_file = r.last("wsgi-file") or r.last("file")
    if wsgi_file and not (base / wsgi_file).is_file():
        missed = missing("E502", "wsgi-file", base / wsgi_file, f"`{base / wsgi_file}`")
        findings.extend([missed] if missed else [])
    elif wsgi_file:
        source, key = base / wsgi_file, "wsgi-file"
    module = r.last("module") or r.last("wsgi")
    if module:
        # uWSGI's python plugin puts the cwd (chdir), then pythonpath entries, then the venv on sys.path
        search = [base, *(base / p for p in app.ini.all("pythonpath") if p)]
        if home is not None:
            search += list(home.glob("lib/python3*/site-packages"))
        found = next((f for f in (_module_file(d, module) for d in search) if f is not None), None)
        if found is None:
            looked = ", ".join(os.fspath(d) for d in search)
            findings.append(finding("E503", *at("module"), f"`{module}` (looked in {looked})"))
        elif source is None:
            source, key = found, "module"
            callable_ = module.partition(":")[2] or callable_
    if source is not None and _defines(source, callable_) is False:
        message = f"`{source.name}` defines no `{callable_}` at module level"
        named = _app_names(source)
        if named:  # the usual miss: a Flask app is `app`, uWSGI looks for `application`
            message += f"; it defines `{named[0]}`: `callable = {named[0]}`"
        findings.append(finding("E508", *at(key), message))
    return findings


def _known(kind: str, value: str) -> bool:
    if value.isdigit():  # uWSGI setuid()s to a number without looking it up
        return True
    try:
        (pwd.getpwnam if kind == "uid" else grp.getgrnam)(value)
    except KeyError:
        return False
    return True


def _logto_and_ids(app: AppConfig, cwd: Path, dropped: bool, prod: Production) -> list[Finding]:
    """E310 (``logto`` into a missing dir) and E311 (``uid``/``gid`` unknown here; not under an emperor that
    dropped its privileges: it ignores them, which W604 says)."""
    found: list[Finding] = []
    logto = app.ini.option("logto")
    target = app.resolution.last("logto")
    # `host:port` is a UDP address (core/logging.c); anything with a `/` or no `:` is a file
    if logto is not None and target and ("/" in target or ":" not in target):
        # the log is opened before `chdir` is applied, so a relative path is relative to the vassal dir
        directory = (cwd / target).parent
        if undetermined(target) or prod.exists_there(directory):
            pass
        elif not prod.judged(directory) or (not prod.here and not target.startswith("/")):
            found.append(finding("I315", where(app, logto.file), logto.line, f"`logto`: `{directory}`"))
        elif not directory.is_dir():
            found.append(finding("E310", where(app, logto.file), logto.line, f"`{directory}` for `logto = {target}`"))
    root = os.geteuid() == 0
    for kind in () if dropped else ("uid", "gid"):
        option = app.ini.option(kind)
        value = app.resolution.last(kind)
        if option is None or not value or _known(kind, value) or undetermined(value):
            continue
        if not prod.here and prod.users is None:
            found.append(finding("I315", where(app, option.file), option.line, f"`{kind} = {value}`"))
            continue
        if prod.users is not None and value in prod.users:
            continue
        # core/uwsgi.c: uid/gid are only applied when uWSGI starts as root
        effect = (
            "a root emperor curses the vassal; a non-root one ignores the option"
            f" (this check runs as {'root: the boot check shows the curse' if root else 'non-root'})"
        )
        found.append(finding("E311", where(app, option.file), option.line, f"`{kind} = {value}`: {effect}"))
    return found


def resolved_paths(app: AppConfig, cwd: Path) -> dict[str, Path]:
    """The existing files and dirs the vassal reads, by the option naming them (for the privilege rules)."""
    r = app.resolution
    out: dict[str, Path] = {}
    base = cwd / (r.last("chdir") or ".")
    if not base.is_dir():
        return out
    if r.last("chdir"):
        out["chdir"] = base
    home_key = next((k for k in _HOME_KEYS if r.last(k)), None)
    if home_key and (base / str(r.last(home_key))).is_dir():
        out[home_key] = base / str(r.last(home_key))
    wsgi_file = r.last("wsgi-file")
    if wsgi_file and (base / wsgi_file).is_file():
        out["wsgi-file"] = base / wsgi_file
    module = r.last("module")
    found = _module_file(base, module) if module else None
    if found is not None:
        out["module"] = found
    return out
