"""docs/check.md lists every rule of ``emperor-dev check`` with its code, default severity and name."""

from __future__ import annotations

import re
from pathlib import Path

from pytest_emperor.check.rules import RULES

DOC = Path(__file__).resolve().parent.parent / "docs" / "check.md"


def test_the_rule_table_matches_the_rules() -> None:
    rows = re.findall(r"^\| ([EWIBX]\d{3}) \| (\w+) \| ([a-z0-9-]+) \|", DOC.read_text(), re.M)
    assert rows == [(code, str(rule.severity), rule.name) for code, rule in RULES.items()]
