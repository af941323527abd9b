"""What reading an ini yields: its options (as written, then as resolved), its problems, and the one way to query them.

The reader (:mod:`.reader`) yields an :class:`~.reader.IniFile` of :class:`IniOption`, the options as uWSGI adds
them, before its ``$``/``@``/``%`` passes; the passes (:mod:`.passes`) yield a :class:`Resolution` of
:class:`ResolvedOption`. Both are queried through :class:`OptionQueries`, with the same names and the same
meaning, so that a caller asking "which value does uWSGI apply, and on which line" asks it one way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = [
    "IMMEDIATE_OPTIONS",
    "SOCKET_OPTIONS",
    "IniOption",
    "IniProblem",
    "OptionQueries",
    "Resolution",
    "ResolvedOption",
]

#: Options that bind a vassal's main socket, with the protocol spoken on it (core/uwsgi.c options table). Not
#: ``s``: short options exist on the command line only (docs/uwsgi-behaviour.md, "The engine").
SOCKET_OPTIONS = {"socket": "uwsgi", "uwsgi-socket": "uwsgi", "http-socket": "http"}

# Options uWSGI 2.0 declares with UWSGI_OPT_IMMEDIATE (core/uwsgi.c uwsgi_base_options and the python plugin):
# they run while the file is parsed, so the $/@/% passes never touch their values.
IMMEDIATE_OPTIONS = frozenset(
    {
        "ini", "yaml", "yml", "json", "js", "xml", "xmlconfig", "config", "fallback-config", "include",
        "strict", "set", "set-placeholder", "set-ph", "declare-option", "declare-option2",
        "for", "for-glob", "for-times", "for-readline", "endfor", "end-for", "end",
        "if-opt", "if-not-opt", "if-env", "if-not-env", "ifenv", "if-reload", "if-not-reload",
        "if-exists", "if-not-exists", "ifexists", "if-plugin", "if-not-plugin", "ifplugin",
        "if-file", "if-not-file", "if-dir", "if-not-dir", "ifdir", "if-directory",
        "if-hostname", "if-not-hostname", "endif", "end-if", "else",
        "blacklist", "end-blacklist", "whitelist", "end-whitelist",
        "help", "usage", "print-sym", "print-symbol", "signal", "flock", "flock-wait", "flock2",
        "flock-wait2", "immediate-uid", "immediate-gid", "command-mode", "pcre-jit", "spooler-processes",
        "stop", "reload", "pause", "suspend", "resume", "connect-and-read", "extract", "umask",
        "plugin", "plugins", "need-plugin", "need-plugins", "plugins-dir", "plugin-dir",
        "plugins-list", "plugin-list", "autoload", "dlopen",
    }
)

# Problem codes emitted by the reader (the checker maps them to rule codes).
MAGIC_UNKNOWN = "magic-unknown"
MAGIC_NEWLINE = "magic-newline"
NO_SECTION = "no-section"
EMPTY_KEY = "empty-key"
NOT_FOLLOWED = "not-followed"
EXPANSION_LOOP = "expansion-loop"
OPEN_LOGIC = "open-logic"  # an if-*/for block still open at the end: every later option was conditional
FATAL = "fatal"  # uWSGI exits while reading the config: nothing after this point is read
MISSING_FILE = "missing-file"  # FATAL because a file `include`/`ini`/`inherit` names is not there (or unreadable)


@dataclass(frozen=True)
class IniOption:
    """One option as uWSGI adds it: value after magic substitution (and ``%(_)`` of a logic block), line in
    ``file`` (``""``: the top-level file; else the included file's real path). ``late`` options come from an
    ``inherit``: uWSGI appends them after the ``$``/``@``/``%`` passes, so they stay unexpanded."""

    key: str
    value: str
    line: int
    file: str = ""
    late: bool = False


@dataclass(frozen=True)
class ResolvedOption:
    """An option after the ``$``/``@``/``%`` passes (``raw``: its value before them); ``synthetic`` for ones
    created by ``set``/``set-ph``."""

    key: str
    value: str
    line: int
    raw: str
    immediate: bool
    synthetic: bool = False
    file: str = ""


@dataclass(frozen=True)
class IniProblem:
    """Something in the file that uWSGI reads differently from how it looks (``line`` is 1-based)."""

    line: int
    code: str
    message: str
    file: str = ""


Option = TypeVar("Option", IniOption, ResolvedOption)


class OptionQueries(Generic[Option]):
    """The queries on a config's options, the same before the passes (:class:`~.reader.IniFile`) and after them
    (:class:`Resolution`). uWSGI applies a scalar option at every occurrence in order, so the *last* one is the
    value it runs with; ``%(key)`` and ``uwsgi --get key`` see the *first*; a repeatable option is *all* of them."""

    options: Sequence[Option]

    def first(self, key: str) -> str | None:
        """What ``%(key)`` and ``uwsgi --get key`` see: the first occurrence's value."""
        return next((o.value for o in self.options if o.key == key), None)

    def last(self, key: str) -> str | None:
        """What a scalar option ends up as: the last occurrence's value."""
        option = self.option(key)
        return option.value if option is not None else None

    def option(self, key: str) -> Option | None:
        """The occurrence of ``key`` uWSGI applies (the last one), with its file and line."""
        return next((o for o in reversed(self.options) if o.key == key), None)

    def all(self, key: str) -> list[str]:
        """Every value of a repeatable option, in order."""
        return [o.value for o in self.options if o.key == key]

    def lines(self, key: str) -> list[int]:
        """The line of every occurrence of ``key``, in order."""
        return [o.line for o in self.options if o.key == key]


@dataclass(frozen=True)
class Resolution(OptionQueries[ResolvedOption]):
    """All options after uWSGI's three passes, in uWSGI's order, and what went wrong resolving them."""

    options: tuple[ResolvedOption, ...]
    problems: tuple[IniProblem, ...]
