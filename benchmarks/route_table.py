"""What routing only the run's apps costs: a route table update (what each vassal's "spawned", "ready" and
removal events do) in a table already holding 50 apps, and the time until the router answers by the new table.

An update is files created or removed in the run dir and the 404 page rewritten; nginx tests the table per
request, so no reload is involved and the router's very next request sees it.

    .venv/bin/python benchmarks/route_table.py [--rounds 200]

Deploy-to-ready (which includes the route update on the emperor's reader thread) is benchmarks/readiness.py.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from pytest_emperor.routing.nginx import start_router
from pytest_emperor.routing.route_table import RouteState
from pytest_emperor.routing.router import Router
from pytest_emperor.routing.routes import RouteMap


def status_of(router: Router, host: str) -> bytes:
    """The status code the router answers a GET for ``host`` with."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(router.unix_path)
        sock.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        return sock.recv(12)[9:12]


def timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def fail() -> bool:
    raise AssertionError("the router did not answer by the route table")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pe-bench-", dir="/tmp") as run_dir:
        router = start_router(RouteMap.for_domain(), Path(run_dir), workers=1)
        try:
            table = router.routes
            for i in range(50):
                table.set(f"app{i}", RouteState.READY)
            flips: list[float] = []  # ready <-> down: a file moved, the page left as it is
            changes: list[float] = []  # an app added or removed: the page rewritten too
            visible: list[float] = []
            for _ in range(args.rounds):
                changes.append(timed(lambda: table.set("bench", RouteState.DOWN)))
                flips.append(timed(lambda: table.set("bench", RouteState.READY)))
                flips.append(timed(lambda: table.set("bench", RouteState.DOWN)))
                visible.append(timed(lambda: status_of(router, "bench.api.localhost") == b"502" or fail()))
                changes.append(timed(lambda: table.set("bench", None)))
        finally:
            router.stop()
    for what, times in (("state change (ready <-> down)", flips), ("app added or removed (page rewritten)", changes),
                        ("the next request, answered by the new table (no reload)", visible)):
        print(f"{what:58} p50 {statistics.median(times) * 1000:6.3f} ms   "
              f"p90 {statistics.quantiles(times, n=10)[-1] * 1000:6.3f} ms")

if __name__ == "__main__":
    main()
