"""``[tool.emperor-dev.check]`` in ``pyproject.toml``: defaults for the command's options.

Looked up from the current directory upwards (the nearest ``pyproject.toml`` with the table wins), like ruff
and black do. Keys are the long option names: ``select``, ``ignore``, ``fail-on``, ``format``, ``socket-dir``,
``static``, ``probe``, ``expect-status``, ``timeout``, ``paths``, ``emperor-args`` (a string or a list),
``nginx-user``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from pytest_emperor.errors import ConfigFileError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.9/3.10 only
    import tomli as tomllib

__all__ = ["KEYS", "ConfigFileError", "load_config"]

KEYS = frozenset(
    {
        "select", "ignore", "fail-on", "format", "socket-dir", "static", "probe", "expect-status", "timeout",
        "paths", "emperor-args", "nginx-user",
    }
)


def load_config(start: Path) -> tuple[dict[str, Any], Path | None]:
    """The ``[tool.emperor-dev.check]`` table nearest to ``start`` and the file it came from."""
    for directory in (start.resolve(), *start.resolve().parents):
        candidate = directory / "pyproject.toml"
        if not candidate.is_file():
            continue
        try:
            data = tomllib.loads(candidate.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ConfigFileError(f"{candidate}: {exc}") from exc
        table = data.get("tool", {}).get("emperor-dev", {}).get("check")
        if table is None:
            continue
        if not isinstance(table, dict):
            raise ConfigFileError(f"{candidate}: [tool.emperor-dev.check] must be a table")
        unknown = sorted(set(table) - KEYS)
        if unknown:
            raise ConfigFileError(f"{candidate}: unknown key(s) in [tool.emperor-dev.check]: {', '.join(unknown)}")
        return table, candidate
    return {}, None
