"""The git side of a revision: the repository a path is in, the commit a revision names, and the files of that
commit written into a directory of ours.

A checkout is made with plumbing on an index file of its own (``GIT_INDEX_FILE``) and a work tree of its own
(``--work-tree``): ``read-tree`` fills that index from the commit, ``checkout-index`` writes its files. Neither
moves ``HEAD``, writes the repository's index, runs a hook or adds a worktree, so a dirty tree, a branch being
rebased or a stash are all left as they are. Unlike ``git archive`` it writes the files as a checkout does
(smudge filters such as git-lfs, line endings), and ``export-ignore``/``export-subst`` attributes, meant for
release tarballs, change nothing.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pytest_emperor.errors import RevisionError

# A large repository's checkout-index takes seconds; rev-parse and ls-tree answer in milliseconds.
GIT_TIMEOUT = 300.0
# Variables that point git at another repository, index or work tree (a hook's environment sets them): a
# revision is read from the repository the app's path is in, and never through the user's index.
_REPOSITORY_VARIABLES = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_COMMON_DIR", "GIT_PREFIX")


@dataclass(frozen=True)
class Revision:
    """A revision of the app at ``path`` (absolute, in the user's working tree): ``rev`` as the user wrote it,
    the ``commit`` it names and the ``top`` of the working tree the path is in."""

    path: Path
    rev: str
    top: Path
    commit: str
    relative: Path  # the app's path from the top (``.`` for an app at the top)

    def __str__(self) -> str:
        return f"{self.path}@{self.rev} ({self.commit[:12]})"


def git(args: Sequence[str], cwd: Path, index: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``git args`` in ``cwd`` (on ``index`` instead of the repository's own index, if given)."""
    env = {key: value for key, value in os.environ.items() if key not in _REPOSITORY_VARIABLES}
    if index is not None:
        env["GIT_INDEX_FILE"] = str(index)
    return subprocess.run(
        ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=GIT_TIMEOUT, check=False
    )


def _first_line(result: subprocess.CompletedProcess[str]) -> str:
    return (result.stderr.strip() or result.stdout.strip()).splitlines()[0] if (result.stderr or result.stdout) else ""


def resolve(path: Path, rev: str) -> Revision:
    """The revision ``rev`` of the app at ``path``; RevisionError naming both when git is missing, ``path`` is not
    in a git repository, ``rev`` names no commit there, or the app is not in that commit."""
    __tracebackhide__ = True
    path = path.absolute()
    if not rev or rev.startswith("-"):
        raise RevisionError(f"{path}@{rev}: {rev!r} is not a revision; give a tag, branch or commit such as v1.0")
    if shutil.which("git") is None:
        raise RevisionError(f"{path}@{rev}: a revision is a commit of the app's repository, and git is not installed")
    start = next((p for p in (path, *path.parents) if p.is_dir()), Path("/"))
    found = git(["rev-parse", "--show-toplevel"], start)
    if found.returncode != 0:
        raise RevisionError(
            f"{path} is not in a git repository ({_first_line(found)}), so it has no revision {rev!r}: deploy the "
            f"path without @{rev}, or give an app inside a git checkout"
        )
    top = Path(found.stdout.strip()).resolve()
    try:
        relative = path.resolve().relative_to(top)
    except ValueError:
        raise RevisionError(f"{path}@{rev}: the path leads out of its repository {top} (a symlink?)") from None
    named = git(["rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"], top)
    if named.returncode != 0:
        raise RevisionError(
            f"{path}@{rev}: the repository {top} has no revision {rev!r}; give one of its tags, branches or commits "
            f"(git -C {top} tag --list, git -C {top} branch --all)"
        )
    revision = Revision(path, rev, top, named.stdout.strip(), relative)
    if revision.relative != Path("."):
        listed = git(["ls-tree", "--name-only", revision.commit, "--", revision.relative.as_posix()], top)
        if listed.returncode != 0 or not listed.stdout.strip():
            raise RevisionError(
                f"{revision}: {revision.relative} is not in that commit of {top}; give a revision that has the app, "
                "or the app's path as it was then"
            )
    return revision


def write_tree(revision: Revision, tree: Path, index: Path) -> None:
    """Write the files of ``revision``'s commit into ``tree`` (a new directory), through the index file
    ``index`` (a path of ours, not the repository's index)."""
    __tracebackhide__ = True
    tree.mkdir()
    for args in (["read-tree", revision.commit], [f"--work-tree={tree}", "checkout-index", "--all"]):
        result = git(args, revision.top, index=index)
        if result.returncode != 0:
            raise RevisionError(f"{revision}: git {' '.join(args)} failed in {revision.top}: {result.stderr.strip()}")


def blob_ids(revision: Revision, directory: Path, globs: Sequence[str]) -> list[tuple[str, str]]:
    """(path from ``directory``, git blob id) of the commit's files under ``directory`` (a path from the top)
    that match one of ``globs``: their content, as git names it. A ``*`` stays within one directory, as in a
    shell; ``**/`` crosses any number."""
    __tracebackhide__ = True
    where = directory.as_posix()
    listed = git(["ls-tree", "-r", "-z", revision.commit, "--", "." if where == "." else f"{where}/"], revision.top)
    if listed.returncode != 0:
        raise RevisionError(f"{revision}: git ls-tree failed in {revision.top}: {listed.stderr.strip()}")
    found = []
    for entry in filter(None, listed.stdout.split("\0")):
        meta, name = entry.split("\t", 1)
        relative = name if where == "." else name[len(where) + 1 :]
        if any(_matches(relative, glob) for glob in globs):
            found.append((relative, meta.split()[2]))
    return sorted(found)


def _matches(path: str, glob: str) -> bool:
    if "**" in glob:
        return fnmatch.fnmatchcase(path, glob) or fnmatch.fnmatchcase(path, glob.replace("**/", ""))
    return path.count("/") == glob.count("/") and fnmatch.fnmatchcase(path, glob)
