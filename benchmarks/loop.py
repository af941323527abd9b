"""The everyday loop, each figure beside its reference measured in the same run (issue 10):

1. plugin installed, not asked for: ``pytest --co -q`` on a one-test dir, beside ``pytest -p no:emperor``;
2. one-test ``pytest --emperor`` (start, deploy_app, one request, stop), beside the same run without ``--emperor``;
   and one-test ``pytest --emperor --emperor-attach`` against a running ``emperor-dev up`` (app_vassal, one
   request), beside the same run without ``--emperor``;
3. a vassal's removal: ``deploy_app``'s teardown (``remove(wait=False)``) and a waited ``remove()``, beside uWSGI
   alone (unlink the symlink, poll the stats until the vassal is gone);
4. ``emperor-dev up`` with N apps until its table, beside a raw ``uwsgi --emperor`` started from nothing over the
   same N links until every vassal answers a request; then Ctrl-C (SIGINT) and ``emperor-dev down`` until ``up``
   exits, beside that raw emperor's own stop (SIGINT, its masters and itself woken as ``Emperor.stop()`` does).

Runs alternate the measured command and its reference so that machine noise hits both alike; medians are printed
(with CPU time for the plugin, whose wall time on a shared machine is noisier than the figure).

    .venv/bin/python benchmarks/loop.py [--rounds 5] [--apps 50] [--only plugin,pytest,attach,remove,up]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from pytest_emperor._protocol.client import direct_session
from pytest_emperor.engine.binary import find_uwsgi
from pytest_emperor.engine.emperor import Emperor
from pytest_emperor.engine.processes import (
    MARKER_ENV,
    children_of,
    hasten_stop,
    kill_all,
    processes_with_marker,
    wait_exit,
)
from pytest_emperor.engine.runs import remove_stale_socket
from pytest_emperor.engine.vassal import STOP_GRACE

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "example_apps" / "service3"  # hello world, 2 processes, vacuum, the production ini style
BIN = Path(sys.executable).parent

ONE_TEST = f"""\
def test_one(deploy_app):
    assert deploy_app({str(APP)!r}).request("GET", "/").status_code == 200
"""

ATTACHED_TEST = """\
def test_attached(app_vassal):
    assert app_vassal.request("GET", "/").status_code == 200
"""


PLUGIN_IMPORT = """\
import time, pytest
start = time.perf_counter()
import pytest_emperor.plugin
print(time.perf_counter() - start)
"""

# The one test's work step by step, in a fresh interpreter (imports included), as the plugin does it.
PHASES = f"""\
import json, time
t = [time.perf_counter()]
from pytest_emperor.engine.emperor import Emperor
t.append(time.perf_counter())
emperor = Emperor().start()
t.append(time.perf_counter())
vassal = emperor.deploy({str(APP)!r})
vassal.request("GET", "/")
t.append(time.perf_counter())
vassal.remove(wait=False)
t.append(time.perf_counter())
emperor.stop()
t.append(time.perf_counter())
names = ["import", "emperor start", "deploy+request", "teardown", "emperor stop"]
print(json.dumps({{n: b - a for n, a, b in zip(names, t, t[1:])}}))
"""


# Python as users run it, with its bytecode cache: with PYTHONDONTWRITEBYTECODE every import compiles its source
# again, which would measure the compiler rather than the imports.
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def timed(command: list[str], cwd: Path, env: dict[str, str] = ENV) -> tuple[float, float]:
    """Run ``command`` to completion; return its wall and CPU (user + system, children) seconds."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(command, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:7.1f} ms"


def line(what: str, ours: float, reference: float, ref_name: str, target: str) -> None:
    print(f"{what:<46} {ms(ours)}   {ref_name:<28} {ms(reference)}   +{ms(ours - reference).strip():>9}  ({target})")


def bench_plugin(rounds: int, work: Path) -> None:
    (work / "test_a.py").write_text("def test_a():\n    pass\n")
    base = [str(BIN / "pytest"), "--co", "-q", "-p", "no:cacheprovider", "-p", "no:xdist", "-p", "no:hypothesispytest"]
    timed(base, work)  # writes the bytecode caches (see ENV)
    ours, ref = [], []
    for _ in range(rounds * 4):
        ours.append(timed(base, work))
        ref.append(timed([*base, "-p", "no:emperor"], work))
    # On a shared machine the minimum is the steadiest estimate of what a run itself costs.
    for i, what in ((0, "wall"), (1, "CPU")):
        for pick in (statistics.median, min):
            figures = [pick(x[i] for x in s) for s in (ours, ref)]
            line(f"plugin installed, no --emperor: {what} {pick.__name__}", *figures, "-p no:emperor",
                 "target +<= 20 ms")
    # The same cost without the noise of a whole pytest run: the plugin module's import after pytest's.
    imports = [float(subprocess.run([sys.executable, "-c", PLUGIN_IMPORT], env=ENV, check=True,
                                    capture_output=True, text=True).stdout) for _ in range(rounds * 4)]
    line("  the plugin's import alone (min)", min(imports), 0.0, "(nothing)", "target <= 20 ms")


