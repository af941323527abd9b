"""A sans-IO reader of uWSGI ini files that follows uWSGI 2.0's own parsing rules exactly.

uWSGI does not parse ini files the way :mod:`configparser` does, and the differences are the traps this room
exists to predict (each rule names the uWSGI 2.0 source it mirrors):

1. Magic ``%x`` substitution runs over the *whole raw text* before any line is looked at (:mod:`.magic`).
2. Lines split at ``\\n`` only; blanks are ``' '``, ``'\\t'`` and ``'\\r'`` (core/ini.c ``ini_lstrip`` /
   ``ini_rstrip``). A line whose first non-blank character is ``;`` or ``#`` is a comment; there is no
   inline comment and no quoting. ``[name]`` opens a section (the last character is dropped whatever it is).
   ``key = value`` splits at the first ``=``; a bare ``key`` has the value ``""`` (true for flags).
   Only options in the asked section (default ``uwsgi``) are kept; all of them, in order (repeatable options).
3. After every config is read, three passes run over all options: ``$(ENV)``, ``@(...)``, ``%(name)``
   (:mod:`.passes`, :meth:`IniFile.resolve`).
4. Other files and config logic (core/config.c ``add_exported_option_do``, core/uwsgi.c ``uwsgi_opt_load``,
   ``uwsgi_opt_logic``, core/ini.c ``uwsgi_ini_config``), followed by :func:`read_config` when it is given a
   :class:`~.source.ConfigSource`: ``include`` and ``ini`` load their file at once, where the line stands (relative
   paths against the vassal's cwd, magic variables refilled for that file, upper-case ones kept from the
   first); ``inherit`` is applied after the three passes, so its options are appended at the end and never
   expanded; ``file:section`` / ``:section`` pick a section (``:section`` re-reads the *last file read*) and set
   ``%x``. ``if-*`` and ``for`` blocks are :mod:`.logic`'s. A logic option inside a *true* block is fatal
   ("recursive logic"), inside a false one it is dropped. docs/uwsgi-behaviour.md ``## Config reader``
   lists how each was checked against uWSGI 2.0.31.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from pytest_emperor.ini.logic import END_LOGIC, LOGIC, block_values
from pytest_emperor.ini.magic import PER_FILE, MagicVars, magic_sub
from pytest_emperor.ini.options import (
    EMPTY_KEY,
    FATAL,
    MISSING_FILE,
    NO_SECTION,
    NOT_FOLLOWED,
    OPEN_LOGIC,
    IniOption,
    IniProblem,
    OptionQueries,
    Resolution,
)
from pytest_emperor.ini.passes import AtResolver, resolve
from pytest_emperor.ini.source import ConfigSource
from pytest_emperor.ini.values import BLANKS, references

__all__ = ["IniFile", "parse_ini", "read_config"]

# Options that load another config file: `include`/`ini` at once, `inherit` after the passes.
_LOADERS = frozenset({"ini", "yaml", "yml", "json", "js", "xml", "xmlconfig", "config", "include", "inherit"})
# The endings `include` loads with another reader (core/uwsgi.c uwsgi_opt_load_config, by build): not followed.
_OTHER_FORMATS = (".yml", ".yaml", ".json", ".js", ".xml")
# uWSGI has no include-loop guard (it recurses until the stack or the fd table runs out).
_MAX_DEPTH = 32


@dataclass
class IniFile(OptionQueries[IniOption]):
    """The options of one section of an ini file, read the way uWSGI reads them (before the passes)."""

    options: list[IniOption]
    section: str
    sections: list[str]
    problems: list[IniProblem]
    magic: MagicVars | None = None
    texts: dict[str, str] = field(default_factory=dict)  # raw text of every file read, "" = the top-level one

    def resolve(
        self, *, env: Mapping[str, str], at_resolver: AtResolver | None = None, extra: Sequence[str] = ()
    ) -> Resolution:
        """Run uWSGI's ``$(ENV)``, ``@(...)``, ``%(name)`` passes over every option (:func:`.passes.resolve`)."""
        config_arg = self.magic.table.get("o") if self.magic is not None else None
        return resolve(self.options, config_arg=config_arg, env=env, at_resolver=at_resolver, extra=extra)

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
            # a name, or the names of a math pipeline (`%(a + 1)`)
            for name in (t for ref in references(text, "%") for t in ref.split(" ") if t):
                if name not in seen:
                    seen.add(name)
                    pending.extend(self.all(name))
        return False

    def expand(self, value: str, *, env: Mapping[str, str], at_resolver: AtResolver | None = None) -> str:
        """``value`` as uWSGI would expand it were it one more option at the end of this file."""
        options = self.resolve(env=env, at_resolver=at_resolver, extra=(value,)).options
        return [o for o in options if o.key == "" and o.synthetic][-1].value


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
                for letter in PER_FILE:
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
        subbed, origin, problems = magic_sub(text, self.table)
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
            stripped = raw.strip(BLANKS)
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
            key = key.rstrip(BLANKS)
            value = value.strip(BLANKS) if eq else ""
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
            if key in END_LOGIC:
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
        elif key in LOGIC:
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
        """Add ``key`` once for each copy the open block lets through (:func:`.logic.block_values`)."""
        assert self.logic is not None and self.source is not None
        values, not_evaluated = block_values(self.logic[0], self.logic[1], self.source, self.options)
        if not_evaluated is not None:
            self.problem(line, NOT_FOLLOWED, not_evaluated, file)
        for with_ in values:
            # uwsgi_substitute(value, "%(_)", NULL) leaves the value as it is
            self.add(key, value if with_ is None else value.replace("%(_)", with_), line, file, late)

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
