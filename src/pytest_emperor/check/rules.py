"""The static rules of ``emperor-dev check``: pure functions from a parsed app config to findings.

Everything here is sans-IO: the caller reads the file, resolves ``@(...)``, asks the binary for its options and
the file system for world-writable directories, and passes the answers in (:class:`AppConfig`). The path rules
that need the file system live in :mod:`pytest_emperor.check.paths`.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from enum import IntEnum

from pytest_emperor.convention import DEFAULT_SOCKET_DIR, routed_socket
from pytest_emperor.engine.inifile import SOCKET_OPTIONS, IniFile, IniOption, Resolution

__all__ = [
    "RULES",
    "AppConfig",
    "Finding",
    "Rule",
    "Severity",
    "apply_suppressions",
    "check_app",
    "check_apps",
    "filter_codes",
    "finding",
    "section_line",
]


class Severity(IntEnum):
    """Finding severities, ordered so that ``--fail-on`` is a comparison."""

    INFO = 1
    WARNING = 2
    ERROR = 3

    def __str__(self) -> str:
        return self.name.lower()


@dataclass(frozen=True)
class Rule:
    """One check: its code, short name, default severity, what it means and how to fix it."""

    code: str
    name: str
    severity: Severity
    summary: str
    hint: str


_E, _W, _I = Severity.ERROR, Severity.WARNING, Severity.INFO
_STRICT_SAFE = (
    "use a real option instead of a custom placeholder, e.g. `chdir = @(exec://dirname $(realpath %P))` and "
    "`%(chdir)` wherever the app root is needed (`set-placeholder` would not expand the @(...))"
)
RULES: dict[str, Rule] = {
    r.code: r
    for r in [
        Rule("E001", "no-section", _E, "no option in a [uwsgi] section: uWSGI ignores the file", "add `[uwsgi]`"),
        Rule("E002", "unparsable-line", _E, "a line with no option name", "write `key = value`"),
        Rule(
            "E003",
            "config-fatal",
            _E,
            "uWSGI exits while reading the config (the vassal is cursed before it binds)",
            "fix the line named; `include`/`ini` paths are read at once, relative to the vassal dir (so is `%d`) "
            "and without `$()`/`@()`/`%()` expansion: give the included file's absolute path",
        ),
        Rule(
            "E004",
            "logic-block-open",
            _E,
            "an `if-*`/`for` block is never closed: every later option (of every file) is conditional",
            "add `endif =` (or `endfor =`) after the block",
        ),
        Rule(
            "W005",
            "not-followed",
            _W,
            "this part of the config cannot be read statically: the options it sets are not checked",
            "use an .ini `include` with a literal path, or rely on the boot check",
        ),
        Rule(
            "W101",
            "inline-comment",
            _W,
            "an inline comment is part of the value (uWSGI has no inline comments)",
            "move the comment to its own line starting with `;` or `#`",
        ),
        Rule(
            "E102",
            "percent-eats-line",
            _E,
            "a `%` ending a line deletes the newline: the next line is joined to it (or commented out)",
            "write `%%` for a literal percent sign",
        ),
        Rule(
            "W103",
            "stray-percent",
            _W,
            "`%X` is not a magic variable: uWSGI deletes it and the character after it",
            "write `%%` for a literal percent sign",
        ),
        Rule("E104", "empty-value", _E, "this option needs a value", "give it a value or remove the line"),
        Rule(
            "E105",
            "undefined-placeholder",
            _E,
            "a `%(name)` uWSGI leaves literally in the value",
            "define the option it names, or fix the spelling",
        ),
        Rule(
            "W106",
            "option-repeated",
            _W,
            "a single-valued option is set more than once: the last one wins",
            "keep one line",
        ),
        Rule(
            "E201",
            "unknown-option",
            _E,
            "not an option of this uwsgi binary and never used as `%(placeholder)`: uWSGI silently ignores it",
            "fix the spelling",
        ),
        Rule("I202", "custom-placeholder", _I, "a custom placeholder: `uwsgi --strict` rejects it", _STRICT_SAFE),
        Rule("E203", "placeholder-with-strict", _E, "`strict` is set: this custom placeholder is fatal", _STRICT_SAFE),
        Rule(
            "E301", "no-socket", _E, "no `socket`: the router has nothing to reach", "add `socket = /tmp/%n.api.sock`"
        ),
        Rule(
            "W302",
            "socket-not-from-name",
            _W,
            "the socket is not derived from `%n`, so it does not follow the deploy name",
            "use `socket = /tmp/%n.api.sock`",
        ),
        Rule(
            "W303",
            "socket-not-routed",
            _W,
            "the socket is not `<socket dir>/<name>.api.sock`, where the router looks",
            "use `socket = /tmp/%n.api.sock`",
        ),
        Rule(
            "E304",
            "vassal-http-router",
            _E,
            "`http =` starts an HTTP router inside the vassal",
            "use `socket =` and let the front router (nginx) speak to it",
        ),
        Rule(
            "E305",
            "vassal-daemonize",
            _E,
            "`daemonize` in a vassal: the emperor loses its child",
            "remove it (log with `logto` if needed)",
        ),
        Rule(
            "E306",
            "socket-collision",
            _E,
            "two apps bind the same socket path",
            "derive each socket from `%n` and deploy under distinct names",
        ),
        Rule(
            "W307",
            "world-reachable-socket",
            _W,
            "a world-writable socket in a world-writable directory: any local user can reach the app",
            "use a private socket dir owned by the web server's group with `chmod-socket = 660`",
        ),
        Rule(
            "E308",
            "http-socket-behind-uwsgi-router",
            _E,
            "the routed socket speaks HTTP, but the router (nginx `uwsgi_pass`) speaks the uwsgi protocol",
            "use `socket = /tmp/%n.api.sock` (uwsgi protocol)",
        ),
        Rule(
            "E309",
            "two-app-mounts",
            _E,
            "both `wsgi-file` and `module`: uWSGI mounts the first on `/` and skips the other with one log line",
            "keep one of them",
        ),
        Rule(
            "E310",
            "logto-dir-missing",
            _E,
            "the `logto` directory does not exist: uWSGI cannot open its log and exits before it binds",
            "create the directory at deploy time, or log to an existing one",
        ),
        Rule(
            "E311",
            "unknown-user",
            _E,
            "`uid`/`gid` names a user or group this machine lacks",
            "create the user/group on the host, or use one that exists (`getent passwd NAME`)",
        ),
        Rule(
            "W401",
            "no-vacuum",
            _W,
            "no `vacuum`: the socket file stays behind when the vassal stops",
            "add `vacuum = true`",
        ),
        Rule(
            "W402",
            "no-need-app",
            _W,
            "no `need-app`: an app that fails to import is served as 500s instead of being cursed",
            "add `need-app = true`",
        ),
        Rule(
            "W107",
            "number-with-unit",
            _W,
            "uWSGI 2.0 reads this number with atoi/strtoul: a unit suffix is silently dropped",
            "write the plain number in the option's unit (bytes, seconds, megabytes), e.g. `buffer-size = 32768`",
        ),
        Rule(
            "W108",
            "env-used-before-set",
            _W,
            "`$(VAR)` is expanded from the emperor's environment before any `env = VAR=...` line sets it",
            "write the value itself, or set a placeholder (`set-ph = var=...`) and use `%(var)`",
        ),
        Rule(
            "E403",
            "bad-process-count",
            _E,
            "not a positive integer once uWSGI reads it (atoi): no worker starts",
            "write a number such as `processes = 2`",
        ),
        Rule("E501", "chdir-missing", _E, "the `chdir` directory does not exist: the vassal dies", "fix the path"),
        Rule("E502", "wsgi-file-missing", _E, "the `wsgi-file` does not exist", "fix the path (relative to chdir)"),
        Rule("E503", "module-missing", _E, "the `module` is not found in chdir/pythonpath", "fix the module name"),
        Rule(
            "E504",
            "home-missing",
            _E,
            "the virtualenv (`home`/`virtualenv`) does not exist: the vassal dies at start",
            "create it or fix the path",
        ),
        Rule(
            "E505",
            "home-python-mismatch",
            _E,
            "the virtualenv is built for another Python than the one in uwsgi (`No module named encodings`)",
            "recreate the virtualenv with the Python uwsgi embeds",
        ),
        Rule(
            "W506",
            "plugin-on-monolithic",
            _W,
            "`plugin = python*` on a build with Python embedded: uWSGI warns at every start",
            "remove the `plugin` line",
        ),
        Rule(
            "E507",
            "need-plugin-on-monolithic",
            _E,
            "`need-plugin = python*` on a build with Python embedded: uWSGI exits 1",
            "remove the `need-plugin` line",
        ),
        Rule(
            "E508",
            "callable-missing",
            _E,
            "the app file binds no such callable: uWSGI loads no app (`callable not found`)",
            "name the WSGI callable with `module = pkg.mod:name` or `callable = name`",
        ),
        Rule(
            "E601",
            "unreadable-by-emperor-user",
            _E,
            "the user the emperor drops to (`--emperor-args --uid`) cannot read this: the vassal dies",
            "make the path readable (and its parents searchable) by that user, e.g. `chmod o+rX` or its group",
        ),
        Rule(
            "E602",
            "log-unwritable-by-emperor-user",
            _E,
            "the user the emperor drops to cannot write the `logto` file: the vassal exits before it binds",
            "create the log dir owned by that user (`install -d -o www-data /var/log/app`)",
        ),
        Rule(
            "E603",
            "socket-unreachable-by-nginx",
            _E,
            "nginx's worker user cannot connect to the routed socket (connect() needs write permission)",
            "`chmod-socket = 666`, or `chmod-socket = 660` with `chown-socket` to nginx's group",
        ),
        Rule(
            "W604",
            "vassal-uid-ignored",
            _W,
            "a vassal's `uid`/`gid` under an emperor that dropped privileges: it cannot switch users",
            "remove it (the emperor's `--uid` decides), or run that vassal under a root emperor",
        ),
        Rule("B001", "boot-cursed", _E, "the vassal died during start-up", "see uWSGI's own lines below"),
        Rule(
            "B002",
            "boot-no-app",
            _E,
            "the vassal started but loaded no app",
            "fix the import error below; add `need-app`",
        ),
        Rule("B003", "boot-probe-status", _E, "the probe request got an unexpected status", "see the app's log"),
        Rule("B004", "boot-timeout", _E, "the vassal was not ready in time", "see the log lines below"),
        Rule("X001", "unreadable", _E, "the file cannot be read or checked", "check the path"),
        Rule(
            "X002",
            "internal-error",
            _E,
            "the checker itself failed (exit 2): the verdict is unknown",
            "report it with this message; `--static` still runs the static rules",
        ),
    ]
}


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


@dataclass(frozen=True)
class AppConfig:
    """Everything the pure rules need about one app's ini file, gathered by the caller."""

    path: str
    name: str
    ini: IniFile
    resolution: Resolution
    raw_text: str
    known_options: frozenset[str] | None = None  # from the binary; None skips the unknown-option rules
    python_embedded: bool = False
    socket_dir: str = DEFAULT_SOCKET_DIR
    world_writable_dirs: frozenset[str] = field(default_factory=frozenset)


