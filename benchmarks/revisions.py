"""A revision's deploy beside a plain deploy of the working tree, both measured in this run.

A throw-away git repo holds example_apps/service3 at the tag ``v1`` and a setup that makes a virtualenv (what a
real profile's setup does first), with the user cache dir in a temp dir of its own. Measured:

* deploy: ``emperor.deploy()`` to ready of the working tree (the reference), against ``checkout(repo, "v1")`` +
  ``emperor.deploy()`` of the cached checkout, rounds alternating so that machine noise hits both alike; and
  the first deploy of the revision, which writes the checkout and runs its setup;
* suite: a second run of ``pytest --emperor`` whose test deploys ``v1`` (its checkout cached by the first run),
  against the same suite deploying the working tree instead; whole runs.

Rounds alternate the two sides; what a revision adds is the median of each round's difference.

The target: the cached revision adds at most 1 s to a run over the plain deploy.

    .venv/bin/python benchmarks/revisions.py [--rounds 10] [--suite-rounds 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from pytest_emperor.engine.emperor import Emperor
from pytest_emperor.revisions.cache import checkout

ROOT = Path(__file__).resolve().parent.parent
SETUP = "python3 -m venv --without-pip venv"
SUITE = """
def test_deploy(deploy_app):
    assert deploy_app(".", name="bench"{rev}).request("GET", "/").status_code == 200
"""


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)


def make_repo(where: Path) -> Path:
    repo = where / "bench"
    shutil.copytree(ROOT / "example_apps" / "service3", repo, ignore=shutil.ignore_patterns("test_*", "__pycache__"))
    (repo / "pyproject.toml").write_text(f'[tool.emperor-dev]\nsetup = "{SETUP}"\n')
    (repo / ".gitignore").write_text("venv/\n__pycache__/\n")
    git(repo, "init", "-q")
    git(repo, "config", "user.name", "bench")
    git(repo, "config", "user.email", "bench@example.invalid")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "v1")
    git(repo, "tag", "v1")
    return repo


def timed_deploy(emperor: Emperor, app: Callable[[], Path], name: str) -> float:
    """Seconds from asking for the app's path (a checkout, for a revision) to its vassal ready; then removed."""
    start = time.perf_counter()
    vassal = emperor.deploy(app(), name=name)
    elapsed = time.perf_counter() - start
    vassal.remove()
    return elapsed


def suite_run(repo: Path, rev: str) -> float:
    (repo / "test_bench.py").write_text(SUITE.format(rev=f", rev={rev!r}" if rev else ""))
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--emperor", "-q", "-p", "no:cacheprovider", "test_bench.py"],
        cwd=repo, capture_output=True, text=True, check=False,
    )
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"the suite failed:\n{done.stdout}{done.stderr}")
    return elapsed


def ms(samples: list[float]) -> str:
    return f"median {statistics.median(samples) * 1000:7.1f} ms   min {min(samples) * 1000:7.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--suite-rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pe-bench-") as scratch:
        os.environ["XDG_CACHE_HOME"] = str(Path(scratch) / "cache")
        repo = make_repo(Path(scratch))
        plain: list[float] = []
        cached: list[float] = []
        with Emperor(name_suffix="") as emperor:
            def working_tree() -> Path:
                return repo

            def revision() -> Path:
                return checkout(repo, "v1").path

            timed_deploy(emperor, working_tree, "warmup")  # page cache, the app's imports
            first = timed_deploy(emperor, revision, "first")
            for i in range(args.rounds):
                plain.append(timed_deploy(emperor, working_tree, f"plain{i}"))
                cached.append(timed_deploy(emperor, revision, f"cached{i}"))
        suite_plain: list[float] = []
        suite_cached: list[float] = []
        for _ in range(args.suite_rounds):
            suite_plain.append(suite_run(repo, ""))
            suite_cached.append(suite_run(repo, "v1"))
    # Each round's revision against the reference run just before it: a shared machine's noise (whole seconds on
    # a suite run) hits both sides of a pair alike.
    added = statistics.median(c - p for c, p in zip(cached, plain))
    added_suite = statistics.median(c - p for c, p in zip(suite_cached, suite_plain))
    print(f"rounds: {args.rounds} deploys, {args.suite_rounds} suite runs; setup: {SETUP}")
    print(f"deploy of the working tree (reference):      {ms(plain)}")
    print(f"deploy of v1, its checkout cached:           {ms(cached)}   adds {added * 1000:+.1f} ms")
    print(f"deploy of v1, first (checkout + setup):      {first * 1000:7.1f} ms")
    print(f"suite run deploying the working tree (ref.): {ms(suite_plain)}")
    print(f"suite run deploying v1, cached:              {ms(suite_cached)}   adds {added_suite * 1000:+.1f} ms")
    print("(what a revision adds: the median of each round's difference to the reference run beside it)")
    print(f"target: a cached revision adds at most 1000 ms: {'met' if max(added, added_suite) <= 1.0 else 'MISSED'}")


if __name__ == "__main__":
    main()
