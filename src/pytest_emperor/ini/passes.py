"""uWSGI's three passes over every option once all configs are read: ``$(ENV)``, ``@(file)`` / ``@(exec://cmd)``,
``%(name)``.

They run in that order (core/uwsgi.c ``main``): ``$(ENV)`` (``getenv``; unset -> left literally), ``@(file)`` /
``@(exec://cmd)`` (``uwsgi_at_file_read``), ``%(name)`` (core/config.c ``uwsgi_manage_placeholder``: the *first*
option of that name, forward references work, unknown -> left literally, ``%(a + 1)`` pipeline math). Each pass is
core/config.c ``uwsgi_apply_config_pass``, reproduced character for character by :func:`_apply_pass` (including
its quirk of re-scanning an expanded value from index 1, not 0). Options flagged ``UWSGI_OPT_IMMEDIATE``
(``plugin``, ``ini``, ``set-placeholder`` ...) were already applied while parsing and are skipped by the passes
(their ``configured`` flag is set in core/config.c ``add_exported_option_do``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Callable

from pytest_emperor.ini.options import (
    EXPANSION_LOOP,
    IMMEDIATE_OPTIONS,
    IniOption,
    IniProblem,
    Resolution,
    ResolvedOption,
)
from pytest_emperor.ini.values import next_reference, strtoll, wrap64

__all__ = ["AtResolver", "resolve"]

AtResolver = Callable[[str], "str | None"]  # None: left literally (unknown to the caller)

# option -> whether the placeholder it adds is already "configured" (then the passes skip it)
_PLACEHOLDER_SETTERS = {"set": False, "set-placeholder": True, "set-ph": True}

# Bounds on one option's expansion before we call it a loop: uWSGI itself spins forever (or until memory runs
# out) on ``a = x%(a)`` or ``a = %(a)%(a)``, since core/config.c uwsgi_apply_config_pass re-scans every
# expanded value. 64 KiB is far above any sane option (uWSGI's own buffer-size default is 4 KiB).
_MAX_EXPANSIONS = 256
_MAX_VALUE = 65536


def resolve(
    options: Sequence[IniOption],
    *,
    config_arg: str | None,
    env: Mapping[str, str],
    at_resolver: AtResolver | None = None,
    extra: Sequence[str] = (),
) -> Resolution:
    """Run uWSGI's ``$(ENV)``, ``@(...)``, ``%(name)`` passes over ``options``, in uWSGI's order.

    ``config_arg``: the ``--ini <file>`` that loaded them (``%o``), itself an option. ``extra`` values are
    appended as options named ``""`` after the file's own (as a later command-line option would be).
    ``at_resolver(spec)`` gets ``exec://cmd`` or a file path and returns its text with exactly one trailing
    ``\\n`` or ``\\r`` stripped (core/uwsgi.c ``uwsgi_at_file_read``); without one, ``@(...)`` is left literally.
    """
    items: list[_Item] = []
    if config_arg is not None:
        # The `--ini <file>` that loaded us is itself an exported option, so `%(ini)` works.
        items.append(_Item("ini", config_arg, 0, True, True))
    late: list[_Item] = []  # inherited: added after the passes, so they neither get nor give expansions
    for option in options:
        item = _Item(option.key, option.value, option.line, option.key in IMMEDIATE_OPTIONS, False, option.file)
        if option.late:
            late.append(item)
            continue
        items.append(item)
        placeholder_only = _PLACEHOLDER_SETTERS.get(option.key)
        if placeholder_only is not None and "=" in option.value:
            # core/config.c uwsgi_opt_set_placeholder: `set-placeholder` adds an already "configured"
            # option, which the passes skip: why `set-placeholder = x=@(exec://...)` is never expanded.
            name, _, value = option.value.partition("=")
            items.append(_Item(name, value, option.line, placeholder_only, True, option.file))
    items.extend(_Item("", value, 0, False, True) for value in extra)
    problems: list[IniProblem] = []
    _apply_pass(items, "$", env.get, problems)
    _apply_pass(items, "@", at_resolver, problems)
    first: dict[str, _Item] = {}  # uwsgi_manage_placeholder takes the first option of a name
    for item in items:
        first.setdefault(item.key, item)
    _apply_pass(items, "%", lambda key: _manage_placeholder(first, key), problems)
    items.extend(late)
    return Resolution(
        tuple(ResolvedOption(i.key, i.value, i.line, i.raw, i.immediate, i.synthetic, i.file) for i in items),
        tuple(problems),
    )


@dataclass
class _Item:
    key: str
    value: str
    line: int
    immediate: bool
    synthetic: bool
    file: str = ""
    raw: str = ""

    def __post_init__(self) -> None:
        self.raw = self.value


def _manage_placeholder(first: Mapping[str, _Item], key: str) -> str | None:
    """core/config.c ``uwsgi_manage_placeholder``: a name, or a space-separated math pipeline; ``first`` maps
    each name to its first option (whose value the pass may have expanded already)."""

    def lookup(name: str) -> str | None:
        item = first.get(name)
        return item.value if item is not None else None

    if " " not in key:
        return lookup(key)
    current: str | None = None
    state = "concat"
    for token in (t for t in key.split(" ") if t):
        if token in ("+", "-", "*", "/"):
            state = token
            continue
        if token in ("++", "--"):
            if current is not None:
                current = str(wrap64(strtoll(current) + (1 if token == "++" else -1)))
            state = "concat"
            continue
        value = token if token.isascii() and token.isdigit() else (lookup(token) or "")
        if state == "concat":
            current = (current or "") + value
        else:
            a, b = (strtoll(current) if current is not None else 0), strtoll(value)
            if state == "+":
                r = a + b
            elif state == "-":
                r = a - b
            elif state == "*":
                r = a * b
            else:  # C integer division truncates toward zero; uWSGI turns x/0 into 0
                r = 0 if b == 0 else abs(a) // abs(b) * (1 if (a < 0) == (b < 0) else -1)
            current = str(wrap64(r))
        state = "concat"
    return current


def _apply_pass(
    items: list[_Item], symbol: str, hook: Callable[[str], str | None] | None, problems: list[IniProblem]
) -> None:
    """core/config.c ``uwsgi_apply_config_pass``: every reference found as it finds them
    (:func:`~.values.next_reference`), replaced by ``hook``'s answer and the value scanned again."""
    if hook is None:
        return
    for item in items:
        if item.immediate:
            continue
        expansions = 0
        at = next_reference(item.value, symbol)
        while at is not None:
            start, end = at
            key = item.value[start:end]
            value = hook(key)
            if value is None:  # left literally: the scan goes on after it
                at = next_reference(item.value, symbol, end + 1)
                continue
            expansions += 1
            if expansions > _MAX_EXPANSIONS or len(item.value) + len(value) > _MAX_VALUE:
                message = f"'{item.key}' keeps expanding {symbol}({key}): uWSGI would hang"
                problems.append(IniProblem(item.line, EXPANSION_LOOP, message, item.file))
                break
            # C strings: a NUL in the hook's result ends the value; the `symbol(` before the key and the `)`
            # after it go too
            item.value = item.value[: start - 2] + value.split("\0", 1)[0] + item.value[end + 1 :]
            # uWSGI sets `j = 0` and its loop's `j++` follows: index 0 is never looked at again
            at = next_reference(item.value, symbol, 1)