def bench_pytest(rounds: int, work: Path) -> None:
    (work / "test_one.py").write_text(ONE_TEST)
    base = [str(BIN / "pytest"), "-q", "-p", "no:cacheprovider", "-p", "no:xdist", "test_one.py"]
    timed([*base, "--emperor"], work)  # writes the bytecode caches (see ENV)
    ours, ref = [], []
    for _ in range(rounds):
        ours.append(timed([*base, "--emperor"], work))
        ref.append(timed(base, work))
    for i, what in ((0, "wall"), (1, "CPU, uWSGI's included")):
        figures = [statistics.median(x[i] for x in s) for s in (ours, ref)]
        line(f"one-test pytest --emperor: {what}", *figures, "without --emperor (skips)", "target +<= 500 ms")
    phases = [json.loads(subprocess.run([sys.executable, "-c", PHASES], env=ENV, check=True, capture_output=True,
                                        text=True).stdout) for _ in range(rounds)]
    print("  of which, in a fresh process: " + ", ".join(
        f"{name} {statistics.median(p[name]for p in phases) * 1000:.0f} ms" for name in phases[0]
    ))


def bench_attach(rounds: int, work: Path) -> None:
    """One test of the app a running ``up`` serves, attached to it, beside the same run without ``--emperor``."""
    (work / "test_attached.py").write_text(ATTACHED_TEST)
    state = work / "attach-state"
    env = dict(ENV, EMPEROR_DEV_STATE_DIR=str(state))
    up = subprocess.Popen(
        [sys.executable, "-m", "pytest_emperor.dev", "up", "--port", "0", "--state-dir", str(state),
         f"lp{secrets.token_hex(2)}={APP}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV,
    )
    try:
        assert up.stdout is not None
        for text in up.stdout:
            if "1 of 1 apps ready" in text:
                break
        else:
            raise RuntimeError("emperor-dev up exited before its app was ready")
        before = up_apps(state)
        base = [str(BIN / "pytest"), "-q", "-p", "no:cacheprovider", "-p", "no:xdist", "test_attached.py"]
        attached = [*base, "--emperor", "--emperor-attach", "--emperor-app", str(APP)]
        timed(attached, work, env)  # writes the bytecode caches (see ENV)
        ours, ref = [], []
        for _ in range(rounds * 2):
            ours.append(timed(attached, work, env))
            ref.append(timed(base, work, env))
        for i, what in ((0, "wall"), (1, "CPU")):
            figures = [statistics.median(x[i] for x in s) for s in (ours, ref)]
            line(f"one-test pytest --emperor --emperor-attach: {what}", *figures, "without --emperor (skips)",
                 "target +<= 150 ms")
        if up_apps(state) != before:
            raise RuntimeError(f"up changed: {before} before the runs, {up_apps(state)} after")
    finally:
        up.send_signal(signal.SIGINT)
        up.communicate(timeout=60)


def up_apps(state: Path) -> list[tuple[str, int | None]]:
    """The apps of the ``up`` on ``state`` and their pids, from ``emperor-dev status --json``."""
    out = subprocess.run(
        [sys.executable, "-m", "pytest_emperor.dev", "status", "--json", "--state-dir", str(state)],
        check=True, capture_output=True, text=True,
    ).stdout
    return [(app["name"], app["pid"]) for app in json.loads(out)["apps"]]


def bench_remove(rounds: int) -> None:
    background, waited, raw = [], [], []
    with Emperor() as emperor:
        for i in range(rounds * 3):
            vassal = emperor.deploy(APP, f"bg{i}")
            start = time.perf_counter()
            vassal.remove(wait=False)
            background.append(time.perf_counter() - start)
            emperor.finish_removals()  # off the clock: the next test does not wait for it

            vassal = emperor.deploy(APP, f"wait{i}")
            start = time.perf_counter()
            vassal.remove()
            waited.append(time.perf_counter() - start)

            vassal = emperor.deploy(APP, f"raw{i}")
            start = time.perf_counter()
            vassal.symlink.unlink()
            while vassal.id in emperor.stats().vassals:  # each read also rings the emperor's doorbell
                time.sleep(0.001)
            raw.append(time.perf_counter() - start)
            vassal.remove()  # off the clock: forget it, and remove its socket if vacuum did not
    reference = statistics.median(raw)
    line("deploy_app teardown (remove(wait=False))", statistics.median(background), reference,
         "uWSGI alone (unlink, gone)", "target <= 100 ms")
    line("Vassal.remove() waited", statistics.median(waited), reference, "uWSGI alone (unlink, gone)",
         "target <= 100 ms")


def answers(path: str) -> bool:
    """True once the vassal on ``path`` answers a request. A bare connect() is not enough: the master binds and
    listens before it loads the app, so connections queue up long before a worker accepts them."""
    try:
        with direct_session(path, "uwsgi", "http://localhost/", timeout=30) as session:
            session.get("/")
    except OSError:
        return False
    return True


def raw_emperor(names: list[str], work: Path) -> tuple[float, float]:
    """Seconds from starting a bare ``uwsgi --emperor`` over ``names`` links to every vassal answering, and from
    its SIGINT to its exit, woken as ``Emperor.stop()`` does (left alone, 50 vassals take 30 s or more)."""
    vassals = work / "raw-vassals"
    vassals.mkdir()
    for name in names:
        (vassals / f"{name}.ini").symlink_to(APP / "app.uwsgi.ini")
    sockets = [f"/tmp/{name}.api.sock" for name in names]
    marker = str(work / "raw")
    start = time.perf_counter()
    proc = subprocess.Popen(
        [str(find_uwsgi(None)), "--emperor", str(vassals), "--emperor-freq", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dict(os.environ, **{MARKER_ENV: marker}),
    )
    try:
        waiting = list(sockets)
        while waiting:  # polled: nothing else tells when a bare emperor's vassals answer
            waiting = [path for path in waiting if not answers(path)]
            time.sleep(0.002)
        booted = time.perf_counter() - start
    finally:
        start = time.perf_counter()
        masters = children_of(proc.pid)
        proc.send_signal(signal.SIGINT)
        hasten_stop(masters, grace=STOP_GRACE, timeout=10, each_tick=lambda: proc.send_signal(signal.SIGWINCH))
        while not wait_exit(proc.pid, 0.02) and time.perf_counter() - start < 10:
            proc.send_signal(signal.SIGWINCH)
        kill_all(processes_with_marker(marker))
        proc.wait()
        stopped = time.perf_counter() - start
        for path in sockets:
            remove_stale_socket(path)
        for link in vassals.iterdir():
            link.unlink()
        vassals.rmdir()
    return booted, stopped


def run_up(names: list[str], work: Path, stop: Callable[[subprocess.Popen[str], Path], None]) -> tuple[float, float]:
    """Seconds from starting ``emperor-dev up`` to its table's summary line, and from ``stop`` to its exit."""
    state = work / "state"
    args = [f"{name}={APP}" for name in names]
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest_emperor.dev", "up", "--port", "0", "--state-dir", str(state), *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    assert proc.stdout is not None
    seen = []
    for text in proc.stdout:
        seen.append(text)
        if re.search(r"of \d+ apps ready\.", text):
            break
    else:
        raise RuntimeError("emperor-dev up exited before its table:\n" + "".join(seen[-30:]))
    table = time.perf_counter() - start
    if f"{len(names)} of {len(names)} apps ready" not in text:
        raise RuntimeError(f"not every app became ready: {text.strip()}")
    start = time.perf_counter()
    stop(proc, state)
    proc.communicate(timeout=60)
    stopped = time.perf_counter() - start
    left = [name for name in names if os.path.exists(f"/tmp/{name}.api.sock")]
    if proc.returncode != 0 or left:
        raise RuntimeError(f"up exited {proc.returncode}; sockets left: {left}")
    return table, stopped


def ctrl_c(proc: subprocess.Popen[str], state: Path) -> None:
    proc.send_signal(signal.SIGINT)


def down(proc: subprocess.Popen[str], state: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pytest_emperor.dev", "down", "--state-dir", str(state)], check=True,
        stdout=subprocess.DEVNULL,
    )


def bench_up(rounds: int, apps: int, work: Path) -> None:
    raw, raw_stops, tables, interrupts, downs = [], [], [], [], []
    for i in range(rounds):
        names = [f"lp{secrets.token_hex(2)}-{n}" for n in range(apps)]
        booted, stopped = raw_emperor(names, work)
        raw.append(booted)
        raw_stops.append(stopped)
        table, stopped = run_up(names, work, ctrl_c if i % 2 == 0 else down)
        tables.append(table)
        (interrupts if i % 2 == 0 else downs).append(stopped)
    reference = statistics.median(raw)
    ratio = statistics.median(tables) / reference
    line(f"emperor-dev up, {apps} apps, until the table", statistics.median(tables), reference,
         "raw emperor, all answering", f"{ratio:.2f}x, target <= 1.5x")
    for what, samples in (("Ctrl-C", interrupts), ("emperor-dev down", downs)):
        if samples:
            line(f"emperor-dev up, {what}, until exited", statistics.median(samples), statistics.median(raw_stops),
                 "raw emperor's stop, woken", "target <= 1000 ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--apps", type=int, default=50)
    parser.add_argument("--only", default="plugin,pytest,attach,remove,up")
    args = parser.parse_args()
    only = set(args.only.split(","))
    print(f"median of {args.rounds} alternating rounds (x2 for the plugin, x3 for removals); app: {APP}")
    with tempfile.TemporaryDirectory(prefix="pe-loop-") as directory:
        work = Path(directory)
        if "plugin" in only:
            bench_plugin(args.rounds, work)
        if "pytest" in only:
            bench_pytest(args.rounds, work)
        if "attach" in only:
            bench_attach(args.rounds, work)
        if "remove" in only:
            bench_remove(args.rounds)
        if "up" in only:
            bench_up(args.rounds, args.apps, work)


if __name__ == "__main__":
    main()
