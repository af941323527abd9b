"""How uWSGI reads a config's characters: its lines, the blanks it strips, C's number parsing, flags, references.

Each function here is the one place the package reads a value so (the reader, the engine and ``check`` all
call it), and mirrors the uWSGI 2.0 source it names.
"""

from __future__ import annotations

import re

__all__ = ["BLANKS", "is_true", "lines", "next_reference", "references", "strtoll", "wrap64"]

#: The blanks core/ini.c ``ini_lstrip``/``ini_rstrip`` strip around keys, values and lines: NOT
#: :meth:`str.strip`'s set (that one also eats ``\f``, ``\v`` and Unicode spaces).
BLANKS = " \t\r"


def lines(text: str) -> list[str]:
    """A file's lines as core/ini.c numbers them (line ``n`` is ``lines(text)[n - 1]``): split at ``\\n`` only,
    where ``\\r`` is a blank and :meth:`str.splitlines` would also split at ``\\v``, ``\\f``, ``\\x1c`` ..."""
    return text.split("\n")


# C isspace() in the "C" locale: what strtoll() skips first (not the ini's BLANKS).
_STRTOLL = re.compile(r"[ \t\n\v\f\r]*([+-]?[0-9]+)")
# What uwsgi_opt_true compares a flag's value with: strcasecmp for the words, strcmp for "0".
_FALSE_WORDS = (b"false", b"off", b"no")


def strtoll(text: str) -> int:
    """C ``strtoll(text, NULL, 10)``: leading white space, optional sign, ASCII digits; 0 when there are none;
    clamped to the ``long long`` range. uWSGI reads numbers with ``atoi``/``strtol``/``strtoul``, which agree
    with it on every value that fits (and the rules only compare values that do)."""
    m = _STRTOLL.match(text)
    if not m:
        return 0
    return max(-(2**63), min(2**63 - 1, int(m.group(1))))


def wrap64(n: int) -> int:
    """``n`` as a C ``int64_t`` holds it after overflow (two's complement)."""
    return (n + 2**63) % 2**64 - 2**63


def is_true(value: str) -> bool:
    """Whether a flag is on, as core/uwsgi.c ``uwsgi_opt_true`` reads its value: on unless it is ``false``,
    ``off`` or ``no`` (any case, ASCII only) or exactly ``0`` (so ``00``, ``0.0`` and ``False `` are on; a bare
    ``vacuum`` is on). ``uwsgi_opt_false`` options (``disable-logging``) read the same words the other way."""
    return value != "0" and value.encode("utf-8", "surrogateescape").lower() not in _FALSE_WORDS


def next_reference(value: str, symbol: str, start: int = 0) -> tuple[int, int] | None:
    """Where the first ``symbol(name)`` at or after ``start`` has its name (``value[begin:end]``), found the way
    core/config.c ``uwsgi_apply_config_pass`` scans a value (``symbol``: ``%``, ``$`` or ``@``): nested
    parentheses belong to the name (``%(a(b)c)`` names ``a(b)c``), a ``symbol`` inside starts over, an empty
    ``%()`` names nothing; None when there is none."""
    has_symbol = depth = 0
    begin = -1
    for j in range(start, len(value)):
        c = value[j]
        if c == symbol:
            has_symbol = 1
        elif c == "(" and has_symbol == 1:
            has_symbol, depth, begin = 2, 0, j + 1
        elif has_symbol > 1:
            if c == "(":
                has_symbol += 1
                depth += 1
            elif c == ")" and depth > 0:
                has_symbol += 1
                depth -= 1
            elif c == ")":
                if has_symbol > 2:
                    return begin, j
                has_symbol = 0
            else:
                has_symbol += 1
        else:
            has_symbol = 0
    return None


def references(value: str, symbol: str) -> list[str]:
    """Every name ``symbol(name)`` refers to in ``value``, in order (:func:`next_reference`)."""
    found: list[str] = []
    at = next_reference(value, symbol)
    while at is not None:
        found.append(value[at[0] : at[1]])
        at = next_reference(value, symbol, at[1] + 1)
    return found
