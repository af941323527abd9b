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
from enum import Enum, IntEnum

from pytest_emperor.check.uwsgi_options import ALIASES, FLAGS, NUMERIC, OPTIONS, SIXTEEN_BIT, SOURCES, feature, lacks
from pytest_emperor.convention import DEFAULT_SOCKET_DIR, routed_socket
from pytest_emperor.ini import SOCKET_OPTIONS, IniFile, IniOption, Resolution

__all__ = [
    "RULES",
    "AppConfig",
    "Finding",
    "Kind",
    "Rule",
    "Severity",
    "apply_suppressions",
    "check_app",
    "check_apps",
    "filter_codes",
    "finding",
    "section_line",
]


class Kind(str, Enum):
    """What a config file is, which decides the rule set it gets (docs/check.md, "Which rules apply")."""

    CONVENTION = "convention vassal"  # app.uwsgi.ini, or declared: every rule
    UWSGI = "uWSGI config"  # any other: only the rules true of every uWSGI config
    EMPEROR = "emperor config"  # `emperor =`: not a vassal
    FRAGMENT = "vassals-include fragment"  # read into every vassal by an emperor: not a vassal on its own

    def __str__(self) -> str:
        return self.value


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
            "not an option of uWSGI 2.0 (core or any plugin) and never used as `%(placeholder)`",
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
            "I305",
            "vassal-daemonize",
            _I,
            "`daemonize` in a vassal: under an emperor uWSGI takes it as `logto` and stays in the foreground",
            "write `logto = <the same file>` to say what happens",
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
            "both `wsgi-file` and `module`: uWSGI loads `module` first, whatever the order, mounts it on `/` and "
            "skips the `wsgi-file` app with one log line",
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
            "I506",
            "plugin-on-monolithic",
            _I,
            "`plugin = python*` on this build, which embeds Python: it only warns at start",
            "keep it if production runs a distro uwsgi (apt's uwsgi-plugin-python3 needs `plugin = python3`); "
            "remove it if production's uwsgi embeds Python too (pip install uwsgi)",
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
        Rule(
            "I109",
            "env-unset-here",
            _I,
            "`$(VAR)` is not set here: uWSGI leaves it literally, so the options using it are not judged",
            "state production's environment (`--prod-env VAR=value`, `production-env` in [tool.emperor-dev.check])",
        ),
        Rule(
            "W109",
            "env-unset-in-production",
            _W,
            "`$(VAR)` is not set in production's stated environment: uWSGI leaves it literally",
            "add it to `production-env`, or set it in the vassal with a placeholder",
        ),
        Rule(
            "I110",
            "not-evaluated",
            _I,
            "a static check runs nothing from the config: this `@(...)` is unknown here, the options using it are "
            "not judged",
            "use a pure idiom (`@(exec://dirname $(realpath %P))`), or run `emperor-dev check --exec` on a trusted "
            "repo",
        ),
        Rule(
            "W111",
            "exec-failed",
            _W,
            "this `@(exec://...)` fails: uWSGI ignores the exit status and uses whatever it printed",
            "fix the command",
        ),
        Rule(
            "E112",
            "at-file-unreadable",
            _E,
            "this `@(file)` cannot be read: uWSGI exits 1 on a missing file and hangs on a FIFO or a device",
            "fix the path; `@(...)` reads a regular file relative to the vassal dir",
        ),
        Rule(
            "W113",
            "number-not-a-number",
            _W,
            "uWSGI reads this option as a number (atoi/strtoul): a word reads as 0",
            "write the number meant, e.g. `post-buffering = 8192` (0 turns the feature off)",
        ),
        Rule(
            "I114",
            "binary-lacks-option",
            _I,
            "an option of uWSGI that this uwsgi binary lacks (the build is the reason, not the config)",
            "state production's build (`production-features`), or check with the uwsgi production runs",
        ),
        Rule(
            "W116",
            "alarm-never-defined",
            _W,
            "an `alarm-*` option names an alarm no `alarm =` defines: with no alarm at all uWSGI ignores every "
            "alarm-* line, with others it exits 1 ('unable to find alarm')",
            "define it: `alarm = NAME plugin:args` (e.g. `alarm = mail cmd:mail -s alert ops@example.com`)",
        ),
        Rule(
            "E117",
            "cheaper-not-below-processes",
            _E,
            "`cheaper` is not below `processes`: uWSGI exits 1 ('invalid cheaper value: must be lower than processes')",
            "set `cheaper` below `processes`",
        ),
        Rule(
            "W118",
            "boolean-as-path",
            _W,
            "this option takes a file path, not a flag: uWSGI uses the word as a file name",
            "give the path, e.g. `daemonize = /var/log/uwsgi/app.log`",
        ),
        Rule(
            "W119",
            "cheaper-option-without-cheaper",
            _W,
            "a `cheaper-*` option without `cheaper = N`: uWSGI turns cheaper mode off (core/init.c), every process "
            "starts and this line does nothing",
            "add `cheaper = N` (below `processes`), or remove the line",
        ),
        Rule(
            "W120",
            "number-clamped",
            _W,
            "above the option's maximum: uWSGI 2.0 silently uses 65535 (a 16-bit number)",
            "write at most 65535",
        ),
        Rule(
            "W312",
            "app-mounted-twice",
            _W,
            "the same app is loaded twice: once as the main app and once by `mount` (in a sub-interpreter)",
            "keep one: `mount = /=app` alone, or `module`/`wsgi-file` alone",
        ),
        Rule(
            "E313",
            "socket-path-not-a-socket",
            _E,
            "something other than a socket is at this socket path: uWSGI deletes it to bind there",
            "pick a socket path where nothing else lives",
        ),
        Rule(
            "I315",
            "path-not-here",
            _I,
            "not on this machine (a path outside the repo, a user or group, an included file): only the production "
            "host can tell",
            "state production's facts (`--prod-path PATH`, `--prod-user NAME`, `production-paths`/`production-users` "
            "in [tool.emperor-dev.check]) to have it judged",
        ),
        Rule(
            "I316",
            "relative-path-not-judged",
            _I,
            "a relative path of a config run from an unknown directory: not judged here",
            "give an absolute `chdir` (or check it as a vassal of the convention)",
        ),
        Rule(
            "X003",
            "check-timeout",
            _E,
            "the check did not finish in time: the verdict is unknown",
            "look for a config that reads a device or a huge file; raise `--check-timeout` if the repo is big",
        ),
        Rule(
            "W605",
            "socket-wider-than-needed",
            _W,
            "a world-writable socket that nginx's worker reaches as its owner or group anyway",
            "`chmod-socket = 600` when nginx's worker is the owner (660 when it is in the group)",
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
    kind: Kind = Kind.CONVENTION
    features: frozenset[str] = field(default_factory=frozenset)  # production's stated build features/plugins


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
)
REQUIRES_VALUE = frozenset(
    {*PATH_KEYS, "wsgi", "processes", "workers", "threads", "uid", "gid", "callable", "pidfile", "plugin"}
)
# options whose `%(name)`s are request log variables, expanded per request (core/logging.c), not placeholders
REQUEST_VARIABLE_KEYS = frozenset(
    {"log-format", "logformat", "log-format-strftime", "log-encoder", "log-req-encoder", "logger-req", "req-logger"}
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
    split: dict[str, list[str]] = {}  # each file's lines, split once (a file may have thousands of problems)

    def lines_of(file: str) -> list[str]:
        if file not in split:
            split[file] = app.ini.texts.get(file, app.raw_text).splitlines()
        return split[file]

    for problem in app.ini.problems:
        if problem.code == "no-section":
            yield finding("E001", where(app, problem.file), problem.line, problem.message)
        elif problem.code == "empty-key":
            yield finding("E002", where(app, problem.file), problem.line, problem.message)
        elif problem.code == "magic-newline":
            raw = lines_of(problem.file)
            swallowed = raw[problem.line].strip() if problem.line < len(raw) else ""
            message = f"line {problem.line + 1} `{swallowed}` is lost"
            yield finding("E102", where(app, problem.file), problem.line, message)
        elif problem.code == "magic-unknown":
            raw = lines_of(problem.file)
            text = raw[problem.line - 1].lstrip(_BLANKS) if 0 < problem.line <= len(raw) else ""
            if not text.startswith((";", "#")):  # a comment's text is never used
                yield finding("W103", where(app, problem.file), problem.line, problem.message)
        elif problem.code == "missing-file" and app.kind is not Kind.CONVENTION:
            # a file a config run elsewhere includes: it may well be on the production host (relative to the
            # directory uWSGI starts in there)
            option = next((o for o in app.ini.options if o.line == problem.line and o.file == problem.file), None)
            named = f"`{option.key} = {option.value}`" if option else "an included file"
            yield finding("I315", where(app, problem.file), problem.line, f"{named}: not read here")
        elif problem.code in ("fatal", "missing-file"):
            yield finding("E003", where(app, problem.file), problem.line, problem.message)
        elif problem.code == "open-logic":
            yield finding("E004", where(app, problem.file), problem.line, problem.message)
        elif problem.code == "not-followed":
            yield finding("W005", where(app, problem.file), problem.line, problem.message)
    for problem in app.resolution.problems:
        yield finding("E105", where(app, problem.file), problem.line, problem.message)


def _serves(app: AppConfig) -> bool:
    """The config binds something (a socket, an HTTP router) or runs an emperor: not a fragment of another one."""
    return any(o.key.endswith("socket") or o.key in ("http", "https", "emperor") for o in app.ini.options)


_DUNDER = re.compile(r"__[A-Z][A-Z0-9_]*__")


def undetermined(value: str) -> bool:
    """A value the check could not compute: an ``@(...)`` not evaluated, a ``$(VAR)`` not set here, or a template
    (``${VAR:-x}``, ``{{ name }}``, ``__NAME__``) that a tool other than uWSGI fills in before deploying."""
    return "@(" in value or "$(" in value or "${" in value or "{{" in value or bool(_DUNDER.search(value))


def _values(app: AppConfig) -> Iterable[Finding]:
    defined = {o.key for o in app.resolution.options}
    elsewhere = app.kind is not Kind.CONVENTION and (not _serves(app) or _unread_includes(app))
    seen: dict[str, IniOption] = {}
    for option in app.ini.options:
        key, value = option.key, option.value
        # the value of an option uWSGI does not know matters not (E201 says so)
        known = app.known_options is None or key in app.known_options or key in OPTIONS
        if _INLINE_COMMENT.search(value) and known:
            f = finding("W101", where(app, option.file), option.line, f"`{key}` is {value!r}")
            before = _INLINE_COMMENT.split(value, 1)[0].strip(_BLANKS)
            # atoi stops at the blank, and a flag is on unless false/off/no/0: the comment changes nothing there
            number = key in NUMERIC and re.fullmatch(r"\d+", before)
            harmless = number or (key in FLAGS and not _TRUE_FALSE.match(before))
            if key in PATH_KEYS:
                f = replace(f, severity=Severity.ERROR)
            elif harmless and app.kind is not Kind.CONVENTION:
                f = replace(f, severity=Severity.INFO)
            yield f
        if key in REQUIRES_VALUE and value == "":
            yield finding("E104", where(app, option.file), option.line, f"`{key}` is empty")
        if key in SCALAR_KEYS:
            first = seen.setdefault(key, option)
            if first is not option and first.value.strip(_BLANKS) != value.strip(_BLANKS):
                message = f"`{key}` (first on line {first.line}); this one wins"
                yield finding("W106", where(app, option.file), option.line, message)
    yield from _aliases(app)
    for resolved in app.resolution.options:
        # log formats and encoders keep `%(host)`, `%(status)` ... literally: uWSGI fills them per request
        if resolved.immediate or resolved.synthetic or resolved.key in REQUEST_VARIABLE_KEYS:
            continue
        for name in _PLACEHOLDER.findall(resolved.value):
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


_SORTED_OPTIONS = sorted(OPTIONS)


def _unread_includes(app: AppConfig) -> bool:
    return any(p.code in ("not-followed", "fatal", "missing-file") for p in app.ini.problems)


def _unknown(app: AppConfig) -> Iterable[Finding]:
    if app.known_options is None:
        return
    referenced = _referenced_names(app)
    strict = any(o.key == "strict" and not _TRUE_FALSE.match(o.value) for o in app.ini.options)
    reported: set[str] = set()
    unread = app.kind is not Kind.CONVENTION and _unread_includes(app)
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


def _deployment(app: AppConfig) -> Iterable[Finding]:
    header = section_line(app)
    sockets = [o for o in app.resolution.options if o.key in SOCKET_KEYS and not o.synthetic]
    expected = routed_socket(app.name, app.socket_dir)
    routed = [s for s in sockets if s.value == expected]
    if not sockets:
        yield finding("E301", app.path, header)
    # Extra sockets (a stats or admin one) are fine when one of them is the routed one: only the candidates for
    # "the socket the router reaches" are judged on name and path.
    split: dict[str, list[str]] = {}
    protocol = app.resolution.last("protocol") or ""
    for sock in routed or sockets[:1]:
        if sock.file not in split:
            split[sock.file] = app.ini.texts.get(sock.file, app.raw_text).splitlines()
        raw = split[sock.file]
        source = raw[sock.line - 1] if 0 < sock.line <= len(raw) else ""
        at = where(app, sock.file)
        if "%n" not in source and "%N" not in source:
            yield finding("W302", at, sock.line, f"`{sock.key} = {sock.value}`")
        if sock.value != expected:
            yield finding("W303", at, sock.line, f"`{sock.value}` for name `{app.name}` (want `{expected}`)")
        if sock.key == "http-socket" or (protocol.strip() == "http" and sock.key != "uwsgi-socket"):
            spoken = "`http-socket`" if sock.key == "http-socket" else "`protocol = http`"
            yield finding("E308", at, sock.line, f"{spoken} on `{sock.value}`")
    mode_option = next((app.ini.option(k) for k in ("chmod-socket", "chmod") if app.ini.lines(k)), None)
    mode = app.resolution.last(mode_option.key) if mode_option else None
    for sock in sockets:
        directory = sock.value.rpartition("/")[0] or "/"
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
    for key, code in (("http", "E304"), ("daemonize", "I305"), ("daemonize2", "I305")):
        for option in app.ini.options:
            if option.key == key:
                yield finding(code, where(app, option.file), option.line, f"`{key} = {option.value}`")


_MODULE_KEYS = ("module", "wsgi")
_FILE_KEYS = ("wsgi-file", "file")


def _mounts(app: AppConfig) -> Iterable[Finding]:
    """E309 (`module` and `wsgi-file`: the python plugin loads `module` first, plugins/python/python_plugin.c
    init_apps) and W312 (the main app mounted again with `mount`)."""
    module = next((app.ini.option(k) for k in _MODULE_KEYS if app.ini.option(k)), None)
    file = next((app.ini.option(k) for k in _FILE_KEYS if app.ini.option(k)), None)
    if module is not None and file is not None and module.value and file.value:
        loaded = f"`{module.key} = {module.value}` (line {module.line})"
        message = f"`{file.key} = {file.value}` is skipped: {loaded} is loaded"
        f = finding("E309", where(app, file.file), file.line, message)
        dotted = module.value.partition(":")[0].strip().replace(".", "/") + ".py"
        chdir = (app.resolution.last("chdir") or "").rstrip("/")
        # with a `chdir` the module is found there (first on sys.path); without one, where uWSGI starts
        same = (
            file.value in (dotted, f"{chdir}/{dotted}")
            if chdir
            else file.value == dotted or file.value.endswith(f"/{dotted}")
        )
        if same:
            # the module is that very file: the app runs as meant, the wsgi-file line is only redundant
            f = replace(f, severity=Severity.INFO, message=f"{message} (the same file: the line is redundant)")
        yield f
    mains = {o.value.partition(":")[0].strip(): o for o in (module, file) if o is not None and o.value}
    if file is not None and file.value.endswith(".py"):
        # `mount = /x=name` imports `name`: the same code as a wsgi-file `name.py` in the app's directory
        folder, _, base = file.value.rpartition("/")
        chdir = (app.resolution.last("chdir") or "").rstrip("/")
        if not folder or folder.rstrip("/") == chdir:
            mains.setdefault(base[: -len(".py")], file)
    for option in app.ini.options:
        if option.key not in ("mount", "mount-app"):
            continue
        point, _, target = option.value.partition("=")
        mounted = target.partition(":")[0].strip()
        main = mains.get(mounted)
        if main is None and point.strip() in ("", "/") and mains:
            main = next(iter(mains.values()))  # a second app on the root, whatever its name
        if main is not None:
            message = f"`{option.key} = {option.value}` and `{main.key} = {main.value}` (line {main.line})"
            yield finding("W312", where(app, option.file), option.line, message)


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
    last = {o.key: o for o in app.ini.options}  # the occurrence uWSGI applies
    routers = {"http", "https"} & set(last)
    expanded = {o.key: o.value for o in app.resolution.options}  # the last value of each
    for option in app.ini.options:
        unit = _NUMERIC.get(option.key) or ("a number" if option.key in NUMERIC else None)
        value = expanded.get(option.key) if option is last[option.key] else option.value
        if not unit or not value or _INLINE_COMMENT.search(value):  # an inline comment is W101's
            continue
        counted = option.key in ("processes", "workers")  # E403 says what a count of 0 does
        if not re.fullmatch(r"[+-]?\d+", value.strip(_BLANKS)) and _atoi(value) <= 0 and not undetermined(value):
            if counted:
                continue
            message = f"`{option.key} = {value}` reads as {_atoi(value)}"
            f = finding("W113", where(app, option.file), option.line, message)
            if SOURCES.get(option.key) == "plugin:http" and not routers:
                # an option of the HTTP router, in a config that starts none: it does nothing either way
                f = replace(f, severity=Severity.INFO, message=f"{message} (no `http` router here: unused)")
            yield f
        # 65536 is how configs commonly write "the largest there is" (64 KiB): uWSGI's 65535 is one byte less, a
        # difference no request notices (judged on real configs, benchmarks/gate_corpus), so it is not warned of.
        elif option.key in SIXTEEN_BIT and _atoi(value) > 65536 and not undetermined(value):
            message = f"`{option.key} = {value}` is 65535"
            yield finding("W120", where(app, option.file), option.line, message)
        elif not re.fullmatch(r"\d+", value.strip(_BLANKS)) and _atoi(value) > 0:
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
    # core/uwsgi.c uwsgi_vacuum unlinks unix sockets and pidfiles only: nothing to clean after TCP sockets
    unix = any(o.key in SOCKET_KEYS and ":" not in o.value for o in app.resolution.options)
    if unix and not _flag_on(app, "vacuum"):
        yield finding("W401", app.path, header)
    if not _flag_on(app, "need-app"):
        yield finding("W402", app.path, header)


def _counts(app: AppConfig) -> Iterable[Finding]:
    for key in ("processes", "workers"):
        value = app.resolution.last(key)
        if value is not None and value != "" and _atoi(value) <= 0 and not undetermined(value):
            yield finding("E403", app.path, app.ini.lines(key)[-1], f"`{key} = {value}` reads as {_atoi(value)}")


def _plugins(app: AppConfig) -> Iterable[Finding]:
    if not app.python_embedded:
        return
    for key, code in (("plugin", "I506"), ("plugins", "I506"), ("need-plugin", "E507"), ("need-plugins", "E507")):
        for option in app.ini.options:
            if option.key == key and any(p.strip().startswith("python") for p in option.value.split(",")):
                f = finding(code, where(app, option.file), option.line, f"`{key} = {option.value}`")
                if code == "E507" and app.kind is not Kind.CONVENTION:
                    # this binary is not production's: a distro build (plugins) needs the line
                    f = replace(
                        f, severity=Severity.INFO, message=f"{f.message} (this uwsgi binary; a distro one needs it)"
                    )
                yield f


_ALARM_USERS = frozenset(
    {"alarm-backlog", "alarm-listen-queue", "alarm-log", "alarm-lq", "alarm-segfault", "backlog-alarm",
     "listen-queue-alarm", "log-alarm", "lq-alarm", "segfault-alarm", "not-alarm-log", "not-log-alarm"}
)
_PATH_OPTIONS = ("daemonize", "daemonize2", "logto", "logto2", "pidfile", "pidfile2", "safe-pidfile", "emperor")
_BOOLEAN_WORDS = re.compile(r"(?i)^(true|false|yes|no|on|off)$")


_OPTION_LINE = re.compile(r"^[ \t]*([A-Za-z0-9_.-]+)[ \t]*=[ \t]*(.*?)[ \t\r]*$")


def _every_line(app: AppConfig) -> Iterable[tuple[str, int, str, str]]:
    """(file, line, key, value) of every option line of every file read, in any `if-*` branch: production may
    take the branch this machine does not (its environment, its files)."""
    for file, text in app.ini.texts.items():
        for number, line in enumerate(text.splitlines(), 1):
            m = _OPTION_LINE.match(line)
            if m:
                yield file, number, m.group(1), m.group(2)


def _misc(app: AppConfig) -> Iterable[Finding]:
    """W116 (alarms, core/alarm.c uwsgi_alarms_init), E117 (core/init.c: cheaper >= processes exits), W118,
    W119 (core/init.c: without `cheaper`, cheaper mode is off)."""
    lines = list(_every_line(app))
    defined = {value.split(" ", 1)[0] for _, _, key, value in lines if key == "alarm" and value}
    for file, number, key, value in lines:
        if key in _ALARM_USERS and value and not undetermined(value) and "%" not in value:
            for name in value.split(" ", 1)[0].split(","):
                if name and name not in defined:
                    defined.add(name)  # said once, where it is first used
                    yield finding("W116", where(app, file), number, f"`{key} = {value}`: no alarm `{name}`")
    if "cheaper" not in {key for _, _, key, _ in lines}:
        for file, number, key, value in lines:
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
    if cheaper and processes and 0 < _atoi(cheaper) >= _atoi(processes):
        at = app.ini.option("cheaper")
        assert at is not None
        raw = " ".join(o.value for o in app.ini.options if o.key in ("cheaper", "processes", "workers"))
        message = f"`cheaper = {cheaper}`, `processes = {processes}`"
        f = finding("E117", where(app, at.file), at.line, message)
        if "%" in raw:  # computed from the machine (`%k` cores): true here, maybe not in production
            f = replace(f, severity=Severity.WARNING, message=f"{f.message} (computed on this machine)")
        yield f


_EVERY_CONFIG = (_syntax, _values, _numbers_and_env, _unknown, _counts, _mounts, _plugins, _misc)
#: the rule groups each kind of file gets (docs/check.md, "Which rules apply")
RULE_SETS = {
    Kind.CONVENTION: (*_EVERY_CONFIG, _deployment, _robustness),
    Kind.UWSGI: _EVERY_CONFIG,
    Kind.EMPEROR: (_syntax, _values, _numbers_and_env, _unknown, _misc),
    Kind.FRAGMENT: (_syntax, _numbers_and_env, _unknown),
}


def check_app(app: AppConfig) -> list[Finding]:
    """Every static, file-system-free finding for one app, by the rule set of its kind."""
    findings: list[Finding] = []
    for rule_group in RULE_SETS[app.kind]:
        findings.extend(rule_group(app))
    return findings


def check_apps(apps: Sequence[AppConfig]) -> list[Finding]:
    """:func:`check_app` for each app, plus the cross-app rules (socket collisions)."""
    findings = [f for app in apps for f in check_app(app)]
    owners: dict[str, tuple[AppConfig, int]] = {}
    # other configs in one repo are often alternatives (dev and prod), not apps deployed side by side
    for app in (a for a in apps if a.kind is Kind.CONVENTION):
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
    for line in text.splitlines():
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
