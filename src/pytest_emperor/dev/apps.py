"""Which apps ``emperor-dev up`` runs: command-line arguments, else a config file (project_config.py), else every
app subdirectory.

An APP is an app dir (holding ``app.uwsgi.ini``), an ini file, or ``NAME=PATH`` to deploy it under another
vassal name, like ``docker compose``'s service names or a Procfile's process names. ``PATH@REV`` deploys a
revision of the app's git repository (``shop-v1=.@v1.0``): its checkout, made once per commit (revisions/).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from pytest_emperor.convention import APP_INI
from pytest_emperor.engine.naming import app_inis, default_name, resolve_ini
from pytest_emperor.engine.privileges import User
from pytest_emperor.errors import ConfigError
from pytest_emperor.project_config import CONFIG_FILE, PYPROJECT_TABLE, Setting, find_profile
from pytest_emperor.revisions.cache import checkout, split_revision

# ``NAME=PATH``: NAME is what a vassal name may start as (no path separator), so ``./a=b`` stays a path.
_NAMED = re.compile(r"(?P<name>[^/=]+)=(?P<path>.+)")


@dataclass(frozen=True)
class AppSpec:
    """One app to deploy: its vassal name and its ini file (absolute)."""

    name: str
    ini: Path

    @property
    def app_dir(self) -> Path:
        """The directory holding the ini: the app's code."""
        return self.ini.parent


def split_app_arg(arg: str) -> tuple[str | None, str]:
    """``"beta=../service1"`` -> ``("beta", "../service1")``; a plain path -> ``(None, path)``."""
    match = _NAMED.fullmatch(arg)
    if match is None:
        return None, arg
    return match["name"], match["path"]


def resolve_app(
    arg: str, base: Path, note: Callable[[str], None] = lambda _: None, readable_by: User | None = None
) -> AppSpec:
    """Resolve one APP argument, relative paths against ``base`` (``PATH@REV``: in that revision's checkout,
    ``note`` told what takes time, given to ``readable_by``'s group: the user the emperor drops to); ConfigError
    says what is wrong."""
    name, path = split_app_arg(arg)
    path, rev = split_revision(str(base / path))
    if rev is not None:
        made = checkout(Path(path), rev, note=note, readable_by=readable_by)
        return AppSpec(name if name is not None else made.default_name, resolve_ini(made.path))
    ini = resolve_ini(Path(path))
    return AppSpec(name if name is not None else default_name(ini), ini)


def resolve_apps(
    args: Iterable[str], base: Path, note: Callable[[str], None] = lambda _: None, readable_by: User | None = None
) -> list[AppSpec]:
    """Resolve APP arguments (``note``, ``readable_by``: as ``resolve_app``'s); two apps under one name is an error
    (the second would replace the first)."""
    specs: list[AppSpec] = []
    seen: dict[str, AppSpec] = {}
    for arg in args:
        spec = resolve_app(arg, base, note, readable_by)
        if spec.name in seen:
            raise ConfigError(
                f"two apps would be named {spec.name!r} ({seen[spec.name].ini} and {spec.ini}); name one of them "
                f"with NAME=PATH, e.g. {spec.name}-2={arg}"
            )
        seen[spec.name] = spec
        specs.append(spec)
    return specs


def default_apps(
    directory: Path,
    configured: Setting | None = None,
    note: Callable[[str], None] = lambda _: None,
    readable_by: User | None = None,
) -> list[AppSpec]:
    """The apps ``up`` runs without arguments: ``configured`` ones (the resolved ``apps`` setting; default: the
    profile's, found from ``directory`` upwards), else the ones ``directory`` holds (itself when it is an app dir,
    else its app subdirectories: ``naming.app_inis``, as ``emperor-dev check`` reads it); ConfigError if none.
    ``note`` hears what a revision's checkout takes time for, ``readable_by`` is given it (``resolve_app``)."""
    if configured is None:
        configured = find_profile(directory).values.get("apps")
    if configured is not None and configured.value is not None:
        return resolve_apps(configured.value, configured.base or directory, note, readable_by)
    found = [str(ini.parent.relative_to(directory)) for ini in app_inis(directory)]
    if not found:
        raise ConfigError(
            f"no apps to run: give APP arguments, list them as apps = [...] in {directory / CONFIG_FILE} (or "
            f"[tool.{PYPROJECT_TABLE}] in pyproject.toml), or run in an app dir or above app dirs (holding {APP_INI})"
        )
    return resolve_apps(found, directory)
