"""Deploy-to-ready: pytest-emperor's ``Emperor.deploy()`` beside raw uWSGI's spawn-to-accepting, in one run.

Both sides use the same emperor, the same app and the same kind of deploy (a symlink into the vassal dir):

* raw: create the symlink, then poll the emperor's stats socket every millisecond until the vassal reports
  ``accepting: 1`` (what uWSGI itself needs; every poll also wakes the emperor to scan, so it is the floor);
* ours: ``emperor.deploy(app)``, which predicts the socket from the ini, links, waits for the emperor's
  "ready to accept requests" event and answers a probe request over the socket.

Rounds alternate raw and ours so that machine noise hits both alike. Prints medians, p90s and the ratio.

    .venv/bin/python benchmarks/readiness.py [--rounds 15] [--app example_apps/service3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

from pytest_emperor.engine.emperor import Emperor
from pytest_emperor.engine.naming import resolve_ini

ROOT = Path(__file__).resolve().parent.parent


def raw_deploy(emperor: Emperor, app: Path, name: str) -> float:
    """Symlink the app's ini as ``name`` and poll stats until accepting; return seconds; then undeploy."""
    vassal = emperor._prepare(app, name)  # off the clock: only to stop and clean it the same way
    start = time.perf_counter()
    os.symlink(vassal.ini, vassal.symlink)
    while True:
        running = emperor.stats().vassals.get(vassal.id)
        if running is not None and running.accepting:
            elapsed = time.perf_counter() - start
            break
        # Not a spin: every stats read costs the emperor a JSON dump on a 2-core machine, which would slow the
        # very start-up being measured. 1 ms granularity is well under the times measured.
        time.sleep(0.001)
    vassal.stop()
    return elapsed


def ours_deploy(emperor: Emperor, app: Path, name: str) -> float:
    """``emperor.deploy()`` to ready; return seconds; then remove."""
    start = time.perf_counter()
    vassal = emperor.deploy(app, name=name)
    elapsed = time.perf_counter() - start
    vassal.remove()
    return elapsed


def summary(samples: list[float]) -> str:
    ms = sorted(s * 1000 for s in samples)
    p90 = ms[min(len(ms) - 1, int(len(ms) * 0.9))]
    return f"median {statistics.median(ms):6.1f} ms   p90 {p90:6.1f} ms   min {ms[0]:6.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--app", type=Path, default=ROOT / "example_apps" / "service3")
    args = parser.parse_args()
    ini = resolve_ini(args.app)
    raw: list[float] = []
    ours: list[float] = []
    with Emperor(name_suffix="", keep=bool(os.environ.get("KEEP"))) as emperor:
        ours_deploy(emperor, args.app, "warmup")  # page cache, python imports of the app
        for i in range(args.rounds):
            raw.append(raw_deploy(emperor, args.app, f"raw{i}"))
            ours.append(ours_deploy(emperor, args.app, f"ours{i}"))
    print(f"app: {ini}  rounds: {args.rounds}")
    print(f"raw uWSGI (symlink -> stats accepting): {summary(raw)}")
    print(f"pytest-emperor deploy() -> ready:      {summary(ours)}")
    print(f"ratio ours/raw (medians): {statistics.median(ours) / statistics.median(raw):.2f}x  (target <= 1.25x)")


if __name__ == "__main__":
    main()
