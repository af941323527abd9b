"""A sans-IO reader of uWSGI ini files that follows uWSGI 2.0's own parsing rules exactly.

uWSGI does not parse ini files the way :mod:`configparser` does, and the differences are the traps this module
exists to predict (each rule below names the uWSGI 2.0 source it mirrors):

1. Magic ``%x`` substitution runs over the *whole raw text* before any line is looked at
   (core/utils.c ``magic_sub``, called from ``uwsgi_open_and_read`` by core/ini.c ``uwsgi_ini_config``).
   ``init_magic_table`` maps every byte to ``""`` except ``%%`` -> ``%`` and ``%(`` -> ``%(``, so an unknown
   ``%X`` deletes itself *and the next character*; a ``%`` at the end of a line eats the newline and joins the
   next line to it (which comments it out when the first line is a comment). A ``%`` as the very last byte of
   the file is deleted too: the buffer handed to ``magic_sub`` ends with the NUL ``uwsgi_open_and_read`` adds
   (found by the differential test against 2.0.31; 2.0's ``magic_sub`` then also reads past its buffer, so
   garbage may follow that value in uWSGI).
2. Lines split at ``\\n`` only; blanks are ``' '``, ``'\\t'`` and ``'\\r'`` (core/ini.c ``ini_lstrip`` /
   ``ini_rstrip``). A line whose first non-blank character is ``;`` or ``#`` is a comment; there is no
   inline comment and no quoting. ``[name]`` opens a section (the last character is dropped whatever it is).
   ``key = value`` splits at the first ``=``; a bare ``key`` has the value ``""`` (true for flags).
   Only options in the asked section (default ``uwsgi``) are kept; all of them, in order (repeatable options).
3. After every config is read, three passes run over all options in this order (core/uwsgi.c ``main``):
   ``$(ENV)`` (``getenv``; unset -> left literally), ``@(file)`` / ``@(exec://cmd)`` (``uwsgi_at_file_read``),
   ``%(name)`` (core/config.c ``uwsgi_manage_placeholder``: the *first* option of that name, forward
   references work, unknown -> left literally, ``%(a + 1)`` pipeline math). Each pass is core/config.c
   ``uwsgi_apply_config_pass``, reproduced character for character by :func:`_apply_pass` (including its
   quirk of re-scanning an expanded value from index 1, not 0). Options flagged ``UWSGI_OPT_IMMEDIATE``
   (``plugin``, ``ini``, ``set-placeholder`` ...) were already applied while parsing and are skipped by the
   passes (their ``configured`` flag is set in core/config.c ``add_exported_option_do``).

4. Other files and config logic (core/config.c ``add_exported_option_do``, core/uwsgi.c ``uwsgi_opt_load``,
   ``uwsgi_opt_logic``, core/ini.c ``uwsgi_ini_config``), followed by :func:`read_config` when it is given a
   :class:`ConfigSource`: ``include`` and ``ini`` load their file at once, where the line stands (relative
   paths against the vassal's cwd, magic variables refilled for that file, upper-case ones kept from the
   first); ``inherit`` is applied after the three passes, so its options are appended at the end and never
   expanded; ``file:section`` / ``:section`` pick a section (``:section`` re-reads the *last file read*) and set
   ``%x``. An ``if-*`` or ``for`` option switches every later option, of any file, to its test until an
   ``end``/``endif``/``endfor`` (the state is global: an ``if-*`` without ``endif`` makes the rest conditional);
   ``%(_)`` in those options is replaced by the tested value. A logic option inside a *true* block is fatal
   ("recursive logic"), inside a false one it is dropped. docs/uwsgi-behaviour.md ``## Config reader``
   lists how each was checked against uWSGI 2.0.31.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Callable, Protocol

__all__ = [
    "IMMEDIATE_OPTIONS",
    "SOCKET_OPTIONS",
    "ConfigSource",
    "IniFile",
    "IniOption",
    "IniProblem",
    "MagicVars",
    "Resolution",
    "ResolvedOption",
    "djb33x_hex",
    "parse_ini",
    "read_config",
]

AtResolver = Callable[[str], "str | None"]  # None: left literally (unknown to the caller)

#: Options that bind a vassal's main socket, with the protocol spoken on it (core/uwsgi.c options table). Not
#: ``s``: short options exist on the command line only (docs/uwsgi-behaviour.md, "The engine").
SOCKET_OPTIONS = {"socket": "uwsgi", "uwsgi-socket": "uwsgi", "http-socket": "http"}

# Blanks for ini_lstrip/ini_rstrip (core/ini.c): NOT str.strip()'s set (that one also eats \f, \v, Unicode).
_BLANKS = " \t\r"

# Options uWSGI 2.0 declares with UWSGI_OPT_IMMEDIATE (core/uwsgi.c uwsgi_base_options and the python plugin):
# they run while the file is parsed, so the $/@/% passes never touch their values.
IMMEDIATE_OPTIONS = frozenset(
    {
        "ini", "yaml", "yml", "json", "js", "xml", "xmlconfig", "config", "fallback-config", "include",
        "strict", "set", "set-placeholder", "set-ph", "declare-option", "declare-option2",
        "for", "for-glob", "for-times", "for-readline", "endfor", "end-for", "end",
        "if-opt", "if-not-opt", "if-env", "if-not-env", "ifenv", "if-reload", "if-not-reload",
        "if-exists", "if-not-exists", "ifexists", "if-plugin", "if-not-plugin", "ifplugin",
        "if-file", "if-not-file", "if-dir", "if-not-dir", "ifdir", "if-directory",
        "if-hostname", "if-not-hostname", "endif", "end-if", "else",
        "blacklist", "end-blacklist", "whitelist", "end-whitelist",
        "help", "usage", "print-sym", "print-symbol", "signal", "flock", "flock-wait", "flock2",
        "flock-wait2", "immediate-uid", "immediate-gid", "command-mode", "pcre-jit", "spooler-processes",
        "stop", "reload", "pause", "suspend", "resume", "connect-and-read", "extract", "umask",
        "plugin", "plugins", "need-plugin", "need-plugins", "plugins-dir", "plugin-dir",
        "plugins-list", "plugin-list", "autoload", "dlopen",
    }
)

# Options that load another config file: `include`/`ini` at once, `inherit` after the passes.
_LOADERS = frozenset({"ini", "yaml", "yml", "json", "js", "xml", "xmlconfig", "config", "include", "inherit"})
# core/uwsgi.c: the options handled by uwsgi_opt_logic, and the keys that end a block (add_exported_option_do).
_LOGIC = frozenset(
    {
        "for", "for-glob", "for-times", "for-readline", "if-opt", "if-not-opt", "if-env", "if-not-env", "ifenv",
        "if-reload", "if-not-reload", "if-hostname", "if-not-hostname", "if-hostname-match",
        "if-not-hostname-match", "if-exists", "if-not-exists", "ifexists", "if-plugin", "if-not-plugin",
        "ifplugin", "if-file", "if-not-file", "if-dir", "if-not-dir", "ifdir", "if-directory",
    }
)
_END_LOGIC = frozenset({"end", "endfor", "endif", "end-if", "end-for"})
# The endings `include` loads with another reader (core/uwsgi.c uwsgi_opt_load_config, by build): not followed.
_OTHER_FORMATS = (".yml", ".yaml", ".json", ".js", ".xml")
# uWSGI has no include-loop guard (it recurses until the stack or the fd table runs out).
_MAX_DEPTH = 32
# option -> whether the placeholder it adds is already "configured" (then the passes skip it)
_PLACEHOLDER_SETTERS = {"set": False, "set-placeholder": True, "set-ph": True}

# Bounds on one option's expansion before we call it a loop: uWSGI itself spins forever (or until memory runs
# out) on ``a = x%(a)`` or ``a = %(a)%(a)``, since core/config.c uwsgi_apply_config_pass re-scans every
# expanded value. 64 KiB is far above any sane option (uWSGI's own buffer-size default is 4 KiB).
_MAX_EXPANSIONS = 256
_MAX_VALUE = 65536


def djb33x_hex(data: bytes) -> str:
    """``%j``: core/hash.c ``djb33x_hash`` of the path, printed as the hex of its 4 bytes in memory order.

    ``key[i]`` is a (signed) ``char``, so bytes >= 0x80 are XORed sign-extended.
    """
    h = 5381
    for b in data:
        c = b if b < 0x80 else b | 0xFFFFFF00
        h = (((h << 5) + h) & 0xFFFFFFFF) ^ c
    return h.to_bytes(4, "little").hex().upper()


@dataclass(frozen=True)
class MagicVars:
    """The ``%x`` magic table uWSGI builds for one config file (core/uwsgi.c ``config_magic_table_fill``).

    Letters missing from ``table`` expand to ``""`` like every unset entry of uWSGI's table.
    """

    table: Mapping[str, str]

    @classmethod
    def for_config(
        cls,
        config_arg: str,
        *,
        cwd: str,
        is_symlink: bool,
        realpath: str,
        inode: int = 0,
        cpu_count: int = 1,
        hostname: str = "",
        version: str = "",
        binary_path: str = "",
        uid: int | None = None,
        gid: int | None = None,
        user: str = "",
        group: str = "",
        first: bool = True,
    ) -> MagicVars:
        """The table for ``config_arg`` as passed on argv (relative to ``cwd``), e.g. a vassal symlink.

        ``%p`` is ``cwd + "/" + config_arg`` when the file is a symlink (the link path, not resolved) and
        ``realpath`` otherwise. ``first`` also fills the upper-case "first config" copies (``%P %N ...``),
        which only the first ``--ini``/``--yaml``... file sets (``--include``/``--inherit`` do not).
        The time-dependent ``%t``/``%T`` are left out: nothing can predict them.
        """
        t: dict[str, str] = {"o": config_arg, "v": cwd, "k": str(cpu_count), "[": "\x1b"}
        for letter, value in (("h", hostname), ("V", version), ("b", binary_path), ("U", user), ("G", group)):
            if value:
                t[letter] = value
        if uid is not None:
            t["u"] = str(uid)
        if gid is not None:
            t["g"] = str(gid)
        # uwsgi_check_scheme(filename) || "-": only %o is set (config from stdin, http://, exec:// ...)
        if config_arg == "-" or re.match(r"^[a-z0-9]+://", config_arg):
            return cls(t)
        if is_symlink:
            path = config_arg if config_arg.startswith("/") else f"{cwd}/{config_arg}"
        else:
            path = realpath or config_arg
        name = path[path.rfind("/") + 1 :]
        directory = path[: len(path) - len(name)]
        t.update(p=path, s=name, d=directory)
        trimmed = directory[:-1] if directory.endswith("/") else directory
        if "/" in trimmed:
            t["c"] = trimmed[trimmed.rfind("/") + 1 :]
        # %0..%9: strtok(%d, "/"), so empty components are skipped.
        for index, part in enumerate([p for p in directory.split("/") if p][:10]):
            t[str(index)] = part
        # %e and %n come from %s (measured on 2.0.31: `--ini conf.d/app` gives %n = app, %e = "")
        if "." in name:
            t["e"] = name[name.rfind(".") + 1 :]
        t["n"] = name[: name.rfind(".")] if "." in name else name
        t["i"] = str(inode)
        t["j"] = djb33x_hex(path.encode("utf-8", "surrogateescape"))
        if first:
            for letter in "pdsnecoij":
                if letter in t:
                    t[letter.upper()] = t[letter]
        return cls(t)


@dataclass(frozen=True)
class IniOption:
    """One option as uWSGI adds it: value after magic substitution (and ``%(_)`` of a logic block), line in
    ``file`` (``""``: the top-level file; else the included file's real path). ``late`` options come from an
    ``inherit``: uWSGI appends them after the ``$``/``@``/``%`` passes, so they stay unexpanded."""

    key: str
    value: str
    line: int
    file: str = ""
    late: bool = False


@dataclass(frozen=True)
class IniProblem:
    """Something in the file that uWSGI reads differently from how it looks (``line`` is 1-based)."""

    line: int
    code: str
    message: str
    file: str = ""


@dataclass(frozen=True)
class ResolvedOption:
    """An option after the ``$``/``@``/``%`` passes; ``synthetic`` for ones created by ``set``/``set-ph``."""

    key: str
    value: str
    line: int
    raw: str
    immediate: bool
    synthetic: bool = False
    file: str = ""


@dataclass(frozen=True)
class Resolution:
    """All options after uWSGI's three passes, in uWSGI's order, and what went wrong resolving them."""

    options: tuple[ResolvedOption, ...]
    problems: tuple[IniProblem, ...]

    def first(self, key: str) -> str | None:
        """What ``%(key)`` and ``uwsgi --get key`` see: the first occurrence."""
        return next((o.value for o in self.options if o.key == key), None)

    def last(self, key: str) -> str | None:
        """What a scalar option ends up as: ``uwsgi_configure`` applies every occurrence in order."""
        return next((o.value for o in reversed(self.options) if o.key == key), None)


# Problem codes emitted by the reader (the checker maps them to rule codes).
MAGIC_UNKNOWN = "magic-unknown"
MAGIC_NEWLINE = "magic-newline"
NO_SECTION = "no-section"
EMPTY_KEY = "empty-key"
NOT_FOLLOWED = "not-followed"
EXPANSION_LOOP = "expansion-loop"
OPEN_LOGIC = "open-logic"  # an if-*/for block still open at the end: every later option was conditional
FATAL = "fatal"  # uWSGI exits while reading the config: nothing after this point is read
MISSING_FILE = "missing-file"  # FATAL because a file `include`/`ini`/`inherit` names is not there (or unreadable)


# Letters uWSGI always knows though their value is not predicted here: `%t`/`%T` (the time, core/uwsgi.c
# config_magic_table_fill) and `%0`-`%9` (the path's components; empty past its depth, not deleted by mistake).
_ALWAYS_MAGIC = frozenset("tT0123456789")


def _magic_sub(text: str, table: Mapping[str, str]) -> tuple[str, list[int], list[IniProblem]]:
    """core/utils.c ``magic_sub`` plus, for each output char, the original line it came from."""
    text += "\0"  # the terminator uwsgi_open_and_read appends, which magic_sub sees (and a last `%` eats)
    out: list[str] = []
    lines: list[int] = []
    problems: list[IniProblem] = []
    line = 1
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == "%" and i + 1 < n:
            nxt = text[i + 1]
            if nxt == "%":
                value = "%"
            elif nxt == "(":
                value = "%("
            else:
                value = table.get(nxt, "")
                if nxt == "\0":
                    problems.append(IniProblem(line, MAGIC_UNKNOWN, "a '%' ending the file is deleted"))
                elif nxt == "\n":
                    problems.append(
                        IniProblem(
                            line,
                            MAGIC_NEWLINE,
                            f"'%' ending line {line} deletes the newline: line {line + 1} is joined to it",
                        )
                    )
                elif nxt not in table and nxt not in _ALWAYS_MAGIC:
                    problems.append(
                        IniProblem(
                            line,
                            MAGIC_UNKNOWN,
                            f"{('%' + nxt)!r} is no magic variable: uWSGI deletes it and the char after it",
                        )
                    )
            out.append(value)
            lines.extend([line] * len(value))
            if nxt == "\n":
                line += 1
            i += 2
            continue
        out.append(ch)
        lines.append(line)
        if ch == "\n":
            line += 1
        i += 1
    if out and out[-1] == "\0":
        out.pop()
        lines.pop()
    return "".join(out), lines, problems


@dataclass
class IniFile:
    """The options of one section of an ini file, read the way uWSGI reads them."""

    options: list[IniOption]
    section: str
    sections: list[str]
    problems: list[IniProblem]
    magic: MagicVars | None = None
    texts: dict[str, str] = field(default_factory=dict)  # raw text of every file read, "" = the top-level one

    def get(self, key: str) -> str | None:
        """The value uWSGI applies for a scalar option: the last occurrence wins (before the passes)."""
        return next((o.value for o in reversed(self.options) if o.key == key), None)

    def get_all(self, key: str) -> list[str]:
        """Every value of a repeatable option, in file order (before the passes)."""
        return [o.value for o in self.options if o.key == key]

    def last_option(self, key: str) -> IniOption | None:
        """The occurrence of ``key`` uWSGI applies (the last one), with its file and line."""
        return next((o for o in reversed(self.options) if o.key == key), None)

    def lines_of(self, key: str) -> list[int]:
        """The original line numbers of every occurrence of ``key``."""
        return [o.line for o in self.options if o.key == key]

    def resolve(
        self, *, env: Mapping[str, str], at_resolver: AtResolver | None = None, extra: Sequence[str] = ()
    ) -> Resolution:
        """Run uWSGI's ``$(ENV)``, ``@(...)``, ``%(name)`` passes over every option, in uWSGI's order.

        ``extra`` values are appended as options named ``""`` after the file's own (as a later command-line
        option would be); :meth:`expand` uses that. ``at_resolver(spec)`` gets ``exec://cmd`` or a file path
        and returns its text with exactly one trailing ``\\n`` or ``\\r`` stripped (core/uwsgi.c
        ``uwsgi_at_file_read``); without one, ``@(...)`` is left literally.
        """
        items: list[_Item] = []
        if self.magic is not None and "o" in self.magic.table:
            # The `--ini <file>` that loaded us is itself an exported option, so `%(ini)` works.
            items.append(_Item("ini", self.magic.table["o"], 0, True, True))
        late: list[_Item] = []  # inherited: added after the passes, so they neither get nor give expansions
        for option in self.options:
            item = _Item(option.key, option.value, option.line, option.key in IMMEDIATE_OPTIONS, False, option.file)
            if option.late:
                late.append(item)
                continue
            items.append(item)
            placeholder_only = _PLACEHOLDER_SETTERS.get(option.key)
            if placeholder_only is not None and "=" in option.value:
                # core/config.c uwsgi_opt_set_placeholder: `set-placeholder` adds an already "configured"
                # option, which the passes skip: why `set-placeholder = x=@(exec://...)` is never expanded.
                name, _, value = option.value.partition("=")
                items.append(_Item(name, value, option.line, placeholder_only, True, option.file))
        items.extend(_Item("", value, 0, False, True) for value in extra)
        problems: list[IniProblem] = []
        _apply_pass(items, "$", env.get, problems)
        _apply_pass(items, "@", at_resolver, problems)
        first: dict[str, _Item] = {}  # uwsgi_manage_placeholder takes the first option of a name
        for item in items:
            first.setdefault(item.key, item)
        _apply_pass(items, "%", lambda key: _manage_placeholder(first, key), problems)
        items.extend(late)
        return Resolution(
            tuple(ResolvedOption(i.key, i.value, i.line, i.raw, i.immediate, i.synthetic, i.file) for i in items),
            tuple(problems),
        )

    def needs_at_resolver(self, value: str) -> bool:
        """Whether expanding ``value`` evaluates some ``@(...)``: in it, or in an option its ``%(name)``s reach.

        Lets a caller skip running ``@(exec://...)`` commands that the value never sees (the ``@`` pass runs over
        every option, but an unexpanded one only matters when ``%(name)`` pulls it in).
        """
        seen: set[str] = set()
        pending = [value]
        while pending:
            text = pending.pop()
            if "@(" in text:
                return True
            for name in _PLACEHOLDER_REF.findall(text):
                if name not in seen:
                    seen.add(name)
                    pending.extend(self.get_all(name))
        return False

    def expand(self, value: str, *, env: Mapping[str, str], at_resolver: AtResolver | None = None) -> str:
        """``value`` as uWSGI would expand it were it one more option at the end of this file."""
        options = self.resolve(env=env, at_resolver=at_resolver, extra=(value,)).options
        return [o for o in options if o.key == "" and o.synthetic][-1].value


_PLACEHOLDER_REF = re.compile(r"%\(([^)]*)\)")


@dataclass
class _Item:
    key: str
    value: str
    line: int
    immediate: bool
    synthetic: bool
    file: str = ""
    raw: str = ""

    def __post_init__(self) -> None:
        self.raw = self.value


def _manage_placeholder(first: Mapping[str, _Item], key: str) -> str | None:
    """core/config.c ``uwsgi_manage_placeholder``: a name, or a space-separated math pipeline; ``first`` maps
    each name to its first option (whose value the pass may have expanded already)."""

    def lookup(name: str) -> str | None:
        item = first.get(name)
        return item.value if item is not None else None

    if " " not in key:
        return lookup(key)
    current: str | None = None
    state = "concat"
    for token in (t for t in key.split(" ") if t):
        if token in ("+", "-", "*", "/"):
            state = token
            continue
        if token in ("++", "--"):
            if current is not None:
                current = str(_wrap64(_strtoll(current) + (1 if token == "++" else -1)))
            state = "concat"
            continue
        value = token if token.isascii() and token.isdigit() else (lookup(token) or "")
        if state == "concat":
            current = (current or "") + value
        else:
            a, b = (_strtoll(current) if current is not None else 0), _strtoll(value)
            if state == "+":
                r = a + b
            elif state == "-":
                r = a - b
            elif state == "*":
                r = a * b
            else:  # C integer division truncates toward zero; uWSGI turns x/0 into 0
                r = 0 if b == 0 else abs(a) // abs(b) * (1 if (a < 0) == (b < 0) else -1)
            current = str(_wrap64(r))
        state = "concat"
    return current


def _strtoll(text: str) -> int:
    """C ``strtoll(text, NULL, 10)``: leading blanks, optional sign, digits; 0 when there are none."""
    m = re.match(r"[ \t\n\v\f\r]*([+-]?[0-9]+)", text)
    if not m:
        return 0
    return max(-(2**63), min(2**63 - 1, int(m.group(1))))


def _wrap64(n: int) -> int:
    return (n + 2**63) % 2**64 - 2**63


def _apply_pass(
    items: list[_Item], symbol: str, hook: Callable[[str], str | None] | None, problems: list[IniProblem]
) -> None:
    """core/config.c ``uwsgi_apply_config_pass``, step for step (see the module docstring)."""
    if hook is None:
        return
    for item in items:
        if item.immediate:
            continue
        has_symbol = 0
        depth = 0
        start = -1
        expansions = 0
        j = 0
        while j < len(item.value):
            c = item.value[j]
            if c == symbol:
                has_symbol = 1
            elif c == "(" and has_symbol == 1:
                has_symbol, depth, start = 2, 0, j + 1
            elif has_symbol > 1:
                if c == "(":
                    has_symbol += 1
                    depth += 1
                elif c == ")":
                    if depth > 0:
                        has_symbol += 1
                        depth -= 1
                    elif has_symbol <= 2:
                        has_symbol = 0
                    else:
                        key = item.value[start : start + has_symbol - 2]
                        value = hook(key)
                        has_symbol = 0
                        if value is not None:
                            expansions += 1
                            if expansions > _MAX_EXPANSIONS or len(item.value) + len(value) > _MAX_VALUE:
                                problems.append(
                                    IniProblem(
                                        item.line,
                                        EXPANSION_LOOP,
                                        f"'{item.key}' keeps expanding {symbol}({key}): uWSGI would hang",
                                        item.file,
                                    )
                                )
                                break
                            # C strings: a NUL in the hook's result ends the value.
                            value = value.split("\0", 1)[0]
                            # the `symbol(` before the key and the `)` after it go too
                            item.value = item.value[: start - 2] + value + item.value[start + len(key) + 1 :]
                            j = 1  # `j = 0` then the loop's `j++`: index 0 is never looked at again
                            continue
                else:
                    has_symbol += 1
            else:
                has_symbol = 0
            j += 1


class ConfigSource(Protocol):
    """What reading other files and testing logic blocks asks of the machine (:mod:`.deploy_plan` answers).

    Paths are given as uWSGI gets them: relative ones are relative to the vassal's cwd.
    """

    def read(self, path: str) -> str:
        """The file's text; raises :class:`OSError` (uWSGI exits 1 then)."""

    def magic(self, path: str) -> MagicVars | None:
        """The lower-case magic letters for ``path`` (``first=False``); None when its realpath fails."""

    def real(self, path: str) -> str:
        """Where findings about ``path`` point (its real path)."""

    def getenv(self, name: str) -> str | None:
        """The vassal's environment variable ``name``."""

    def test(self, kind: str, path: str) -> bool:
        """``exists``, ``file`` or ``dir`` test of ``path``."""

    def glob(self, pattern: str) -> list[str]:
        """C ``glob(GLOB_MARK | GLOB_NOCHECK)``: matches (dirs with a ``/``), or the pattern itself."""

    def hostname(self) -> str:
        """This machine's host name (``if-hostname``)."""


