"""Output formats of ``emperor-dev check``: text, json, github (workflow commands), junit, sarif (2.1.0).

Each formatter is a pure function from the findings (and the files checked) to a string.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from xml.etree import ElementTree as ET

from pytest_emperor import __version__
from pytest_emperor.check.rules import RULES, Finding, Severity

__all__ = ["FORMATS", "render"]

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
_SARIF_LEVEL = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.INFO: "note"}
_GITHUB_LEVEL = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.INFO: "notice"}


def _text(findings: Sequence[Finding], files: Sequence[str], boot: str = "") -> str:
    out: list[str] = []
    for f in findings:
        out.append(f"{f.path}:{f.line}: {f.code} [{f.severity}] {f.message}")
        out.append(f"    fix: {f.hint}")
        out.extend(f"    | {d}" for d in f.details)
    counts = {s: sum(1 for f in findings if f.severity is s) for s in Severity}
    summary = ", ".join(f"{n} {s}{'s' if n != 1 else ''}" for s, n in sorted(counts.items(), reverse=True))
    if boot:
        out.append(boot)
    out.append(f"{len(files)} file{'s' if len(files) != 1 else ''} checked: {summary}")
    return "\n".join(out) + "\n"


def _as_dict(f: Finding) -> dict[str, object]:
    return {
        "code": f.code,
        "name": f.rule.name,
        "severity": str(f.severity),
        "path": f.path,
        "line": f.line,
        "message": f.message,
        "hint": f.hint,
        "details": list(f.details),
    }


def _json(findings: Sequence[Finding], files: Sequence[str], boot: str = "") -> str:
    data = {"files": list(files), "boot": boot, "findings": [_as_dict(f) for f in findings]}
    return json.dumps(data, indent=2) + "\n"


def _github_escape(text: str, *, prop: bool = False) -> str:
    # GitHub workflow commands: % \r \n are escaped in data; properties also escape : and ,
    text = text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    return text.replace(":", "%3A").replace(",", "%2C") if prop else text


def _github(findings: Sequence[Finding], files: Sequence[str], boot: str = "") -> str:
    lines = []
    for f in findings:
        props = f"file={_github_escape(f.path, prop=True)},line={max(f.line, 1)},title={_github_escape(f.code)}"
        body = "\n".join([f.message, f"fix: {f.hint}", *f.details])
        lines.append(f"::{_GITHUB_LEVEL[f.severity]} {props}::{_github_escape(body)}")
    return "".join(line + "\n" for line in lines)


def _junit(findings: Sequence[Finding], files: Sequence[str], boot: str = "") -> str:
    """One testsuite; one testcase per finding (a <failure> at or above warning), one passing testcase per file
    without findings, so that ``failures`` counts findings, as CI dashboards expect."""
    suite = ET.Element("testsuite", name="emperor-dev check")
    failed = cases = 0
    for path in files:
        mine = [f for f in findings if f.path == path]
        if not mine:
            ET.SubElement(suite, "testcase", classname="emperor-dev.check", name=path)
            cases += 1
    for f in findings:
        name = f"{f.path}:{f.line} {f.code}"
        case = ET.SubElement(suite, "testcase", classname=f"emperor-dev.check.{f.path}", name=name)
        cases += 1
        text = "\n".join([f"{f.path}:{f.line}: {f.code} [{f.severity}] {f.message}", f"fix: {f.hint}", *f.details])
        if f.severity >= Severity.WARNING:
            el = ET.SubElement(case, "failure", type=f.code, message=f"{f.path}:{f.line}: {f.code} {f.message}")
            failed += 1
        else:
            el = ET.SubElement(case, "system-out")
        el.text = text
    if boot:
        ET.SubElement(suite, "system-out").text = boot
    suite.set("tests", str(cases))
    suite.set("failures", str(failed))
    suite.set("errors", "0")
    return ET.tostring(suite, encoding="unicode", xml_declaration=True) + "\n"


def _sarif(findings: Sequence[Finding], files: Sequence[str], boot: str = "") -> str:
    used = sorted({f.code for f in findings})
    rules = [
        {
            "id": code,
            "name": RULES[code].name,
            "shortDescription": {"text": RULES[code].summary},
            "help": {"text": RULES[code].hint},
            "defaultConfiguration": {"level": _SARIF_LEVEL[RULES[code].severity]},
        }
        for code in used
    ]
    results = [
        {
            "ruleId": f.code,
            "ruleIndex": used.index(f.code),
            "level": _SARIF_LEVEL[f.severity],
            "message": {"text": "\n".join([f.message, f"fix: {f.hint}", *f.details])},
            "locations": [
                {
                    "physicalLocation": {
                        "artifactLocation": {"uri": f.path},
                        "region": {"startLine": max(f.line, 1)},
                    }
                }
            ],
        }
        for f in findings
    ]
    log = {
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "emperor-dev check",
                        "version": __version__,
                        "informationUri": "https://pypi.org/project/pytest-emperor/",
                        "rules": rules,
                    }
                },
                "artifacts": [{"location": {"uri": path}} for path in files],
                "results": results,
            }
        ],
    }
    return json.dumps(log, indent=2) + "\n"


FORMATS = {"text": _text, "json": _json, "github": _github, "junit": _junit, "sarif": _sarif}


def render(fmt: str, findings: Sequence[Finding], files: Sequence[str], boot: str = "") -> str:
    """The report of ``findings`` over ``files`` in format ``fmt`` (one of :data:`FORMATS`); ``boot`` says
    whether the boot check ran."""
    return FORMATS[fmt](findings, files, boot)