SOCKET_KEYS = tuple(SOCKET_OPTIONS)
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
)  # fmt: skip
REQUIRES_VALUE = frozenset(
    {*PATH_KEYS, "wsgi", "processes", "workers", "threads", "uid", "gid", "callable", "pidfile", "plugin"}
)
_INLINE_COMMENT = re.compile(r"[ \t][#;]")
_PLACEHOLDER = re.compile(r"%\(([^()]*)\)")
_BLANKS = " \t\r"
_TRUE_FALSE = re.compile(r"(?i)^(false|0.*|off|no)$")


def _atoi(text: str) -> int:
    m = re.match(r"[ \t\n\v\f\r]*([+-]?\d+)", text)
    return int(m.group(1)) if m else 0


def where(app: AppConfig, file: str) -> str:
    """The path a finding about ``file`` names: the checked file itself, or the included file's path."""
    return file or app.path


def section_line(app: AppConfig) -> int:
    """Where file-level findings point: the `[uwsgi]` header (a suppression comment goes above it)."""
    for number, line in enumerate(app.raw_text.splitlines(), 1):
        if line.strip(" \t\r") == f"[{app.ini.section}]":
            return number
    return 1


def _flag_on(app: AppConfig, key: str) -> bool:
    value = app.resolution.last(key)
    return value is not None and not _TRUE_FALSE.match(value)


