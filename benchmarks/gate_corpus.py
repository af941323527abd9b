"""How far ``emperor-dev check`` can be trusted on uWSGI configs nobody here wrote.

    .venv/bin/python benchmarks/gate_corpus.py [--verbose] [FILE ...]

Runs ``emperor-dev check --static --format json`` (the default rules and ``--fail-on``, static mode) on every
config stored in benchmarks/gate_corpus/ (each copied alone into a fresh temporary directory, the way a CI job
sees a config it did not write), and compares each error or warning finding with the ground truth kept in
benchmarks/gate_corpus/SOURCES.toml:

- a finding is **real** when it matches a ``[[config.problem]]`` of that file: same line, and its code is one of
  the problem's ``codes``;
- otherwise its verdict comes from ``[[config.judged]]`` (code and line, or code alone): ``wrong`` (wrong about
  uWSGI), ``irrelevant`` (true of the project's own convention, not of that config), ``debatable``, or ``real``
  (a real problem the ground truth counts elsewhere);
- a finding judged nowhere is **unjudged**: counted as false, and listed so that it gets a verdict.

A problem is **missed** when no finding matched it. Prints, per file and in total: findings, real, false,
missed; precision (real / findings) and recall (problems found / problems); the files with no real problem that
exit non-zero; and crashes (a traceback, exit 2, or output that is not the JSON report). Info findings are not
counted: they never fail the gate. The script imports nothing of the package: it runs whatever
``pytest_emperor`` the interpreter running it has installed, so a branch is measured by running this file with
that branch's interpreter.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python < 3.11
    import tomli as tomllib

CORPUS = Path(__file__).resolve().parent / "gate_corpus"
MANIFEST = CORPUS / "SOURCES.toml"
COUNTED = ("error", "warning")
FALSE_VERDICTS = ("wrong", "irrelevant", "debatable", "unjudged")


@dataclass
class FileTally:
    """One config's findings sorted by verdict, its missed problems, and how the check ended."""

    name: str
    exit_code: int
    findings: list[dict[str, Any]] = field(default_factory=list)
    verdicts: Counter[str] = field(default_factory=Counter)
    by_code: Counter[tuple[str, str]] = field(default_factory=Counter)  # (code, verdict) of each finding
    found: list[dict[str, Any]] = field(default_factory=list)
    missed: list[dict[str, Any]] = field(default_factory=list)
    unjudged: list[dict[str, Any]] = field(default_factory=list)
    crash: str = ""

    @property
    def false(self) -> int:
        return sum(self.verdicts[v] for v in FALSE_VERDICTS)


def load_manifest() -> list[dict[str, Any]]:
    """The ``[[config]]`` entries of SOURCES.toml."""
    with MANIFEST.open("rb") as f:
        return list(tomllib.load(f)["config"])


def run_check(ini: Path) -> tuple[int, dict[str, Any] | None, str]:
    """``emperor-dev check --static --format json`` on ``ini`` alone in a fresh directory: exit code, report,
    stderr."""
    with tempfile.TemporaryDirectory(prefix="gate-corpus-") as tmp:
        shutil.copyfile(ini, Path(tmp) / ini.name)
        code = "import sys; from pytest_emperor.cli import main; sys.exit(main())"
        argv = [sys.executable, "-c", code, "check", "--static", "--format", "json", ini.name]
        proc = subprocess.run(argv, cwd=tmp, capture_output=True, text=True, timeout=300, check=False)
    try:
        report = json.loads(proc.stdout)
    except ValueError:
        return proc.returncode, None, proc.stderr
    return proc.returncode, report, proc.stderr


def _matches(item: dict[str, Any], f: dict[str, Any]) -> bool:
    return f["code"] in item.get("codes", [item.get("code")]) and item.get("line", f["line"]) == f["line"]


