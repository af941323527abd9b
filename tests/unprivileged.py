"""What a test that drops privileges needs of this machine: the uwsgi binary's embedded Python must start as the
unprivileged user. It does not where that interpreter lives in a directory only root can read (pyenv under
/root, a 0700 tox dir): the vassal then dies before it can load an app, and no privilege test can hold."""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from plugin_helpers import Sandbox

PROBE = 'import encodings, json, sys; print("python ok", sys.version_info[:2], flush=True)\n'


def python_unusable_as(user: str, uwsgi: Path) -> str | None:
    """Why ``uwsgi``'s embedded Python cannot start as ``user`` (its stdlib or the binary unreadable to it), or
    None if it can: run for real as that user (``uwsgi --pyrun``), not guessed from file modes."""
    with tempfile.TemporaryDirectory(prefix="pe-probe-", dir="/tmp") as work:
        Path(work).chmod(0o755)
        script = Path(work) / "probe.py"
        script.write_text(PROBE)
        script.chmod(0o644)
        try:
            done = subprocess.run([str(uwsgi), "--pyrun", str(script)], user=user, cwd=work, capture_output=True,
                                  text=True, timeout=60)
        except OSError as exc:
            return f"{uwsgi} cannot be run by the unprivileged user {user}: {exc}"
    output = done.stdout + done.stderr  # uWSGI logs to stderr, the script prints to stdout
    if "python ok" in output:
        return None
    last = output.strip().splitlines()[-2:]
    return (
        f"the Python that {uwsgi} embeds does not start as the unprivileged user {user} (its standard library or "
        f"binary is not readable by other users on this machine): {' | '.join(last)}"
    )


# What a hostile app run as the emperor's user does first: it claims a live socket of root's (``CLAIMED``, defined
# by the caller) as one it bound, in every record of the run it can reach (appended, or the file replaced through
# its directory). The caller's code then swaps the app's log for a symlink to a root-only file (``SECRET``).
CLAIM_ROOTS_SOCKET = """
import glob, os
run = os.environ["PYTEST_EMPEROR_RUN"]
st = os.lstat(CLAIMED)
line = f"{CLAIMED}\\t{st.st_dev} {st.st_ino} {st.st_ctime_ns}\\n"
for record in (os.path.join(run, "sockets"), os.path.join(run, "uwsgi", "bound")):
    try:
        with open(record, "a") as f:
            f.write(line)
    except OSError:
        try:
            with open(record) as f:
                old = f.read()
            with open(record + ".new", "w") as f:
                f.write(old + line)
            os.replace(record + ".new", record)
        except OSError:
            pass
"""


def throwaway_user(prefix: str, *, user_group: bool = True) -> Iterator[str]:
    """A real unprivileged local user (and its group), deleted after the test: the body of the suite's user
    fixtures. Deleted once no process runs as it any more: a process the test started as that user (a vassal, a
    probe) may still be exiting as the test returns (`userdel` then fails, "currently used by process N", 1 run
    in 5 of a CI matrix); one still there after ``USER_GONE_WITHIN`` seconds is a leak, and fails the test naming
    it."""
    name = f"{prefix}{secrets.token_hex(4)}"
    subprocess.run(
        ["useradd", "--no-create-home", *(["--user-group"] if user_group else []), "--shell", "/usr/sbin/nologin",
         name],
        check=True,
    )
    uid = pwd.getpwnam(name).pw_uid
    try:
        yield name
    finally:
        deadline = time.monotonic() + USER_GONE_WITHIN
        left = _processes_of(uid)
        while left and time.monotonic() < deadline:
            time.sleep(0.02)  # polling /proc, with a deadline: no event says a process of a uid has exited
            left = _processes_of(uid)
        subprocess.run(["userdel", "--force", name], check=True)
        subprocess.run(["groupdel", name], check=False, capture_output=True)  # gone with the user on most systems
        assert not left, f"processes of the test's user {name} still running {USER_GONE_WITHIN} s after it: {left}"


USER_GONE_WITHIN = 10.0


def _processes_of(uid: int) -> list[str]:
    """The live processes (not zombies) running as ``uid``: pid and command line."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if fields.get("Uid", "").split()[:1] == [str(uid)] and not fields.get("State", "").strip().startswith("Z"):
            found.append(f"{entry.name} {command!r}")
    return found


@pytest.fixture
def dropped_box(user: str, uwsgi_bin: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Sandbox]:
    """A private sandbox for a nested ``pytest --emperor`` whose apps run as ``user``: its env set, the outer run's
    xdist and coverage variables dropped, reachable by the user, its socket dir the user's; removed after the test.
    Skipped where uwsgi's embedded Python cannot start as the user."""
    why = python_unusable_as(user, uwsgi_bin)
    if why:
        pytest.skip(why)
    box = Sandbox.create()
    try:
        for name, value in box.env().items():
            monkeypatch.setenv(name, value)
        for name in os.environ:
            if name.startswith(("PYTEST_XDIST", "PYTEST_CURRENT", "COV_CORE")):
                monkeypatch.delenv(name)
        box.root.chmod(0o755)  # the apps and the runs root below must be reachable by the user
        shutil.chown(box.sockets, user)  # where the apps, run as the user, bind their sockets
        yield box
    finally:
        box.remove()
