"""Each output format of ``emperor-dev check`` is valid for its consumer."""

from __future__ import annotations

import json
from xml.etree import ElementTree as ET

import jsonschema
import pytest

from pytest_emperor.check.report import FORMATS, render
from pytest_emperor.check.rules import finding

FINDINGS = [
    finding("W101", "a/app.uwsgi.ini", 9, "`processes` is '2 # cores'"),
    finding("E102", "a/app.uwsgi.ini", 5, "line 6 `need-app = true` is lost"),
    finding("I202", "b/app.uwsgi.ini", 2, "`app_root`"),
    finding("B001", "b/app.uwsgi.ini", 1, "cursed, 100% sure: a,b", ["chdir(): No such file or directory"]),
]
FILES = ["a/app.uwsgi.ini", "b/app.uwsgi.ini", "c/app.uwsgi.ini"]

# The parts of the SARIF 2.1.0 schema (sarif-schema-2.1.0.json, OASIS) that code scanning relies on.
SARIF_SUBSET = {
    "type": "object",
    "required": ["version", "runs"],
    "properties": {
        "version": {"const": "2.1.0"},
        "$schema": {"type": "string", "format": "uri"},
        "runs": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["tool"],
                "properties": {
                    "tool": {
                        "type": "object",
                        "required": ["driver"],
                        "properties": {
                            "driver": {
                                "type": "object",
                                "required": ["name"],
                                "properties": {
                                    "name": {"type": "string"},
                                    "rules": {
                                        "type": "array",
                                        "items": {
                                            "type": "object",
                                            "required": ["id"],
                                            "properties": {
                                                "id": {"type": "string"},
                                                "shortDescription": {
                                                    "type": "object",
                                                    "required": ["text"],
                                                },
                                                "defaultConfiguration": {
                                                    "type": "object",
                                                    "properties": {
                                                        "level": {"enum": ["none", "note", "warning", "error"]}
                                                    },
                                                },
                                            },
                                        },
                                    },
                                },
                            }
                        },
                    },
                    "results": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["message"],
                            "properties": {
                                "ruleId": {"type": "string"},
                                "ruleIndex": {"type": "integer", "minimum": 0},
                                "level": {"enum": ["none", "note", "warning", "error"]},
                                "message": {"type": "object", "required": ["text"]},
                                "locations": {
                                    "type": "array",
                                    "items": {
                                        "type": "object",
                                        "properties": {
                                            "physicalLocation": {
                                                "type": "object",
                                                "properties": {
                                                    "artifactLocation": {
                                                        "type": "object",
                                                        "properties": {"uri": {"type": "string"}},
                                                    },
                                                    "region": {
                                                        "type": "object",
                                                        "properties": {"startLine": {"type": "integer", "minimum": 1}},
                                                    },
                                                },
                                            }
                                        },
                                    },
                                },
                            },
                        },
                    },
                },
            },
        },
    },
}


def test_text() -> None:
    out = render("text", FINDINGS, FILES)
    assert "a/app.uwsgi.ini:9: W101 [warning]" in out
    assert "    | chdir(): No such file or directory" in out
    assert out.endswith("3 files checked: 2 errors, 1 warning, 1 info\n")


def test_json_parses_and_round_trips() -> None:
    data = json.loads(render("json", FINDINGS, FILES))
    assert data["files"] == FILES
    assert [(f["code"], f["line"], f["severity"]) for f in data["findings"]] == [
        ("W101", 9, "warning"),
        ("E102", 5, "error"),
        ("I202", 2, "info"),
        ("B001", 1, "error"),
    ]


def test_junit_one_testcase_per_finding_and_failures_counted() -> None:
    root = ET.fromstring(render("junit", FINDINGS, FILES, "boot check: ran on 3 apps"))
    # 4 findings (3 at warning or above) + the clean file c
    assert root.tag == "testsuite" and root.get("tests") == "5" and root.get("failures") == "3"
    cases = {c.get("name"): c for c in root.iter("testcase")}
    assert set(cases) == {
        "a/app.uwsgi.ini:9 W101", "a/app.uwsgi.ini:5 E102", "b/app.uwsgi.ini:2 I202", "b/app.uwsgi.ini:1 B001",
        "c/app.uwsgi.ini",
    }
    assert [f.get("type") for f in cases["a/app.uwsgi.ini:9 W101"].iter("failure")] == ["W101"]
    assert list(cases["b/app.uwsgi.ini:2 I202"].iter("failure")) == []
    assert list(cases["c/app.uwsgi.ini"]) == []
    assert root.find("system-out") is not None and "ran on 3 apps" in (root.find("system-out").text or "")


def test_text_says_whether_the_boot_check_ran() -> None:
    assert render("text", [], FILES, "boot check: skipped (--static)").splitlines()[-2:] == [
        "boot check: skipped (--static)",
        "3 files checked: 0 errors, 0 warnings, 0 infos",
    ]


def test_sarif_follows_2_1_0() -> None:
    log = json.loads(render("sarif", FINDINGS, FILES))
    jsonschema.validate(log, SARIF_SUBSET)
    run = log["runs"][0]
    rules = run["tool"]["driver"]["rules"]
    for result in run["results"]:
        assert rules[result["ruleIndex"]]["id"] == result["ruleId"]
    assert [r["level"] for r in run["results"]] == ["warning", "error", "note", "error"]


def test_sarif_results_name_their_rule_and_level() -> None:
    # Code scanning shows a result under driver.rules[ruleIndex]: a wrong index files it under another rule.
    run = json.loads(render("sarif", FINDINGS, FILES))["runs"][0]
    rules = [r["id"] for r in run["tool"]["driver"]["rules"]]
    assert rules == ["B001", "E102", "I202", "W101"]  # each rule used, once
    got = [(r["ruleId"], rules[r["ruleIndex"]], r["level"]) for r in run["results"]]
    assert got == [("W101", "W101", "warning"), ("E102", "E102", "error"), ("I202", "I202", "note"),
                   ("B001", "B001", "error")]


def test_github_workflow_commands_are_escaped() -> None:
    lines = render("github", FINDINGS, FILES).splitlines()
    assert lines[0].startswith("::warning file=a/app.uwsgi.ini,line=9,title=W101::")
    assert lines[2].startswith("::notice ")
    cursed = lines[3]
    assert cursed.startswith("::error file=b/app.uwsgi.ini,line=1,title=B001::")
    assert "100%25 sure" in cursed and "%0Afix: " in cursed and "\n" not in cursed


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_empty_report(fmt: str) -> None:
    out = render(fmt, [], FILES)
    if fmt in ("json", "sarif"):
        json.loads(out)
    elif fmt == "junit":
        assert ET.fromstring(out).get("failures") == "0"
    elif fmt == "text":
        assert "0 errors" in out
    else:
        assert out == ""


def test_text_summary_counts_each_severity_worst_first() -> None:
    assert render("text", FINDINGS, FILES).splitlines()[-1] == "3 files checked: 2 errors, 1 warning, 1 info"
    assert render("text", FINDINGS[:1], FILES[:1]).splitlines()[-1] == "1 file checked: 0 errors, 1 warning, 0 infos"