def _referenced_names(app: AppConfig) -> set[str]:
    """Every name used as `%(name)` (or inside `%(a + b)` math) anywhere in the file."""
    names: set[str] = set()
    for option in app.ini.options:
        for inner in _PLACEHOLDER.findall(option.value):
            names.update(t for t in inner.split(" ") if t)
    return names


def _syntax(app: AppConfig) -> Iterable[Finding]:
    for problem in app.ini.problems:
        if problem.code == "no-section":
            yield finding("E001", where(app, problem.file), problem.line, problem.message)
        elif problem.code == "empty-key":
            yield finding("E002", where(app, problem.file), problem.line, problem.message)
        elif problem.code == "magic-newline":
            raw = app.ini.texts.get(problem.file, app.raw_text).splitlines()
            swallowed = raw[problem.line].strip() if problem.line < len(raw) else ""
            message = f"line {problem.line + 1} `{swallowed}` is lost"
            yield finding("E102", where(app, problem.file), problem.line, message)
        elif problem.code == "magic-unknown":
            yield finding("W103", where(app, problem.file), problem.line, problem.message)
        elif problem.code == "fatal":
            yield finding("E003", where(app, problem.file), problem.line, problem.message)
        elif problem.code == "open-logic":
            yield finding("E004", where(app, problem.file), problem.line, problem.message)
        elif problem.code == "not-followed":
            yield finding("W005", where(app, problem.file), problem.line, problem.message)
    for problem in app.resolution.problems:
        yield finding("E105", where(app, problem.file), problem.line, problem.message)


