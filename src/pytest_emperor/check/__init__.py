"""``emperor-dev check``: validate uWSGI app configs with uWSGI's own parsing rules, then boot them for real."""

from __future__ import annotations

from pytest_emperor.check.rules import RULES, AppConfig, Finding, Rule, Severity
from pytest_emperor.check.runner import CheckResult, CheckSettings, InputError, run_check

__all__ = [
    "RULES",
    "AppConfig",
    "CheckResult",
    "CheckSettings",
    "Finding",
    "InputError",
    "Rule",
    "Severity",
    "run_check",
]
