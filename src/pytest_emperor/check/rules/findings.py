"""A finding (one rule's verdict at one line), and the user's say over findings: suppression comments,
``--select``/``--ignore``."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from pytest_emperor.check.rules.catalog import RULES, Rule, Severity
from pytest_emperor.ini.values import lines

__all__ = ["Finding", "apply_suppressions", "filter_codes", "finding"]


@dataclass(frozen=True)
class Finding:
    """One problem at one place, with uWSGI's own output lines when there are any."""

    code: str
    severity: Severity
    path: str
    line: int
    message: str
    hint: str
    details: tuple[str, ...] = ()

    @property
    def rule(self) -> Rule:
        """The rule this finding comes from."""
        return RULES[self.code]


def finding(code: str, path: str, line: int, message: str = "", details: Sequence[str] = ()) -> Finding:
    """A finding of rule ``code`` with its default severity and hint; ``message`` adds specifics."""
    rule = RULES[code]
    text = f"{rule.summary}: {message}" if message else rule.summary
    return Finding(code, rule.severity, path, line, text, rule.hint, tuple(details))


_SUPPRESS = re.compile(r"^\s*[;#]\s*emperor-dev:\s*ignore\[([A-Za-z0-9_, -]+)\]\s*$")


def apply_suppressions(findings: Iterable[Finding], raw_texts: dict[str, str]) -> list[Finding]:
    """Drop findings suppressed by ``; emperor-dev: ignore[CODE, ...]`` comment lines directly above their line.

    The comment must be a line of its own: uWSGI has no inline comments, so a trailing one would become part of
    the value. Several such lines may be stacked; a comment above the ``[uwsgi]`` header covers file-level
    findings (e.g. W402), which point at the header.
    """
    covering: dict[str, list[frozenset[str]]] = {}  # per file, per line: the codes the comments above it name
    kept: list[Finding] = []
    for f in findings:
        if f.path not in covering:
            covering[f.path] = _suppressed_by_line(raw_texts.get(f.path, ""))
        by_line = covering[f.path]
        if not (0 < f.line <= len(by_line) and f.code in by_line[f.line - 1]):
            kept.append(f)
    return kept


def _suppressed_by_line(text: str) -> list[frozenset[str]]:
    """For each line (0-based), the codes of the stack of suppression comments directly above it: one pass over
    the file, so the cost does not grow with the number of findings."""
    out: list[frozenset[str]] = []
    stack: frozenset[str] = frozenset()
    for line in lines(text):
        out.append(stack)
        m = _SUPPRESS.match(line) if "emperor-dev" in line else None
        stack = stack | {c.strip().upper() for c in m.group(1).split(",")} if m else frozenset()
    return out


def filter_codes(findings: Iterable[Finding], select: Sequence[str], ignore: Sequence[str]) -> list[Finding]:
    """``--select``/``--ignore``: codes or prefixes (``W4`` ignores W401 and W402)."""
    return [
        f
        for f in findings
        if (not select or f.code.startswith(tuple(select))) and not (ignore and f.code.startswith(tuple(ignore)))
    ]
