"""Helpers of test_plugin.py: a generated app repo in the production style, a private sandbox per test, and the
checks that a run left nothing behind.

Every subprocess run gets its own short ``TMPDIR`` (the plugin puts its run dirs under
``$TMPDIR/pytest-emperor-<uid>/``) and its apps bind sockets in a private short directory, so the leftover
checks only ever see this test's runs, never those of other agents running pytest-emperor on the same machine.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_emperor.engine.processes import MARKER_ENV, kill_all

# The production style: the file sits at the app's root, is deployed by symlink, finds
# its root through the link, and %n (the vassal name) decides the socket.
APP_INI = """\
[uwsgi]
app_root = @(exec://dirname $(realpath %P))
chdir = {chdir}
socket = {sockets}/%n.api.sock
module = hello
master = true
vacuum = true
processes = 2 # number of cores on machine
"""

# A plain WSGI app: answers "<greeting> at <path>"; /log writes its query string to the vassal's log; a query
# with "late-log" keeps the worker busy for a moment after the response, as slow after-request work does (a
# metrics flush, a loaded machine): uWSGI calls after_req_hook after closing the connection and only then
# writes the request's log line (plugins/python/wsgi_handlers.c uwsgi_after_request_wsgi), so that line comes
# late.
HELLO_PY = '''\
import sys
import time

import uwsgi

_late = []


def _after_request():
    while _late:
        _late.pop()
        time.sleep(0.5)


uwsgi.after_req_hook = _after_request


def application(environ, start_response):
    query = environ["QUERY_STRING"]
    if environ["PATH_INFO"] == "/log":
        print("app-log:", query, file=sys.stderr, flush=True)
    if "late-log" in query:
        _late.append(query)
    body = "{greeting} at {{}}\\n".format(environ["PATH_INFO"]).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
'''

# Imported by the generated tests to report what they saw, and to wait for one another (another run, another
# xdist worker). Records are written atomically (write, then rename) so a reader never sees half of one.
SYNC_PY = '''\
import json
import os
import time
from pathlib import Path
from typing import Any

OUT = Path(os.environ["PE_OUT"])


def publish(record, /, **data):
    OUT.mkdir(exist_ok=True)
    partial = OUT / ("." + record + ".partial")
    partial.write_text(json.dumps(data))
    partial.rename(OUT / (record + ".json"))


def records():
    return [json.loads(p.read_text()) for p in sorted(OUT.glob("*.json"))] if OUT.exists() else []


def await_records(match, what, timeout=60.0):
    # The stdlib has no file-event API (no inotify), so this polls, tightly, up to a deadline.
    deadline = time.monotonic() + timeout
    while True:
        found = [r for r in records() if match(r)]
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; records seen: {records()}")
        time.sleep(0.01)
'''


def write_app(directory: Path, sockets: Path, greeting: str, *, chdir: str = "%(app_root)") -> Path:
    """Write an app dir (``app.uwsgi.ini`` + ``hello.py``) whose socket is ``<sockets>/%n.api.sock``."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "app.uwsgi.ini").write_text(APP_INI.format(chdir=chdir, sockets=sockets))
    (directory / "hello.py").write_text(HELLO_PY.format(greeting=greeting))
    return directory


@dataclass(frozen=True)
class Sandbox:
    """A short private dir under /tmp: ``tmpdir`` is the runs' ``TMPDIR``, ``sockets`` where the apps bind."""

    root: Path

    @classmethod
    def create(cls) -> Sandbox:
        # Not tmp_path: it is far too long for the AF_UNIX limit of 108 bytes once a run dir and a socket name
        # are added to it.
        box = cls(Path(tempfile.mkdtemp(prefix="pe-", dir="/tmp")))
        box.tmpdir.mkdir()
        box.sockets.mkdir()
        box.out.mkdir()
        return box

    @property
    def tmpdir(self) -> Path:
        return self.root / "t"

    @property
    def sockets(self) -> Path:
        return self.root / "s"

    @property
    def out(self) -> Path:
        """Where the generated tests publish their records (``PE_OUT``)."""
        return self.root / "out"

    @property
    def runs_root(self) -> Path:
        """Where the plugin puts the run dirs of runs with ``TMPDIR=tmpdir``."""
        return self.tmpdir / f"pytest-emperor-{os.getuid()}"

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of a run in this sandbox, for ``subprocess.Popen``."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_XDIST", "PYTEST_CURRENT"))}
        env.update(TMPDIR=str(self.tmpdir), PE_OUT=str(self.out), **extra)
        return env

    def records(self) -> dict[str, dict[str, Any]]:
        """What the generated tests published, by record name."""
        return {p.stem: json.loads(p.read_text()) for p in sorted(self.out.glob("*.json"))}

    def processes(self) -> dict[int, str]:
        """Live processes of runs in this sandbox (their environment marker names a run dir under ``tmpdir``),
        with their command lines."""
        prefix = f"{MARKER_ENV}={self.tmpdir}/".encode()
        found = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/environ", "rb") as f:
                    env = f.read().split(b"\0")
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    cmdline = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
            except OSError:  # gone meanwhile, or not ours to read (a zombie's environ reads empty)
                continue
            if any(var.startswith(prefix) for var in env):
                found[int(entry)] = cmdline
        return found

    def remove(self) -> None:
        """Kill whatever a failed test left running in this sandbox (only ours: they carry its marker)."""
        kill_all(self.processes())
        shutil.rmtree(self.root, ignore_errors=True)


