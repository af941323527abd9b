"""Following a run's logs: each vassal's ``logs/<name>.log`` and the emperor's events from ``emperor.log``.

:class:`LogTail` turns the files' new bytes into :class:`LogLine` values (reading only what was appended since
the last call); :func:`follow` calls it again whenever the files change. ``up`` streams its own run this way, and
``emperor-dev logs -f`` does the same from another terminal, so both show exactly the same thing.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from pytest_emperor.engine.emperor_log import EmperorEvent, EmperorLogParser, EventKind
from pytest_emperor.engine.runs import open_owned
from pytest_emperor.errors import UnsafePath

LOG_SUFFIX = ".log"
EMPEROR_LOG = "emperor.log"

# How the emperor's events read in the stream (core/emperor.c's log lines, said plainly).
_EVENT_TEXT = {
    EventKind.READY: "ready",
    EventKind.CURSED: "cursed{pid}: it died; the emperor retries it, so it comes back once it is fixed",
    EventKind.STOPPING: "stopping",
    EventKind.REMOVED: "removed",
    EventKind.RELOADING: "reloading",
    EventKind.THROTTLED: "throttled: it keeps dying and the emperor retries it every second; its output is muted"
    " until it starts (all of it: emperor-dev logs {app})",
    EventKind.MAX_THROTTLE: "maximum throttle reached",
    EventKind.NO_MERCY: "killed with no mercy (it did not stop in time)",
}

# How often the run's logs are read for new lines, in seconds. Polled, as `tail -F` does, not watched: every
# request line is a write, and at 7,000 requests/s across 50 apps an inotify watch (watchfiles) cost `up` 0.9 s
# of CPU in 5 s in its event thread alone (benchmarks/scale.py), where reading 50 files 20 times a second costs
# a few ms. watchfiles' own polling mode missed appends now and then (a fixed app's "ready" never shown, 1 run
# in 3 of tests/test_dev_up.py). A line shows at most this much later.
POLL_INTERVAL = 0.05


@dataclass(frozen=True)
class LogLine:
    """A line of an app's output (``kind`` None) or an emperor event about an app."""

    app: str
    text: str
    kind: EventKind | None = None

    @property
    def event(self) -> bool:
        """True for an emperor event."""
        return self.kind is not None


def vassal_name(vassal_id: str) -> str:
    """``service1.ini`` (the emperor's id) -> ``service1`` (the vassal name)."""
    return vassal_id[: -len(".ini")] if vassal_id.endswith(".ini") else vassal_id


def describe(event: EmperorEvent) -> LogLine | None:
    """The stream line for an emperor event, or None for events not worth a line (and the emperor's chatter)."""
    if event.vassal is None:
        return None
    app = vassal_name(event.vassal)
    if event.kind is EventKind.OUTPUT:
        return LogLine(app, event.line)  # early output, before the vassal's logto applies
    # A removal the emperor logged without a curse first is a death (see EmperorEvent.died): said as a curse.
    kind = EventKind.CURSED if event.is_death else event.kind
    text = _EVENT_TEXT.get(kind)
    if text is None:
        return None
    return LogLine(app, text.format(pid=f" (pid {event.pid})" if event.pid else "", app=app), kind)


