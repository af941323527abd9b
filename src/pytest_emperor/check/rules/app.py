"""What the rules read about one app (:class:`AppConfig`, its :class:`Kind`), and the questions every rule
asks of it."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import Enum
from functools import cached_property

from pytest_emperor.convention import DEFAULT_SOCKET_DIR
from pytest_emperor.engine.deploy_plan import SocketSpec, bound_sockets
from pytest_emperor.ini import SOCKET_OPTIONS, IniFile, Resolution
from pytest_emperor.ini.values import BLANKS, is_true, lines

__all__ = [
    "INLINE_COMMENT",
    "SOCKET_KEYS",
    "AppConfig",
    "Kind",
    "flag_on",
    "section_line",
    "serves",
    "undetermined",
    "unread_includes",
    "where",
]


class Kind(str, Enum):
    """What a config file is, which decides the rule set it gets (docs/check.md, "Which rules apply")."""

    CONVENTION = "convention vassal"  # app.uwsgi.ini, or declared: every rule
    UWSGI = "uWSGI config"  # any other: only the rules true of every uWSGI config
    EMPEROR = "emperor config"  # `emperor =`: not a vassal
    FRAGMENT = "vassals-include fragment"  # read into every vassal by an emperor: not a vassal on its own

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class AppConfig:
    """Everything the pure rules need about one app's ini file, gathered by the caller."""

    path: str
    name: str
    ini: IniFile
    resolution: Resolution
    raw_text: str
    known_options: frozenset[str] | None = None  # from the binary; None skips the unknown-option rules
    python_embedded: bool = False
    socket_dir: str = DEFAULT_SOCKET_DIR
    world_writable_dirs: frozenset[str] = field(default_factory=frozenset)
    kind: Kind = Kind.CONVENTION
    features: frozenset[str] = field(default_factory=frozenset)  # production's stated build features/plugins

    @cached_property
    def sockets(self) -> tuple[SocketSpec, ...]:
        """Every socket the app binds, as the engine's deploy plan predicts them (``bound_sockets``); a relative
        path stays relative to the vassal dir, which production's emperor decides."""
        return tuple(bound_sockets(self.resolution, ""))


SOCKET_KEYS = tuple(SOCKET_OPTIONS)


INLINE_COMMENT = re.compile(r"[ \t][#;]")


def where(app: AppConfig, file: str) -> str:
    """The path a finding about ``file`` names: the checked file itself, or the included file's path."""
    return file or app.path


def section_line(app: AppConfig) -> int:
    """Where file-level findings point: the `[uwsgi]` header (a suppression comment goes above it)."""
    for number, line in enumerate(lines(app.raw_text), 1):
        if line.strip(BLANKS) == f"[{app.ini.section}]":
            return number
    return 1


def flag_on(app: AppConfig, key: str) -> bool:
    value = app.resolution.last(key)
    return value is not None and is_true(value)


def serves(app: AppConfig) -> bool:
    """The config binds something (a socket, an HTTP router) or runs an emperor: not a fragment of another one."""
    return any(o.key.endswith("socket") or o.key in ("http", "https", "emperor") for o in app.ini.options)


_DUNDER = re.compile(r"__[A-Z][A-Z0-9_]*__")


def undetermined(value: str) -> bool:
    """A value the check could not compute: an ``@(...)`` not evaluated, a ``$(VAR)`` not set here, or a template
    (``${VAR:-x}``, ``{{ name }}``, ``__NAME__``) that a tool other than uWSGI fills in before deploying."""
    return "@(" in value or "$(" in value or "${" in value or "{{" in value or bool(_DUNDER.search(value))


def unread_includes(app: AppConfig) -> bool:
    return any(p.code in ("not-followed", "fatal", "missing-file") for p in app.ini.problems)
