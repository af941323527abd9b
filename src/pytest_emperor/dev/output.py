"""What ``emperor-dev`` prints: the apps table and log lines prefixed with their source, like honcho and
``docker compose up`` (one colour per app on a terminal; plain text, no escape codes, when piped)."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, TextIO

from pytest_emperor.dev.control import AppStatus
from pytest_emperor.dev.logs import LogLine

if TYPE_CHECKING:
    from rich.console import Console

EMPEROR = "emperor"  # the prefix of the emperor's own events
COLUMNS = ("NAME", "URL", "STATE", "PID")

# The palette honcho and foreman cycle through, without red (kept for errors).
_PALETTE = ("cyan", "yellow", "green", "magenta", "blue", "bright_cyan", "bright_yellow", "bright_green")
_STATE_STYLE = {"ready": "green", "starting": "yellow", "cursed": "red", "throttled": "red", "error": "bold red"}


def printable(text: str) -> str:
    """``text`` as it may reach a terminal: every character that is not printable (an escape sequence's ESC,
    other control characters, bidi overrides) shown as a Python escape (``\\x1b``). App names come from
    directory names and ``NAME=PATH`` arguments: any byte a file name can hold."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)


def printable_lines(text: str) -> str:
    """:func:`printable` line by line: a message's own line breaks are kept."""
    return "\n".join(printable(line) for line in text.split("\n"))


def table_rows(apps: Iterable[AppStatus]) -> list[tuple[str, str, str, str]]:
    """The table's cells, as text safe for a terminal."""
    return [
        (printable(app.name), printable(app.url), printable(app.state), str(app.pid) if app.pid else "-")
        for app in apps
    ]


def plain_table(apps: Sequence[AppStatus]) -> str:
    """The table as aligned plain text (what ``docker ps`` prints), for pipes and logs."""
    rows = [COLUMNS, *table_rows(apps)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)


class Output:
    """Thread-safe printing of tables, prefixed lines and notes, coloured when ``stream`` is a terminal.

    rich is imported only for colour: it is 40 ms of ``up``'s start-up, and piped output needs none of it."""

    def __init__(self, stream: TextIO | None = None, color: bool | None = None) -> None:
        self.stream = stream if stream is not None else sys.stdout
        self.color = self.stream.isatty() if color is None else color
        self._console: Console | None = None
        if self.color:
            from rich.console import Console

            self._console = Console(file=self.stream, highlight=False, soft_wrap=True)
        self._styles: dict[str, str] = {}
        self._width = len(EMPEROR)
        self._lock = threading.RLock()  # one writer at a time: the main thread, the log stream, the signals' thread

    def add_names(self, names: Iterable[str]) -> None:
        """Give each name its colour (in order of appearance) and widen the prefix column to fit it."""
        with self._lock:
            for name in names:
                if name not in self._styles:
                    self._styles[name] = _PALETTE[len(self._styles) % len(_PALETTE)]
                self._width = max(self._width, len(printable(name)))

    def line(self, source: str, text: str) -> None:
        """One line from ``source`` (an app, or ``emperor``): ``name | text``."""
        self._write([(source, text)])

    def log_lines(self, lines: Sequence[LogLine]) -> None:
        """Lines of the log stream, written at once: an app's own line under its name, an emperor event under
        ``emperor``. At thousands of requests a second a write and a flush per line cost ``up`` a quarter of a
        core (benchmarks/scale.py); a batch costs one of each."""
        self._write([
            (EMPEROR, f"{printable(line.app)}: {line.text}") if line.event else (line.app, line.text)
            for line in lines
        ])

    def _write(self, lines: Sequence[tuple[str, str]]) -> None:
        if not lines:
            return
        self.add_names({source for source, _ in lines})
        with self._lock:
            if self._console is None:
                self.stream.write(
                    "".join(f"{printable(source).ljust(self._width)} | {text}\n" for source, text in lines)
                )
                self.stream.flush()
            else:
                from rich.text import Text

                styled = [
                    Text(f"{printable(source).ljust(self._width)} | ",
                         style="bold" if source == EMPEROR else self._styles[source])
                    + Text(text)
                    for source, text in lines
                ]
                self._console.print(Text("\n").join(styled))

    def note(self, text: str, *, error: bool = False) -> None:
        """A message of emperor-dev's own."""
        text = printable_lines(text)
        with self._lock:
            if self._console is None:
                self.stream.write(text + "\n")
                self.stream.flush()
            else:
                from rich.text import Text

                self._console.print(Text(text, style="bold red" if error else "dim"))

    def table(self, apps: Sequence[AppStatus]) -> None:
        """The apps table, then the error lines of each app that is not ready."""
        with self._lock:
            if self._console is None:
                self.stream.write(plain_table(apps) + "\n")
                self.stream.flush()
            else:
                from rich.table import Table
                from rich.text import Text

                table = Table(*COLUMNS, box=None, header_style="bold")
                for app, cells in zip(apps, table_rows(apps)):
                    table.add_row(Text(cells[0], style=self._styles.get(app.name, "")), Text(cells[1]),
                                  Text(cells[2], style=_STATE_STYLE.get(app.state, "")), cells[3])
                self._console.print(table)
        for app in apps:
            for text in app.errors:
                self.line(app.name, text)
