"""``emperor-dev`` run for real in subprocesses: a private workspace (short TMPDIR, own state dir) per test,
copies of the example apps, an ``Up`` that follows the server's output, and the leak check after it."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_emperor._protocol.client import direct_session
from pytest_emperor.dev.state import Instance, StateDir
from pytest_emperor.engine.processes import processes_with_marker

EXAMPLES = Path(__file__).resolve().parent.parent / "example_apps"
CLI = [sys.executable, "-m", "pytest_emperor.dev"]
TIMEOUT = 60.0  # generous: two cores shared with other agents' test runs


# -- the real CLI -----------------------------------------------------------------------------------------------


@pytest.fixture
def workspace(uwsgi_bin: Path) -> Iterator[Path]:
    """A short private dir under /tmp: ``apps/`` (copies of example apps), ``tmp/`` (the runs' TMPDIR), state."""
    path = Path(tempfile.mkdtemp(prefix="edev-", dir="/tmp"))
    (path / "tmp").mkdir()
    (path / "apps").mkdir()
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def copy_example(workspace: Path, example: str, as_dir: str) -> Path:
    """A copy of an example app (its pytest files are not needed); service1/2 would need their venvs."""
    target = workspace / "apps" / as_dir
    shutil.copytree(EXAMPLES / example, target, ignore=shutil.ignore_patterns("test_*", "pytest.ini", "__pycache__"))
    return target


def env_for(workspace: Path) -> dict[str, str]:
    return dict(os.environ, TMPDIR=str(workspace / "tmp"), EMPEROR_DEV_STATE_DIR=str(workspace / "state"))


def cli(workspace: Path, *args: str, timeout: float = TIMEOUT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], cwd=workspace / "apps", env=env_for(workspace), capture_output=True,
                          text=True, timeout=timeout, check=False)


class Up:
    """A running ``emperor-dev up`` whose stdout (piped, so plain text) is read line by line by a thread."""

    def __init__(self, workspace: Path, *args: str) -> None:
        self.workspace = workspace
        self.process = subprocess.Popen(
            [*CLI, "up", "--port", "0", *args], cwd=workspace / "apps", env=env_for(workspace),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._eof = False
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.instance: Instance | None = None

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def expect(self, pattern: str, *, after: int = 0, timeout: float = TIMEOUT) -> int:
        """Wait for a line (after line number ``after``) matching ``pattern``; return the next line's number."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for i, line in enumerate(self.lines[after:], start=after):
                    if regex.search(line):
                        return i + 1
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._eof:
                    why = "up exited" if self._eof else f"timed out after {timeout} s"
                    raise AssertionError(f"{why} waiting for {pattern!r}; output:\n" + "\n".join(self.lines[-60:]))
                self._cond.wait(remaining)

    def started(self) -> Up:
        """Wait for the table and its summary line; read the instance it published."""
        self.expect(r"apps ready\. Ctrl-C stops them all")
        self.instance = StateDir(self.workspace / "state").read()
        assert self.instance is not None and self.instance.pid == self.process.pid
        return self

    def stop(self, sig: int = signal.SIGINT, timeout: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.wait(timeout)

    def wait(self, timeout: float = 30.0) -> int:
        """Wait for ``up`` to exit (and its last line to be read); its exit code."""
        try:
            return self.process.wait(timeout)
        finally:
            self._reader.join(5)

    def stopped(self, sig: int = signal.SIGINT) -> None:
        """Stop ``up`` with ``sig`` and assert it exited 0, showing its last lines if not."""
        code = self.stop(sig)
        assert code == 0, f"up exited {code}; its last lines:\n" + "\n".join(self.lines[-60:])

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._reader.join(5)

    def get(self, name: str, path: str = "/") -> tuple[int, str]:
        """A request through the router's TCP port, as a browser would send it."""
        assert self.instance is not None
        address = ("127.0.0.1", self.instance.router_port)
        with direct_session(address, "http", f"http://{name}.api.localhost/", timeout=30) as session:
            response = session.get(path)
        return response.status_code, response.content.decode()


@pytest.fixture
def up_process(workspace: Path) -> Iterator[list[Up]]:
    """Every ``Up`` a test starts, SIGKILLed after it if still running (the emperor then stops its vassals on its
    parent-death signal, and the next run recovers the rest)."""
    started: list[Up] = []
    yield started
    for up in started:
        up.kill()


def assert_nothing_left(up: Up, names: list[str]) -> None:
    """No process of the run, no run dir, no control socket, no state, no app socket of the test's names."""
    assert up.instance is not None
    run_dir = up.instance.run_dir
    assert processes_with_marker(run_dir) == []
    assert not Path(run_dir).exists()
    assert not Path(up.instance.control).exists()
    assert not (up.workspace / "state").exists()
    assert [p for p in (up.workspace / "tmp").rglob("*") if p.suffix in (".lock", ".sock", ".reserved")] == []
    for name in names:
        assert not Path(f"/tmp/{name}.api.sock").exists(), name


def names_for_test() -> tuple[str, str]:
    tag = uuid.uuid4().hex[:6]
    return f"s3-{tag}", f"bc-{tag}"
