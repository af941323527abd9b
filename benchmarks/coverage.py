"""Requests to an app measured by coverage.py inside its vassal, beside the same app unmeasured, in one run.

Two emperors run at once: one plain, one giving its vassals the coverage options of ``pytest --emperor --cov``
(testing/coverage.py: coverage.py started in the master, inherited by the workers). Each deploys the same app
(default: example_apps/service1, bottle in its own venv, measuring the app's dir as ``--cov=service1`` would).
Requests go over the uwsgi socket, one at a time, alternating plain and measured request by request so that
machine noise (a shared 2-core machine) hits both alike. Prints the time of all the requests on each side,
per-request medians and p90s, and the ratios of the totals and of the medians.

    .venv/bin/python benchmarks/coverage.py [--requests 200] [--app example_apps/service1] [--branch]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

# Run as a script, this file's directory comes first on sys.path, where this very file would shadow coverage.py.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from pytest_emperor.engine.emperor import Emperor  # noqa: E402 (after the sys.path fix)
from pytest_emperor.engine.vassal import Vassal  # noqa: E402
from pytest_emperor.testing.coverage import CoverageSettings, VassalCoverage  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def timed_request(vassal: Vassal) -> float:
    """Send one GET /; return its seconds."""
    start = time.perf_counter()
    response = vassal.request("GET", "/")
    elapsed = time.perf_counter() - start
    if response.status_code != 200:
        raise RuntimeError(f"{vassal.name} answered {response.status_code}: {response.content[:200]!r}")
    return elapsed


def summary(samples: list[float]) -> str:
    ms = sorted(s * 1000 for s in samples)
    p90 = ms[min(len(ms) - 1, int(len(ms) * 0.9))]
    return f"total {sum(ms):7.1f} ms   median {statistics.median(ms):5.2f} ms   p90 {p90:5.2f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=200, help="requests to each side (200)")
    parser.add_argument("--app", type=Path, default=ROOT / "example_apps" / "service1")
    parser.add_argument("--branch", action="store_true", help="measure branches too (--cov-branch)")
    args = parser.parse_args()
    app = args.app.resolve()
    coverage = VassalCoverage(CoverageSettings([str(app)], [], None, [], args.branch, None))
    plain: list[float] = []
    measured: list[float] = []
    try:
        with (
            Emperor() as bare,
            Emperor(vassal_options=coverage.vassal_options(), extra_args=coverage.emperor_flags()) as covered,
        ):
            plain_vassal = bare.deploy(app, name="bench-plain")
            covered_vassal = covered.deploy(app, name="bench-cov")
            for _ in range(20):  # warm-up: every worker has served, imports are done
                timed_request(plain_vassal)
                timed_request(covered_vassal)
            for _ in range(args.requests):
                plain.append(timed_request(plain_vassal))
                measured.append(timed_request(covered_vassal))
        files, problems = coverage.collect()
    finally:
        coverage.close()
    if not files or problems:  # the measured side must really have been measured
        raise SystemExit(f"the measured vassal wrote no coverage data: files {files}, problems {problems}")
    print(f"app: {app}  requests: {len(plain)} per side, alternating, branch: {args.branch}")
    print(f"without coverage: {summary(plain)}")
    print(f"with coverage:    {summary(measured)}   ({len(files)} data files)")
    totals = sum(measured) / sum(plain)
    medians = statistics.median(measured) / statistics.median(plain)
    print(f"ratio with/without: totals {totals:.2f}x, medians {medians:.2f}x  (target <= 1.5x)")


if __name__ == "__main__":
    main()
