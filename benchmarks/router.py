"""Router benchmark: the same hello app directly, through the built-in router and through nginx, in one run.

    .venv/bin/python benchmarks/router.py [--duration 5] [--connections 32] [--workers 1]

Prints requests/s, p50/p99 latency and (on Linux) the router's CPU time per request for each, and the
built-in/nginx ratios (targets: >= 0.6x the req/s, p99 within 2x). Uses wrk (``apt-get install wrk``) when it
is on PATH, else a Python load generator (which is itself the bottleneck: only ratios measured with the same
generator are meaningful).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pytest_emperor.binary import find_uwsgi
from pytest_emperor.router import RouteMap, start_router

HELLO = """\
def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "12")])
    return [b"Hello World!"]
"""


@dataclass
class Result:
    """One load run."""

    name: str
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    requests: int
    #: The router's CPU time (user + system, all its processes) per request, in microseconds; 0 if unknown.
    cpu_us: float = 0.0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _wait_connectable(address: str | tuple[str, int], process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with {process.returncode}")
        family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
        with socket.socket(family) as probe, contextlib.suppress(OSError):
            probe.connect(address)
            return
        time.sleep(0.01)  # no event for "listening": poll tightly under the deadline
    raise RuntimeError(f"{address} not connectable within {timeout} s")


@contextlib.contextmanager
def uwsgi(run_dir: Path, option: str, address: str, processes: int) -> Iterator[None]:
    """The hello app under a real uwsgi master, stopped with SIGINT and reaped at the end."""
    argv = [str(find_uwsgi()), option, address, "--wsgi-file", str(run_dir / "hello.py"), "--master",
            "--processes", str(processes), "--disable-logging", "--need-app"]  # fmt: skip
    with (run_dir / f"uwsgi{option}.log").open("ab") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        host, _, port = address.rpartition(":")
        _wait_connectable(address if option == "--socket" else (host, int(port)), process)
        yield
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)


def run_wrk(name: str, url: str, host: str, duration: int, connections: int) -> Result:
    """wrk with one thread (the machine's other core serves) and latency percentiles."""
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", "-H", f"Host: {host}", url],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip

    def latency(percent: str) -> float:
        found = re.search(rf"^\s+{percent}%\s+([\d.]+)(us|ms|s)\s*$", out, re.MULTILINE)
        if found is None:
            raise RuntimeError(f"no {percent}% latency in wrk output:\n{out}")
        return float(found.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[found.group(2)]

    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if rps is None:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    total_errors = int(errors.group(1)) if errors else 0
    if socket_errors:
        total_errors += sum(int(n) for n in socket_errors.groups())
    count = re.search(r"(\d+) requests in", out)
    requests = int(count.group(1)) if count else 0
    return Result(name, float(rps.group(1)), latency("50"), latency("99"), total_errors, requests)


def run_python(name: str, url: str, host: str, duration: int, connections: int) -> Result:
    """A keep-alive load generator in threads: used when wrk is missing, far slower than wrk."""
    match = re.match(r"http://([^:/]+):(\d+)(/.*)", url)
    assert match is not None
    address, port, path = match.group(1), int(match.group(2)), match.group(3)
    latencies: list[float] = []
    errors = [0]
    deadline = time.monotonic() + duration
    lock = threading.Lock()

    def worker() -> None:
        conn = http.client.HTTPConnection(address, port, timeout=30)
        mine: list[float] = []
        while time.monotonic() < deadline:
            started = time.perf_counter()
            conn.request("GET", path, headers={"Host": host})
            response = conn.getresponse()
            response.read()
            mine.append(time.perf_counter() - started)
            if response.status != 200:
                with lock:
                    errors[0] += 1
        conn.close()
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=worker) for _ in range(connections)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(len(latencies) * p))] * 1000

    return Result(name, len(latencies) / elapsed, pct(0.50), pct(0.99), errors[0], len(latencies))


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU time of the live processes in group ``pgid`` (Linux /proc; 0.0 elsewhere)."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            # Fields after the ")" that ends the command name: state, ppid, pgrp, ... utime (14), stime (15).
            fields = stat.read_text().rpartition(")")[2].split()
            if int(fields[2]) == pgid:
                total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 0.0


def main() -> None:
    """Run the three configurations and print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=5, help="seconds per run (default 5)")
    parser.add_argument("--connections", type=int, default=32, help="concurrent keep-alive connections (32)")
    parser.add_argument("--workers", type=int, default=1, help="router worker processes, nginx and built-in (1)")
    parser.add_argument("--processes", type=int, default=2, help="uwsgi worker processes (2)")
    args = parser.parse_args()
    load = run_wrk if shutil.which("wrk") else run_python
    print(f"load generator: {'wrk' if load is run_wrk else 'python threads (wrk not found)'}; "
          f"{args.connections} connections, {args.duration} s each; router workers: {args.workers}; "
          f"uwsgi processes: {args.processes}; cpus: {os.cpu_count()}")  # fmt: skip
    run_dir = Path(tempfile.mkdtemp(prefix="emperor-router-bench-", dir="/tmp"))
    results: list[Result] = []
    try:
        (run_dir / "hello.py").write_text(HELLO)
        route_map = RouteMap.for_domain("api.localhost", run_dir)
        port = _free_port()
        host = route_map.host_for("hello")
        with (
            uwsgi(run_dir, "--http11-socket", f"127.0.0.1:{port}", args.processes),
            uwsgi(run_dir, "--socket", route_map.socket_for("hello"), args.processes),
        ):
            results.append(load("direct (uwsgi --http11-socket)", f"http://127.0.0.1:{port}/", host, args.duration,
                                args.connections))  # fmt: skip
            for kind in ("builtin", "nginx"):
                with contextlib.ExitStack() as stack:
                    router = start_router(kind, route_map, run_dir / kind, workers=args.workers)
                    stack.callback(router.stop)
                    url = f"http://{router.tcp_address[0]}:{router.tcp_address[1]}/"
                    cpu_before = group_cpu_seconds(router.process.pid)
                    result = load(f"{kind} router", url, host, args.duration, args.connections)
                    cpu = group_cpu_seconds(router.process.pid) - cpu_before
                    result.cpu_us = cpu / max(result.requests, 1) * 1e6
                    results.append(result)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    print(f"{'':32} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} {'router CPU us/req':>18}")
    for r in results:
        cpu_text = f"{r.cpu_us:18.0f}" if r.cpu_us else f"{'':18}"
        print(f"{r.name:32} {r.rps:10.0f} {r.p50_ms:8.2f} {r.p99_ms:8.2f} {r.errors:7d} {cpu_text}")
    by_name = {r.name: r for r in results}
    builtin, nginx = by_name["builtin router"], by_name["nginx router"]
    rps_ratio = builtin.rps / nginx.rps
    p99_ratio = builtin.p99_ms / nginx.p99_ms
    print(f"built-in/nginx: req/s {rps_ratio:.2f}x (target >= 0.6x), p99 {p99_ratio:.2f}x (target <= 2x)")
    sys.exit(0 if rps_ratio >= 0.6 and p99_ratio <= 2 else 1)


if __name__ == "__main__":
    main()
