"""Each example app carries its own tests, as a user's repo would: they pass under a real emperor."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.usefixtures("example_venvs", "uwsgi_bin")
def test_example_apps_own_tests_pass() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--emperor", "example_apps", "-v", "-p", "no:cacheprovider"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]
    for test in [
        "service1/test_service1.py::test_runs_in_its_own_virtualenv PASSED",
        "service2/test_service2.py::test_post_body_reaches_flask PASSED",
        "service3/test_service3.py::test_path_info PASSED",
        "broken-config/test_broken_config.py::test_is_cursed_with_its_reason PASSED",
        "broken-import/test_broken_import.py::test_serves_500 PASSED",
        "broken-crash/test_broken_crash.py::test_master_crash_is_cursed_and_respawned PASSED",
    ]:
        assert test in result.stdout
    assert "8 passed" in result.stdout
