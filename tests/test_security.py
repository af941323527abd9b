"""Another local user can neither reach nor redirect what a run creates: private dirs and sockets, planted
symlinks never followed, written through or unlinked, a control socket that refuses other users.

The other side runs as a real unprivileged user, created for the test and removed after it.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_emperor.dev.control import ControlServer, Message, call
from pytest_emperor.engine.emperor import Emperor
from pytest_emperor.engine.runs import RunDir, recover_abandoned, socket_identity

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("useradd") is None,
                                reason="needs root and useradd to create the other local user")  # fmt: skip

# Runs as the other user: tries each action given as an argument and prints one verdict per line.
PROBE = """
import os, socket, sys
for action in sys.argv[1:]:
    kind, _, path = action.partition(":")
    try:
        if kind == "list":
            os.listdir(path)
        elif kind == "connect":
            s = socket.socket(socket.AF_UNIX)
            s.settimeout(10)
            s.connect(path)
            s.sendall(b'{"cmd":"status"}\\n')
            print(kind, "answer", s.makefile("rb").readline().decode().strip(), flush=True)
            continue
        elif kind == "write":
            open(path, "w").close()
        print(kind, "allowed", flush=True)
    except PermissionError:
        print(kind, "denied", flush=True)
    except OSError as exc:
        print(kind, type(exc).__name__, flush=True)
"""


@pytest.fixture
def other_user() -> Iterator[str]:
    """A real unprivileged local user, removed (with its files) after the test."""
    name = f"pe{secrets.token_hex(4)}"
    subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["userdel", name], check=True)


def as_user(user: str, *actions: str) -> list[str]:
    """Try ``actions`` (``list:PATH``, ``connect:PATH``, ``write:PATH``) as ``user``; their verdicts."""
    done = subprocess.run(["/usr/bin/python3", "-c", PROBE, *actions], user=user, capture_output=True, text=True,
                          timeout=60, cwd="/")  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A short dir every user can enter (like /tmp), so that only the modes of what is inside keep them out."""
    path = Path(tempfile.mkdtemp(prefix="pe-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_run_dir_and_its_sockets_are_private(shared_dir: Path, other_user: str, uwsgi_bin: Path) -> None:
    root = shared_dir / "runs"
    with Emperor(uwsgi_bin, runs_root=root, timeout=30) as emperor:
        for path in (root, emperor.run_dir, emperor.vassal_dir, emperor.logs_dir):
            assert path.stat().st_mode & 0o077 == 0, f"{path} is {oct(path.stat().st_mode)}"
        router = emperor.router.unix_path  # nginx's unix listener: the run dir's privacy covers it too
        assert Path(router).parent == emperor.run_dir and emperor.router.tcp_address[0] == "127.0.0.1"
        verdicts = as_user(other_user, f"list:{root}", f"list:{emperor.run_dir}", f"connect:{emperor.stats_path}",
                           f"write:{emperor.vassal_dir}/planted.ini", f"connect:{router}")  # fmt: skip
    assert verdicts == ["list denied", "list denied", "connect denied", "write denied", "connect denied"]


def test_control_socket_refuses_other_users(shared_dir: Path, other_user: str) -> None:
    path = str(shared_dir / "control.sock")
    served: list[Message] = []
    server = ControlServer(path, lambda request: served.append(request) or {"ok": True}).start()
    try:
        assert as_user(other_user, f"connect:{path}") == ["connect denied"]  # the file's mode: 0600
        os.chmod(path, 0o666)  # loosened by mistake: the peer's credentials still refuse
        verdict = as_user(other_user, f"connect:{path}")
        assert len(verdict) == 1 and verdict[0].startswith('connect answer {"ok":false,"error":"refused: uid')
        assert served == []
        assert call(path, {"cmd": "status"}) == {"ok": True} and served == [{"cmd": "status"}]  # its own user
    finally:
        server.stop()


def test_a_runs_root_planted_as_a_symlink_is_refused(shared_dir: Path, other_user: str) -> None:
    mine = shared_dir / "mine"
    mine.mkdir(mode=0o700)
    root = shared_dir / "runs"
    root.symlink_to(mine)  # planted by the other user, pointing into a directory of ours
    os.lchown(root, pwd.getpwnam(other_user).pw_uid, -1)
    with pytest.raises(PermissionError, match=rf"{root} is a symlink"):
        RunDir.create(root)
    assert list(mine.iterdir()) == []


def test_a_runs_root_of_another_user_is_refused(shared_dir: Path, other_user: str) -> None:
    root = shared_dir / "runs"
    root.mkdir(mode=0o777)
    shutil.chown(root, other_user)
    with pytest.raises(PermissionError, match="not a private directory of yours"):
        RunDir.create(root)
    assert list(root.iterdir()) == []


def test_a_symlink_planted_at_a_predicted_socket_path_is_never_unlinked_or_followed(
    shared_dir: Path, other_user: str
) -> None:
    root = shared_dir / "runs"
    run = RunDir.create(root)
    run._lock.release()  # its owner died
    target = shared_dir / "real.sock"
    with socket.socket(socket.AF_UNIX) as real:
        real.bind(str(target))  # a socket of ours the symlink points at, dead (not listening)
        predicted = shared_dir / "app.sock"
        predicted.symlink_to(target)
        os.lchown(predicted, pwd.getpwnam(other_user).pw_uid, -1)
        run.record_socket(str(predicted))
        run.record_bound([str(predicted)])  # even asked to, the run records nothing for a symlink
        assert socket_identity(predicted) is None
        recovered = recover_abandoned(root)
        assert [r.path for r in recovered] == [run.path] and recovered[0].sockets == []
        assert predicted.is_symlink() and target.exists()

