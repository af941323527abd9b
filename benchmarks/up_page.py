"""``emperor-dev up``'s page with many apps: how late a state change shows in an open page, and what it weighs.

    .venv/bin/python benchmarks/up_page.py [--apps 50] [--rounds 5]

Runs the real CLI (``python -m pytest_emperor.dev up --port 0`` with ``--apps`` copies of one hello app, every copy a
NAME=PATH of one app dir, plus one broken app) and Debian's Chromium (headless, through Playwright) on
``http://localhost:<port>/``, then reports:

- the latency of a state change: ``emperor-dev add`` of one more app, from the moment ``up`` prints its
  ``emperor | NAME: ready`` line (the same stream feeds the page) to the moment the row in the open page reads
  ``ready`` (a MutationObserver in the page stamps it), ``--rounds`` times: min, median, max;
- the page's size: ``up.json`` with every app (and the broken app's error lines), the three static files;
- the CPU ``up`` spends while nothing happens (10 s), the page's document kept current included.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path

from scale import HELLO, INI, cpu_seconds

from pytest_emperor.dev.page import ASSETS
from pytest_emperor.dev.state import StateDir

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"

# Stamps, in the page, when each app's row first reads "ready" (epoch seconds, as Python's time.time()).
OBSERVER = """
window.readyAt = {};
new MutationObserver(() => {
  for (const cell of document.querySelectorAll("tr.app td.state")) {
    const name = cell.parentElement.getAttribute("data-app");
    if (cell.textContent === "ready" && !(name in window.readyAt)) window.readyAt[name] = Date.now() / 1000;
  }
}).observe(document.querySelector("#apps tbody"), {subtree: true, childList: true, characterData: true});
"""


class Lines:
    """``up``'s stdout, each line with the time it was read."""

    def __init__(self, stream: object) -> None:
        self.lines: list[tuple[float, str]] = []
        self.cond = threading.Condition()
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream: object) -> None:
        for line in stream:  # type: ignore[attr-defined]
            with self.cond:
                self.lines.append((time.time(), line.rstrip("\n")))
                self.cond.notify_all()

    def wait(self, text: str, timeout: float = 120) -> float:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for at, line in self.lines:
                    if text in line:
                        return at
                if not self.cond.wait(deadline - time.monotonic()):
                    raise SystemExit(f"timed out waiting for {text!r}; last lines: {self.lines[-20:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--apps", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    work = Path(tempfile.mkdtemp(prefix="pg-", dir="/tmp"))
    tag = uuid.uuid4().hex[:4]
    app = work / "hello"
    app.mkdir()
    (app / "hello.py").write_text(HELLO)
    (app / "app.uwsgi.ini").write_text(INI.format(processes=1))
    shutil.copytree(ROOT / "example_apps" / "broken-config", work / "broken")
    (work / "tmp").mkdir()
    env = dict(os.environ, TMPDIR=str(work / "tmp"), EMPEROR_DEV_STATE_DIR=str(work / "state"))
    names = [f"p{tag}{i:02d}" for i in range(args.apps)]
    up = subprocess.Popen(
        [sys.executable, "-m", "pytest_emperor.dev", "up", "--port", "0", *(f"{n}=hello" for n in names),
         f"b{tag}=broken"],
        cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        lines = Lines(up.stdout)
        lines.wait("apps ready. Ctrl-C")
        instance = StateDir(work / "state").read()
        assert instance is not None
        base = f"http://localhost:{instance.router_port}/"
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM)
            page = browser.new_page(bypass_csp=True)  # wait_for_function evaluates a string: the page forbids it
            page.goto(base)
            page.wait_for_function(f"document.querySelectorAll('tr.app').length === {args.apps + 1}")
            page.evaluate(OBSERVER)
            latencies = []
            for round_ in range(args.rounds):
                name = f"a{tag}{round_}"
                added = subprocess.run([sys.executable, "-m", "pytest_emperor.dev", "add", "hello", "--name", name],
                                       cwd=work, env=env, capture_output=True, text=True, check=False)
                assert added.returncode == 0, added.stderr
                printed = lines.wait(f"| {name}: ready")
                page.wait_for_function(f"'{name}' in window.readyAt", timeout=30_000)
                latencies.append(page.evaluate(f"window.readyAt['{name}']") - printed)
            browser.close()
        with urllib.request.urlopen(base + "up.json") as response:
            document = response.read()
        shown = json.loads(document)
        sizes = {}
        for asset in ASSETS:
            with urllib.request.urlopen(base + ("" if asset == "index.html" else asset)) as response:
                sizes[asset] = len(response.read())
        before = cpu_seconds([up.pid])
        idle_start = time.monotonic()
        time.sleep(10)  # the measurement itself: up left alone for 10 s
        idle = (cpu_seconds([up.pid]) - before) / (time.monotonic() - idle_start)
    finally:
        up.send_signal(signal.SIGINT)
        up.wait(60)
        shutil.rmtree(work, ignore_errors=True)

    ms = sorted(1000 * latency for latency in latencies)
    print(f"apps on the page: {len(shown['apps'])} ({args.apps} hello + 1 broken + {args.rounds} added)")
    print(f"state change shown (up's 'ready' line -> the open page's row reads ready), {args.rounds} rounds: "
          f"min {ms[0]:.0f} ms, median {statistics.median(ms):.0f} ms, max {ms[-1]:.0f} ms")
    print(f"up.json: {len(document):,} bytes; static files: "
          + ", ".join(f"{asset} {size:,} bytes" for asset, size in sizes.items()))
    print(f"up idle, page kept current: {100 * idle:.1f} % of a core")


if __name__ == "__main__":
    main()
