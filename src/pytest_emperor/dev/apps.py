"""Which apps ``emperor-dev up`` runs: command-line arguments, else a config file, else every app subdirectory.

An APP is an app dir (holding ``app.uwsgi.ini``), an ini file, or ``NAME=PATH`` to deploy it under another
vassal name, like ``docker compose``'s service names or a Procfile's process names.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_emperor.errors import ConfigError
from pytest_emperor.vassal import APP_INI, resolve_ini, routable_name

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python < 3.11 only
    import tomli as tomllib

CONFIG_FILE = "emperor-dev.toml"
PYPROJECT_TABLE = "emperor-dev"  # [tool.emperor-dev] in pyproject.toml

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


def resolve_app(arg: str, base: Path) -> AppSpec:
    """Resolve one APP argument, relative paths against ``base``; ConfigError says what is wrong."""
    name, path = split_app_arg(arg)
    ini = resolve_ini(base / path)
    return AppSpec(name if name is not None else routable_name(ini.parent.name), ini)


def resolve_apps(args: Iterable[str], base: Path) -> list[AppSpec]:
    """Resolve APP arguments; two apps under one name is an error (the second would replace the first)."""
    specs: list[AppSpec] = []
    seen: dict[str, AppSpec] = {}
    for arg in args:
        spec = resolve_app(arg, base)
        if spec.name in seen:
            raise ConfigError(
                f"two apps would be named {spec.name!r} ({seen[spec.name].ini} and {spec.ini}); name one of them "
                f"with NAME=PATH, e.g. {spec.name}-2={arg}"
            )
        seen[spec.name] = spec
        specs.append(spec)
    return specs


def apps_from_config(table: Mapping[str, Any], source: Path) -> list[str]:
    """The ``apps`` list of an ``emperor-dev.toml`` document or ``[tool.emperor-dev]`` table (validated)."""
    apps = table.get("apps")
    if not isinstance(apps, list) or not all(isinstance(app, str) for app in apps):
        raise ConfigError(f'{source}: "apps" must be a list of strings such as ["service1", "beta=service1"]')
    return list(apps)


def configured_apps(directory: Path) -> tuple[list[str], Path] | None:
    """The APP arguments configured in ``directory`` (``emperor-dev.toml`` first, then ``pyproject.toml``),
    with the file they came from; None if neither configures any."""
    tables = _config_tables(directory)
    if not tables:
        return None
    config, table = tables[0]
    return apps_from_config(table, config), config


def configured_site(directory: Path) -> Path | None:
    """``nginx-site`` of ``emperor-dev.toml`` or ``[tool.emperor-dev]``: the production nginx site file to route
    by, relative to the file that names it; None if unset."""
    for config, table in _config_tables(directory):
        site = table.get("nginx-site")
        if site is None:
            continue
        if not isinstance(site, str):
            raise ConfigError(f'{config}: "nginx-site" must be a path such as "deploy/nginx/api.conf"')
        return (config.parent / site).resolve()
    return None


def _config_tables(directory: Path) -> list[tuple[Path, dict[str, Any]]]:
    """The emperor-dev tables of ``directory``: ``emperor-dev.toml``'s document, ``[tool.emperor-dev]``."""
    found = []
    config = directory / CONFIG_FILE
    if config.is_file():
        found.append((config, _load_toml(config)))
    pyproject = directory / "pyproject.toml"
    if pyproject.is_file():
        table = _load_toml(pyproject).get("tool", {}).get(PYPROJECT_TABLE)
        if isinstance(table, dict):
            found.append((pyproject, table))
    return found


def _load_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from exc


def discover_apps(directory: Path) -> list[str]:
    """Every subdirectory of ``directory`` holding an ``app.uwsgi.ini``, sorted (hidden ones skipped)."""
    return sorted(
        child.name for child in directory.iterdir()
        if not child.name.startswith(".") and (child / APP_INI).is_file()
    )  # fmt: skip


def default_apps(directory: Path) -> list[AppSpec]:
    """The apps ``up`` runs without arguments: configured ones, else discovered ones; ConfigError if none."""
    configured = configured_apps(directory)
    if configured is not None:
        args, source = configured
        return resolve_apps(args, source.parent)
    found = discover_apps(directory)
    if not found:
        raise ConfigError(
            f"no apps to run: give APP arguments, list them as apps = [...] in {directory / CONFIG_FILE} (or "
            f"[tool.{PYPROJECT_TABLE}] in pyproject.toml), or run where subdirectories hold an {APP_INI}"
        )
    return resolve_apps(found, directory)