# Letters config_magic_table_fill resets for every file it fills (the upper-case "first" ones stay).
_PER_FILE = "opdsnecxij0123456789b"


class _Loader:
    """core/config.c ``add_exported_option_do`` with the ini loader and logic blocks around it (module doc, 4)."""

    def __init__(
        self, source: ConfigSource | None, table: Mapping[str, str], main: str, stop_at_missing: bool = True
    ) -> None:
        self.source = source
        self.stop_at_missing = stop_at_missing
        self.table = dict(table)
        self.main = main
        self.last_file = main
        self.options: list[IniOption] = []
        self.problems: list[IniProblem] = []
        self.texts: dict[str, str] = {}
        self.sections: list[str] = []
        self.logic: tuple[str, str, int, str] | None = None  # option, its argument, where it stands
        self.running = False
        self.dead = False
        self.depth = 0
        self.inherits: list[IniOption] = []

    def problem(self, line: int, code: str, message: str, file: str) -> None:
        self.problems.append(IniProblem(line, code, message, file))

    def fatal(self, line: int, file: str, message: str, code: str = FATAL) -> None:
        self.problem(line, code, message, file)
        self.dead = code != MISSING_FILE or self.stop_at_missing

    # -- files ------------------------------------------------------------------------------------------------

    def load(self, spec: str, line: int, file: str, text: str | None = None) -> None:
        """core/ini.c ``uwsgi_ini_config`` for ``spec`` (``file``, ``file:section`` or ``:section``)."""
        colon = spec.rfind(":")
        path, section = (spec[:colon], spec[colon + 1 :] or "uwsgi") if colon >= 0 else (spec, "uwsgi")
        if text is None:
            if self.source is None:
                self.problem(line, NOT_FOLLOWED, f"'{spec}' is not read here: its options are not checked", file)
                return
            if self.depth >= _MAX_DEPTH:
                self.fatal(line, file, f"'{spec}': configs include each other in a loop; uWSGI never starts")
                return
            # %o is the spec without its `:section` (uwsgi_ini_config cuts the string %o points to)
            if colon == 0:  # `:section`: magic table reused (config_magic_table_fill `goto reuse`)
                path = self.last_file
            else:
                magic = self.source.magic(path)
                if magic is None:
                    message = f"'{path}': realpath() failed (relative to the vassal dir): exit 1"
                    self.fatal(line, file, message, MISSING_FILE)
                    return
                for letter in _PER_FILE:
                    self.table.pop(letter, None)
                self.table.update((k, v) for k, v in magic.table.items() if not k.isupper())
            self.table["o"] = spec[:colon] if colon >= 0 else spec
            self.table["x"] = spec[colon + 1 :] if colon >= 0 else ""
            try:
                text = self.source.read(path)
            except OSError as exc:
                where = "" if path.startswith("/") else " (relative to the vassal dir, not the app dir)"
                self.fatal(line, file, f"open('{path}'){where}: {exc.strerror or exc}: uWSGI exits 1", MISSING_FILE)
                return
            self.last_file = path
        key_file = "" if path == self.main else (self.source.real(path) if self.source else path)
        self.texts.setdefault(key_file, text)
        subbed, origin, problems = _magic_sub(text, self.table)
        self.problems.extend(IniProblem(p.line, p.code, p.message, key_file) for p in problems)
        self.depth += 1
        got_section = self._lines(subbed, origin, section, key_file)
        self.depth -= 1
        if not got_section and not self.dead:
            # only a warning for uWSGI ("Can't find section"): it goes on with nothing read from the file
            at_line, at_file = (1, "") if line == 0 else (line, file)
            self.problem(at_line, NO_SECTION, f"no option in a [{section}] section of '{path or spec}'", at_file)

    def _lines(self, subbed: str, origin: list[int], section: str, file: str) -> bool:
        current = ""
        got_section = False
        pos = 0
        while pos < len(subbed) and not self.dead:
            end = subbed.find("\n", pos)
            end = len(subbed) if end < 0 else end
            # C string: a NUL ends the line early; the line number is where its first character came from.
            raw = subbed[pos:end].split("\0", 1)[0]
            line_no = origin[pos] if pos < len(origin) else (origin[-1] if origin else 1)
            pos = end + 1
            stripped = raw.strip(_BLANKS)
            if not stripped:
                continue
            if stripped[0] == "[":
                current = stripped[1:-1]
                if file == "":
                    self.sections.append(current)
                continue
            if stripped[0] in ";#":
                continue
            key, eq, value = stripped.partition("=")
            if current != section:
                continue
            got_section = True
            key = key.rstrip(_BLANKS)
            value = value.strip(_BLANKS) if eq else ""
            if not key:
                self.problem(line_no, EMPTY_KEY, f"line has no option name: '{stripped}'", file)
            self.add(key, value, line_no, file)
        return got_section

    def not_an_ini(self, key: str, value: str, line: int, file: str) -> bool:
        """For ``include``/``inherit``, which pick their reader by the file name's ending (core/uwsgi.c
        ``uwsgi_opt_load``, ``uwsgi_opt_load_config``): True, with the problem said, unless it is an .ini file.
        Another format is not read here; no format at all is fatal for uWSGI."""
        if value.endswith(".ini"):
            return False
        if value.endswith(_OTHER_FORMATS):
            self.problem(line, NOT_FOLLOWED, f"'{key} = {value}' is not an .ini file: not read here", file)
        else:
            section = f"; `{key}` takes no `:section` (`ini = file:section` does)" if ":" in value else ""
            self.fatal(
                line,
                file,
                f"'{key} = {value}': uWSGI picks the reader by the file name's ending (.ini, .yml, .json ...) and has "
                f"none for this one: 'unable to load configuration from {value}', it exits 1{section}",
            )
        return True

    # -- options ----------------------------------------------------------------------------------------------

    def add(self, key: str, value: str, line: int, file: str, late: bool = False) -> None:
        """``add_exported_option``: through the open logic block, then the immediate handlers."""
        if self.dead:
            return
        if not self.running:
            if key in _END_LOGIC:
                self.logic = None
            if self.logic is not None:
                self.running = True
                try:
                    self._run_logic(key, value, line, file, late)
                finally:
                    self.running = False
                return
        option = IniOption(key, value, line, file, late)
        self.options.append(option)
        if key in ("include", "ini"):
            if key == "ini" or not self.not_an_ini(key, value, line, file):
                self.load(value, line, file)
        elif key == "inherit":
            self.inherits.append(option)
        elif key in _LOADERS:
            message = f"'{key} = {value}' is not read here: its options are not checked"
            self.problem(line, NOT_FOLLOWED, message, file)
        elif key in _LOGIC:
            if self.logic is not None:
                opened = self.logic
                self.fatal(
                    line,
                    file,
                    f"'{key}' inside the true `{opened[0]} = {opened[1]}` block (line {opened[2]}) that has no "
                    "`endif`/`endfor` yet: 'recursive logic in options is not supported', uWSGI exits 1",
                )
                return
            if self.source is None:
                self.problem(line, NOT_FOLLOWED, f"'{key}' is not evaluated here: values may differ", file)
                return
            self.logic = (key, value, line, file)

    def _run_logic(self, key: str, value: str, line: int, file: str, late: bool) -> None:
        """core/config.c ``uwsgi_logic_opt_*``: add ``key`` (with ``%(_)`` replaced) when the block says so."""
        assert self.logic is not None and self.source is not None
        kind, arg = self.logic[0], self.logic[1]

        def add(with_: str | None) -> None:
            # uwsgi_substitute(value, "%(_)", NULL) leaves the value as it is
            self.add(key, value if with_ is None else value.replace("%(_)", with_), line, file, late)

        if kind in ("if-env", "ifenv", "if-not-env", "if-opt", "if-not-opt"):
            name, eq, want = arg.partition("=")
            if kind.endswith("env"):
                got = self.source.getenv(name)
            else:
                got = next((o.value for o in self.options if o.key == name), None)
            matches = got is not None and (not eq or want == got)
            if kind.startswith("if-not"):
                if not matches:
                    add(got)
            elif matches:
                add(got)
        elif kind in ("if-exists", "ifexists", "if-not-exists", "if-file", "if-not-file"):
            if self.source.test("file" if "file" in kind else "exists", arg) != ("not" in kind):
                add(arg)
        elif kind in ("if-dir", "ifdir", "if-directory", "if-not-dir"):
            if self.source.test("dir", arg) != ("not" in kind):
                add(arg)
        elif kind in ("if-hostname", "if-not-hostname"):
            if (self.source.hostname() == arg) != ("not" in kind):
                add(arg)
        elif kind == "if-not-reload":  # a check boots the vassal for the first time
            add(None)
        elif kind == "for":
            for token in (t for t in arg.split(" ") if t):
                add(token)
        elif kind == "for-times":
            for n in range(1, min(_strtoll(arg), 10000) + 1):
                add(str(n))
        elif kind == "for-glob":
            for match in self.source.glob(arg):
                add(match)
        elif kind == "for-readline":
            try:
                lines = self.source.read(arg).splitlines()
            except OSError as exc:  # uWSGI logs the open() error and adds nothing (and reads a device for ever)
                self.problem(line, NOT_FOLLOWED, f"'for-readline = {arg}': {exc.strerror or exc}: no line added", file)
                return
            for text in lines:
                add(text)
        elif kind != "if-reload":  # if-plugin, if-hostname-match: depend on the build
            self.problem(line, NOT_FOLLOWED, f"'{kind} = {arg}' is not evaluated here: assumed true", file)
            add(arg)

    def finish(self) -> None:
        """core/uwsgi.c ``uwsgi_configure``: every ``inherit`` (in order, also those they add) after the passes."""
        done = 0
        while done < len(self.inherits) and not self.dead:
            option = self.inherits[done]
            done += 1
            if any(s in option.value for s in ("$(", "%(", "@(")):
                message = f"'inherit = {option.value}' is expanded first: not followed"
                self.problem(option.line, NOT_FOLLOWED, message, option.file)
                continue
            if self.not_an_ini("inherit", option.value, option.line, option.file):
                continue
            before = len(self.options)
            self.load(option.value, option.line, option.file)
            self.options[before:] = [IniOption(o.key, o.value, o.line, o.file, True) for o in self.options[before:]]


