"""A sans-IO reader of the emperor's output: lines in, events out.

The emperor's stdout carries two kinds of lines (docs/uwsgi-behaviour.md, "The engine"):

* its own ``[emperor] ...`` lines (spawned, ready, cursed, removed, throttled...), prefixed by a 24-character
  ``ctime`` and `` - ``; they are the *events* readiness and state tracking wait on;
* the early output of each vassal, written before the vassal's ``logto`` takes effect (``[strict-mode] unknown
  config directive``, plugin warnings). Each vassal announces itself with ``getting INI configuration from
  <name>.ini``, so such lines are attributed to the most recently announced vassal.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass


class EventKind(enum.Enum):
    """What the emperor said about a vassal (or itself)."""

    SPAWNED = "spawned"
    READY = "ready"
    LOYAL = "loyal"
    CURSED = "cursed"
    STOPPING = "stopping"
    REMOVED = "removed"
    RELOADING = "reloading"
    THROTTLED = "throttled"
    MAX_THROTTLE = "max_throttle"
    NO_MERCY = "no_mercy"
    BLACKLIST_CLEARED = "blacklist_cleared"
    SHUTDOWN = "shutdown"
    BURIED = "buried"
    STATS_READY = "stats_ready"  # the emperor's stats socket is listening
    OUTPUT = "output"  # a vassal's own early output line


@dataclass(frozen=True)
class EmperorEvent:
    """One event; ``vassal`` is the vassal's id as the emperor names it (``svc.ini``), if about one."""

    seq: int
    kind: EventKind
    vassal: str | None
    line: str
    pid: int | None = None  # only a curse line names the pid: a death logged as a bare removal has none
    died: bool = False  # a removal that nobody asked for: see EmperorLogParser.feed

    @property
    def is_death(self) -> bool:
        """True for a curse, and for a removal the emperor logged without cursing first (the vassal died)."""
        return self.kind is EventKind.CURSED or self.died


# The verbose log lines of core/emperor.c (uWSGI 2.0), without their ``ctime - `` prefix.
_PATTERNS: list[tuple[EventKind, re.Pattern[str]]] = [
    (EventKind.SPAWNED, re.compile(r"\[emperor\] vassal (?P<v>\S+) has been spawned")),
    (EventKind.READY, re.compile(r"\[emperor\] vassal (?P<v>\S+) is ready to accept requests")),
    (EventKind.LOYAL, re.compile(r"\[emperor\] vassal (?P<v>\S+) is now loyal")),
    (EventKind.CURSED, re.compile(r"\[emperor\] curse the uwsgi instance (?P<v>\S+) \(pid: (?P<pid>-?\d+)\)")),
    (EventKind.STOPPING, re.compile(r"\[emperor\] stop the uwsgi instance (?P<v>\S+)")),
    (EventKind.REMOVED, re.compile(r"\[emperor\] removed uwsgi instance (?P<v>\S+)")),
    (EventKind.RELOADING, re.compile(r"\[emperor\] reload the uwsgi instance (?P<v>\S+)")),
    (EventKind.THROTTLED, re.compile(r"\[emperor\] unloyal bad behaving vassal found: (?P<v>\S+) throttling")),
    (EventKind.MAX_THROTTLE, re.compile(r"\[emperor\] maximum throttle level for vassal (?P<v>\S+) reached")),
    (EventKind.NO_MERCY, re.compile(r"\[emperor\] NO MERCY for vassal (?P<v>\S+) !!!")),
    (EventKind.BLACKLIST_CLEARED, re.compile(r"\[emperor\] cleaning up blacklist")),
    (EventKind.SHUTDOWN, re.compile(r"\[emperor\] \*\*\* RAGNAROK EVOKED \*\*\*")),
    (EventKind.BURIED, re.compile(r"The Emperor is buried\.")),
    (EventKind.STATS_READY, re.compile(r"^\*\*\* Emperor stats server enabled on ")),
]
_ENDINGS = {EventKind.CURSED, EventKind.STOPPING}
_ANNOUNCE = re.compile(r"^\[uWSGI\] getting INI configuration from (?P<file>\S+)$")
_VASSAL_START = "*** has_emperor mode detected"
_INI_NAME = re.compile(r"[\w.-]+\.ini\b")


class EmperorLogParser:
    """Turns emperor output lines into numbered events; keeps no history (that is the caller's)."""

    def __init__(self) -> None:
        self.seq = 0
        self._speaker: str | None = None
        self._last: dict[str, EventKind] = {}  # the last event kind per vassal
        self._announced: set[str] = set()  # every vassal file that announced itself

    def _event(
        self, kind: EventKind, vassal: str | None, line: str, pid: int | None = None, died: bool = False
    ) -> EmperorEvent:
        self.seq += 1
        return EmperorEvent(self.seq, kind, vassal, line, pid, died)

    def feed(self, line: str) -> EmperorEvent | None:
        """Parse one line (without its newline); return its event, or None for the emperor's own chatter."""
        if "[emperor]" in line or "The Emperor is buried" in line or "Emperor stats server" in line:
            for kind, pattern in _PATTERNS:
                match = pattern.search(line)
                if match:
                    vassal = match.groupdict().get("v")
                    pid = match.groupdict().get("pid")
                    died = False
                    if vassal is not None:
                        # A vassal that dies and is reaped before the emperor reads its pipe's EOF is logged
                        # only as "removed", without the curse line; unless it was being stopped, that removal
                        # is a death as much as a curse is.
                        died = kind is EventKind.REMOVED and self._last.get(vassal) not in _ENDINGS
                        self._last[vassal] = kind
                    return self._event(kind, vassal, line, int(pid) if pid else None, died)
            return None
        if line.startswith(_VASSAL_START):
            self._speaker = None  # a new vassal process starts; it names itself on its next line
            return None
        announce = _ANNOUNCE.match(line)
        if announce:
            # A vassal reads its own file first; later files (our --vassals-include) are not its name.
            if self._speaker is None and "/" not in announce["file"]:
                self._speaker = announce["file"]
                self._announced.add(self._speaker)
            return None
        if self._speaker is not None:
            # Vassals starting together interleave their early lines; one that names another vassal's file
            # (`realpath() of a.ini failed`) is that vassal's, whoever announced itself last.
            named = next((n for n in _INI_NAME.findall(line) if n in self._announced), self._speaker)
            return self._event(EventKind.OUTPUT, named, line)
        return None