def tally(entry: dict[str, Any]) -> FileTally:
    """Run the check on one stored config and judge each counted finding against its ground truth."""
    exit_code, report, stderr = run_check(CORPUS / entry["file"])
    t = FileTally(entry["file"], exit_code)
    if report is None or exit_code not in (0, 1) or "Traceback" in stderr:
        t.crash = (stderr.strip().splitlines() or ["(no output)"])[-1]
        if report is None:
            t.missed = list(entry.get("problem", []))
            return t
    assert report is not None
    t.findings = [f for f in report["findings"] if f["severity"] in COUNTED]
    problems = list(entry.get("problem", []))
    judged = list(entry.get("judged", []))
    for f in t.findings:
        problem = next((p for p in problems if _matches(p, f)), None)
        if problem is not None:
            verdict = "real"
            if problem not in t.found:
                t.found.append(problem)
        else:
            verdict = next((j["verdict"] for j in judged if _matches(j, f)), "unjudged")
            if verdict == "unjudged":
                t.unjudged.append(f)
        t.verdicts[verdict] += 1
        t.by_code[(f["code"], verdict)] += 1
    t.missed = [p for p in problems if p not in t.found]
    return t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="*", help="only these corpus files (names in SOURCES.toml)")
    parser.add_argument("--verbose", "-v", action="store_true", help="list each false and missed item")
    args = parser.parse_args()
    entries = [e for e in load_manifest() if e.get("stored", True)]
    if args.files:
        wanted = {Path(f).name for f in args.files}
        entries = [e for e in entries if e["file"] in wanted]
    tallies = [tally(e) for e in entries]
    print(f"{'file':78} {'exit':>4} {'find':>4} {'real':>4} {'false':>5} {'miss':>4}")
    for t in tallies:
        mark = f"  CRASH: {t.crash}" if t.crash else ""
        print(
            f"{t.name:78} {t.exit_code:>4} {len(t.findings):>4} {t.verdicts['real']:>4} {t.false:>5} "
            f"{len(t.missed):>4}{mark}"
        )
        if args.verbose:
            for f in t.unjudged:
                print(f"    unjudged {f['code']} line {f['line']}: {f['message']}")
            for p in t.missed:
                print(
                    f"    missed   line {p['line']} ({'/'.join(p.get('codes', [])) or 'no rule'}): {p['description']}"
                )
    findings = sum(len(t.findings) for t in tallies)
    verdicts = sum((t.verdicts for t in tallies), Counter())
    problems = sum(len(t.found) + len(t.missed) for t in tallies)
    found = sum(len(t.found) for t in tallies)
    clean = [t for t in tallies if not t.found and not t.missed]
    clean_failing = [t.name for t in clean if t.exit_code != 0]
    by_code = sum((t.by_code for t in tallies), Counter[tuple[str, str]]())
    kinds: dict[str, list[int]] = {}  # problem kind -> [found, missed]
    for t in tallies:
        for p in t.found:
            kinds.setdefault(p["kind"], [0, 0])[0] += 1
        for p in t.missed:
            kinds.setdefault(p["kind"], [0, 0])[1] += 1
    print()
    print(
        f"configs: {len(tallies)}; error/warning findings: {findings}: "
        + ", ".join(f"{v} {verdicts[v]}" for v in ("real", *FALSE_VERDICTS))
    )
    precision = verdicts["real"] / findings if findings else 1.0
    recall = found / problems if problems else 1.0
    print(f"precision: {precision:.0%} ({verdicts['real']}/{findings}); recall: {recall:.0%} ({found}/{problems})")
    print(
        f"files with no real problem: {len(clean)}; exit 0: {len(clean) - len(clean_failing)}; "
        f"exit non-zero: {len(clean_failing)}"
    )
    for name in clean_failing:
        print(f"    non-zero: {name}")
    print(f"crashes: {sum(1 for t in tallies if t.crash)}")
    print("findings by code and verdict: " + ", ".join(f"{c} {v} {n}" for (c, v), n in sorted(by_code.items())))
    print("problems by kind (found/all): " + ", ".join(f"{k} {f}/{f + m}" for k, (f, m) in sorted(kinds.items())))


if __name__ == "__main__":
    main()
