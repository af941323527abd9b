"""Rules on values uWSGI reads as numbers (W107, W113, W120, E403), and on ``$(VAR)`` set by a later ``env``
(W108)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import replace

from pytest_emperor.check.rules.app import INLINE_COMMENT, AppConfig, undetermined, where
from pytest_emperor.check.rules.catalog import Severity
from pytest_emperor.check.rules.findings import Finding, finding
from pytest_emperor.check.uwsgi_options import NUMERIC, SIXTEEN_BIT, SOURCES
from pytest_emperor.ini import IniOption
from pytest_emperor.ini.values import BLANKS, references, strtoll

__all__ = ["counts", "numbers_and_env"]

_NUMERIC = {
    **dict.fromkeys(("buffer-size", "post-buffering", "limit-post", "listen", "max-requests"), "a size or count"),
    **dict.fromkeys(("processes", "workers", "threads", "cheaper"), "a count"),
    **dict.fromkeys(
        ("harakiri", "socket-timeout", "reload-mercy", "worker-reload-mercy", "max-worker-lifetime", "mule-harakiri"),
        "seconds",
    ),
    **dict.fromkeys(("limit-as", "reload-on-rss", "evil-reload-on-rss"), "megabytes"),
}


def numbers_and_env(app: AppConfig) -> Iterable[Finding]:
    """Values uWSGI reads differently from how they look: units, and `$(VAR)` set by a later `env =`."""
    last = {o.key: o for o in app.ini.options}  # the occurrence uWSGI applies
    routers = {"http", "https"} & set(last)
    expanded = {o.key: o.value for o in app.resolution.options}  # the last value of each
    for option in app.ini.options:
        unit = _NUMERIC.get(option.key) or ("a number" if option.key in NUMERIC else None)
        value = expanded.get(option.key) if option is last[option.key] else option.value
        if not unit or not value or INLINE_COMMENT.search(value):  # an inline comment is W101's
            continue
        counted = option.key in ("processes", "workers")  # E403 says what a count of 0 does
        if not re.fullmatch(r"[+-]?[0-9]+", value.strip(BLANKS)) and strtoll(value) <= 0 and not undetermined(value):
            if counted:
                continue
            message = f"`{option.key} = {value}` reads as {strtoll(value)}"
            f = finding("W113", where(app, option.file), option.line, message)
            if SOURCES.get(option.key) == "plugin:http" and not routers:
                # an option of the HTTP router, in a config that starts none: it does nothing either way
                f = replace(f, severity=Severity.INFO, message=f"{message} (no `http` router here: unused)")
            yield f
        # 65536 is how configs commonly write "the largest there is" (64 KiB): uWSGI's 65535 is one byte less, a
        # difference no request notices (judged on real configs, benchmarks/gate_corpus), so it is not warned of.
        elif option.key in SIXTEEN_BIT and strtoll(value) > 65536 and not undetermined(value):
            message = f"`{option.key} = {value}` is 65535"
            yield finding("W120", where(app, option.file), option.line, message)
        elif not re.fullmatch(r"[0-9]+", value.strip(BLANKS)) and strtoll(value) > 0:
            message = f"`{option.key} = {value}` is {strtoll(value)} ({unit}): uWSGI 2.0 reads leading digits only"
            f = finding("W107", where(app, option.file), option.line, message)
            # below its 4096 default, buffer-size rejects ordinary requests: measured, `32k` (32 bytes) makes
            # uWSGI reset every connection nginx sends (tests/check_corpus/size-with-unit)
            small_buffer = option.key == "buffer-size" and strtoll(value) < 4096
            yield replace(f, severity=Severity.ERROR) if small_buffer else f
    set_by_env: dict[str, IniOption] = {}
    for option in app.ini.options:
        if option.key == "env" and "=" in option.value:
            set_by_env.setdefault(option.value.partition("=")[0], option)
    for resolved in app.resolution.options:
        if resolved.immediate or resolved.synthetic:
            continue
        for name in references(resolved.raw, "$"):
            setter = set_by_env.get(name)
            if setter is not None:
                message = f"`$({name})` in `{resolved.key}`: `env = {setter.value}` (line {setter.line}) sets it later"
                yield finding("W108", where(app, resolved.file), resolved.line, message)


def counts(app: AppConfig) -> Iterable[Finding]:
    for key in ("processes", "workers"):
        value = app.resolution.last(key)
        if value is not None and value != "" and strtoll(value) <= 0 and not undetermined(value):
            yield finding("E403", app.path, app.ini.lines(key)[-1], f"`{key} = {value}` reads as {strtoll(value)}")
