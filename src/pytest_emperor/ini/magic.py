"""Magic ``%x`` variables: the table uWSGI fills for each config file, and the substitution it runs over the raw text.

Magic ``%x`` substitution runs over the *whole raw text* before any line is looked at (core/utils.c ``magic_sub``,
called from ``uwsgi_open_and_read`` by core/ini.c ``uwsgi_ini_config``). ``init_magic_table`` maps every byte to
``""`` except ``%%`` -> ``%`` and ``%(`` -> ``%(``, so an unknown ``%X`` deletes itself *and the next character*; a
``%`` at the end of a line eats the newline and joins the next line to it (which comments it out when the first
line is a comment). A ``%`` as the very last byte of the file is deleted too: the buffer handed to ``magic_sub``
ends with the NUL ``uwsgi_open_and_read`` adds (found by the differential test against 2.0.31; 2.0's
``magic_sub`` then also reads past its buffer, so garbage may follow that value in uWSGI).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from pytest_emperor.ini.options import MAGIC_NEWLINE, MAGIC_UNKNOWN, IniProblem

__all__ = ["PER_FILE", "MagicVars", "djb33x_hex", "magic_sub"]

# Letters config_magic_table_fill resets for every file it fills (the upper-case "first" ones stay).
PER_FILE = "opdsnecxij0123456789b"


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


# Letters uWSGI always knows though their value is not predicted here: `%t`/`%T` (the time, core/uwsgi.c
# config_magic_table_fill) and `%0`-`%9` (the path's components; empty past its depth, not deleted by mistake).
_ALWAYS_MAGIC = frozenset("tT0123456789")


def magic_sub(text: str, table: Mapping[str, str]) -> tuple[str, list[int], list[IniProblem]]:
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

