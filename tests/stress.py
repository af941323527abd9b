"""``make stress``: the integration tests N times in a row with every CPU saturated; any failure fails it.

A test that fails 1 run in 30 under load is a bug to find, not to retry, and load is what exposes races: a busy
machine (as CI machines are) stretches every window between two steps of the product. The load generator is one
busy-looping process per CPU, started in a session of its own and always stopped (Ctrl-C and SIGTERM included),
so nothing of it outlives this script.

    python tests/stress.py [--runs N] [--load K] [-- pytest arguments]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

ROOT = Path(__file__).resolve().parent.parent


@contextmanager
def cpu_load(processes: int) -> Iterator[list[int]]:
    """``processes`` busy loops for the duration of the block; stopped (and reaped) however the block ends."""
    procs = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"], start_new_session=True)
        for _ in range(processes)
    ]
    try:
        yield [p.pid for p in procs]
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()


def run_pytest(cmd: list[str]) -> tuple[int, str]:
    """Run pytest, output captured, in a process group of its own. Interrupted, the group gets a SIGINT, as a
    terminal's Ctrl-C gives it (pytest and its xdist workers stop cleanly: fixtures tear down), and a minute for
    it before SIGKILL."""
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate()
    except BaseException:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            print("pytest did not stop within 60 s of SIGINT: killed", file=sys.stderr)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        raise
    return proc.returncode, out


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # so that SIGTERM, too, runs the clean-up of cpu_load


def main(argv: list[str] | None = None) -> int:
    """Run the stress loop; 0 if every run passed."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=int(os.environ.get("STRESS_RUNS", "5")),
                        help="how many times to run the tests (default 5, or $STRESS_RUNS)")
    parser.add_argument("--load", type=int, default=os.cpu_count() or 2,
                        help="busy-looping processes (default: one per CPU)")
    parser.add_argument("pytest_args", nargs="*",
                        help="passed to pytest (default: the whole suite, -n 2, as CI runs it)")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.load < 0:
        parser.error("--runs must be at least 1 and --load at least 0")
    # The whole suite, as CI runs it: the pure tests cost seconds, and any test can meet a loaded machine in CI.
    pytest_args = args.pytest_args or ["-n", "2"]
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *pytest_args]
    signal.signal(signal.SIGTERM, _terminate)
    # A shell starts a background job (`make stress &`, a CI step without job control) with SIGINT and SIGQUIT
    # ignored (POSIX), and an ignored signal stays ignored across exec: the tests that press Ctrl-C on a pytest
    # of their own would see it ignored and hang. Handled here, they are back to their defaults in each child.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGQUIT, _terminate)
    failed = []
    with cpu_load(args.load) as load:
        print(f"stress: {args.runs} runs of `{' '.join(cmd[1:])}` under {len(load)} busy loops", flush=True)
        for run in range(1, args.runs + 1):
            started = time.monotonic()
            returncode, out = run_pytest(cmd)
            summary = (out.strip().splitlines() or ["(no output)"])[-1]
            print(f"run {run}/{args.runs}: {summary} [{time.monotonic() - started:.0f}s]", flush=True)
            if returncode != 0:
                failed.append(run)
                print(out[-20000:], flush=True)
    print(f"stress: {args.runs - len(failed)}/{args.runs} runs green" + (f"; failed: {failed}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
