"""Rules on option names: not an option of uWSGI (E201), a custom placeholder (I202, E203 under ``strict``), an
option this binary lacks (I114)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from pytest_emperor.check.rules.app import AppConfig, Kind, unread_includes, where
from pytest_emperor.check.rules.findings import Finding, finding
from pytest_emperor.check.uwsgi_options import OPTIONS, feature, lacks
from pytest_emperor.ini.values import is_true, references

__all__ = ["unknown_options"]


def referenced_names(app: AppConfig) -> set[str]:
    """Every name used as `%(name)` (or inside `%(a + b)` math) anywhere in the file."""
    names: set[str] = set()
    for option in app.ini.options:
        for inner in references(option.value, "%"):
            names.update(t for t in inner.split(" ") if t)
    return names


_SORTED_OPTIONS = sorted(OPTIONS)


def unknown_options(app: AppConfig) -> Iterable[Finding]:
    if app.known_options is None:
        return
    referenced = referenced_names(app)
    strict = any(o.key == "strict" and is_true(o.value) for o in app.ini.options)
    reported: set[str] = set()
    unread = app.kind is not Kind.CONVENTION and unread_includes(app)
    for option in app.ini.options:
        key = option.key
        if not key or key in app.known_options or key in reported:
            continue
        reported.add(key)
        at = where(app, option.file)
        if key in referenced:
            yield finding("E203" if strict else "I202", at, option.line, f"`{key}`")
            continue
        if key in OPTIONS:
            if feature(key) in app.features:
                continue  # production's build has it, as stated
            need = lacks(key) or "it"
            effect = "exits at start" if strict else "ignores it"
            message = f"`{key}`: this uwsgi binary lacks {need} (it {effect}); uWSGI with {need} has it"
            yield finding("I114", at, option.line, message)
            continue
        guess = difflib.get_close_matches(key, _SORTED_OPTIONS, n=1, cutoff=0.75)
        if (not guess or "_" in key) and unread:
            # a custom name (uWSGI's own names use `-`, but for 2 of 1245), or one close to no option: most likely
            # a placeholder for the file that was not read
            yield finding("I202", at, option.line, f"`{key}` (a file it includes was not read here)")
            continue
        effect = (
            "`strict` is set: uWSGI exits at start ('[strict-mode] unknown config directive')"
            if strict
            else "uWSGI silently ignores it"
        )
        message = f"`{key}`: {effect}" + (f"; did you mean `{guess[0]}`?" if guess else "")
        yield finding("E201", at, option.line, message)