def assert_nothing_left(box: Sandbox) -> None:
    """No process, no run dir (nor lock file) and no socket of any run in ``box`` remains."""
    problems = []
    processes = box.processes()
    if processes:
        problems.append(f"processes of the run still alive: {processes}")
    run_dirs = sorted(p.name for p in box.runs_root.iterdir()) if box.runs_root.exists() else []
    if run_dirs:
        problems.append(f"left in {box.runs_root}: {run_dirs}")
    sockets = sorted(p.name for p in box.sockets.iterdir())
    if sockets:
        problems.append(f"sockets left in {box.sockets}: {sockets}")
    assert not problems, "\n".join(problems)


def pytest_command(*args: str) -> list[str]:
    """A ``pytest`` run as users start it (the plugin comes through its pytest11 entry point)."""
    return [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args]


def _default_interrupts() -> None:
    for sig in (signal.SIGINT, signal.SIGQUIT):
        signal.signal(sig, signal.SIG_DFL)


@dataclass
class Run:
    """A ``pytest`` subprocess started with ``Popen`` (to signal it, or overlap it with another); output in a
    file."""

    proc: subprocess.Popen[bytes]
    output: Path

    @classmethod
    def start(cls, box: Sandbox, cwd: Path, args: list[str], name: str) -> Run:
        output = box.root / f"{name}.out"
        with output.open("wb") as out:
            proc = subprocess.Popen(
                pytest_command(*args), cwd=cwd, env=box.env(PE_RUN=name), stdin=subprocess.DEVNULL,
                stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, as a terminal gives a foreground job
                # and its default Ctrl-C: a shell starts a background job (a CI runner may be one) with SIGINT and
                # SIGQUIT ignored, which exec keeps, and the interrupt tests would then wait forever
                preexec_fn=_default_interrupts,
            )
        return cls(proc, output)

    def text(self) -> str:
        return self.output.read_text(errors="replace")

    def wait_for_record(self, box: Sandbox, name: str, timeout: float = 60) -> dict[str, Any]:
        """Wait until this run publishes the record ``name``; fail at once (with its output) if it exits."""
        path = box.out / f"{name}.json"
        deadline = time.monotonic() + timeout
        # Polled, tightly: the stdlib has no file-event API (no inotify) to wait on.
        while not path.exists():
            if self.proc.poll() is not None:
                code = self.proc.returncode
                raise AssertionError(f"pytest exited ({code}) before record {name!r}:\n{self.text()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no record {name!r} after {timeout}s; pytest's output:\n{self.text()}")
            time.sleep(0.01)
        record: dict[str, Any] = json.loads(path.read_text())
        return record

    def wait(self, timeout: float = 60) -> int:
        """Wait for pytest to exit (failing with its output after ``timeout``); its exit code."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"pytest still runs after {timeout}s; its output:\n{self.text()}") from None

    def kill(self) -> None:
        """SIGKILL pytest if it still runs (a failed test's clean-up; the sandbox removes what it leaves)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


_SEPARATOR = re.compile(r"^([-=_])\1* (.+?) \1+$")


def report_sections(lines: list[str]) -> dict[str, str]:
    """Split pytest's terminal output into its ``---- title ----`` sections, by title."""
    sections: dict[str, list[str]] = {}
    current: list[str] = []
    for line in lines:
        match = _SEPARATOR.match(line)
        if match:
            current = sections.setdefault(match.group(2), [])
        else:
            current.append(line)
    return {title: "\n".join(body) for title, body in sections.items()}
