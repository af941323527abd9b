"""The README is tested: every ```python block of README.md (and of docs/*.md) runs, unchanged, as a user would
run it: as test modules of an app repo holding the README's own production-style ``app.uwsgi.ini`` (with
example_apps/service1's bottle app and virtualenv), under ``pytest --emperor`` against the real uWSGI. And it
starts with the user: the two set-up commands, then install, ``addopts = --emperor`` and a first test."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from browser_helpers import CHROMIUM
from components import require_component
from plugin_helpers import Sandbox, assert_nothing_left

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
SERVICE1 = ROOT / "example_apps" / "service1"
RUN_TIMEOUT = 240
CHROMIUM_PATH = str(CHROMIUM)  # the README's browser test names the system's Chromium

_FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def blocks(language: str) -> list[str]:
    """The fenced blocks in ``language`` of the README, then of docs/*.md, in order."""
    return [body for page in (README, *DOCS) for lang, body in _FENCE.findall(page.read_text()) if lang == language]


def app_ini() -> str:
    """The ini the README gives as an app repo's ``app.uwsgi.ini`` (the block after "A repo with")."""
    text = README.read_text()
    found = _FENCE.search(text, text.index("A repo with `app.uwsgi.ini` at its root"))
    assert found is not None and found.group(1) == "ini", "the README's example app.uwsgi.ini block moved"
    return found.group(2)


def test_the_readme_has_python_examples() -> None:
    # So that test_readme_python_examples_pass cannot pass vacuously.
    assert len(blocks("python")) >= 3
    assert all(re.search(r"^def test_", block, re.MULTILINE) for block in blocks("python"))




def test_the_readme_starts_with_the_user() -> None:
    text = README.read_text()
    lines = text.splitlines()
    assert len(lines) <= 250, "reference material belongs in docs/"
    first = _FENCE.search(text)
    assert first is not None
    commands = [line.split("#")[0].strip() for line in first.group(2).splitlines()]
    assert commands == ["make run", "make test"], "the README opens with the two set-up commands of a new machine"
    first_test = next(number for number, line in enumerate(lines, 1) if line.startswith("def test_"))
    assert first_test <= 60, f"a user's first test starts at line {first_test}"
    before = text[: text.index("def test_")]
    assert "pip install pytest-emperor" in before and "addopts = --emperor" in before


def readme_repo(where: Path, examples: list[str], monkeypatch: pytest.MonkeyPatch) -> Path:
    """The README's app repo, ``service1`` under ``where``, with ``examples`` as its test modules: a git repo with
    one commit of all of it (the venv's symlink too, so that a checkout of a revision runs in the same venv), the
    current directory, with a user cache dir of its own (revisions' checkouts)."""
    repo = where / "service1"  # the README's examples name the app service1
    repo.mkdir()
    (repo / "app.uwsgi.ini").write_text(app_ini())
    (repo / "app.py").write_text((SERVICE1 / "app.py").read_text())
    (repo / "venv-bottle").symlink_to(SERVICE1 / "venv-bottle")
    (repo / "pytest.ini").write_text("[pytest]\n")
    (repo / ".gitignore").write_text("__pycache__/\n")
    for number, source in enumerate(examples, 1):
        (repo / f"test_readme_{number}.py").write_text(source)
    for command in (
        ["init", "-q"], ["config", "user.name", "README"], ["config", "user.email", "readme@example.invalid"],
        ["add", "-A"], ["commit", "-q", "-m", "service1"],
    ):
        subprocess.run(["git", *command], cwd=repo, check=True, capture_output=True)
    monkeypatch.setenv("XDG_CACHE_HOME", str(where / "cache"))
    monkeypatch.chdir(repo)
    return repo


@pytest.mark.usefixtures("uwsgi_bin", "example_venvs")
def test_readme_python_examples_pass(pytester: pytest.Pytester, box: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    examples = blocks("python")
    if any(CHROMIUM_PATH in source for source in examples) and not Path(CHROMIUM_PATH).exists():
        require_component("chromium", f"the README's browser test runs in {CHROMIUM_PATH} (apt-get install chromium)")
    readme_repo(pytester.path, examples, monkeypatch)
    result = pytester.runpytest_subprocess("--emperor", "-p", "no:cacheprovider", "-W", "error", timeout=RUN_TIMEOUT)
    tests = sum(len(re.findall(r"^def test_", source, re.MULTILINE)) for source in examples)
    result.assert_outcomes(passed=tests)
    assert_nothing_left(box)