def _values(app: AppConfig) -> Iterable[Finding]:
    defined = {o.key for o in app.resolution.options}
    seen: dict[str, int] = {}
    for option in app.ini.options:
        key, value = option.key, option.value
        if _INLINE_COMMENT.search(value):
            f = finding("W101", where(app, option.file), option.line, f"`{key}` is {value!r}")
            yield replace(f, severity=Severity.ERROR) if key in PATH_KEYS else f
        if key in REQUIRES_VALUE and value == "":
            yield finding("E104", where(app, option.file), option.line, f"`{key}` is empty")
        if key in SCALAR_KEYS:
            if key in seen:
                message = f"`{key}` (first on line {seen[key]}); this one wins"
                yield finding("W106", where(app, option.file), option.line, message)
            seen.setdefault(key, option.line)
    for resolved in app.resolution.options:
        if resolved.immediate or resolved.synthetic:
            continue
        for name in _PLACEHOLDER.findall(resolved.value):
            if " " in name or not name:
                continue
            why = (
                "defined, but uWSGI does not expand a reference that another one put at the start of the value"
                if name in defined
                else "never defined"
            )
            yield finding("E105", where(app, resolved.file), resolved.line, f"`%({name})` in `{resolved.key}`: {why}")


def _unknown(app: AppConfig) -> Iterable[Finding]:
    if app.known_options is None:
        return
    referenced = _referenced_names(app)
    strict = any(o.key == "strict" for o in app.ini.options)
    reported: set[str] = set()
    for option in app.ini.options:
        key = option.key
        if not key or key in app.known_options or key in reported:
            continue
        reported.add(key)
        if key in referenced:
            yield finding("E203" if strict else "I202", where(app, option.file), option.line, f"`{key}`")
            continue
        guess = difflib.get_close_matches(key, sorted(app.known_options), n=1, cutoff=0.75)
        message = f"`{key}`" + (f"; did you mean `{guess[0]}`?" if guess else "")
        yield finding("E201", where(app, option.file), option.line, message)