def read_config(
    text: str,
    *,
    magic: MagicVars | None = None,
    section: str = "uwsgi",
    source: ConfigSource | None = None,
    stop_at_missing: bool = True,
) -> IniFile:
    """Read ``text`` (the top-level ini file, opened as ``magic``'s ``%o``) the way uWSGI 2.0 does, section
    ``section``. With a ``source``, ``include``/``ini``/``inherit`` files are read and logic blocks evaluated
    through it; without one they are reported as ``not-followed`` and their options kept as written.
    ``stop_at_missing=False`` reads on past a missing included file (uWSGI exits there: a config checked for
    another host, which may have that file, is read to its end)."""
    table: Mapping[str, str] = magic.table if magic is not None else {}
    main = table.get("o", "")
    loader = _Loader(source, table, main, stop_at_missing)
    loader.table.setdefault("x", "")  # a known letter: "" unless the spec names a section
    loader.load(f"{main}:{section}" if section != "uwsgi" else main, 0, "", text=text)
    loader.finish()
    if loader.logic is not None and not loader.dead:
        kind, arg, line, file = loader.logic
        loader.problem(line, OPEN_LOGIC, f"`{kind} = {arg}` has no `endif`/`endfor`", file)
    problems = sorted(loader.problems, key=lambda p: (p.file != "", p.file, p.line))
    return IniFile(
        options=loader.options,
        section=section,
        sections=loader.sections,
        problems=problems,
        magic=magic,
        texts=loader.texts,
    )


def parse_ini(text: str, *, magic: MagicVars | None = None, section: str = "uwsgi") -> IniFile:
    """Read one ini file's text the way core/ini.c ``uwsgi_ini_config`` does, other files not followed."""
    return read_config(text, magic=magic, section=section)
