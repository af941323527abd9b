"""Soak: many deploy / reload / remove / kill-master / kill-worker / curse cycles, then count what is left.

Over ``--names`` vassal names, each cycle picks a name and an operation at random (seeded: the same ``--seed``
replays the same sequence) among those its state allows: a name not deployed is deployed or cursed (a broken
app deployed under it until the emperor throttles it, then removed); a deployed one is reloaded, removed, has its
master or a worker SIGKILLed (a random fault the product must absorb: the vassal must come back ready). Then the
emperor is stopped and the script counts what is left:

* processes carrying the run's marker (emperor, masters, workers, router or nginx),
* nginx processes of the run (a subset of the above, printed apart),
* socket files in the apps' socket dir,
* entries in the runs root (run dirs and lock files),
* file descriptors this process holds beyond those it held before the emperor started.

All must be 0 (exit 1 otherwise). Per operation it prints the count, p50 and p99 of its wall time.

    .venv/bin/python benchmarks/soak.py [--cycles 1000] [--names 20] [--seed 1]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

from pytest_emperor.engine.emperor import Emperor
from pytest_emperor.engine.processes import command_line, processes_with_marker
from pytest_emperor.engine.vassal import Vassal
from pytest_emperor.testing.broken import deploy_broken

APP = '''
def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]
'''

INI = """\
[uwsgi]
chdir = {app}
module = app
socket = {sockets}/%n.sock
master = true
processes = 2
vacuum = true
"""


def open_fds() -> set[int]:
    """This process's open file descriptors."""
    return {int(fd) for fd in os.listdir("/proc/self/fd")}


def percentile(values: list[float], q: float) -> float:
    """The ``q``-quantile (0..1) of ``values``, nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Soak:
    """The cycles against one emperor; ``timings`` per operation name."""

    def __init__(self, emperor: Emperor, app: Path, names: list[str], rng: random.Random) -> None:
        self.emperor = emperor
        self.app = app
        self.rng = rng
        self.deployed: dict[str, Vassal | None] = dict.fromkeys(names)
        self.timings: dict[str, list[float]] = defaultdict(list)

    def cycle(self) -> None:
        """One random operation on one random name."""
        name = self.rng.choice(sorted(self.deployed))
        vassal = self.deployed[name]
        ops: dict[str, Callable[[], None]]
        if vassal is None:
            ops = {"deploy": lambda: self._deploy(name), "curse": lambda: self._curse(name)}
            weights = [4, 1]
        else:
            ops = {
                "reload": lambda: self._reload(vassal),
                "remove": lambda: self._remove(name, vassal),
                "kill-master": lambda: self._kill_master(vassal),
                "kill-worker": lambda: self._kill_worker(vassal),
            }
            weights = [3, 3, 2, 2]
        op = self.rng.choices(sorted(ops), weights=[dict(zip(ops, weights))[k] for k in sorted(ops)])[0]
        started = time.perf_counter()
        ops[op]()
        self.timings[op].append(time.perf_counter() - started)

    def _deploy(self, name: str) -> None:
        self.deployed[name] = self.emperor.deploy(self.app, name)

    def _curse(self, name: str) -> None:
        deploy_broken(self.emperor, "bad-config", name).remove()

    def _reload(self, vassal: Vassal) -> None:
        vassal.reload()

    def _remove(self, name: str, vassal: Vassal) -> None:
        vassal.remove()
        self.deployed[name] = None

    def _kill_master(self, vassal: Vassal) -> None:
        vassal.kill()
        vassal.wait_cursed()
        vassal.wait_ready()

    def _kill_worker(self, vassal: Vassal) -> None:
        vassal.kill_worker()
        vassal.request("GET", "/")  # the survivor or the respawned worker answers


def main(argv: list[str] | None = None) -> int:
    """Run the soak; 0 if nothing was left behind."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cycles", type=int, default=1000)
    parser.add_argument("--names", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="soak-", dir="/tmp"))  # short: socket paths stay under 108 bytes
    app, sockets, runs = work / "app", work / "s", work / "runs"
    for path in (app, sockets, runs):
        path.mkdir()
    (app / "app.py").write_text(APP)
    (app / "app.uwsgi.ini").write_text(INI.format(app=app, sockets=sockets))
    fds_before = open_fds()
    started = time.perf_counter()
    emperor = Emperor(runs_root=runs, timeout=60)
    try:
        emperor.start()
        soak = Soak(emperor, app, [f"n{i:02d}" for i in range(args.names)], rng)
        for done in range(1, args.cycles + 1):
            soak.cycle()
            if done % 50 == 0:
                print(f"{done} cycles, {time.perf_counter() - started:.0f}s", file=sys.stderr, flush=True)
    finally:
        marker = str(emperor.run_dir)
        nginx_before_stop = [p for p in processes_with_marker(marker) if b"nginx" in command_line(p)]
        emperor.stop()
    left = {
        "processes": len(processes_with_marker(marker)),
        "nginx processes": len([p for p in nginx_before_stop if os.path.exists(f"/proc/{p}")]),
        "socket files": len(list(sockets.iterdir())),
        "run dirs and locks": len(list(runs.iterdir())),
        "file descriptors": len(open_fds() - fds_before),
    }
    print(f"soak: {args.cycles} cycles over {args.names} names, seed {args.seed}, "
          f"{time.perf_counter() - started:.0f}s")
    print(f"{'operation':<12} {'count':>6} {'p50 ms':>9} {'p99 ms':>9}")
    for op, times in sorted(soak.timings.items()):
        p50, p99 = statistics.median(times) * 1000, percentile(times, 0.99) * 1000
        print(f"{op:<12} {len(times):>6} {p50:>9.1f} {p99:>9.1f}")
    print("left behind: " + ", ".join(f"{what} {count}" for what, count in left.items()))
    for fd in sorted(open_fds() - fds_before):
        with contextlib.suppress(OSError):
            print(f"  fd {fd} -> {os.readlink(f'/proc/self/fd/{fd}')}")
    shutil.rmtree(work, ignore_errors=True)
    return 1 if any(left.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
