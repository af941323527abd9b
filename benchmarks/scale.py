"""Scale benchmark of ``emperor-dev up``: many copies of one hello app under one emperor and router.

    .venv/bin/python benchmarks/scale.py [--apps 50] [--processes 1] [--duration 10] [--connections 64]

Runs the real CLI (``python -m pytest_emperor.dev up --port 0 h00=hello h01=hello ...``, every copy a NAME=PATH of
one app dir), and reports:

- time to all-ready: from starting ``up`` to its "N of N apps ready" line (the table is printed once every app
  answered its readiness probe);
- memory, from /proc: the router's RSS; the emperor's, and the emperor plus every vassal process summed, as RSS
  (which counts shared pages once per process) and as PSS (shared pages split between their sharers: what the
  run really costs);
- req/s through the router (nginx) spread across every app (wrk with a Lua script rotating the Host header, when
  wrk is on PATH; else a Python load generator, which is then the bottleneck), beside 2,800 req/s, what the
  retired built-in Python router served here (issue 9), and the target, 5x that; then, in the same run, the
  floor: a stock nginx (``--reference``, apt's by default, else the router's own binary) with the production block
  in Debian's nginx.conf, in front of the same vassal sockets;
- the shutdown time after SIGINT, and that nothing of the run is left.
"""

from __future__ import annotations

import argparse
import http.client
import json
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
from pathlib import Path

from router import reference_nginx  # benchmarks/router.py: the production site's block in a stock nginx.conf

from pytest_emperor.engine.processes import children_of, processes_with_marker, wait_exit
from pytest_emperor.routing.nginx import find_nginx

HELLO = """\
def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "12")])
    return [b"Hello World!"]
"""

# The production style, with the number of worker processes as a knob.
INI = """\
[uwsgi]
app_root = @(exec://dirname $(realpath %P))
chdir = %(app_root)
socket = /tmp/%n.api.sock
chmod-socket = 666
module = hello
processes = {processes}
master = true
vacuum = true
need-app = true
"""

#: 50 apps behind the retired built-in router, measured by this script before issue 9: the reference.
OLD_ROUTER_RPS = 2800

WRK_SCRIPT = """\
local names = {{{names}}}
local i = 0
request = function()
  i = i + 1
  return wrk.format("GET", "/", {{["Host"] = names[(i % #names) + 1] .. ".api.localhost"}})
end
"""


def memory_kib(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of ``pid`` in KiB, from /proc (0, 0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line and not line.startswith(" "))
    except OSError:
        return 0, 0
    number = re.compile(r"(\d+)")

    def kib(key: str) -> int:
        found = number.search(fields.get(key, "0"))
        return int(found.group(1)) if found else 0

    return kib("Rss"), kib("Pss")


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of ``pids`` so far (from /proc/<pid>/stat, in clock ticks)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of proc(5))
    return total / os.sysconf("SC_CLK_TCK")


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def load_wrk(port: int, names: list[str], duration: float, connections: int, workdir: Path) -> tuple[float, str]:
    """wrk spreading requests over every app by Host: (req/s, a description with latency and errors)."""
    script = workdir / "hosts.lua"
    script.write_text(WRK_SCRIPT.format(names=", ".join(f'"{n}"' for n in names)))
    threads = str(min(2, connections))
    out = subprocess.run(
        ["wrk", "-t", threads, "-c", str(connections), "-d", f"{max(1, round(duration))}s", "--latency",
         "-s", str(script), f"http://127.0.0.1:{port}/"],
        capture_output=True, text=True, check=True,
    ).stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M)
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    rate = float(rps.group(1)) if rps else 0
    return rate, (f"{rate:,.0f} req/s (wrk -c{connections}, {duration:g} s, p50 {p50.group(1) if p50 else '?'}, "
                  f"p99 {p99.group(1) if p99 else '?'}, non-2xx {bad.group(1) if bad else 0})")


