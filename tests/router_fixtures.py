"""Helpers for the protocol, client and router tests: real uwsgi processes, private temp dirs, clean stops.

Every process is started in its own session (so its workers share its process group), awaited by connecting to
its socket with a deadline, stopped with SIGINT (uWSGI's graceful shutdown, which also vacuums sockets) and
reaped; leftovers of *our* group are SIGKILLed. Nothing here touches processes we did not start.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Union

import pytest
from components import nginx_binary, uwsgi_binary

from pytest_emperor._protocol.client import EmperorSession, routed_session
from pytest_emperor.engine.processes import die_with_parent
from pytest_emperor.routing.nginx import start_router
from pytest_emperor.routing.route_table import RouteState
from pytest_emperor.routing.router import Router
from pytest_emperor.routing.routes import RouteMap

Address = Union[str, "tuple[str, int]"]
ECHO_APP = Path(__file__).parent / "apps" / "echo"


@contextlib.contextmanager
def short_tmp_dir() -> Iterator[Path]:
    """A private dir under /tmp with a short path (unix socket paths are limited to 107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="emperor-router-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def free_tcp_port() -> int:
    """A loopback port that was free a moment ago, for programs that cannot report an ephemeral port."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _log_tail(log: Path, lines: int = 30) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log written)"


def wait_connectable(address: Address, process: subprocess.Popen[bytes], log: Path, timeout: float = 30) -> None:
    """Return once ``address`` accepts a connection; fail with the log if the process exits or time is up."""
    deadline = time.monotonic() + timeout
    last_error: OSError | None = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(
                f"{process.args!r} exited with {process.returncode} before {address} was connectable; "
                f"log:\n{_log_tail(log)}"
            )
        family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            try:
                probe.connect(address)
                return
            except OSError as exc:
                last_error = exc
        # No event tells us when uWSGI calls listen(); poll tightly (10 ms) under the deadline.
        time.sleep(0.01)
    pytest.fail(f"{address} not connectable within {timeout} s (last error: {last_error}); log:\n{_log_tail(log)}")


def stop_process(process: subprocess.Popen[bytes], timeout: float = 20) -> None:
    """SIGINT the process (uWSGI and nginx stop gracefully on it), reap it, then SIGKILL its group's rest."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)
    # Workers are in the process's own group (start_new_session=True); none may outlive the test.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


@contextlib.contextmanager
def run_process(
    argv: Sequence[str], address: Address, log: Path, timeout: float = 30
) -> Iterator[subprocess.Popen[bytes]]:
    """Start ``argv`` in its own session, logging to ``log``, and yield it once ``address`` is connectable."""
    with log.open("ab") as log_file:
        process = subprocess.Popen(
            list(argv),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        wait_connectable(address, process, log, timeout)
        yield process
    finally:
        stop_process(process)


def session_to(router: Router, app: str, *, transport: str = "unix") -> EmperorSession:
    """A session whose relative URLs go through ``router`` (its unix listener, or its TCP port) to ``app``."""
    address = router.unix_path if transport == "unix" else router.tcp_address
    return routed_session(address, lambda host: True, f"http://{router.host_for(app)}/")


@contextlib.contextmanager
def fronted(emperor: Any, **options: Any) -> Iterator[Callable[[], Router]]:
    """A router in front of a started ``emperor``, as a front door runs one (started on first use)."""
    started: list[Router] = []

    def front() -> Router:
        if not started:
            started.append(
                start_router(
                    emperor.route_map,
                    emperor.run_dir,
                    nginx=options.pop("nginx", None) or nginx_binary(),
                    env=emperor.process_env,
                    preexec_fn=die_with_parent(signal.SIGTERM),
                    **options,
                )
            )
        return started[0]

    emperor.front = front
    try:
        yield front
    finally:
        for router in started:
            router.stop()


def echo_emperor() -> contextlib.AbstractContextManager[Any]:
    """A real emperor (the lead's engine), skipped/failed like any missing component when uwsgi is absent."""
    from pytest_emperor.engine.emperor import Emperor

    return Emperor(uwsgi_binary())


@contextlib.contextmanager
def running_router(route_map: RouteMap, routed: Sequence[str] = (), **options: Any) -> Iterator[Router]:
    """A started router in a private dir, routing the apps ``routed`` (vassals of another emperor: the router
    routes only what its table holds); stopped, and its dir removed, even when the test fails."""
    with short_tmp_dir() as run_dir:
        router = start_router(route_map, run_dir, nginx=options.pop("nginx", None) or nginx_binary(), **options)
        for name in routed:
            router.routes.set(name, RouteState.READY)
        try:
            yield router
        finally:
            router.stop()


def raw_exchange(address: Address, data: bytes, *, timeout: float = 15, half_close: bool = False) -> bytes:
    """Send raw bytes and read until the server closes (or ``timeout``, which fails the test)."""
    family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(address)
        sock.sendall(data)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except socket.timeout:
            got = b"".join(chunks)
            pytest.fail(f"{address} did not close within {timeout} s after {data[:200]!r}; got {got!r}")
        return b"".join(chunks)
