"""How uWSGI reads a value's characters: the blanks it strips, C's number parsing, the placeholder syntax."""

from __future__ import annotations

import re

__all__ = ["BLANKS", "PLACEHOLDER_REF", "strtoll", "wrap64"]

#: The blanks core/ini.c ``ini_lstrip``/``ini_rstrip`` strip around keys, values and lines: NOT
#: :meth:`str.strip`'s set (that one also eats ``\f``, ``\v`` and Unicode spaces).
BLANKS = " \t\r"

#: A ``%(name)`` reference in a value (the name may be a math pipeline: ``%(a + 1)``).
PLACEHOLDER_REF = re.compile(r"%\(([^)]*)\)")


def strtoll(text: str) -> int:
    """C ``strtoll(text, NULL, 10)``: leading blanks, optional sign, digits; 0 when there are none."""
    m = re.match(r"[ \t\n\v\f\r]*([+-]?[0-9]+)", text)
    if not m:
        return 0
    return max(-(2**63), min(2**63 - 1, int(m.group(1))))


def wrap64(n: int) -> int:
    """``n`` as a C ``int64_t`` holds it after overflow (two's complement)."""
    return (n + 2**63) % 2**64 - 2**63