class LogTail:
    """Reads what was appended to a run's logs since the last :meth:`read`, as complete lines.

    ``from_end`` skips what the files hold already (``up`` shows its table instead); ``app`` keeps only one
    app's lines and events.
    """

    def __init__(self, run_dir: Path, *, from_end: bool = False, app: str | None = None) -> None:
        self.run_dir = run_dir
        self.app = app
        self._offsets: dict[Path, int] = {}
        self._partial: dict[Path, bytes] = {}
        self._refused: set[Path] = set()
        self._parser = EmperorLogParser()
        if from_end:
            for path in self._files():
                self._offsets[path] = path.stat().st_size

    def _files(self) -> list[Path]:
        logs = sorted((self.run_dir / "logs").glob("*" + LOG_SUFFIX))
        if self.app is not None:
            logs = [path for path in logs if path.stem == self.app]
        emperor = self.run_dir / EMPEROR_LOG
        return [*logs, emperor] if emperor.exists() else logs

    def _new_lines(self, path: Path) -> list[str]:
        offset = self._offsets.get(path, 0)
        try:
            with open_owned(path) as f:  # a vassal that dropped privileges may have put a symlink there
                if f.seek(0, 2) < offset:  # truncated: start over
                    offset = 0
                f.seek(offset)
                data = self._partial.pop(path, b"") + f.read()
                self._offsets[path] = f.tell()
        except FileNotFoundError:
            return []
        except UnsafePath as exc:  # said once, never read
            if path in self._refused:
                return []
            self._refused.add(path)
            return [f"(not shown: {exc})"]
        complete, newline, rest = data.rpartition(b"\n")
        if rest:
            self._partial[path] = rest  # a line still being written: wait for its newline
        if not newline:
            return []
        return [raw.decode("utf-8", "replace").rstrip("\r") for raw in complete.split(b"\n")]

    def read(self) -> list[LogLine]:
        """The new lines of every file (each app's in order; files one after the other)."""
        lines: list[LogLine] = []
        for path in self._files():
            if path.name != EMPEROR_LOG:  # an app's own log: thousands of request lines a second under load
                app = path.stem
                lines.extend(LogLine(app, text) for text in self._new_lines(path))
                continue
            for text in self._new_lines(path):
                event = self._parser.feed(text)
                line = describe(event) if event is not None else None
                if line is not None and (self.app is None or line.app == self.app):
                    # A vassal's early output is in emperor.log only until its logto applies: keep it, and keep
                    # the emperor's verdicts, which is what makes it an event.
                    lines.append(line)
        return lines


class RetryMuter:
    """Keeps the stream true and quiet about an app the emperor keeps retrying.

    From its throttling (its third death in a row) until its state changes (ready, reloading, or stopped by an
    operator), everything about it is dropped: its output, its curses, its repeated throttle lines and uWSGI's
    "maximum throttle reached", so one broken app does not flood the stream with its start-up banner every
    second. "removed" is shown only for a removal an operator asked for (a stop first): the emperor also removes
    a vassal after each curse, before retrying it, and that app is not removed. "stopping" itself is not shown:
    "removed" follows it.
    """

    def __init__(self, muted: Iterable[str] = ()) -> None:
        self._muted = set(muted)
        self._stopping: set[str] = set()

    def keep(self, line: LogLine) -> bool:
        """Whether ``line`` is shown."""
        app, kind = line.app, line.kind
        if kind is None:  # an app's own line (most of them): shown unless the app is muted
            return app not in self._muted
        if kind is EventKind.STOPPING:
            self._stopping.add(app)
            self._muted.discard(app)
            return False
        if kind is EventKind.REMOVED:
            if app not in self._stopping:
                return False  # the emperor's removal after a curse, before its retry
            self._stopping.discard(app)
            return True
        if kind in (EventKind.READY, EventKind.RELOADING):
            self._muted.discard(app)
            return True
        if app in self._muted:
            return False
        if kind is EventKind.THROTTLED:
            self._muted.add(app)
        return True


def follow(
    tail: LogTail, emit: Callable[[list[LogLine]], None], stop: threading.Event, *, muted: Iterable[str] = ()
) -> None:
    """Emit what the logs hold, then the new lines as they are written (a batch per wake-up), until ``stop`` is
    set (muting apps the emperor keeps retrying, see :class:`RetryMuter`; ``muted`` are those already being
    retried)."""
    muter = RetryMuter(muted)

    def emit_new() -> None:
        emit([line for line in tail.read() if muter.keep(line)])

    emit_new()
    while not stop.wait(POLL_INTERVAL):  # returns at once when stop is set
        emit_new()
    emit_new()  # what was written between the last read and the stop
