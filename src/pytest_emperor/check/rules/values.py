"""Rules on option values: inline comments (W101), empty values (E104), a setting given twice (W106), placeholders
that stay literal (E105)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import replace

from pytest_emperor.check.rules.app import (
    INLINE_COMMENT,
    SOCKET_KEYS,
    AppConfig,
    Kind,
    serves,
    undetermined,
    unread_includes,
    where,
)
from pytest_emperor.check.rules.catalog import Severity
from pytest_emperor.check.rules.findings import Finding, finding
from pytest_emperor.check.uwsgi_options import ALIASES, FLAGS, NUMERIC, OPTIONS
from pytest_emperor.ini import IniOption
from pytest_emperor.ini.values import BLANKS, is_true, references

__all__ = ["values"]

# Options whose value is a path or an address: there, an inline comment breaks the deployment outright.
PATH_KEYS = frozenset(
    {*SOCKET_KEYS, "chdir", "home", "virtualenv", "venv", "pyhome", "wsgi-file", "module", "pythonpath", "logto"}
)
SCALAR_KEYS = frozenset(
    {
        *(k for k in PATH_KEYS if k not in SOCKET_KEYS and k != "pythonpath"),
        "processes", "workers", "threads", "chmod-socket", "uid", "gid", "harakiri", "buffer-size",
        "listen", "max-requests", "pidfile", "callable", "need-app", "master", "vacuum", "strict",
    }
)
REQUIRES_VALUE = frozenset(
    {*PATH_KEYS, "wsgi", "processes", "workers", "threads", "uid", "gid", "callable", "pidfile", "plugin"}
)
# options whose `%(name)`s are request log variables, expanded per request (core/logging.c), not placeholders
REQUEST_VARIABLE_KEYS = frozenset(
    {"log-format", "logformat", "log-format-strftime", "log-encoder", "log-req-encoder", "logger-req", "req-logger"}
)


def values(app: AppConfig) -> Iterable[Finding]:
    defined = {o.key for o in app.resolution.options}
    elsewhere = app.kind is not Kind.CONVENTION and (not serves(app) or unread_includes(app))
    seen: dict[str, IniOption] = {}
    for option in app.ini.options:
        key, value = option.key, option.value
        # the value of an option uWSGI does not know matters not (E201 says so)
        known = app.known_options is None or key in app.known_options or key in OPTIONS
        if INLINE_COMMENT.search(value) and known:
            f = finding("W101", where(app, option.file), option.line, f"`{key}` is {value!r}")
            before = INLINE_COMMENT.split(value, 1)[0].strip(BLANKS)
            # atoi stops at the blank, and a flag with a comment is on: the comment changes nothing when it was on
            number = key in NUMERIC and re.fullmatch(r"[0-9]+", before)
            harmless = number or (key in FLAGS and is_true(before))
            if key in PATH_KEYS:
                f = replace(f, severity=Severity.ERROR)
            elif harmless and app.kind is not Kind.CONVENTION:
                f = replace(f, severity=Severity.INFO)
            yield f
        if key in REQUIRES_VALUE and value == "":
            yield finding("E104", where(app, option.file), option.line, f"`{key}` is empty")
        if key in SCALAR_KEYS:
            first = seen.setdefault(key, option)
            if first is not option and first.value.strip(BLANKS) != value.strip(BLANKS):
                message = f"`{key}` (first on line {first.line}); this one wins"
                yield finding("W106", where(app, option.file), option.line, message)
    yield from _aliases(app)
    for resolved in app.resolution.options:
        # log formats and encoders keep `%(host)`, `%(status)` ... literally: uWSGI fills them per request
        if resolved.immediate or resolved.synthetic or resolved.key in REQUEST_VARIABLE_KEYS:
            continue
        for name in references(resolved.value, "%"):
            if " " in name or not name:
                continue
            why = (
                "defined, but uWSGI does not expand a reference that another one put at the start of the value"
                if name in defined
                else "never defined"
            )
            f = finding("E105", where(app, resolved.file), resolved.line, f"`%({name})` in `{resolved.key}`: {why}")
            if elsewhere:
                # a file that serves nothing is included by the one that defines its placeholders; or the file
                # it includes, which was not read, defines them
                f = replace(f, severity=Severity.INFO, message=f"{f.message} here (the including file's?)")
            yield f


def _aliases(app: AppConfig) -> Iterable[Finding]:
    """Two names of one setting (`processes` then `workers`): uWSGI applies both in order, the last one wins."""
    first: dict[str, IniOption] = {}
    for option in app.ini.options:
        variable = ALIASES.get(option.key)
        if variable is None:
            continue
        earlier = first.setdefault(variable, option)
        if earlier.key != option.key and earlier.value != option.value and not undetermined(option.value):
            message = (
                f"`{option.key} = {option.value}` and `{earlier.key} = {earlier.value}` (line {earlier.line}) set "
                f"one variable ({variable.lstrip('&')}): this one wins"
            )
            yield finding("W106", where(app, option.file), option.line, message)