def _deployment(app: AppConfig) -> Iterable[Finding]:
    header = section_line(app)
    sockets = [o for o in app.resolution.options if o.key in SOCKET_KEYS and not o.synthetic]
    expected = routed_socket(app.name, app.socket_dir)
    routed = [s for s in sockets if s.value == expected]
    if not sockets:
        yield finding("E301", app.path, header)
    # Extra sockets (a stats or admin one) are fine when one of them is the routed one: only the candidates for
    # "the socket the router reaches" are judged on name and path.
    for sock in routed or sockets[:1]:
        raw = app.ini.texts.get(sock.file, app.raw_text).splitlines()
        source = raw[sock.line - 1] if 0 < sock.line <= len(raw) else ""
        at = where(app, sock.file)
        if "%n" not in source and "%N" not in source:
            yield finding("W302", at, sock.line, f"`{sock.key} = {sock.value}`")
        if sock.value != expected:
            yield finding("W303", at, sock.line, f"`{sock.value}` for name `{app.name}` (want `{expected}`)")
        protocol = app.resolution.last("protocol") or ""
        if sock.key == "http-socket" or (protocol.strip() == "http" and sock.key != "uwsgi-socket"):
            spoken = "`http-socket`" if sock.key == "http-socket" else "`protocol = http`"
            yield finding("E308", at, sock.line, f"{spoken} on `{sock.value}`")
    for sock in sockets:
        directory = sock.value.rpartition("/")[0] or "/"
        mode_option = next((app.ini.last_option(k) for k in ("chmod-socket", "chmod") if app.ini.lines_of(k)), None)
        mode = app.resolution.last(mode_option.key) if mode_option else None
        # The routed socket is exempt: the router looks in the socket dir (/tmp by convention), and nginx's worker
        # runs as another user, so it needs 666 there (the production deployment's own reason for `chmod-socket = 666`).
        if sock.value == expected or mode_option is None or mode is None:
            continue
        if directory in app.world_writable_dirs:
            # core/socket.c: a bare `chmod-socket` means 666
            bits = int(mode, 8) if re.fullmatch(r"[0-7]{3,4}", mode) else (0o666 if mode == "" else 0)
            if bits & 0o002:
                message = f"`{mode_option.key} = {mode or '(666)'}` on `{sock.value}`"
                yield finding("W307", where(app, mode_option.file), mode_option.line, message)
    for key, code in (("http", "E304"), ("daemonize", "E305"), ("daemonize2", "E305")):
        for option in app.ini.options:
            if option.key == key:
                yield finding(code, where(app, option.file), option.line, f"`{key}`")
    mounts = sorted(
        (o for o in app.ini.options if o.key in ("wsgi-file", "file", "module", "wsgi") and o.value),
        key=lambda o: (o.file, o.line),
    )
    kinds = {o.key in ("module", "wsgi") for o in mounts}
    if len(kinds) == 2:
        is_module = mounts[0].key in ("module", "wsgi")
        first, second = mounts[0], next(o for o in mounts if (o.key in ("module", "wsgi")) != is_module)
        message = f"`{first.key} = {first.value}` and `{second.key} = {second.value}`"
        yield finding("E309", where(app, second.file), second.line, message)


_NUMERIC = {
    **dict.fromkeys(("buffer-size", "post-buffering", "limit-post", "listen", "max-requests"), "a size or count"),
    **dict.fromkeys(("processes", "workers", "threads", "cheaper"), "a count"),
    **dict.fromkeys(
        ("harakiri", "socket-timeout", "reload-mercy", "worker-reload-mercy", "max-worker-lifetime", "mule-harakiri"),
        "seconds",
    ),
    **dict.fromkeys(("limit-as", "reload-on-rss", "evil-reload-on-rss"), "megabytes"),
}
_ENV_REF = re.compile(r"\$\(([^()]*)\)")


def _numbers_and_env(app: AppConfig) -> Iterable[Finding]:
    """Values uWSGI reads differently from how they look: units, and `$(VAR)` set by a later `env =`."""
    for option in app.ini.options:
        unit = _NUMERIC.get(option.key)
        value = app.resolution.last(option.key) if option is app.ini.last_option(option.key) else option.value
        if not unit or not value or _INLINE_COMMENT.search(value):  # an inline comment is W101's
            continue
        if not re.fullmatch(r"\d+", value.strip(_BLANKS)) and _atoi(value) > 0:
            message = f"`{option.key} = {value}` is {_atoi(value)} ({unit}): uWSGI 2.0 reads leading digits only"
            f = finding("W107", where(app, option.file), option.line, message)
            # below its 4096 default, buffer-size rejects ordinary requests: measured, `32k` (32 bytes) makes
            # uWSGI reset every connection nginx sends (tests/check_corpus/size-with-unit)
            small_buffer = option.key == "buffer-size" and _atoi(value) < 4096
            yield replace(f, severity=Severity.ERROR) if small_buffer else f
    set_by_env: dict[str, IniOption] = {}
    for option in app.ini.options:
        if option.key == "env" and "=" in option.value:
            set_by_env.setdefault(option.value.partition("=")[0], option)
    for resolved in app.resolution.options:
        if resolved.immediate or resolved.synthetic:
            continue
        for name in _ENV_REF.findall(resolved.raw):
            setter = set_by_env.get(name)
            if setter is not None:
                message = f"`$({name})` in `{resolved.key}`: `env = {setter.value}` (line {setter.line}) sets it later"
                yield finding("W108", where(app, resolved.file), resolved.line, message)


