"""The boot check: deploy the app exactly as production does (a symlink named after the deploy name) under a
private emperor, wait until it is ready or cursed, send one probe request, and turn what went wrong into
findings carrying uWSGI's own lines. The emperor, its vassal and its run dir are gone when this returns; nothing
in the app dir is written (the symlink lives in the emperor's private vassal dir)."""

from __future__ import annotations

import re
from pathlib import Path

from pytest_emperor.check.rules import Finding, finding
from pytest_emperor.emperor import Emperor
from pytest_emperor.errors import EmperorError, VassalCursed, VassalError, VassalTimeout

__all__ = ["boot_check"]

# The python plugin's own words for "started without an app" (uWSGI 2.0 plugins/python/pyloader.c, wsgi_handlers.c)
_NO_APP = re.compile(r"no app loaded|unable to load app|no python application found|failed to open python file")


def boot_check(
    ini: Path,
    *,
    name: str,
    display_path: str,
    line: int,
    uwsgi: Path,
    probe: str = "/",
    expect_status: int | None = None,
    timeout: float = 30.0,
) -> list[Finding]:
    """Findings B001-B004 for ``ini`` deployed as ``name`` (plus the emperor's per-run suffix, so a check never
    binds the socket of a running instance); ``line`` is where they point (the section header)."""
    with Emperor(uwsgi, timeout=timeout) as emperor:
        try:
            vassal = emperor.deploy(ini, name=name, wait=True, timeout=timeout)
        except VassalCursed as exc:
            return [finding("B001", display_path, line, str(exc).splitlines()[0], exc.lines)]
        except VassalTimeout as exc:
            return [finding("B004", display_path, line, f"{timeout:g}s: {str(exc).splitlines()[0]}", exc.lines)]
        except VassalError as exc:  # accepting per the emperor, but the probe could not connect
            return [finding("B003", display_path, line, str(exc).splitlines()[0], exc.lines)]
        except EmperorError as exc:  # refused before deploying: socket path too long, name unroutable, in use
            return [finding("X001", display_path, line, str(exc).splitlines()[0])]
        try:
            response = vassal.request("GET", probe, timeout=timeout)
        except OSError as exc:
            message = f"GET {probe} -> no response: {exc}"
            return [finding("B003", display_path, line, message, vassal.error_lines())]
        findings: list[Finding] = []
        lines = vassal.output_lines()
        no_app = [x for x in lines if _NO_APP.search(x)]
        if no_app:
            findings.append(finding("B002", display_path, line, no_app[0].strip(), vassal.error_lines()))
        bad = response.status_code != expect_status if expect_status is not None else response.status_code >= 500
        if bad:
            want = f"expected {expect_status}" if expect_status is not None else "expected no 5xx"
            message = f"GET {probe} -> {response.status_code} {response.reason} ({want})"
            findings.append(finding("B003", display_path, line, message, vassal.error_lines()))
        vassal.remove()
        return findings
