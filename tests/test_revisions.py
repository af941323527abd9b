"""Checkouts of revisions (revisions/): made from git beside the user's repository, never in it; kept per commit,
prepared once by the profile's setup, made once by two processes at a time, never used half-made, cleaned."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from revision_helpers import git, repo_state, setups, versioned_repo

from pytest_emperor.errors import ConfigFileError, RevisionError, SetupError
from pytest_emperor.revisions.cache import checkout, clean, kept, split_revision

WAIT = 60.0  # for a subprocess on a loaded two-core machine


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The test's own user cache dir (``XDG_CACHE_HOME``): its checkouts."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "pytest-emperor" / "revisions"


@pytest.fixture
def repo(tmp_path: Path, cache: Path) -> Path:
    return versioned_repo(tmp_path / "shop", tmp_path / "sockets")


def test_a_checkout_holds_the_commit_and_leaves_the_repository_as_it_was(repo: Path, cache: Path) -> None:
    before = repo_state(repo)
    v1 = checkout(repo, "v1")
    assert 'VERSION = "v1"' in (v1.path / "hello.py").read_text()
    assert (v1.path / "prepared.txt").read_text() == "prepared\n"  # the setup ran in the checkout
    assert v1.path.is_relative_to(cache / v1.revision.commit) and v1.path.name == "shop"
    assert v1.revision.commit == git(repo, "rev-parse", "v1^{commit}").strip()
    assert v1.default_name == "shop-v1"
    assert not (v1.path / ".git").exists()
    assert checkout(repo / "app.uwsgi.ini", "feature-x").revision.commit == git(repo, "rev-parse", "v2").strip()
    assert repo_state(repo) == before
    assert (repo / "prepared.txt").read_text() == "by hand\n"  # the working tree is never prepared


def test_a_checkout_is_made_and_prepared_once_per_commit(repo: Path) -> None:
    first = checkout(repo, "v1")
    inode = os.stat(first.path / "hello.py").st_ino
    again = checkout(repo, "v1")
    assert again.path == first.path and os.stat(again.path / "hello.py").st_ino == inode
    assert checkout(repo, git(repo, "rev-parse", "v1").strip()).path == first.path  # keyed by the commit
    assert setups(repo) == ["v1"]
    checkout(repo, "v2")
    assert setups(repo) == ["v1", "v2"]


def test_a_changed_setup_prepares_a_fresh_checkout(repo: Path) -> None:
    # A revision without a setup of its own gets the working tree's; changing that one makes the checkout again
    # from the commit's files, so nothing of the earlier setup is left in it.
    (repo / "pyproject.toml").write_text('[tool.emperor-dev]\nsetup = "echo one > one.txt"\n')
    git(repo, "rm", "-q", "--cached", "pyproject.toml")
    git(repo, "commit", "-q", "-m", "no setup of its own")
    git(repo, "tag", "v3")
    first = checkout(repo, "v3")
    assert first.setup == "echo one > one.txt" and (first.path / "one.txt").exists()
    (repo / "pyproject.toml").write_text('[tool.emperor-dev]\nsetup = "echo two > two.txt"\n')
    second = checkout(repo, "v3")
    assert second.path == first.path and (second.path / "two.txt").exists()
    assert not (second.path / "one.txt").exists()


def test_the_setup_inputs_decide_when_the_setup_runs_again(repo: Path) -> None:
    # The key holds the content of the files the setup reads (their git blob ids), not the files it writes.
    (repo / "pyproject.toml").write_text(
        '[tool.emperor-dev]\nsetup = "echo made >> made.txt"\nsetup-inputs = ["requirements*.txt"]\n'
    )
    (repo / "requirements.txt").write_text("bottle\n")
    git(repo, "add", "pyproject.toml", "requirements.txt")
    git(repo, "commit", "-q", "-m", "requirements")
    made = checkout(repo, "HEAD")
    assert (made.path / "made.txt").read_text() == "made\n"
    (repo / "requirements-dev.txt").write_text("pytest\n")  # not committed: the commit's files are the same
    assert (checkout(repo, "HEAD").path / "made.txt").read_text() == "made\n"


def test_a_failed_setup_carries_its_output_and_is_never_used(repo: Path, tmp_path: Path) -> None:
    # Fails until `allow` exists, and fails again in a checkout where an earlier run of it left half-done.
    allow = tmp_path / "allow"
    setup = f"test ! -e half-done && touch half-done && echo no such index: bottle >&2 && test -e {allow}"
    (repo / "pyproject.toml").write_text(f'[tool.emperor-dev]\nsetup = "{setup}"\n')
    git(repo, "commit", "-q", "-am", "a setup that fails")
    with pytest.raises(SetupError, match=r"(?s)exit 1.*\$ test ! -e half-done.*\nno such index: bottle\n") as failed:
        checkout(repo, "HEAD")
    assert f"{repo}@HEAD" in str(failed.value)
    allow.touch()
    assert (checkout(repo, "HEAD").path / "half-done").exists()  # run again from the commit's files


@pytest.mark.parametrize(
    ("where", "rev", "message"),
    [
        ("shop", "v9", r"shop@v9: the repository .*shop has no revision 'v9'"),
        ("elsewhere", "v1", r"elsewhere is not in a git repository .*no revision 'v1'"),
        ("shop/gone", "v1", r"shop/gone@v1 \(\w{12}\): gone is not in that commit of .*shop"),
        ("shop", "--all", r"'--all' is not a revision"),
    ],
)
def test_a_bad_revision_or_path_is_an_error_naming_both(
    repo: Path, tmp_path: Path, where: str, rev: str, message: str
) -> None:
    (tmp_path / "elsewhere").mkdir()
    with pytest.raises(RevisionError, match=message):
        checkout(tmp_path / where, rev)


def test_split_revision() -> None:
    assert split_revision("services/shop@v1.0") == ("services/shop", "v1.0")
    assert split_revision(".@feature/x") == (".", "feature/x")
    assert split_revision("services/shop") == ("services/shop", None)
    assert split_revision("@v1") == ("@v1", None)


def test_split_revision_keeps_an_existing_path_with_an_at(tmp_path: Path) -> None:
    odd = tmp_path / "shop@home"
    odd.mkdir()
    assert split_revision(str(odd)) == (str(odd), None)


MAKER = """
import sys
from pathlib import Path
from pytest_emperor.revisions.cache import checkout