def _robustness(app: AppConfig) -> Iterable[Finding]:
    header = section_line(app)
    if not _flag_on(app, "vacuum"):
        yield finding("W401", app.path, header)
    if not _flag_on(app, "need-app"):
        yield finding("W402", app.path, header)
    for key in ("processes", "workers"):
        value = app.resolution.last(key)
        if value is not None and value != "" and _atoi(value) <= 0:
            yield finding("E403", app.path, app.ini.lines_of(key)[-1], f"`{key} = {value}` reads as {_atoi(value)}")


def _plugins(app: AppConfig) -> Iterable[Finding]:
    if not app.python_embedded:
        return
    for key, code in (("plugin", "W506"), ("plugins", "W506"), ("need-plugin", "E507"), ("need-plugins", "E507")):
        for option in app.ini.options:
            if option.key == key and any(p.strip().startswith("python") for p in option.value.split(",")):
                yield finding(code, where(app, option.file), option.line, f"`{key} = {option.value}`")


def check_app(app: AppConfig) -> list[Finding]:
    """Every static, file-system-free finding for one app."""
    findings: list[Finding] = []
    for rule_group in (_syntax, _values, _numbers_and_env, _unknown, _deployment, _robustness, _plugins):
        findings.extend(rule_group(app))
    return findings


def check_apps(apps: Sequence[AppConfig]) -> list[Finding]:
    """:func:`check_app` for each app, plus the cross-app rules (socket collisions)."""
    findings = [f for app in apps for f in check_app(app)]
    owners: dict[str, tuple[AppConfig, int]] = {}
    for app in apps:
        for option in app.resolution.options:
            if option.key not in SOCKET_KEYS or option.synthetic:
                continue
            first = owners.setdefault(option.value, (app, option.line))
            if first[0] is not app:
                message = f"`{option.value}` is also bound by {first[0].path}:{first[1]} ({first[0].name})"
                findings.append(finding("E306", where(app, option.file), option.line, message))
    return findings


_SUPPRESS = re.compile(r"^\s*[;#]\s*emperor-dev:\s*ignore\[([A-Za-z0-9_, -]+)\]\s*$")


def apply_suppressions(findings: Iterable[Finding], raw_texts: dict[str, str]) -> list[Finding]:
    """Drop findings suppressed by ``; emperor-dev: ignore[CODE, ...]`` comment lines directly above their line.

    The comment must be a line of its own: uWSGI has no inline comments, so a trailing one would become part of
    the value. Several such lines may be stacked; a comment above the ``[uwsgi]`` header covers file-level
    findings (e.g. W402), which point at the header.
    """
    kept: list[Finding] = []
    for f in findings:
        lines = raw_texts.get(f.path, "").splitlines()
        codes: set[str] = set()
        index = f.line - 2
        while 0 <= index < len(lines):
            m = _SUPPRESS.match(lines[index])
            if not m:
                break
            codes.update(c.strip().upper() for c in m.group(1).split(","))
            index -= 1
        if f.code not in codes:
            kept.append(f)
    return kept


def filter_codes(findings: Iterable[Finding], select: Sequence[str], ignore: Sequence[str]) -> list[Finding]:
    """``--select``/``--ignore``: codes or prefixes (``W4`` ignores W401 and W402)."""
    return [
        f
        for f in findings
        if (not select or f.code.startswith(tuple(select))) and not (ignore and f.code.startswith(tuple(ignore)))
    ]
