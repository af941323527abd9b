"""The one reader of a project's emperor-dev settings: ``emperor-dev.toml``, or ``[tool.emperor-dev]`` in
``pyproject.toml``, with its ``check`` subtable.

``emperor-dev.toml`` holds the same keys as ``[tool.emperor-dev]`` at its top level (its check settings under
``[check]``). Every table is validated when read: an unknown key or a value of the wrong type is a
:class:`ConfigFileError` naming the file and the key. A table that leaves a key out leaves the decision to the
next source (``emperor-dev.toml`` first, then ``pyproject.toml``; for ``apps``: then discovery), so a pyproject
with only ``[tool.emperor-dev.check]`` configures no apps.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_emperor.errors import ConfigFileError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python < 3.11 only
    import tomli as tomllib

__all__ = ["CHECK_KEYS", "CONFIG_FILE", "PYPROJECT_TABLE", "CheckConfig", "ProjectConfig", "load_check", "load_project"]

CONFIG_FILE = "emperor-dev.toml"
PYPROJECT_TABLE = "emperor-dev"  # [tool.emperor-dev] in pyproject.toml

_TOP_KEYS = frozenset({"apps", "nginx-site", "check"})


def _is_str(value: object) -> bool:
    return isinstance(value, str)


def _is_strs(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def _is_str_or_strs(value: object) -> bool:
    return _is_str(value) or _is_strs(value)


#: What each of ``emperor-dev check``'s keys takes, and how an error says it.
_CHECK_TYPES: dict[str, tuple[Callable[[object], bool], str]] = {
    "select": (_is_str_or_strs, 'a list of rule codes such as ["E", "W303"]'),
    "ignore": (_is_str_or_strs, 'a list of rule codes such as ["I202"]'),
    "fail-on": (_is_str, 'one of "error", "warning", "info"'),
    "format": (_is_str, 'an output format such as "text" or "github"'),
    "socket-dir": (_is_str, 'a directory such as "/tmp"'),
    "static": (lambda v: isinstance(v, bool), "true or false"),
    "probe": (_is_str, 'a path such as "/health"'),
    "expect-status": (lambda v: isinstance(v, int) and not isinstance(v, bool), "an HTTP status such as 200"),
    "timeout": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0, "seconds, such as 30"),
    "paths": (_is_strs, 'a list of paths such as ["services/"]'),
    "emperor-args": (_is_str_or_strs, 'production\'s emperor flags such as "--uid www-data --gid www-data"'),
    "nginx-user": (_is_str, 'a user name such as "www-data"'),
    "convention": (lambda v: isinstance(v, bool), "true (every checked file is a vassal of the convention) or false"),
    "exec": (lambda v: isinstance(v, bool), "true (run the configs' @(exec://...) commands: trusted repos only)"),
    "check-timeout": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0, "seconds"),
    "production-env": (
        lambda v: isinstance(v, dict) and all(isinstance(x, str) for x in v.values()),
        'a table of production\'s environment such as {DJANGO_SETTINGS_MODULE = "site.settings"}',
    ),
    "production-paths": (_is_strs, 'a list of paths production has, such as ["/srv/app", "/var/log/app"]'),
    "production-users": (_is_strs, 'a list of users and groups production has, such as ["www-data"]'),
    "production-features": (_is_strs, 'production uwsgi\'s build features and plugins, such as ["pcre", "ssl"]'),
}
#: ``emperor-dev check``'s keys: its long option names.
CHECK_KEYS = frozenset(_CHECK_TYPES)


@dataclass(frozen=True)
class ProjectConfig:
    """What ``emperor-dev up`` reads from one directory: ``apps`` (None: not configured) and the file that set
    them, and the production nginx site file (absolute, None if unset)."""

    apps: list[str] | None = None
    apps_source: Path | None = None
    nginx_site: Path | None = None


@dataclass(frozen=True)
class CheckConfig:
    """``emperor-dev check``'s defaults (option name -> value) and the file they came from (None: defaults)."""

    values: dict[str, Any] = field(default_factory=dict)
    source: Path | None = None


def load_project(directory: Path) -> ProjectConfig:
    """The ``up`` settings of ``directory`` (not its parents: ``up`` runs the apps of the directory it is in)."""
    apps: list[str] | None = None
    apps_source: Path | None = None
    site: Path | None = None
    for source, table in _tables(directory):
        if apps is None and "apps" in table:
            apps, apps_source = _apps(table["apps"], source), source
        if site is None and "nginx-site" in table:
            value = table["nginx-site"]
            if not isinstance(value, str):
                raise ConfigFileError(f'{source}: "nginx-site" must be a path such as "deploy/nginx/api.conf"')
            site = (source.parent / value).resolve()
    return ProjectConfig(apps, apps_source, site)


def load_check(start: Path) -> CheckConfig:
    """The nearest check settings from ``start`` upwards (like ruff and black find theirs)."""
    for directory in (start.resolve(), *start.resolve().parents):
        for source, table in _tables(directory):
            if "check" in table:
                return CheckConfig(dict(table["check"]), source)
    return CheckConfig()


def _apps(value: object, source: Path) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(app, str) for app in value):
        raise ConfigFileError(f'{source}: "apps" must be a list of strings such as ["service1", "beta=service1"]')
    return list(value)


def _tables(directory: Path) -> Iterator[tuple[Path, dict[str, Any]]]:
    """The validated emperor-dev tables of ``directory``: ``emperor-dev.toml``'s document, then
    ``[tool.emperor-dev]``."""
    config = directory / CONFIG_FILE
    if config.is_file():
        yield config, _validated(_load_toml(config), config, "")
    pyproject = directory / "pyproject.toml"
    if pyproject.is_file():
        table = _load_toml(pyproject).get("tool", {}).get(PYPROJECT_TABLE)
        if table is not None:
            yield pyproject, _validated(table, pyproject, f"tool.{PYPROJECT_TABLE}")


def _validated(table: object, source: Path, name: str) -> dict[str, Any]:
    where = f"[{name}]" if name else "the file"
    if not isinstance(table, dict):
        raise ConfigFileError(f"{source}: {where} must be a table")
    unknown = sorted(set(table) - _TOP_KEYS)
    if unknown:
        raise ConfigFileError(
            f"{source}: unknown key(s) in {where}: {', '.join(unknown)} (known: {', '.join(sorted(_TOP_KEYS))})"
        )
    check = table.get("check")
    if check is not None:
        check_name = f"{name}.check" if name else "check"
        if not isinstance(check, dict):
            raise ConfigFileError(f"{source}: [{check_name}] must be a table")
        unknown = sorted(set(check) - CHECK_KEYS)
        if unknown:
            raise ConfigFileError(f"{source}: unknown key(s) in [{check_name}]: {', '.join(unknown)}")
        for key, value in check.items():
            accepts, takes = _CHECK_TYPES[key]
            if not accepts(value):
                raise ConfigFileError(f'{source}: [{check_name}] "{key}" must be {takes}, not {value!r}')
    return table


def _load_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigFileError(f"{path} is not valid TOML: {exc}") from exc