made = checkout(Path(sys.argv[1]), sys.argv[2], note=lambda message: print(message, flush=True))
print("made", made.path, flush=True)
"""


@pytest.fixture
def makers() -> Iterator[list[subprocess.Popen[str]]]:
    """Processes making checkouts; killed (with their setups, each in its own process group) after the test."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait()


def start_maker(makers: list[subprocess.Popen[str]], repo: Path, rev: str) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-c", MAKER, str(repo), rev], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    makers.append(process)
    return process


def read_line(process: subprocess.Popen[str], timeout: float = WAIT) -> str:
    """The next line of ``process``'s output, waited for with a deadline."""
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    assert ready, f"no output from {process.args} within {timeout} s"
    return process.stdout.readline()


def setup_started(fifo: Path, timeout: float = WAIT) -> int:
    """The pid a blocking setup wrote into ``fifo`` once it ran, waited for with a deadline (a plain open would
    wait for ever on a maker that failed before its setup)."""
    data = b""
    deadline = time.monotonic() + timeout
    while not data.endswith(b"\n"):
        # Linux reports a hang-up once a writer came and went since this open: select() then says readable while
        # read() says EAGAIN if a new writer has it open and has not written yet (seen in CI), or 0 if none has:
        # the first is waited out (closing now would fail that writer's write: no reader), the second reopened
        # (a fresh open has seen no writer come and go).
        fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        try:
            while not data.endswith(b"\n"):
                ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
                assert ready, f"no setup started within {timeout} s (read so far: {data!r})"
                try:
                    chunk = os.read(fd, 64)
                except BlockingIOError:
                    continue
                if not chunk:
                    break
                data += chunk
        finally:
            os.close(fd)
    return int(data)


