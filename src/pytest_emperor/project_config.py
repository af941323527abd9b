"""The one reader of a project's emperor-dev settings (``emperor-dev.toml``, or ``[tool.emperor-dev]`` in
``pyproject.toml``, with its ``check`` subtable) and the one model of the settings every door shares.

``emperor-dev.toml`` holds the same keys as ``[tool.emperor-dev]`` at its top level (its check settings under
``[check]``). Every table is validated when read: an unknown key or a value of the wrong type is a
:class:`ConfigFileError` naming the file, the key and what it takes. Within one directory ``emperor-dev.toml``
wins key by key over ``pyproject.toml``; a door uses the nearest directory, from where it runs upwards, that holds
either table (:func:`find_profile`).

:func:`resolve` is the one precedence (docs/settings.md): what the caller was given (the command line, then, for
pytest's own options, pytest's ini) wins over the profile, which wins over the defaults; each resolved value
remembers where it came from, for ``emperor-dev config``.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from pytest_emperor.convention import DEFAULT_DOMAIN, DEFAULT_SOCKET_DIR, DEFAULT_TIMEOUT
from pytest_emperor.errors import ConfigFileError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python < 3.11 only
    import tomli as tomllib

__all__ = [
    "CHECK_KEYS",
    "CONFIG_FILE",
    "DEFAULTS",
    "KEYS",
    "PYPROJECT_TABLE",
    "CheckConfig",
    "Profile",
    "Setting",
    "Settings",
    "emperor_args_of",
    "find_profile",
    "load_profile",
    "resolve",
]

CONFIG_FILE = "emperor-dev.toml"
PYPROJECT_TABLE = "emperor-dev"  # [tool.emperor-dev] in pyproject.toml


def _is_str(value: object) -> bool:
    return isinstance(value, str)


def _is_strs(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def _is_str_or_strs(value: object) -> bool:
    return _is_str(value) or _is_strs(value)


def _is_seconds(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


_EMPEROR_ARGS = 'production\'s emperor flags such as "--uid www-data --gid www-data"'

#: The settings every door shares (pytest, ``up``, ``check``, ``config``): what each takes, and how an error says it.
_TYPES: dict[str, tuple[Callable[[object], bool], str]] = {
    "apps": (_is_strs, 'a list of app dirs or ini files such as ["service1", "beta=service1"]'),
    "domain": (_is_str, 'a domain such as "api.localhost" (apps answer at <name>.<domain>)'),
    "socket-dir": (_is_str, 'a directory such as "/tmp" (where the inis bind <name>.api.sock)'),
    "nginx": (_is_str, 'an nginx binary such as "/usr/sbin/nginx"'),
    "nginx-site": (_is_str, 'a path such as "deploy/nginx/api.conf"'),
    "uwsgi": (_is_str, 'a uwsgi binary such as ".venv/bin/uwsgi"'),
    "timeout": (_is_seconds, "seconds, such as 30"),
    "emperor-args": (_is_str_or_strs, _EMPEROR_ARGS),
    "nginx-user": (_is_str, 'a user name such as "www-data"'),
    "setup": (
        lambda v: _is_str(v) and bool(str(v).strip()),
        'a shell command such as "python3 -m venv venv && venv/bin/pip install -r requirements.txt"',
    ),
    "setup-inputs": (_is_strs, 'a list of globs such as ["requirements*.txt", "pyproject.toml"]'),
}
#: The shared settings, in the order ``emperor-dev config`` prints them.
KEYS = tuple(_TYPES)
#: What a setting is when nothing sets it (None: the door decides, see docs/settings.md).
DEFAULTS: dict[str, Any] = {
    "apps": None,
    "domain": DEFAULT_DOMAIN,
    "socket-dir": DEFAULT_SOCKET_DIR,
    "nginx": None,
    "nginx-site": None,
    "uwsgi": None,
    "timeout": DEFAULT_TIMEOUT,
    "emperor-args": (),
    "nginx-user": None,
    # how a revision's checkout is prepared (revisions/), and the files that command reads (its cache key)
    "setup": None,
    "setup-inputs": None,
}
_TOP_KEYS = frozenset({*KEYS, "check"})

#: What each of ``emperor-dev check``'s own keys takes, and how an error says it.
_CHECK_TYPES: dict[str, tuple[Callable[[object], bool], str]] = {
    "select": (_is_str_or_strs, 'a list of rule codes such as ["E", "W303"]'),
    "ignore": (_is_str_or_strs, 'a list of rule codes such as ["I202"]'),
    "fail-on": (_is_str, 'one of "error", "warning", "info"'),
    "format": (_is_str, 'an output format such as "text" or "github"'),
    "socket-dir": _TYPES["socket-dir"],
    "static": (lambda v: isinstance(v, bool), "true or false"),
    "probe": (_is_str, 'a path such as "/health"'),
    "expect-status": (lambda v: isinstance(v, int) and not isinstance(v, bool), "an HTTP status such as 200"),
    "timeout": _TYPES["timeout"],
    "paths": (_is_strs, 'a list of paths such as ["services/"]'),
    "emperor-args": _TYPES["emperor-args"],
    "nginx-user": _TYPES["nginx-user"],
    "convention": (lambda v: isinstance(v, bool), "true (every checked file is a vassal of the convention) or false"),
    "exec": (lambda v: isinstance(v, bool), "true (run the configs' @(exec://...) commands: trusted repos only)"),
    "check-timeout": (_is_seconds, "seconds"),
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
#: Keys of the check table that are shared settings now: still read there (deprecated, for one release).
MOVED_CHECK_KEYS = ("socket-dir", "timeout", "emperor-args", "nginx-user")


@dataclass(frozen=True)
class Setting:
    """One setting's value, where it came from (as ``emperor-dev config`` says it) and the directory its relative
    paths are taken from (the file's, for a profile; where the command runs, for the command line)."""

    value: Any
    source: str
    base: Path | None = None


@dataclass(frozen=True)
class CheckConfig:
    """``emperor-dev check``'s own defaults (option name -> value) and the file they came from (None: defaults)."""

    values: dict[str, Any] = field(default_factory=dict)
    source: Path | None = None


@dataclass(frozen=True)
class Profile:
    """A project's emperor-dev settings as its files state them: each shared key set, the check table, and what
    they say in deprecated form (one line each, naming the key to use instead)."""

    directory: Path
    values: dict[str, Setting] = field(default_factory=dict)
    check: CheckConfig = field(default_factory=CheckConfig)
    deprecated: tuple[str, ...] = ()
    files: tuple[Path, ...] = ()  # the files it was read from

    def check_layer(self) -> dict[str, Setting]:
        """The check table's copies of shared keys (deprecated there), as a layer above the profile for
        ``emperor-dev check``."""
        source = self.check.source
        return {
            key: _setting(key, self.check.values[key], f"{source} [{_check_table(source)}] (deprecated there)", source)
            for key in MOVED_CHECK_KEYS
            if source is not None and key in self.check.values
        }


@dataclass(frozen=True)
class Settings:
    """The shared settings of one run of a door, each resolved with its source (:func:`resolve`)."""

    values: Mapping[str, Setting]

    def __getitem__(self, key: str) -> Any:
        return self.values[key].value

    def source(self, key: str) -> str:
        """Where ``key``'s value came from: a file and table, an option, or "default"."""
        return self.values[key].source

    def base(self, key: str) -> Path | None:
        """The directory ``key``'s relative paths are relative to."""
        return self.values[key].base

    def to_json(self) -> dict[str, dict[str, Any]]:
        """Every setting as ``{"value": ..., "source": ...}`` (paths as strings, argument lists as lists)."""

        def plain(value: Any) -> Any:
            if isinstance(value, Path):
                return str(value)
            if isinstance(value, (tuple, list)):
                return [plain(v) for v in value]
            return value

        return {key: {"value": plain(s.value), "source": s.source} for key, s in self.values.items()}

    def lines(self, found: Mapping[str, str] = MappingProxyType({})) -> list[str]:
        """``key = value    # source``, one line a setting, the value as TOML would write it; ``found`` adds
        what an unset key's default finds (``nginx``: the binary on $PATH) to its line."""
        shown = {key: _toml_value(setting["value"]) for key, setting in self.to_json().items()}
        width = max(len(f"{key} = {text}") for key, text in shown.items())
        return [
            f"{f'{key} = {text}':<{width}}  # {self.source(key)}" + (f", finds {found[key]}" if key in found else "")
            for key, text in shown.items()
        ]


def _toml_value(value: Any) -> str:
    if value is None:
        return "(unset)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return f"{value:g}"
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def emperor_args_of(value: str | Sequence[str]) -> tuple[str, ...]:
    """Emperor flags as given (one string, split as a shell would, or a list) as a tuple of arguments."""
    return tuple(shlex.split(value) if isinstance(value, str) else value)


def _setting(key: str, value: Any, source: str, file: Path | None) -> Setting:
    """A profile value of ``key`` (already validated) in the form the doors use: paths the file names are
    taken from the file's directory, a binary given by name stays a name (found on $PATH)."""
    base = file.parent if file is not None else None
    if key == "nginx-site" and base is not None:
        value = (base / value).resolve()
    elif key in ("nginx", "uwsgi") and "/" in value and base is not None:
        value = str((base / value).resolve())
    elif key == "timeout":
        value = float(value)
    elif key == "emperor-args":
        value = emperor_args_of(value)
    elif key == "apps":
        value = list(value)
    return Setting(value, source, base)


def load_profile(directory: Path) -> Profile:
    """The settings the files of ``directory`` itself state (``emperor-dev.toml`` first, key by key)."""
    values: dict[str, Setting] = {}
    check = CheckConfig()
    deprecated: list[str] = []
    files: list[Path] = []
    for source, table in _tables(directory):
        files.append(source)
        top = f"[tool.{PYPROJECT_TABLE}]" if source.name == "pyproject.toml" else ""
        for key in KEYS:
            if key not in values and key in table:
                values[key] = _setting(key, table[key], f"{source} {top}".rstrip(), source)
        if check.source is None and "check" in table:
            check = CheckConfig(dict(table["check"]), source)
            deprecated += [
                f'{source}: "{key}" in [{_check_table(source)}] is deprecated: set {key} '
                f"{'in ' + top if top else 'at the top of the file'} instead (read by pytest, up and check alike)"
                for key in MOVED_CHECK_KEYS
                if key in table["check"]
            ]
    return Profile(directory, values, check, tuple(deprecated), tuple(files))


def find_profile(start: Path) -> Profile:
    """The profile of the nearest directory, from ``start`` upwards, whose files hold emperor-dev settings (like
    ruff and black find theirs); an empty profile of ``start`` when none does."""
    start = start.resolve()
    for directory in (start, *start.parents):
        if any(True for _ in _tables(directory)):
            return load_profile(directory)
    return Profile(start)


def resolve(profile: Profile, *given: Mapping[str, Setting]) -> Settings:
    """Each shared setting from the first of ``given`` that has it (the command line first), else the profile,
    else its default."""
    values: dict[str, Setting] = {}
    for key in KEYS:
        layer = next((layer for layer in given if key in layer), profile.values)
        values[key] = layer.get(key) or Setting(DEFAULTS[key], "default")
    return Settings(values)


def _check_table(source: Path | None) -> str:
    return f"tool.{PYPROJECT_TABLE}.check" if source is not None and source.name == "pyproject.toml" else "check"


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
    for key in KEYS:
        if key in table:
            accepts, takes = _TYPES[key]
            if not accepts(table[key]):
                place = f'[{name}] "{key}"' if name else f'"{key}"'
                raise ConfigFileError(f"{source}: {place} must be {takes}, not {table[key]!r}")
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
