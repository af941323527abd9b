"""What ``emperor-dev check``'s static rules say about an app as a front door deploys it (``pytest --emperor``,
``emperor-dev up``): the findings that explain a failed deploy lead its error, and an option uWSGI would ignore
(a typo) is a warning with check's did-you-mean. The engine knows nothing of check: the front doors call this."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

from pytest_emperor.check.rules import Finding, Severity
from pytest_emperor.check.runner import CheckSettings, run_check
from pytest_emperor.errors import EmperorError, VassalError

__all__ = ["causes", "explained", "ignored_options", "shown", "static_findings"]

# an option uWSGI does not know, so silently ignores (with its did-you-mean): a typo at deploy
_IGNORED = "E201"
# the checker itself failed or gave up: it explains nothing
_CHECKER = ("X002", "X003")


def static_findings(ini: Path, name: str, uwsgi: Path | None = None) -> list[Finding]:
    """check's static findings on ``ini`` deployed as the vassal ``name`` (``%n``), with the options of the
    ``uwsgi`` binary that runs it; [] if the check cannot read it (the deploy's own error says why)."""
    try:
        result = run_check([ini], CheckSettings(name=name, boot=False, uwsgi=uwsgi))
    except (EmperorError, OSError, subprocess.SubprocessError):  # the binary's options could not be asked either
        return []
    return [f for f in result.findings if f.code not in _CHECKER]


def ignored_options(findings: Sequence[Finding]) -> list[Finding]:
    """The options uWSGI would ignore (a typo), each with check's did-you-mean in its message."""
    return [f for f in findings if f.code == _IGNORED]


def causes(findings: Sequence[Finding]) -> list[Finding]:
    """The findings that likely explain a failed deploy: check's errors. An ignored option is among them only
    when nothing else is: the front door has warned of it already, and a typo seldom kills a vassal (a misspelt
    ``module`` does)."""
    errors = [f for f in findings if f.severity is Severity.ERROR]
    return [f for f in errors if f.code != _IGNORED] or errors


def shown(findings: Sequence[Finding]) -> str:
    """Findings as check's text report shows them: ``path:line: code message``, then the fix."""
    return "\n".join(f"{f.path}:{f.line}: {f.code} {f.message}\n    fix: {f.hint}" for f in findings)


def explained(error: VassalError, ini: Path, name: str, uwsgi: Path | None = None) -> VassalError:
    """``error`` (a failed deploy of ``ini`` as ``name``) led by the findings of check that likely explain it
    (``causes``); ``error`` itself when check finds none."""
    lead = causes(static_findings(ini, name, uwsgi))
    if not lead:
        return error
    told = "the finding above is" if len(lead) == 1 else "the findings above are"
    message = f"{shown(lead)}\n{error.reason}; {told} `emperor-dev check --static {os.path.relpath(ini)}`'s"
    return type(error)(message, error.lines)
