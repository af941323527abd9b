"""`--emperor-args "--uid U --gid G"`: what production's privilege drop implies, checked with a real unprivileged
user created for the test (and deleted after it)."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from unprivileged import CLAIM_ROOTS_SOCKET, python_unusable_as, throwaway_user

from pytest_emperor.check.privileges import parse_emperor_args
from pytest_emperor.check.runner import CheckSettings, run_check

CASES = Path(__file__).resolve().parent / "check_cases"
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="creating a user needs root")


@pytest.fixture
def user() -> Iterator[str]:
    yield from throwaway_user("ec")


@pytest.fixture
def app_dir() -> Iterator[Path]:
    # not under pytest's tmp_path: /tmp/pytest-of-root is 0700, which no other user can search
    top = Path(tempfile.mkdtemp(prefix="emperor-check-priv-"))
    try:
        app = top / "svc"
        shutil.copytree(CASES / "good", app)
        yield app
    finally:
        shutil.rmtree(top)


def codes(app: Path, user: str, extra: str = "") -> set[tuple[str, int]]:
    if extra:
        (app / "app.uwsgi.ini").write_text((CASES / "good" / "app.uwsgi.ini").read_text() + extra)
    settings = CheckSettings(boot=False, emperor_args=("--uid", user, "--gid", user))
    return {(f.code, f.line) for f in run_check([app], settings).findings}


def test_parse_emperor_args() -> None:
    assert parse_emperor_args("--emperor /etc/uwsgi/vassals --uid www-data --gid=www-data")[1:] == (
        "www-data",
        "www-data",
    )
    assert parse_emperor_args("--master")[1:] == (None, None)


def test_app_dir_the_user_cannot_search(app_dir: Path, user: str) -> None:
    os.chmod(app_dir.parent, 0o700)
    assert ("E601", 1) in codes(app_dir, user)  # the ini itself
    os.chmod(app_dir.parent, 0o755)
    # searchable but not listable: the ini opens, but Python's import system lists the dir to find `hello`
    os.chmod(app_dir, 0o711)
    assert ("E601", 3) in codes(app_dir, user)  # chdir
    os.chmod(app_dir, 0o755)
    os.chmod(app_dir.parent, 0o755)
    os.chmod(app_dir / "hello.py", 0o600)
    assert ("E601", 5) in codes(app_dir, user)  # module
    os.chmod(app_dir / "hello.py", 0o644)
    assert not {c for c in codes(app_dir, user) if c[0] == "E601"}


def test_logto_the_user_cannot_write(app_dir: Path, user: str) -> None:
    os.chmod(app_dir.parent, 0o755)
    logs = app_dir.parent / "logs"
    logs.mkdir(mode=0o755)
    assert ("E602", 11) in codes(app_dir, user, f"logto = {logs}/app.log\n")
    shutil.chown(logs, user)
    assert not {c for c in codes(app_dir, user, f"logto = {logs}/app.log\n") if c[0] == "E602"}


def test_socket_nginx_cannot_connect_to(app_dir: Path, user: str) -> None:
    os.chmod(app_dir.parent, 0o755)
    assert ("E603", 4) in codes(app_dir, user)  # no chmod-socket: 755 owned by the vassal's user
    assert not {c for c in codes(app_dir, user, "chmod-socket = 666\n") if c[0] == "E603"}
    assert ("E603", 11) in codes(app_dir, user, "chmod-socket = 660\n")  # nginx is not in the user's group


def test_vassal_uid_is_ignored_under_a_dropped_emperor(app_dir: Path, user: str) -> None:
    os.chmod(app_dir.parent, 0o755)
    assert ("W604", 11) in codes(app_dir, user, "uid = root\n")
    assert not {c for c in codes(app_dir, user, "chmod-socket = 666\n") if c[0] == "W604"}
    # an unknown user is no curse under an emperor that dropped privileges: it ignores uid/gid
    assert {c[0] for c in codes(app_dir, user, "uid = no-such-user-pe\n")} & {"W604", "E311"} == {"W604"}


def test_boot_check_runs_under_the_emperor_args(app_dir: Path, user: str, uwsgi_bin: Path) -> None:
    why = python_unusable_as(user, uwsgi_bin)
    if why:  # the machine's, not the check's: the vassal could not start Python as that user at all
        pytest.skip(why)
    os.chmod(app_dir.parent, 0o755)
    (app_dir / "app.uwsgi.ini").write_text((CASES / "good" / "app.uwsgi.ini").read_text() + "chmod-socket = 666\n")
    settings = CheckSettings(uwsgi=uwsgi_bin, timeout=60, emperor_args=("--uid", user, "--gid", user))
    result = run_check([app_dir], settings)
    assert result.findings == () and result.boot.startswith("boot check: ran on 1 app (under --emperor-args")
    # the same app in a dir only root can search: uWSGI cannot open the config; the static rule and the boot agree
    os.chmod(app_dir.parent, 0o700)
    found = {(f.code, f.line) for f in run_check([app_dir], settings).findings}
    assert {("E601", 1), ("B001", 1)} <= found


# The app, run as the emperor's user: claims a live socket of root's as one it bound, in every record of the run
# it can reach (appended, or the file replaced through its directory), swaps its log for a symlink to a root-only
# file, then fails its import, so that the report shows its log lines.
HOSTILE = CLAIM_ROOTS_SOCKET + """for log in glob.glob(os.path.join(run, "logs", "*.log")):
    os.replace(log, log + ".old")
    os.symlink(SECRET, log)
raise RuntimeError("hostile app: planted")
"""


def test_boot_check_vassals_cannot_make_root_unlink_or_read(app_dir: Path, user: str, uwsgi_bin: Path) -> None:
    why = python_unusable_as(user, uwsgi_bin)
    if why:
        pytest.skip(why)
    os.chmod(app_dir.parent, 0o755)
    secret = app_dir.parent / "secret"
    secret.write_text("root's secret line\n")
    secret.chmod(0o600)
    claimed = app_dir.parent / "root-only.sock"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(claimed))
        os.chmod(claimed, 0o600)
        server.listen()
        (app_dir / "hello.py").write_text(f"CLAIMED = {str(claimed)!r}\nSECRET = {str(secret)!r}\n" + HOSTILE)
        settings = CheckSettings(uwsgi=uwsgi_bin, timeout=60, emperor_args=("--uid", user, "--gid", user))
        result = run_check([app_dir], settings)
        assert claimed.exists()
    report = repr(result.findings)
    assert "B001" in {f.code for f in result.findings} and "root's secret line" not in report, report


def test_666_is_questioned_when_nginx_connects_as_the_sockets_owner(app_dir: Path, user: str) -> None:
    os.chmod(app_dir.parent, 0o755)
    settings = CheckSettings(boot=False, emperor_args=("--uid", user, "--gid", user), nginx_user=user)
    ini = app_dir / "app.uwsgi.ini"
    for mode, want in (("666", {("W605", 11)}), ("600", set())):
        ini.write_text((CASES / "good" / "app.uwsgi.ini").read_text() + f"chmod-socket = {mode}\n")
        found = {(f.code, f.line) for f in run_check([app_dir], settings).findings}
        assert {c for c in found if c[0] in ("W605", "E603")} == want, (mode, found)
