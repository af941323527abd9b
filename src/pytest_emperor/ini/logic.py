"""Config logic: which options an ``if-*`` or ``for`` block lets through, and what ``%(_)`` becomes in each.

An ``if-*`` or ``for`` option switches every later option, of any file, to its test until an
``end``/``endif``/``endfor`` (core/uwsgi.c ``uwsgi_opt_logic``, core/config.c ``add_exported_option_do``: the state
is global, so an ``if-*`` without ``endif`` makes the rest conditional); ``%(_)`` in those options is replaced by
the tested value (core/config.c ``uwsgi_logic_opt_*``). The reader (:mod:`.reader`) keeps the block open and asks
:func:`block_values` for each option inside it.
"""

from __future__ import annotations

from collections.abc import Sequence

from pytest_emperor.ini.options import IniOption
from pytest_emperor.ini.source import ConfigSource
from pytest_emperor.ini.values import strtoll

__all__ = ["END_LOGIC", "LOGIC", "block_values"]

# core/uwsgi.c: the options handled by uwsgi_opt_logic, and the keys that end a block (add_exported_option_do).
LOGIC = frozenset(
    {
        "for", "for-glob", "for-times", "for-readline", "if-opt", "if-not-opt", "if-env", "if-not-env", "ifenv",
        "if-reload", "if-not-reload", "if-hostname", "if-not-hostname", "if-hostname-match",
        "if-not-hostname-match", "if-exists", "if-not-exists", "ifexists", "if-plugin", "if-not-plugin",
        "ifplugin", "if-file", "if-not-file", "if-dir", "if-not-dir", "ifdir", "if-directory",
    }
)
END_LOGIC = frozenset({"end", "endfor", "endif", "end-if", "end-for"})

# A bound on `for-times`, so that a huge count cannot stall the reader.
_MAX_TIMES = 10000


def block_values(
    kind: str, arg: str, source: ConfigSource, options: Sequence[IniOption]
) -> tuple[list[str | None], str | None]:
    """For an option inside the open ``kind = arg`` block (``options``: those added so far): what ``%(_)``
    becomes in each copy of it the block adds (None: the value stays as it is; no copy: the option is dropped),
    and what could not be evaluated here, if anything."""
    if kind in ("if-env", "ifenv", "if-not-env", "if-opt", "if-not-opt"):
        name, eq, want = arg.partition("=")
        got = (
            source.getenv(name) if kind.endswith("env") else next((o.value for o in options if o.key == name), None)
        )
        matches = got is not None and (not eq or want == got)
        return ([got] if matches != kind.startswith("if-not") else []), None
    if kind in ("if-exists", "ifexists", "if-not-exists", "if-file", "if-not-file"):
        return ([arg] if source.test("file" if "file" in kind else "exists", arg) != ("not" in kind) else []), None
    if kind in ("if-dir", "ifdir", "if-directory", "if-not-dir"):
        return ([arg] if source.test("dir", arg) != ("not" in kind) else []), None
    if kind in ("if-hostname", "if-not-hostname"):
        return ([arg] if (source.hostname() == arg) != ("not" in kind) else []), None
    if kind == "if-not-reload":  # a check boots the vassal for the first time
        return [None], None
    if kind == "if-reload":
        return [], None
    if kind == "for":
        return [t for t in arg.split(" ") if t], None
    if kind == "for-times":
        return [str(n) for n in range(1, min(strtoll(arg), _MAX_TIMES) + 1)], None
    if kind == "for-glob":
        return list(source.glob(arg)), None
    if kind == "for-readline":
        try:
            return list(source.read(arg).splitlines()), None
        except OSError as exc:  # uWSGI logs the open() error and adds nothing (and reads a device for ever)
            return [], f"'for-readline = {arg}': {exc.strerror or exc}: no line added"
    # if-plugin, if-hostname-match: depend on the build
    return [arg], f"'{kind} = {arg}' is not evaluated here: assumed true"
