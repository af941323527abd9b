"""Interrupts (``up``'s Ctrl-C and SIGTERM), with real signals sent to this process."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable

import pytest

from pytest_emperor.dev.interrupts import Interrupts

DEADLINE = 30.0


def test_the_first_signal_asks_and_each_later_one_forces_on_a_thread_of_their_own() -> None:
    seen: list[tuple[str, int, str]] = []
    done = threading.Event()

    def record(kind: str) -> Callable[[int], None]:
        def call(signum: int) -> None:
            seen.append((kind, signum, threading.current_thread().name))
            if len(seen) == 3:
                done.set()
        return call

    before = signal.getsignal(signal.SIGTERM)
    with Interrupts(record("first"), record("again"), interrupting=lambda: False):
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGTERM):
            os.kill(os.getpid(), sig)
        assert done.wait(DEADLINE), seen
    assert seen == [
        ("first", signal.SIGTERM, "emperor-dev-signals"),
        ("again", signal.SIGINT, "emperor-dev-signals"),
        ("again", signal.SIGTERM, "emperor-dev-signals"),
    ]
    assert signal.getsignal(signal.SIGTERM) is before  # given back on the way out


def test_only_the_first_signal_interrupts_a_start_up() -> None:
    asked, forced = threading.Event(), threading.Event()
    with Interrupts(lambda _: asked.set(), lambda _: forced.set(), interrupting=lambda: True):
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGTERM)
            threading.Event().wait(DEADLINE)  # what a start-up blocks in: cut short by the KeyboardInterrupt
        os.kill(os.getpid(), signal.SIGTERM)  # the second forces: no KeyboardInterrupt
        assert forced.wait(DEADLINE)
    assert asked.is_set()
