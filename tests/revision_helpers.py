"""Helpers of the revision tests: a git repo with two tagged commits whose app answers its version, and a
snapshot of everything of the user's repository that making a checkout must leave as it was."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

from plugin_helpers import APP_INI

# Answers its version and what the setup (or the user, in the working tree) prepared; without prepared.txt it
# fails to import, so a checkout that did not get its setup cannot answer.
VERSIONED_PY = '''\
VERSION = "{version}"
with open("prepared.txt") as f:
    PREPARED = f.read().strip()


def application(environ, start_response):
    body = "{{}} {{}}\\n".format(VERSION, PREPARED).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
'''

# The setup each revision's profile declares: one line per setup run into a log outside the repo and the cache.
SETUP = "echo prepared > prepared.txt && echo {version} >> {log}"


def git(repo: Path, *args: str) -> str:
    """``git args`` in ``repo``; its output."""
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout


def setups(repo: Path) -> list[str]:
    """The versions whose setup ran, in order (the log beside the repo)."""
    log = repo.parent / f"{repo.name}-setups.log"
    return log.read_text().split() if log.exists() else []


def write_version(repo: Path, version: str, sockets: Path) -> None:
    (repo / "app.uwsgi.ini").write_text(APP_INI.format(chdir="%(app_root)", sockets=sockets))
    (repo / "hello.py").write_text(VERSIONED_PY.format(version=version))
    setup = SETUP.format(version=version, log=repo.parent / f"{repo.name}-setups.log")
    (repo / "pyproject.toml").write_text(f'[tool.emperor-dev]\nsetup = "{setup}"\n')
    (repo / ".gitignore").write_text("prepared.txt\n__pycache__/\n.pytest_cache/\n")


def versioned_repo(repo: Path, sockets: Path) -> Path:
    """A git repo at ``repo`` whose app (at its top) answers ``v1`` at the tag v1 and ``v2`` at v2, with a working
    tree that is neither: edited (``working``), prepared by hand, a stash entry and a second branch."""
    repo.mkdir(parents=True, exist_ok=True)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.name", "Revision Test")
    git(repo, "config", "user.email", "revisions@example.invalid")
    for version in ("v1", "v2"):
        write_version(repo, version, sockets)
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", version)
        git(repo, "tag", version)
    git(repo, "branch", "feature-x")
    (repo / "hello.py").write_text(VERSIONED_PY.format(version="stashed"))
    git(repo, "stash", "-q")
    (repo / "hello.py").write_text(VERSIONED_PY.format(version="working"))
    (repo / "untracked.txt").write_text("the user's\n")
    git(repo, "add", "untracked.txt")  # staged: the index holds something HEAD does not
    (repo / "prepared.txt").write_text("by hand\n")
    return repo


def repo_state(repo: Path) -> dict[str, str]:
    """What a checkout must not change: HEAD, the branches and tags, the stash, the worktree list, the status,
    the index file's bytes and the working tree's files."""
    files = sorted(git(repo, "ls-files", "--cached", "--others", "--exclude-standard", "-z").split("\0")[:-1])
    return {
        "head": git(repo, "rev-parse", "HEAD") + git(repo, "symbolic-ref", "HEAD"),
        "refs": git(repo, "for-each-ref"),
        "stash": git(repo, "stash", "list"),
        "worktrees": git(repo, "worktree", "list", "--porcelain"),
        "status": git(repo, "status", "--porcelain", "--untracked-files=all"),
        "prepared by hand": (repo / "prepared.txt").read_text(),  # git-ignored, still the user's
        "index": hashlib.sha256((repo / ".git" / "index").read_bytes()).hexdigest(),
        "files": "\n".join(f"{name} {hashlib.sha256((repo / name).read_bytes()).hexdigest()}" for name in files),
    }
