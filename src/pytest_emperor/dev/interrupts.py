"""Ctrl-C and SIGTERM for ``up``: the little a signal handler may do, and a thread that does the rest.

A Python signal handler runs on the main thread wherever that thread was: inside a ``flush()`` of stdout (a
handler that prints there gets "RuntimeError: reentrant call inside <_io.BufferedWriter>": ``up`` exited 1 so in
CI), inside ``threading.Event.wait()`` holding the event's lock, inside ``Thread.start()`` holding threading's
own, or inside another handler; a handler that takes such a lock waits for itself forever (docs/up.md,
"Stopping", has the evidence). So the handler only writes the signal's number to a pipe (``os.write`` takes no
Python lock) and, when asked to, interrupts a start-up under way; a thread of its own reads the pipe and does the
work: the first signal asks for the stop, each later one forces it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import Any, Optional

SIGNALS = (signal.SIGINT, signal.SIGTERM)
_END = 0  # not a signal number: tells the thread to end


class Interrupts:
    """While entered: SIGINT and SIGTERM call ``first(signum)`` for the first one and ``again(signum)`` for each
    later one, on a thread of their own; the first also raises KeyboardInterrupt on the main thread while
    ``interrupting()`` is true (a start-up that should stop where it is)."""

    def __init__(
        self, first: Callable[[int], None], again: Callable[[int], None], interrupting: Callable[[], bool]
    ) -> None:
        self._first = first
        self._again = again
        self._interrupting = interrupting
        self._count = 0
        self._read, self._write = os.pipe()
        os.set_blocking(self._write, False)  # a handler never blocks: a full pipe (64 KiB of signals) drops one
        self._thread = threading.Thread(target=self._run, name="emperor-dev-signals", daemon=True)
        self._previous: dict[signal.Signals, Any] = {}

    def __enter__(self) -> Interrupts:
        self._thread.start()
        self._previous = {sig: signal.signal(sig, self._handle) for sig in SIGNALS}
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        # The handlers stay until the thread is done: a signal meanwhile (a third Ctrl-C during a forced stop) is
        # one more "again", never Python's default KeyboardInterrupt; one after the join is written to a pipe
        # nobody reads. The pipe is closed last, once no handler of ours can write to it.
        os.write(self._write, bytes([_END]))
        self._thread.join()
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        os.close(self._read)
        os.close(self._write)

    def _handle(self, signum: int, _frame: Optional[FrameType]) -> None:  # noqa: UP045 (a runtime annotation on 3.9)
        self._count += 1
        count = self._count  # read before anything a second, nested handler could run in
        with contextlib.suppress(BlockingIOError):
            os.write(self._write, bytes([signum]))
        if count == 1 and self._interrupting():
            raise KeyboardInterrupt(signum)

    def _run(self) -> None:
        seen = 0
        while True:
            data = os.read(self._read, 64)
            for signum in data:
                if signum == _END:
                    return
                seen += 1
                try:
                    (self._first if seen == 1 else self._again)(signum)
                except Exception as exc:  # a later signal must still be heard: said, then go on
                    with contextlib.suppress(OSError):
                        sys.stderr.write(f"emperor-dev: handling {signal.Signals(signum).name} failed: {exc!r}\n")
            if not data:  # the write end is gone: no signal can come any more
                return
