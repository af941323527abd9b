"""The rule catalogue: every code ``emperor-dev check`` reports, with its severity, what it means and the fix."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

__all__ = ["RULES", "Rule", "Severity"]


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