def let_setup_finish(fifo: Path, timeout: float = WAIT) -> None:
    """Write the line a blocking setup waits for on ``fifo``, once it has the fifo open."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)  # ENXIO while no reader has it open
            break
        except OSError:
            # A fifo says nothing when a reader opens it: this polls, tightly, up to a deadline.
            assert time.monotonic() < deadline, f"no setup waited on {fifo} within {timeout} s"
            time.sleep(0.01)
    try:
        os.write(fd, b"go\n")
    finally:
        os.close(fd)


def blocking_setup(repo: Path, tmp_path: Path) -> tuple[Path, Path]:
    """Give HEAD a setup that says it started (its pid, on the fifo ``started``) and then waits for a line on the
    fifo ``go``, as a long pip install would take its time; counted in setups.txt."""
    started, go = tmp_path / "started", tmp_path / "go"
    os.mkfifo(started)
    os.mkfifo(go)
    setup = f"echo run >> {tmp_path}/setups.txt && echo $$ > {started} && read line < {go}"
    (repo / "pyproject.toml").write_text(f'[tool.emperor-dev]\nsetup = "{setup}"\n')
    git(repo, "commit", "-q", "-am", "a slow setup")
    return started, go


def test_two_processes_asking_for_one_revision_make_it_once(
    repo: Path, tmp_path: Path, makers: list[subprocess.Popen[str]]
) -> None:
    started, go = blocking_setup(repo, tmp_path)
    first = start_maker(makers, repo, "HEAD")
    setup_started(started)  # the first one holds the lock, in its setup
    second = start_maker(makers, repo, "HEAD")
    assert read_line(second).startswith(f"waiting for another process making {repo}@HEAD")
    let_setup_finish(go)
    assert read_line(first).startswith(f"preparing {repo}@HEAD")
    assert read_line(first) == read_line(second)  # "made <the same path>"
    assert first.wait(WAIT) == 0 and second.wait(WAIT) == 0
    assert (tmp_path / "setups.txt").read_text() == "run\n"


def test_a_maker_killed_in_its_setup_leaves_nothing_that_is_used(
    repo: Path, tmp_path: Path, makers: list[subprocess.Popen[str]]
) -> None:
    started, go = blocking_setup(repo, tmp_path)
    killed = start_maker(makers, repo, "HEAD")
    setup_pid = setup_started(started)
    killed.kill()  # SIGKILL: no cleanup of its own runs
    killed.wait()
    os.kill(setup_pid, signal.SIGKILL)  # its setup, in a session of its own, outlived it
    ((kept_tree, state),) = kept()
    assert state == "setup unfinished"
    (kept_tree / "from-the-killed-setup").write_text("half\n")
    again = start_maker(makers, repo, "HEAD")
    setup_started(started)  # its setup runs: in a checkout written again
    assert not (kept_tree / "from-the-killed-setup").exists()
    let_setup_finish(go)
    assert read_line(again).startswith("preparing ")
    assert read_line(again) == f"made {kept_tree}\n"
    assert again.wait(WAIT) == 0
    assert (tmp_path / "setups.txt").read_text() == "run\nrun\n"
    assert kept() == [(kept_tree, "prepared")]


def test_a_checkout_killed_while_written_is_never_used(repo: Path, cache: Path) -> None:
    # What a maker killed in write_tree leaves: a .tmp dir beside where the checkout goes, never the checkout.
    commit = git(repo, "rev-parse", "v1").strip()
    half = cache / commit / ".shop.tmp-killed" / "tree"
    half.mkdir(parents=True)
    (half / "hello.py").write_text("half a file")
    made = checkout(repo, "v1")
    assert 'VERSION = "v1"' in (made.path / "hello.py").read_text()
    assert not half.parent.exists()


def test_clean_removes_every_checkout(repo: Path, cache: Path) -> None:
    v1, v2 = checkout(repo, "v1"), checkout(repo, "v2")
    listed = subprocess.run(
        [sys.executable, "-m", "pytest_emperor.dev", "revisions", "list"], capture_output=True, text=True,
        timeout=WAIT, check=True,
    )
    assert listed.stdout.splitlines() == sorted(f"{p}  prepared" for p in (v1.path, v2.path))
    result = subprocess.run(
        [sys.executable, "-m", "pytest_emperor.dev", "revisions", "clean"], capture_output=True, text=True,
        timeout=WAIT, check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == sorted(f"removed {p}" for p in (v1.path, v2.path))
    assert kept() == [] and not v1.path.exists()
    left = {str(p.relative_to(cache)) for p in cache.rglob("*")}
    assert left == {c for r in (v1, v2) for c in (r.revision.commit, f"{r.revision.commit}/shop.lock")}
    assert clean() == ([], [])
    assert checkout(repo, "v1").path == v1.path  # made again on the next ask


def test_ctrl_c_in_a_setup_stops_all_of_it(repo: Path, tmp_path: Path, makers: list[subprocess.Popen[str]]) -> None:
    started, _ = blocking_setup(repo, tmp_path)
    interrupted = start_maker(makers, repo, "HEAD")
    setup_pid = setup_started(started)
    interrupted.send_signal(signal.SIGINT)
    assert interrupted.wait(WAIT) != 0
    with pytest.raises(ProcessLookupError):  # killed with its process group, and reaped
        os.kill(setup_pid, 0)
    assert kept()[0][1] == "setup unfinished"


@pytest.mark.parametrize(
    ("profile", "message"),
    [
        ("setup = 3", r'"setup" must be a shell command'),
        ('setup = "  "', r'"setup" must be a shell command'),
        ('setup = "make"\nsetup-inputs = "requirements.txt"', r'"setup-inputs" must be a list of globs'),
    ],
)
def test_a_bad_setup_in_the_profile_names_the_file_and_key(repo: Path, profile: str, message: str) -> None:
    (repo / "pyproject.toml").write_text(f"[tool.emperor-dev]\n{profile}\n")
    git(repo, "commit", "-q", "-am", "a bad profile")
    with pytest.raises(ConfigFileError, match=rf"pyproject.toml: \[tool.emperor-dev\] {message}"):
        checkout(repo, "HEAD")
