"""The direct clients' listener check (engine/route_guard.py ``listener_check``) against real processes: the run's
own listener passes while it exits, a same-user process that is not the run's is refused."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pytest_emperor.engine.processes import MARKER_ENV
from pytest_emperor.engine.route_guard import listener_check

RUN = "/tmp/pytest-emperor-test-run"

# A parent that forks a child which exits at once and is never reaped: a zombie, whose memory (and with it its
# environment) is released as in any process's exit teardown (docs/uwsgi-behaviour.md, "exit teardown").
_PARENT_OF_A_ZOMBIE = """
import os, sys
child = os.fork()
if child == 0:
    os._exit(0)
os.waitid(os.P_PID, child, os.WEXITED | os.WNOWAIT)  # exited, left unreaped
print(child, flush=True)
sys.stdin.read()
"""


@contextmanager
def exited_child(marker: str | None) -> Iterator[int]:
    """The pid of an exited (zombie) child of a live parent carrying ``MARKER_ENV=marker`` (none if None)."""
    env = {k: v for k, v in os.environ.items() if k != MARKER_ENV}
    if marker is not None:
        env[MARKER_ENV] = marker
    parent = subprocess.Popen(
        [sys.executable, "-c", _PARENT_OF_A_ZOMBIE], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert parent.stdin is not None and parent.stdout is not None
    with parent, parent.stdin, parent.stdout:
        yield int(parent.stdout.readline())  # closing its stdin on the way out ends the parent


def test_a_listener_of_the_run_that_is_exiting_is_the_run_s() -> None:
    """Its environment is gone with its memory; its parent carries the marker."""
    with exited_child(RUN) as pid:
        assert listener_check(RUN, {os.geteuid()})(pid, os.geteuid()) is None


def test_an_exiting_listener_whose_parent_is_not_the_run_s_is_refused() -> None:
    for marker in (None, RUN + "-other"):
        with exited_child(marker) as pid:
            problem = listener_check(RUN, {os.geteuid()})(pid, os.geteuid())
            assert problem is not None and f"(pid {pid}, " in problem and "is not one of this run's" in problem


def test_a_live_listener_of_the_same_user_without_the_marker_is_refused() -> None:
    with exited_child(RUN + "-other") as pid:
        parent = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        assert "is not one of this run's" in (listener_check(RUN, {os.geteuid()})(parent, os.geteuid()) or "")
        assert listener_check(RUN + "-other", {os.geteuid()})(parent, os.geteuid()) is None


def test_another_uid_is_refused_even_when_the_process_is_the_run_s() -> None:
    with exited_child(RUN) as pid:
        problem = listener_check(RUN, {os.geteuid()})(pid, os.geteuid() + 1)
        assert problem is not None and "another user's socket" in problem
