"""Does ``emperor-dev check`` reach the verdict booting reaches? Case by case, on the example apps and the
corpus the tests keep (tests/check_cases, tests/check_corpus).

For each app: the *static* verdict (any error-level finding from the static rules alone, ``--static``) beside
the *boot* verdict (any B/X finding when the same app is booted under a real emperor as production deploys it,
the reference measured in the same run). Prints one line per case, the agreement count, and the time each side
took. ``broken`` means "would fail CI at --fail-on error".

    .venv/bin/python benchmarks/check_verdicts.py [PATH ...]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from pytest_emperor.check.rules import Severity
from pytest_emperor.check.runner import CheckSettings, find_inis, run_check
from pytest_emperor.engine.binary import find_uwsgi

ROOT = Path(__file__).resolve().parent.parent
DEFAULT = [ROOT / "example_apps", ROOT / "tests" / "check_cases", ROOT / "tests" / "check_corpus"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", type=Path, default=DEFAULT)
    args = parser.parse_args()
    uwsgi = find_uwsgi(None)
    inis = [ini for p in args.paths for ini in find_inis(p)]
    t0 = time.perf_counter()
    static = run_check(inis, CheckSettings(boot=False, uwsgi=uwsgi))
    t1 = time.perf_counter()
    booted = run_check(inis, CheckSettings(boot=True, uwsgi=uwsgi, timeout=60))
    t2 = time.perf_counter()
    agree = 0
    print(f"{'case':42} {'static':8} {'boot':8} static codes / boot codes")
    for path in static.files:
        errors = sorted({f.code for f in static.findings if f.path == path and f.severity >= Severity.ERROR})
        boot = sorted({f.code for f in booted.findings if f.path == path and f.code[0] in "BX"})
        s_verdict, b_verdict = ("broken" if errors else "ok"), ("broken" if boot else "ok")
        agree += s_verdict == b_verdict
        mark = "" if s_verdict == b_verdict else "  <-- differs"
        case = str(Path(path).parent.relative_to(ROOT) if Path(path).is_absolute() else Path(path).parent)
        print(f"{case:42} {s_verdict:8} {b_verdict:8} {','.join(errors) or '-'} / {','.join(boot) or '-'}{mark}")
    n = len(static.files)
    print(f"same verdict as booting: {agree}/{n}")
    print(f"time: static {t1 - t0:.2f} s for {n} apps; boot check (reference) {t2 - t1:.2f} s")


if __name__ == "__main__":
    main()
