"""What ``emperor-dev check`` lets a config run: ``$(VAR)`` and ``@(...)`` as the checker evaluates them.

By default nothing from the config is executed: the pure idioms of ``@(exec://...)`` (``dirname``, ``basename``,
``realpath``, ``readlink -f``, ``pwd``, ``echo`` of literal words and of each other, as in
``@(exec://dirname $(realpath %P))``) are evaluated here without a shell; any other command is left unknown
(the ``@(...)`` stays in the value, and :class:`Evaluator` records it). With ``run_commands`` (``--exec``, for
trusted repos) the rest runs under ``/bin/sh``, bounded in time and killed with its process group.

Values taken from the environment and from ``@(file)`` reads are recorded as secrets, so findings never print
them (:func:`mask`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field

from pytest_emperor.engine.deploy_plan import EXEC_TIMEOUT, read_regular, run_bounded, strip_one_eol

__all__ = ["MASK", "CommandRun", "Evaluator", "RecordingEnv", "mask", "pure_command"]

MASK = "***"
# shorter values (a `1`, `on`) would mask half of every message; they are not secrets anyone keeps
_MIN_SECRET = 4
_WORD = re.compile(r"[A-Za-z0-9_./%:+,=@~-]+")


def _dirname(path: str) -> str:
    """POSIX dirname(1): trailing slashes do not count (``/a/b/`` -> ``/a``)."""
    trimmed = path.rstrip("/")
    if not trimmed:
        return "/" if path else "."
    if "/" not in trimmed:
        return "."
    return trimmed.rpartition("/")[0].rstrip("/") or "/"


def _basename(path: str) -> str:
    trimmed = path.rstrip("/")
    return trimmed.rpartition("/")[2] if trimmed else ("/" if path else "")


class _Parser:
    """A tiny POSIX-shell subset: words, ``"..."`` without specials, and ``$(...)`` command substitution."""

    def __init__(self, text: str, cwd: str) -> None:
        self.text = text
        self.pos = 0
        self.cwd = cwd

    def command(self, end: str = "") -> str:
        words: list[str] = []
        while True:
            self._blanks()
            if self.pos >= len(self.text) or (end and self.text.startswith(end, self.pos)):
                break
            words.append(self._word())
        return self._run(words)

    def _blanks(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] in " \t":
            self.pos += 1

    def _word(self) -> str:
        parts: list[str] = []
        while self.pos < len(self.text) and self.text[self.pos] not in " \t)":
            if self.text.startswith("$(", self.pos):
                self.pos += 2
                # command substitution drops every trailing newline
                parts.append(self.command(")").rstrip("\n"))
                if not self.text.startswith(")", self.pos):
                    raise ValueError("not a pure idiom")
                self.pos += 1
            elif self.text[self.pos] == '"':
                close = self.text.find('"', self.pos + 1)
                inner = self.text[self.pos + 1 : close] if close > 0 else ""
                if close < 0 or any(c in inner for c in "$`\\"):
                    raise ValueError("not a pure idiom")
                parts.append(inner)
                self.pos = close + 1
            else:
                m = _WORD.match(self.text, self.pos)
                if not m:
                    raise ValueError("not a pure idiom")  # ; | & > < ` ' * ? and the like: a real shell's job
                parts.append(m.group(0))
                self.pos = m.end()
        if not parts:
            raise ValueError("not a pure idiom")
        return "".join(parts)

    def _run(self, words: list[str]) -> str:
        if not words:
            raise ValueError("not a pure idiom")
        name, args = words[0], words[1:]
        if name == "echo" and not any(a.startswith("-") for a in args):
            return " ".join(args) + "\n"
        if name == "pwd" and not args:
            return self.cwd + "\n"
        if name == "readlink" and args[:1] == ["-f"]:
            name, args = "realpath", args[1:]
        if len(args) != 1 or args[0].startswith("-"):
            raise ValueError("not a pure idiom")
        arg = args[0]
        if name == "dirname":
            return _dirname(arg) + "\n"
        if name == "basename":
            return _basename(arg) + "\n"
        if name == "realpath":
            full = os.path.realpath(os.path.join(self.cwd, arg))
            # realpath(1) fails on a missing path: no output (the status is not uWSGI's concern)
            return full + "\n" if os.path.exists(full) else ""
        raise ValueError("not a pure idiom")


def pure_command(command: str, cwd: str) -> str | None:
    """The stdout of ``command`` run in ``cwd`` when it is one of the pure idioms; None for anything else."""
    parser = _Parser(command, cwd)
    try:
        out = parser.command()
    except ValueError:  # not one of the idioms (or a path realpath() refuses, with a NUL)
        return None
    return out if parser.pos >= len(command) else None


@dataclass(frozen=True)
class CommandRun:
    """One ``@(...)`` the checker met: the spec, and what became of it."""

    spec: str
    outcome: str  # "pure", "ran", "failed", "timeout", "not-run", "unreadable"
    detail: str = ""


class RecordingEnv(Mapping[str, str]):
    """The environment the vassal sees (this process's, overridden by production's stated one), remembering
    every value read from it: those are masked in findings."""

    def __init__(self, base: Mapping[str, str], overrides: Mapping[str, str]) -> None:
        self._env = {**base, **overrides}
        self.read: set[str] = set()

    def __getitem__(self, key: str) -> str:
        value = self._env[key]
        self.read.add(value)
        return value

    def __iter__(self) -> Iterator[str]:
        return iter(self._env)

    def __len__(self) -> int:
        return len(self._env)


@dataclass
class Evaluator:
    """The ``@(...)`` resolver of one check (see the module doc); ``runs`` lists what each ``@(...)`` gave."""

    cwd: str
    run_commands: bool = False
    timeout: float = EXEC_TIMEOUT
    runs: list[CommandRun] = field(default_factory=list)
    secrets: set[str] = field(default_factory=set)
    live: set[int] = field(default_factory=set)  # process groups of the commands running now

    def __call__(self, spec: str) -> str | None:
        """The value of ``@(spec)``, or None to leave it literally in the value (unknown here)."""
        if spec.startswith("exec://"):
            return self._exec(spec, spec[len("exec://") :])
        if "://" in spec:
            self.runs.append(CommandRun(spec, "not-run", "a scheme the checker does not read"))
            return None
        path = spec if os.path.isabs(spec) else os.path.join(self.cwd, spec)
        try:
            text = strip_one_eol(read_regular(path).decode("utf-8", "surrogateescape"))
        except OSError as exc:
            self.runs.append(CommandRun(spec, "unreadable", exc.strerror or str(exc)))
            return None
        self._keep_secret(text)
        return text

    def _keep_secret(self, text: str) -> None:
        # uWSGI keeps a value up to its first NUL (/proc/self/environ gives one variable): each piece is secret
        self.secrets.update({text, *text.split("\0"), *text.splitlines()})

    def _exec(self, spec: str, command: str) -> str | None:
        out = pure_command(command, self.cwd)
        if out is not None:
            self.runs.append(CommandRun(spec, "pure" if out else "failed", "" if out else "no output"))
            return strip_one_eol(out)
        if not self.run_commands:
            self.runs.append(CommandRun(spec, "not-run"))
            return None
        status, raw = run_bounded(command, self.cwd, self.timeout, self.live)
        text = strip_one_eol(raw.decode("utf-8", "surrogateescape"))
        if status is None:
            self.runs.append(CommandRun(spec, "timeout", f"killed after {self.timeout:g} s"))
        elif status != 0:
            self.runs.append(CommandRun(spec, "failed", f"exit status {status}"))
        else:
            self.runs.append(CommandRun(spec, "ran"))
        self._keep_secret(text)  # a command's output may be a secret as well (`cat /run/secrets/x`)
        return text


def mask(text: str, secrets: Collection[str]) -> str:
    """``text`` with every secret value replaced by ``***``."""
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) >= _MIN_SECRET and secret in text:
            text = text.replace(secret, MASK)
    return text
