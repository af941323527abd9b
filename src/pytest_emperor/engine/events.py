"""The emperor's event log: its output copied to ``emperor.log``, its ``[emperor]`` lines as numbered events.

One thread reads the emperor's stdout (:meth:`EventLog.follow`); waiters block on the events with a deadline, never
on sleeps. The lines themselves are parsed by the sans-IO emperor_log.py.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from pytest_emperor.engine.emperor_log import EmperorEvent, EmperorLogParser, EventKind
from pytest_emperor.errors import VassalTimeout


class EventLog:
    """The numbered events of one emperor, and its output in ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._events: list[EmperorEvent] = []
        self._eof = False
        self._cond = threading.Condition()

    def follow(self, output: Iterable[bytes], before_waiters: Callable[[EmperorEvent], None]) -> None:
        """Copy the emperor's ``output`` into the log file and turn its lines into events, until it ends.
        ``before_waiters`` sees each event before any waiter does, and before its line is in the log file."""
        parser = EmperorLogParser()
        with self.path.open("ab") as log:
            for raw in output:
                event = parser.feed(raw.decode("utf-8", "replace").rstrip("\r\n"))
                if event is not None:
                    # The file is read by others too (up's stream, `emperor-dev logs -f`): a "ready" shown there
                    # before the app is routed sent a request that follows it to the 502 of an app still down.
                    before_waiters(event)
                log.write(raw)
                log.flush()
                if event is not None:
                    with self._cond:
                        self._events.append(event)
                        self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    @property
    def last_seq(self) -> int:
        """The number of the latest event; pass it as ``since`` to wait only for what happens next."""
        with self._cond:
            return len(self._events)

    def events(self, vassal: str | None = None, since: int = 0) -> list[EmperorEvent]:
        """Events after ``since``, optionally only those about the vassal id ``vassal`` (``name.ini``)."""
        with self._cond:
            return [e for e in self._events[since:] if vassal is None or e.vassal == vassal]

    def wait(
        self,
        match: Callable[[EmperorEvent], bool],
        *,
        since: int,
        timeout: float,
        what: str,
        context: Callable[[], Sequence[str]] | None = None,
    ) -> EmperorEvent:
        """Block until an event after ``since`` satisfies ``match``; return it.

        On timeout (or if the emperor's output ends) raise VassalTimeout saying what was awaited, the events
        seen meanwhile and, from ``context``, the relevant log lines (default: the log's tail).
        """
        deadline = time.monotonic() + timeout
        checked = since
        with self._cond:
            while True:
                for event in self._events[checked:]:
                    if match(event):
                        return event
                checked = len(self._events)
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._eof:
                    break
                self._cond.wait(remaining)
            seen = [e.line for e in self._events[since:] if e.kind is not EventKind.OUTPUT][-10:]
        why = "the emperor exited" if self._eof else f"timed out after {timeout:g}s"
        message = f"{why} waiting for {what}; emperor events meanwhile: " + (
            "\n  " + "\n  ".join(seen) if seen else "none"
        )
        raise VassalTimeout(message, context() if context else self.tail())

    def tail(self, lines: int = 20) -> list[str]:
        """The last lines of the emperor's log."""
        try:
            return self.path.read_text(errors="replace").splitlines()[-lines:]
        except FileNotFoundError:
            return []