def load_python(port: int, names: list[str], duration: float, connections: int) -> str:
    counts = [0] * connections
    errors = [0] * connections
    deadline = time.monotonic() + duration

    def client(k: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        i = k
        while time.monotonic() < deadline:
            conn.request("GET", "/", headers={"Host": f"{names[i % len(names)]}.api.localhost"})
            response = conn.getresponse()
            response.read()
            counts[k] += 1
            errors[k] += response.status != 200
            i += 1
        conn.close()

    threads = [threading.Thread(target=client, args=(k,)) for k in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return (f"{sum(counts) / duration:,.0f} req/s (Python generator, {connections} connections, {duration:g} s, "
            f"non-200 {sum(errors)}; the generator is the bottleneck)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--apps", type=int, default=50)
    parser.add_argument("--processes", type=int, default=1, help="worker processes per app")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--reference", default="/usr/sbin/nginx", help="the reference nginx (/usr/sbin/nginx)")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="edscale-", dir="/tmp"))
    tag = uuid.uuid4().hex[:4]
    names = [f"h{tag}-{i:02d}" for i in range(args.apps)]
    app = workdir / "hello"
    app.mkdir()
    (app / "hello.py").write_text(HELLO)
    (app / "app.uwsgi.ini").write_text(INI.format(processes=args.processes))
    (workdir / "tmp").mkdir()
    env = dict(os.environ, TMPDIR=str(workdir / "tmp"), EMPEROR_DEV_STATE_DIR=str(workdir / "state"))
    argv = [sys.executable, "-m", "pytest_emperor.dev", "up", "--port", "0", *(f"{n}=hello" for n in names)]
    started = time.monotonic()
    up = subprocess.Popen(argv, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert up.stdout is not None
        summary = ""
        for line in up.stdout:
            if "apps ready." in line:
                summary = line.split(".")[0]
                break
        ready_s = time.monotonic() - started
        if not summary:
            sys.exit(f"up exited with {up.wait()} before its apps were ready")
        # Keep draining the log stream so that `up` never blocks on a full pipe.
        threading.Thread(target=lambda: [None for _ in up.stdout or ()], daemon=True).start()
        state = json.loads((workdir / "state" / "up.json").read_text())
        run_dir, port = state["run_dir"], state["router_port"]
        emperor_pid = int((Path(run_dir) / "emperor.pid").read_text())
        pids = processes_with_marker(run_dir)
        # nginx reuses its environment's memory for its process titles, so it carries no readable marker: its
        # master is the child of `up` named nginx, and its workers are the master's children.
        masters = [p for p in children_of(up.pid) if cmdline(p).startswith("nginx")]
        router = masters + [w for m in masters for w in children_of(m)]
        uwsgi = [p for p in pids if p not in router]
        router_rss, router_pss = (sum(m) for m in zip(*(memory_kib(p) for p in router)))
        emperor_rss, _ = memory_kib(emperor_pid)
        uwsgi_rss, uwsgi_pss = (sum(m) for m in zip(*(memory_kib(p) for p in uwsgi)))
        up_rss, _ = memory_kib(up.pid)
        print(f"apps: {summary} ({args.processes} worker(s) each, {len(uwsgi)} uwsgi processes)")
        print(f"time to all-ready: {ready_s:.2f} s")
        print(f"router memory: RSS {router_rss / 1024:.1f} MiB, PSS {router_pss / 1024:.1f} MiB")
        print(f"emperor memory: RSS {emperor_rss / 1024:.1f} MiB alone; with every vassal: "
              f"RSS {uwsgi_rss / 1024:.1f} MiB summed, PSS {uwsgi_pss / 1024:.1f} MiB")
        print(f"`up` itself: RSS {up_rss / 1024:.1f} MiB")
        groups = {"`up` (log streaming)": [up.pid], "router": router, "uwsgi": uwsgi}
        before = {name: cpu_seconds(group) for name, group in groups.items()}
        if shutil.which("wrk"):
            rate, text = load_wrk(port, names, args.duration, args.connections, workdir)
            print(f"through `up`'s router: {text}")
            print(f"  = {rate / OLD_ROUTER_RPS:.1f}x the built-in router's {OLD_ROUTER_RPS:,} req/s (target >= 5x)")
        else:
            print("throughput:", load_python(port, names, args.duration, args.connections))
        print("CPU during the load: " + ", ".join(
            f"{name} {cpu_seconds(group) - before[name]:.1f} s" for name, group in groups.items()
        ) + f" (over {args.duration:g} s on {os.cpu_count()} cores)")
        if shutil.which("wrk"):
            # The floor, in the same run: a stock nginx with the production site's block in front of the same sockets.
            reference = Path(args.reference) if os.access(args.reference, os.X_OK) else find_nginx()
            with reference_nginx(reference, workdir / "reference", Path("/tmp")) as reference_port:
                theirs, text = load_wrk(reference_port, names, args.duration, args.connections, workdir)
            print(f"reference, {reference} with the production site's block over the same sockets: {text}")
            print(f"  `up`/reference: {rate / theirs:.2f}x")
        stopping = time.monotonic()
        up.send_signal(signal.SIGINT)
        code = up.wait(60)
        print(f"shutdown after SIGINT: {time.monotonic() - stopping:.2f} s, exit {code}")
        left = processes_with_marker(run_dir)
        sockets = [n for n in names if Path(f"/tmp/{n}.api.sock").exists()]
        print(f"left behind: {len(left)} processes, {len(sockets)} sockets, run dir exists: {Path(run_dir).exists()}")
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
            wait_exit(up.pid, 10)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
