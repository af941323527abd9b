"""Finding the uwsgi binary: the real one is found; missing or shim binaries are clear errors."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from pytest_emperor.engine.binary import find_uwsgi, uwsgi_version
from pytest_emperor.engine.emperor import Emperor
from pytest_emperor.errors import UwsgiNotFound


def test_default_is_the_compiled_uwsgi_beside_python(uwsgi_bin: Path) -> None:
    assert uwsgi_bin == (Path(sys.executable).parent / "uwsgi").absolute()
    assert uwsgi_version(uwsgi_bin).startswith("2.0.")


def test_missing_explicit_binary_names_it_and_how_to_install(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "uwsgi"
    with pytest.raises(UwsgiNotFound) as info:
        find_uwsgi(missing)
    message = str(info.value)
    assert f"{missing} (--emperor-uwsgi): does not exist" in message
    assert "pip install uwsgi" in message
    # An explicit choice is not silently replaced by the binary beside Python.
    assert "beside the running Python" not in message


def test_pyuwsgi_shim_is_rejected_with_the_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shim = tmp_path / "uwsgi"
    shim.write_text("#!/usr/bin/env python3\nfrom pyuwsgi import run\nrun()\n")
    shim.chmod(0o755)
    monkeypatch.setenv("EMPEROR_UWSGI", str(shim))
    with pytest.raises(UwsgiNotFound, match=r"\(EMPEROR_UWSGI\): is a script, not the compiled uWSGI \(the pyuwsgi"):
        find_uwsgi()


def test_not_executable_is_rejected(tmp_path: Path, uwsgi_bin: Path) -> None:
    copy = tmp_path / "uwsgi"
    copy.write_bytes(uwsgi_bin.read_bytes())
    copy.chmod(0o644)
    with pytest.raises(UwsgiNotFound, match="is not an executable file"):
        find_uwsgi(copy)


def test_environment_variable_is_used(uwsgi_bin: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMPEROR_UWSGI", str(uwsgi_bin))
    assert find_uwsgi() == uwsgi_bin


def test_binary_that_does_not_run(tmp_path: Path) -> None:
    fake = tmp_path / "uwsgi"
    fake.write_bytes(b"\x7fELF" + b"\0" * 60)  # looks like an ELF, is not one
    fake.chmod(0o755)
    with pytest.raises(UwsgiNotFound, match="does not run"):
        uwsgi_version(fake)


def test_the_emperor_reports_the_version_the_binary_does(live_emperor: Emperor, uwsgi_bin: Path) -> None:
    # %V of a vassal's ini comes from the emperor's stats; emperor-dev check asks the binary: the same string.
    assert live_emperor.version == uwsgi_version(uwsgi_bin)
