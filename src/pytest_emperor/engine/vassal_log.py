"""A vassal's own output: its log file, its early output among the emperor's events, where its deploy and the
current test begin in them, and the request lines its clients' answers are awaited by."""

from __future__ import annotations

import os
import re
import time
from collections import Counter
from pathlib import Path
from typing import Union

from pytest_emperor.engine.deploy_plan import DeployPlan
from pytest_emperor.engine.emperor_log import EventKind
from pytest_emperor.engine.events import EventLog
from pytest_emperor.engine.runs import open_owned
from pytest_emperor.errors import UnsafePath
from pytest_emperor.ini.values import is_true

#: Where log_text()/error_lines() start: "test" (the current test's first use of the vassal, else its deploy),
#: "deploy", or a byte offset into its log file.
Since = Union[str, int]

# What a line of uWSGI's (or the app's) says when something went wrong: the lines worth showing when a vassal
# fails, and the ones `emperor-dev check` blames an option from (a value quoted in any other line, like the app
# dir in `chdir() to /app`, proves nothing). uWSGI's own boilerplate warnings are not among them.
_ERROR_LINE = re.compile(
    r"error|no such|unable|fail|traceback|exception|\[strict-mode\]|game over|not found|cannot|can't|invalid"
    r"|denied|permission|refused|no app loaded|unknown|exit|killed|segmentation|damn|died",
    re.IGNORECASE,
)


def is_error_line(line: str) -> bool:
    """Whether ``line`` of a vassal's output says something went wrong."""
    return bool(_ERROR_LINE.search(line))

# uWSGI's default request log line, "[pid: 123|app: 0|req: 5/17] 127.0.0.1 () {36 vars in 462 bytes} [Mon Nov 30
# 18:52:48 2026] GET /env?x=1 => generated ...", anywhere in a line (log-date and log-encoder add prefixes): the
# method and REQUEST_URI name the request (docs/uwsgi-behaviour.md, "Request log lines").
# `app: -1|req: -1/N` when no app is loaded (uWSGI answers 500 to every request then, and logs it so).
_REQUEST_LINE = re.compile(rb"\[pid: \d+\|app: -?\d+\|req: -?\d+/\d+\] .*\] (\S+) (.*?) => generated \d+ bytes")
# How long sync_log() waits for request lines, and gives up for good if none ever came (logging disabled).
LOG_SYNC_LIMIT = 2.0

_NOISE_LINE = re.compile(
    r"no internal routing support|running uWSGI as root|use the --uid flag|^subprocess \d+ exited with code 0$"
)


def request_logging_off(plan: DeployPlan) -> bool:
    """True when the vassal's request lines will not reach its log in uWSGI's default format: logging disabled
    (``disable-logging`` read as uWSGI reads a flag, :func:`~pytest_emperor.ini.values.is_true`), lines sent to a
    ``req-logger``, or a format of the app's own."""
    disabled = plan.config.last("disable-logging")
    if disabled is not None and is_true(disabled):
        return True
    return any(plan.config.last(key) is not None for key in ("req-logger", "log-format", "logformat"))


