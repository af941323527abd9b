"""Rules on options that name or bound others: an alarm never defined (W116), ``cheaper`` against ``processes``
(E117, W119), a path option given a flag's word (W118)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import replace

from pytest_emperor.check.rules.app import AppConfig, undetermined, where
from pytest_emperor.check.rules.catalog import Severity
from pytest_emperor.check.rules.findings import Finding, finding
from pytest_emperor.check.uwsgi_options import OPTIONS
from pytest_emperor.ini.values import BLANKS, lines, strtoll

__all__ = ["cross_references"]

_ALARM_USERS = frozenset(
    {"alarm-backlog", "alarm-listen-queue", "alarm-log", "alarm-lq", "alarm-segfault", "backlog-alarm",
     "listen-queue-alarm", "log-alarm", "lq-alarm", "segfault-alarm", "not-alarm-log", "not-log-alarm"}
)
_PATH_OPTIONS = ("daemonize", "daemonize2", "logto", "logto2", "pidfile", "pidfile2", "safe-pidfile", "emperor")
_BOOLEAN_WORDS = re.compile(r"(?i)^(true|false|yes|no|on|off)$")


_OPTION_LINE = re.compile(rf"^[{BLANKS}]*([A-Za-z0-9_.-]+)[{BLANKS}]*=[{BLANKS}]*(.*?)[{BLANKS}]*$")


def _every_line(app: AppConfig) -> Iterable[tuple[str, int, str, str]]:
    """(file, line, key, value) of every option line of every file read, in any `if-*` branch: production may
    take the branch this machine does not (its environment, its files)."""
    for file, text in app.ini.texts.items():
        for number, line in enumerate(lines(text), 1):
            m = _OPTION_LINE.match(line)
            if m:
                yield file, number, m.group(1), m.group(2)


def cross_references(app: AppConfig) -> Iterable[Finding]:
    """W116 (alarms, core/alarm.c uwsgi_alarms_init), E117 (core/init.c: cheaper >= processes exits), W118,
    W119 (core/init.c: without `cheaper`, cheaper mode is off)."""
    option_lines = list(_every_line(app))
    defined = {value.split(" ", 1)[0] for _, _, key, value in option_lines if key == "alarm" and value}
    for file, number, key, value in option_lines:
        if key in _ALARM_USERS and value and not undetermined(value) and "%" not in value:
            for name in value.split(" ", 1)[0].split(","):
                if name and name not in defined:
                    defined.add(name)  # said once, where it is first used
                    yield finding("W116", where(app, file), number, f"`{key} = {value}`: no alarm `{name}`")
    if "cheaper" not in {key for _, _, key, _ in option_lines}:
        for file, number, key, value in option_lines:
            if key.startswith("cheaper-") and key in OPTIONS:
                yield finding("W119", where(app, file), number, f"`{key} = {value}`")
                break
    for option in app.resolution.options:
        if option.key in _PATH_OPTIONS and _BOOLEAN_WORDS.match(option.value):
            message = f"`{option.key} = {option.value}` writes ./{option.value}"
            yield finding("W118", where(app, option.file), option.line, message)
    # `processes` and `workers` set one variable: the last line of either wins
    counts = [o.value for o in app.resolution.options if o.key in ("processes", "workers")]
    cheaper, processes = app.resolution.last("cheaper"), (counts[-1] if counts else None)
    if cheaper and processes and 0 < strtoll(cheaper) >= strtoll(processes):
        at = app.ini.option("cheaper")
        assert at is not None
        raw = " ".join(o.value for o in app.ini.options if o.key in ("cheaper", "processes", "workers"))
        message = f"`cheaper = {cheaper}`, `processes = {processes}`"
        f = finding("E117", where(app, at.file), at.line, message)
        if "%" in raw:  # computed from the machine (`%k` cores): true here, maybe not in production
            f = replace(f, severity=Severity.WARNING, message=f"{f.message} (computed on this machine)")
        yield f
