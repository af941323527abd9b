"""Revisions under production's privilege drop (``emperor-args = "--uid U --gid U"``): the vassal runs as U and
reads its ini, code and setup's output in the checkout, which lives in root's private cache. Each door gives the
checkout to U's group alone (docs/revisions.md, "Under a privilege drop"); real users, real uWSGI, real nginx,
run as root (as CI is), with throwaway users made for the test."""

from __future__ import annotations

import grp
import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from dev_helpers import Up, assert_nothing_left, cli, names_for_test, up_process, workspace  # noqa: F401 (fixtures)
from plugin_helpers import Sandbox
from plugin_helpers import assert_nothing_left as assert_run_left_nothing
from revision_helpers import repo_state, versioned_repo
from unprivileged import dropped_box, python_unusable_as, throwaway_user  # noqa: F401 (a fixture)

from pytest_emperor.engine.privileges import User
from pytest_emperor.errors import RevisionError
from pytest_emperor.revisions.cache import checkout

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root")
RUN_TIMEOUT = 180


def make_user() -> Iterator[str]:
    """A real unprivileged user and its group, deleted after the test."""
    yield from throwaway_user("pe")


user = pytest.fixture(make_user)
other_user = pytest.fixture(make_user)

V1_AS_THE_USER = """
def test_v1_as_production_runs_it(deploy_app):
    v1 = deploy_app(".", rev="v1")
    assert v1.request("GET", "/").text == "v1 prepared\\n"  # its checkout's code and its setup's output
"""


def reads(who: str, path: Path) -> bool:
    """Whether ``who`` can read ``path``: tried for real, as that user and its own group alone."""
    done = subprocess.run(["cat", str(path)], user=who, group=who, extra_groups=[], capture_output=True)
    return done.returncode == 0


def assert_given_to(cache: Path, user: str, other: str) -> None:
    """Every checkout under ``cache`` is ``user``'s group's to read and search, no one else's."""
    gid = grp.getgrnam(user).gr_gid
    root = cache / "pytest-emperor" / "revisions"
    trees = [p for p in root.glob("*/*") if p.is_dir() and not p.name.startswith(".")]
    assert trees
    for tree in trees:
        for directory in (root, tree.parent):
            st = directory.stat()
            assert (stat.S_IMODE(st.st_mode), st.st_gid) == (0o710, gid), directory  # searchable, not listable
        for entry in [tree, *tree.rglob("*")]:
            st = entry.lstat()
            if not entry.is_symlink():
                assert st.st_gid == gid and st.st_mode & 0o040 and not st.st_mode & 0o007, entry
        ini = tree / "app.uwsgi.ini"
        assert reads(user, ini) and not reads(other, ini)
        assert not reads(user, tree.with_name(tree.name + ".setup.log"))  # the setup's output is root's alone


def test_pytest_deploys_a_revision_that_the_dropped_user_reads(
    pytester: pytest.Pytester, user: str, other_user: str, dropped_box: Sandbox,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    repo = versioned_repo(dropped_box.root / "shop", dropped_box.sockets)
    with (repo / "pyproject.toml").open("a") as f:
        f.write(f'emperor-args = "--uid {user} --gid {user}"\nsocket-dir = "{dropped_box.sockets}"\n')
    (repo / "pytest.ini").write_text("[pytest]\n")
    (repo / "test_v1.py").write_text(V1_AS_THE_USER)
    cache = dropped_box.root / "cache"  # root's cache, as ~/.cache is: its top private
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    monkeypatch.chdir(repo)
    for _ in range(2):  # the second run finds the checkout given already
        result = pytester.runpytest_subprocess("--emperor", "-p", "no:cacheprovider", timeout=RUN_TIMEOUT)
        result.assert_outcomes(passed=1)
    assert_given_to(cache, user, other_user)
    assert_run_left_nothing(dropped_box)


@pytest.fixture
def shared_workspace(workspace: Path, user: str, uwsgi_bin: Path, monkeypatch: pytest.MonkeyPatch) -> Path:  # noqa: F811
    """The CLI's workspace, searchable by ``user`` (as a project dir is), with its own revisions cache."""
    why = python_unusable_as(user, uwsgi_bin)
    if why:
        pytest.skip(why)
    workspace.chmod(0o755)
    (workspace / "apps").chmod(0o755)
    monkeypatch.setenv("XDG_CACHE_HOME", str(workspace / "cache"))
    return workspace


def test_up_serves_a_revision_that_the_dropped_user_reads(
    shared_workspace: Path, user: str, other_user: str, up_process: list[Up],  # noqa: F811
) -> None:
    app, old = names_for_test()
    repo = versioned_repo(shared_workspace / "apps", Path("/tmp"))  # where `up` runs
    with (repo / "pyproject.toml").open("a") as f:
        f.write(f'emperor-args = "--uid {user} --gid {user}"\n')
    before = repo_state(repo)
    up = Up(shared_workspace, f"{app}=.", f"{old}=.@v1")
    up_process.append(up)
    up.started()
    assert up.get(app) == (200, "working by hand\n")
    assert up.get(old) == (200, "v1 prepared\n")
    up.stopped()
    assert_nothing_left(up, [app, old])
    assert_given_to(shared_workspace / "cache", user, other_user)
    assert repo_state(repo) == before  # the working tree is deployed as it is: nothing given, nothing changed


def test_a_checkout_made_before_is_given_and_an_unreachable_cache_is_named(user: str, other_user: str) -> None:
    top = Path(tempfile.mkdtemp(prefix="pe-drop-", dir="/tmp"))  # searchable by all, as a project dir is
    try:
        top.chmod(0o755)
        repo = versioned_repo(top / "shop", Path("/tmp"))
        cache = top / "cache"
        root = cache / "pytest-emperor" / "revisions"
        made = checkout(repo, "v1", root=root)  # by a run that did not drop: private
        assert stat.S_IMODE(root.stat().st_mode) == 0o700 and not reads(user, made.path / "app.uwsgi.ini")
        assert checkout(repo, "v1", root=root, readable_by=User.lookup(user)) == made
        assert_given_to(cache, user, other_user)
        # given to another group since (a run dropping to other_user): this run's gets it back
        checkout(repo, "v1", root=root, readable_by=User.lookup(other_user))
        assert not reads(user, made.path / "app.uwsgi.ini")
        checkout(repo, "v1", root=root, readable_by=User.lookup(user))
        assert_given_to(cache, user, other_user)
        # a cache in a dir the user cannot search (root's home is 0700): said, with the fix, before any deploy
        cache.chmod(0o700)
        with pytest.raises(RevisionError, match=rf"drops privileges to {user} .*`{cache}` is not searchable by "
                           rf"{user}; set XDG_CACHE_HOME to a dir"):
            checkout(repo, "v1", root=root, readable_by=User.lookup(user))
    finally:
        shutil.rmtree(top)


def test_check_boots_a_revision_as_the_dropped_user(shared_workspace: Path, user: str, other_user: str) -> None:
    versioned_repo(shared_workspace / "apps" / "shop", Path("/tmp"))
    drop = ("--emperor-args", f"--uid {user} --gid {user}")
    passed = cli(shared_workspace, "check", "--fail-on", "error", "--select", "B,E601", *drop, "shop@v1")
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert_given_to(shared_workspace / "cache", user, other_user)