class VassalLog:
    """The output of the vassal ``vassal_id``: ``path`` (its ``logto``) and its lines among ``events``."""

    def __init__(self, path: Path, vassal_id: str, events: EventLog, *, request_logging: bool) -> None:
        self.path = path
        self._vassal_id = vassal_id
        self._events = events
        #: the emperor's event number at the vassal's deploy (or its last start)
        self.deploy_seq = 0
        self._log_offset = 0
        self._test_mark: tuple[int, int] | None = None  # log offset and event number where the current test began
        # (method, REQUEST_URI) of each request the clients handed out got answered by the vassal, whose log line
        # sync() has not seen yet
        self._unlogged: Counter[tuple[str, str]] = Counter()
        self._log_scanned = 0  # how far the log was scanned for request lines
        self._request_lines_seen = False
        self._request_logging = request_logging

    def mark_deploy(self) -> None:
        """The vassal is being deployed (or started again) now: "deploy" starts here."""
        self.deploy_seq = self._events.last_seq
        try:
            self._log_offset = self.path.stat().st_size
        except FileNotFoundError:
            self._log_offset = 0

    def answered(self, method: str, uri: str) -> None:
        """The vassal answered ``method uri`` to one of its clients: its log line is awaited by ``sync()``."""
        self._unlogged[(method, uri)] += 1

    def begin_test(self, test_start: int) -> None:
        """Mark where the current test's part of the log begins, so that ``log_text()`` and ``error_lines()``
        default to it: the vassal's deploy if that came after the emperor's event ``test_start`` (the test's
        start), else now."""
        if self.deploy_seq >= test_start:
            self._test_mark = (self._log_offset, self.deploy_seq)
        else:
            self.sync()  # the previous test's request lines belong before this test's mark
            try:
                offset = self.path.stat().st_size
            except FileNotFoundError:
                offset = 0
            self._test_mark = (offset, self._events.last_seq)

    @property
    def test_start(self) -> tuple[int, int]:
        """The log offset and emperor event number where the current test's part begins (see ``begin_test``)."""
        return self.start("test")

    def start(self, since: Since) -> tuple[int, int]:
        """The log offset and event number ``since`` designates."""
        if since == "test" and self._test_mark is not None and self._test_mark[1] >= self.deploy_seq:
            return self._test_mark
        if since in ("test", "deploy"):
            return self._log_offset, self.deploy_seq
        if isinstance(since, int) and not isinstance(since, bool) and since >= 0:
            return since, self.deploy_seq
        raise TypeError(f'since= takes "test", "deploy" or a byte offset into {self.path}, not {since!r}')

    def text(self, since: Since = "test") -> str:
        """The vassal's own log from the current test on (``since="deploy"``: since its deploy; or from a byte
        offset), with the lines of the requests already answered."""
        offset, _ = self.start(since)
        self.sync()
        try:
            with open_owned(self.path) as f:  # a symlink or another's file is never read (docs/run-dir.md)
                f.seek(offset)
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""
        except UnsafePath as exc:
            return f"(not read: {exc})\n"

    def sync(self) -> None:
        """Wait until the log holds the line of every request the vassal answered to its clients (``answered``).

        uWSGI writes a request's log line only after it has closed the connection (core/utils.c
        ``uwsgi_close_request``, then ``log_request``), so right after a response its line may not be there yet:
        a test's log section would miss its last request and the next test's would get it. Each answered request
        is awaited by its own line (method and URI), not by a count: requests from other clients (curl, plain
        ``requests``) log lines too. Polled (no event exists), bounded by ``LOG_SYNC_LIMIT``; a vassal that never
        logged any request line in that time is not waited for again (``disable-logging``, a custom format).
        """
        if not self._request_logging or not self._unlogged:
            return
        deadline = time.monotonic() + LOG_SYNC_LIMIT
        while True:
            try:
                with open_owned(self.path) as f:
                    if os.fstat(f.fileno()).st_size < self._log_scanned:
                        self._log_scanned = 0  # a new log file: a redeploy after the emperor removed the old one
                    f.seek(self._log_scanned)
                    chunk = f.read()
            except (FileNotFoundError, UnsafePath):
                chunk = b""
            complete = chunk[: chunk.rfind(b"\n") + 1]
            self._log_scanned += len(complete)
            for match in _REQUEST_LINE.finditer(complete):
                self._request_lines_seen = True
                key = (match[1].decode("latin-1"), match[2].decode("latin-1"))
                if self._unlogged[key] > 0:
                    self._unlogged[key] -= 1
            self._unlogged += Counter()  # drops the keys counted down to zero
            if not self._unlogged:
                return
            if time.monotonic() > deadline:
                self._request_logging = self._request_lines_seen
                self._unlogged.clear()  # not logged (a killed worker, log-4xx only): not awaited again
                return
            time.sleep(0.002)

    def output_lines(self, since: Since = "test") -> list[str]:
        """Everything the vassal printed from the current test on (or ``since="deploy"``): its early output (in
        the emperor's log) then its log."""
        _, seq = self.start(since)
        events = self._events.events(self._vassal_id, since=seq)
        early = [e.line for e in events if e.kind is EventKind.OUTPUT]
        return early + self.text(since).splitlines()

    def error_lines(self, limit: int = 30, since: Since = "test") -> list[str]:
        """The lines of the vassal's output that explain a failure (the last ``limit`` lines if none match), from
        the current test on (or ``since="deploy"``)."""
        lines = [line for line in self.output_lines(since) if not _NOISE_LINE.search(line)]
        errors = [line for line in lines if is_error_line(line) or line.startswith((" ", "\t"))]
        return (errors or lines)[-limit:]
