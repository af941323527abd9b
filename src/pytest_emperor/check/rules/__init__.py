"""The static rules of ``emperor-dev check``: pure functions from a parsed app config to findings.

Everything here is sans-IO: the caller reads the file, resolves ``@(...)``, asks the binary for its options and
the file system for world-writable directories, and passes the answers in (:class:`AppConfig`). The path rules
that need the file system live in :mod:`pytest_emperor.check.paths`. Each module holds one family of rules;
:data:`RULE_SETS` says which families each kind of file gets.
"""

from __future__ import annotations

from collections.abc import Sequence

from pytest_emperor.check.rules.app import SOCKET_KEYS, AppConfig, Kind, section_line, undetermined, where
from pytest_emperor.check.rules.catalog import RULES, Rule, Severity
from pytest_emperor.check.rules.cross_references import cross_references
from pytest_emperor.check.rules.deployment import deployment, robustness, socket_collisions
from pytest_emperor.check.rules.findings import Finding, apply_suppressions, filter_codes, finding
from pytest_emperor.check.rules.loading import mounts, plugins
from pytest_emperor.check.rules.numeric import counts, numbers_and_env
from pytest_emperor.check.rules.syntax import syntax
from pytest_emperor.check.rules.unknown import unknown_options
from pytest_emperor.check.rules.values import values

__all__ = [
    "RULES",
    "RULE_SETS",
    "SOCKET_KEYS",
    "AppConfig",
    "Finding",
    "Kind",
    "Rule",
    "Severity",
    "apply_suppressions",
    "check_app",
    "check_apps",
    "filter_codes",
    "finding",
    "section_line",
    "undetermined",
    "where",
]

_EVERY_CONFIG = (syntax, values, numbers_and_env, unknown_options, counts, mounts, plugins, cross_references)
#: the rule groups each kind of file gets (docs/check.md, "Which rules apply")
RULE_SETS = {
    Kind.CONVENTION: (*_EVERY_CONFIG, deployment, robustness),
    Kind.UWSGI: _EVERY_CONFIG,
    Kind.EMPEROR: (syntax, values, numbers_and_env, unknown_options, cross_references),
    Kind.FRAGMENT: (syntax, numbers_and_env, unknown_options),
}


def check_app(app: AppConfig) -> list[Finding]:
    """Every static, file-system-free finding for one app, by the rule set of its kind."""
    findings: list[Finding] = []
    for rule_group in RULE_SETS[app.kind]:
        findings.extend(rule_group(app))
    return findings


def check_apps(apps: Sequence[AppConfig]) -> list[Finding]:
    """:func:`check_app` for each app, plus the cross-app rules (socket collisions)."""
    return [f for app in apps for f in check_app(app)] + socket_collisions(apps)
