"""Per-request cost of the test clients, beside the floor, in one run against one vassal.

* floor: the uwsgi packet written on a fresh unix socket and the response read until uWSGI closes it, with the
  sans-IO codec alone (what the old ``uwsgi_request()`` did);
* ``vassal.request()`` / ``vassal.session``: requests over the uwsgi adapter (same socket, same packet);
* ``vassal.httpx_direct``: httpx over the uwsgi transport (when httpx is installed);
* ``vassal.http``: requests through the router (an extra hop: for scale, not comparable).

Rounds alternate the clients so that machine noise hits all alike. Prints median and p90 per request.

    .venv/bin/python benchmarks/client.py [--requests 300] [--app example_apps/service3]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import signal
import socket
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from pytest_emperor._protocol.client import uwsgi_packet
from pytest_emperor.engine.emperor import Emperor
from pytest_emperor.engine.processes import die_with_parent
from pytest_emperor.engine.vassal import Vassal
from pytest_emperor.routing.nginx import start_router

ROOT = Path(__file__).resolve().parent.parent


def floor(vassal: Vassal) -> Callable[[], None]:
    """The raw exchange: connect, send the packet, read until close."""
    assert vassal.socket_path is not None
    path = vassal.socket_path
    packet = uwsgi_packet("GET", f"http://{vassal.host}/", [("User-Agent", "bench")], b"")

    def call() -> None:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(path)
            sock.sendall(packet)
            while sock.recv(65536):
                pass

    return call


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300, help="requests per client (default 300)")
    parser.add_argument("--app", type=Path, default=ROOT / "example_apps" / "service3")
    args = parser.parse_args()
    with Emperor(timeout=30) as emperor, contextlib.ExitStack() as stack:
        # the router a front door (the plugin, `up`) runs before the emperor
        router = start_router(
            emperor.route_map, emperor.run_dir, env=emperor.process_env, preexec_fn=die_with_parent(signal.SIGTERM)
        )
        stack.callback(router.stop)
        emperor.front = lambda: router
        vassal = emperor.deploy(args.app, name="bench-client")
        clients: dict[str, Callable[[], object]] = {
            "floor (codec + socket)": floor(vassal),
            "vassal.request()": lambda: vassal.request("GET", "/").content,
        }
        if importlib.util.find_spec("httpx") is not None:
            clients["vassal.httpx_direct"] = lambda: vassal.httpx_direct.get("/").content
        clients["vassal.http (router)"] = lambda: vassal.http.get("/").content
        for call in clients.values():  # warm-up: imports, router start, pools
            call()
        samples: dict[str, list[float]] = {name: [] for name in clients}
        for _ in range(args.requests):
            for name, call in clients.items():
                start = time.perf_counter()
                call()
                samples[name].append(time.perf_counter() - start)
        vassal.close_clients()
        vassal.remove()
    base = statistics.median(samples["floor (codec + socket)"])
    for name, values in samples.items():
        ms = sorted(v * 1000 for v in values)
        median = statistics.median(ms)
        p90 = ms[min(len(ms) - 1, int(len(ms) * 0.9))]
        print(f"{name:24} median {median:6.3f} ms   p90 {p90:6.3f} ms   x{median / (base * 1000):4.1f} of the floor")


if __name__ == "__main__":
    main()
