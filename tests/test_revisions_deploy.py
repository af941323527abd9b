"""Revisions deployed for real: ``deploy_app(rev=...)`` under ``pytest --emperor``, ``emperor-dev up
app=. app-v1=.@v1`` and ``emperor-dev check .@v1``, each beside the working tree, which stays as it was."""

from __future__ import annotations

import textwrap
from pathlib import Path

import dev_helpers
import pytest
from dev_helpers import Up, assert_nothing_left, cli, names_for_test
from plugin_helpers import Sandbox
from plugin_helpers import assert_nothing_left as assert_run_left_nothing
from revision_helpers import git, repo_state, setups, versioned_repo

RUN_TIMEOUT = 120
workspace, up_process = dev_helpers.workspace, dev_helpers.up_process  # emperor-dev's fixtures

SIDE_BY_SIDE = """
def test_v1_beside_the_working_tree(app_vassal, deploy_app):
    v1 = deploy_app(".", rev="v1")
    assert v1.name.startswith("shop-v1")
    assert v1.request("GET", "/").text == "v1 prepared\\n"             # its checkout, prepared by its setup
    assert app_vassal.request("GET", "/").text == "working by hand\\n"  # the working tree, as the user left it


def test_a_revision_under_a_name(deploy_app):
    beta = deploy_app(".", name="shop-beta", rev="feature-x")
    assert beta.request("GET", "/").text == "v2 prepared\\n"
"""


@pytest.mark.usefixtures("uwsgi_bin")
def test_a_revision_and_the_working_tree_answer_side_by_side(
    pytester: pytest.Pytester, box: Sandbox, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    repo = versioned_repo(pytester.path / "shop", box.sockets)
    (repo / "pytest.ini").write_text("[pytest]\n")
    (repo / "test_side_by_side.py").write_text(SIDE_BY_SIDE)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.chdir(repo)
    before = repo_state(repo)
    for _ in range(2):  # the second run reuses the checkouts: no setup runs again
        result = pytester.runpytest_subprocess("--emperor", "-p", "no:cacheprovider", timeout=RUN_TIMEOUT)
        result.assert_outcomes(passed=2)
        assert setups(repo) == ["v1", "v2"]
    assert repo_state(repo) == before
    assert_run_left_nothing(box)


def test_up_serves_a_revision_beside_the_working_tree(
    workspace: Path, up_process: list[Up], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(workspace / "cache"))
    app, old = names_for_test()
    repo = versioned_repo(workspace / "apps", Path("/tmp"))  # where `up` runs
    before = repo_state(repo)
    up = Up(workspace, f"{app}=.", f"{old}=.@v1")
    up_process.append(up)
    up.started()
    up.expect(r"^preparing .*/apps@v1 \(\w{12}\): echo prepared > prepared.txt")  # what it was waiting for
    assert up.get(app) == (200, "working by hand\n")
    assert up.get(old) == (200, "v1 prepared\n")
    up.stopped()
    assert_nothing_left(up, [app, old])
    assert repo_state(repo) == before


@pytest.mark.usefixtures("uwsgi_bin")
def test_check_judges_a_revision_in_its_own_checkout(workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(workspace / "cache"))
    repo = versioned_repo(workspace / "apps" / "shop", Path("/tmp"))
    git(repo, "reset", "-q", "--hard")  # a clean tree at v2, to commit a revision whose ini is broken
    ini = (repo / "app.uwsgi.ini").read_text()
    (repo / "app.uwsgi.ini").write_text(ini.replace("module = hello", "module = hello\nwsgi-file = gone.py"))
    git(repo, "commit", "-q", "-am", "an ini that names a file the commit does not have")
    git(repo, "tag", "broken")
    git(repo, "reset", "-q", "--hard", "v2")  # the working tree's ini is fine again
    # Static and boot (which needs the checkout's setup); the generated ini's warnings are not the point here.
    passed = cli(workspace, "check", "--fail-on", "error", "shop@v1")
    assert passed.returncode == 0, passed.stdout + passed.stderr
    failed = cli(workspace, "check", "--fail-on", "error", "--static", "shop@broken")
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "gone.py" in failed.stdout and "revisions" in failed.stdout  # the file in the checkout, not the tree's
    assert cli(workspace, "check", "--fail-on", "error", "--static", "shop").returncode == 0
    missing = cli(workspace, "check", "shop@v9")
    assert missing.returncode == 2 and "has no revision 'v9'" in missing.stderr


def test_a_deploy_of_a_missing_revision_fails_the_test_naming_it(
    pytester: pytest.Pytester, box: Sandbox, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    repo = versioned_repo(pytester.path / "shop", box.sockets)
    (repo / "pytest.ini").write_text("[pytest]\n")
    (repo / "test_missing.py").write_text(textwrap.dedent("""
        def test_missing(deploy_app):
            deploy_app(".", rev="v9")
    """))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.chdir(repo)
    result = pytester.runpytest_subprocess("--emperor", "-p", "no:cacheprovider", timeout=RUN_TIMEOUT)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*RevisionError: *shop@v9: the repository *shop has no revision 'v9'*"])
    assert "revisions/git.py" not in result.stdout.str()  # shown at the test's own line
