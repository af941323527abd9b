"""Which apps a directory holds, and the one rule for a vassal's name: from the app dir's name by default, one
DNS label the routing captures. The engine, ``emperor-dev up`` and ``emperor-dev check`` all read them here."""

from __future__ import annotations

import os
import re
from pathlib import Path

from pytest_emperor.convention import APP_INI
from pytest_emperor.errors import ConfigError
from pytest_emperor.routing.routes import RouteMap

# A vassal name becomes the first DNS label of its host (<name>.api.<domain>) and nginx matches it with
# ``(?<app>[^.]+)`` against the lower-cased Host, so it must be one lower-case label (RFC 1035 section 2.3.1,
# with leading digits allowed as RFC 1123 does), at most 63 bytes.
_ROUTABLE_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


def routable_name(raw: str) -> str:
    """Turn a directory name into a vassal name that can be routed (``My_App`` -> ``my-app``)."""
    return re.sub(r"[^a-z0-9-]+", "-", raw.lower()).strip("-") or "app"


def default_name(ini: Path) -> str:
    """The name the app of ``ini`` deploys under unless given one: its dir's, made routable."""
    return routable_name(ini.parent.name)


def app_inis(directory: Path) -> list[Path]:
    """The apps ``directory`` holds: itself when it is an app dir (it holds ``app.uwsgi.ini``), else its app
    subdirectories, sorted (hidden ones skipped); [] if none."""
    if (directory / APP_INI).is_file():
        return [directory / APP_INI]
    return sorted(
        child / APP_INI
        for child in directory.iterdir()
        if not child.name.startswith(".") and (child / APP_INI).is_file()
    )


def resolve_ini(path: Path) -> Path:
    """The ini file for an app dir or ini path; clear errors for a missing app or a dangling symlink."""
    if path.is_dir():
        ini = path / APP_INI
        if not ini.is_symlink() and not ini.exists():
            raise ConfigError(f"{path} has no {APP_INI}: an app dir keeps its uWSGI config in {ini}")
        path = ini
    if path.is_symlink() and not path.exists():
        raise ConfigError(f"{path} is a dangling symlink (-> {os.readlink(path)}); point it at an existing file")
    if not path.exists():
        raise ConfigError(f"{path} does not exist: give an app dir holding {APP_INI}, or an .ini file")
    if path.suffix != ".ini":
        raise ConfigError(f"{path}: only .ini vassal configs are supported (the emperor picks the parser by suffix)")
    return path.absolute()


def vassal_name(ini: Path, name: str | None, suffix: str, route_map: RouteMap) -> str:
    """The name ``ini`` deploys under: ``name`` (default: its dir's, made routable) plus ``suffix``; ConfigError
    when ``route_map`` could not route it."""
    __tracebackhide__ = True
    full = (name if name is not None else default_name(ini)) + suffix
    host = route_map.host_for(full)
    if not _ROUTABLE_NAME.fullmatch(full) or route_map.match(host) != full:
        raise ConfigError(
            f"vassal name {full!r} cannot be routed: in {host!r} it must be one lower-case DNS label "
            f"(a-z, 0-9, '-', at most 63 characters, no dots) that {route_map.nginx_server_name} captures "
            "as app; choose another name"
        )
    return full
