"""Another local user can neither reach nor redirect what a run creates: private dirs and sockets, planted
symlinks never followed, written through or unlinked, a control socket that refuses other users.

The other side runs as a real unprivileged user, created for the test and removed after it.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from dev_helpers import Up, cli, copy_example, names_for_test, up_process, workspace
from router_fixtures import fronted
from unprivileged import throwaway_user

from pytest_emperor.dev.control import ControlServer, Message, call
from pytest_emperor.dev.state import Instance, StateDir
from pytest_emperor.engine.emperor import Emperor
from pytest_emperor.engine.runs import RunDir, recover_abandoned, socket_identity

__all__ = ["up_process", "workspace"]  # fixtures of dev_helpers.py

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("useradd") is None,
                                reason="needs root and useradd to create the other local user")

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
    yield from throwaway_user("pe", user_group=False)


def as_user(user: str, *actions: str) -> list[str]:
    """Try ``actions`` (``list:PATH``, ``connect:PATH``, ``write:PATH``) as ``user``; their verdicts."""
    done = subprocess.run(["/usr/bin/python3", "-c", PROBE, *actions], user=user, capture_output=True, text=True,
                          timeout=60, cwd="/")
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
    with Emperor(uwsgi_bin, runs_root=root, timeout=30) as emperor, fronted(emperor) as front:
        for path in (root, emperor.run_dir, emperor.vassal_dir, emperor.logs_dir):
            assert path.stat().st_mode & 0o077 == 0, f"{path} is {oct(path.stat().st_mode)}"
        router = front().unix_path  # nginx's unix listener: the run dir's privacy covers it too
        assert Path(router).parent == emperor.run_dir and front().tcp_address[0] == "127.0.0.1"
        verdicts = as_user(other_user, f"list:{root}", f"list:{emperor.run_dir}", f"connect:{emperor.stats_path}",
                           f"write:{emperor.vassal_dir}/planted.ini", f"connect:{router}")
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



# -- the router and the clients reach only the run's own sockets ---------------------------------------------------

# Runs as the other user: listens on the unix socket argv[1] (mode 0666, so anyone may connect), says so, then
# prints every connection's bytes (repr) and answers each as a web app would, until stdin closes.
LISTENER = """
import os, socket, sys, threading
s = socket.socket(socket.AF_UNIX)
s.bind(sys.argv[1])
os.chmod(sys.argv[1], 0o666)
s.listen(16)
print("listening", flush=True)
def serve():
    while True:
        conn, _ = s.accept()
        conn.settimeout(2)
        try:
            data = conn.recv(65536)
        except OSError:
            data = b""
        print(repr(data), flush=True)
        conn.sendall(b"HTTP/1.1 200 OK\\r\\nContent-Length: 6\\r\\nConnection: close\\r\\n\\r\\nstolen")
        conn.close()
threading.Thread(target=serve, daemon=True).start()
sys.stdin.read()
os.unlink(sys.argv[1])
"""


@contextlib.contextmanager
def planted_listener(user: str, path: str) -> Iterator[Callable[[], list[str]]]:
    """``user`` listens on ``path``; yields what it has heard so far (one repr'd chunk per connection that sent
    something: a deploy's liveness probe connects and sends nothing)."""
    process = subprocess.Popen(["/usr/bin/python3", "-c", LISTENER, path], user=user, cwd="/", text=True,
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout is not None and process.stdin is not None
    heard: list[str] = []
    try:
        assert process.stdout.readline() == "listening\n", process.stderr.read() if process.stderr else ""
        threading.Thread(target=lambda: heard.extend(line.rstrip("\n") for line in process.stdout), daemon=True).start()
        yield lambda: [chunk for chunk in heard if chunk != "b''"]
    finally:
        process.stdin.close()
        process.wait(30)


def test_a_socket_another_user_plants_where_a_vassal_served_gets_no_request(
    other_user: str, uwsgi_bin: Path, make_app: Callable[..., Path]
) -> None:
    uid = pwd.getpwnam(other_user).pw_uid
    with Emperor(uwsgi_bin, timeout=30) as emperor, fronted(emperor, upstream_timeout=5):
        vassal = emperor.deploy(make_app("victim"))
        assert vassal.http.get("/").status_code == 200 and vassal.request("GET", "/").status_code == 200
        vassal.stop()  # its socket file is gone: in the sticky /tmp anyone may bind that name now
        assert vassal.socket_path is not None
        with planted_listener(other_user, vassal.socket_path) as heard:
            cookie = {"Cookie": "session=secret"}
            refused = rf"belongs to uid {uid} \({other_user}\), not to this run .*refusing to send it the request"
            with pytest.raises(requests.ConnectionError, match=refused):
                vassal.request("GET", "/login", headers=cookie)
            through_router = vassal.http.get("/login", headers=cookie)
            assert through_router.status_code == 404 and "routes to no app of this run" in through_router.text
            assert heard() == []


def test_the_router_never_follows_a_planted_symlink_to_a_root_only_socket(
    shared_dir: Path, other_user: str, uwsgi_bin: Path
) -> None:
    private = shared_dir / "root-only"
    private.mkdir(mode=0o700)
    with socket.socket(socket.AF_UNIX) as root_app, Emperor(uwsgi_bin, timeout=30) as emperor, fronted(
        emperor
    ) as router:
        root_app.bind(str(private / "app.sock"))
        os.chmod(private / "app.sock", 0o600)
        root_app.listen(8)
        root_app.setblocking(False)
        name = f"evil-{secrets.token_hex(3)}"
        link = Path(f"/tmp/{name}.api.sock")
        link.symlink_to(private / "app.sock")  # as the other user would (fs.protected_symlinks=0 lets root follow)
        os.lchown(link, pwd.getpwnam(other_user).pw_uid, -1)
        try:
            host, port = router().tcp_address
            answer = requests.get(f"http://{host}:{port}/", headers={"Host": f"{name}.api.localhost"}, timeout=30)
        finally:
            link.unlink()
        assert answer.status_code == 404 and f"Host '{name}.api.localhost' routes to no app" in answer.text
        with pytest.raises(BlockingIOError):
            root_app.accept()  # nothing connected to the root-only socket


def test_up_never_sends_a_request_to_another_user_s_listener_on_an_app_s_socket(
    other_user: str, workspace: Path, up_process: list[Up]
) -> None:
    good, victim = names_for_test()
    copy_example(workspace, "service3", "service3")
    with planted_listener(other_user, f"/tmp/{victim}.api.sock") as heard:
        up = Up(workspace, f"{good}=service3", f"{victim}=service3")
        up_process.append(up)
        up.started()
        assert re.search(rf"^{victim}\s+\S+\s+error\s", "\n".join(up.lines), re.M)  # its socket is in use

        request = cli(workspace, "request", victim, "/login", "-H", "Cookie: session=secret", "-i")
        assert request.returncode == 1 and request.stdout == ""
        assert f"'{victim}' is error: " in request.stderr and "so the request was not sent" in request.stderr
        status_now = cli(workspace, "status")  # what it is, why, and what to do once the socket is free
        assert status_now.returncode == 1 and f"once that is fixed: emperor-dev reload {victim}" in status_now.stdout
        status, body = up.get(victim, "/login")
        assert status == 404 and f"Host '{victim}.api.localhost' routes to no app of this run" in body
        assert f">{good}</a>" in body and f">{victim}</a>" not in body  # the apps it runs, not the refused one
        assert up.get(good) == (200, "hello from service3 at /\n")
        assert heard() == []

        # A refused `add` leaves nothing behind: `status` is as before it.
        assert cli(workspace, "rm", victim).returncode == 0
        added = cli(workspace, "add", "service3", "--name", victim)
        assert added.returncode == 1 and "which another live process is serving" in added.stderr
        assert re.search(rf"serving \(pid \d+ \({other_user}: /usr/bin/python3 -c .*\)\); uWSGI would", added.stderr)
        status_after = cli(workspace, "status")
        assert status_after.returncode == 0, status_after.stderr
        assert victim not in status_after.stdout and good in status_after.stdout
        assert heard() == []
    up.stopped()


# Runs as root, then as the other user: `emperor-dev status` on a state dir whose `up` is root's.
AS_OTHER = """
import os, sys
from pytest_emperor.dev import cli, control, output, state  # imported as root: /root is not theirs to read
os.setegid(int(sys.argv[2]))
os.seteuid(int(sys.argv[1]))
cli.status(["--state-dir", sys.argv[3]])
"""


def test_permission_denied_on_up_s_control_socket_names_its_owner(shared_dir: Path, other_user: str) -> None:
    state = StateDir(shared_dir / "state")
    state.path.mkdir(mode=0o755)
    control_path = state.control_path(shared_dir)
    server = ControlServer(control_path, lambda request: {"ok": True, "apps": []}).start()
    try:
        state.publish(Instance(pid=os.getpid(), control=control_path, run_dir=str(shared_dir), domain="x",
                               router_host="127.0.0.1", router_port=1, router_unix=""))
        os.chmod(state.state_file, 0o644)
        user = pwd.getpwnam(other_user)
        done = subprocess.run([sys.executable, "-c", AS_OTHER, str(user.pw_uid), str(user.pw_gid), str(state.path)],
                              capture_output=True, text=True, timeout=60, cwd="/")
    finally:
        server.stop()
    assert done.returncode == 1, done.stderr
    # On the control socket (or on up.json, should the state dir keep it from other users): whose it is, not "gone".
    assert re.search(rf"permission denied on {re.escape(str(state.path))}/\S+ \(owner root \(uid 0\)", done.stderr)
    assert "is gone" not in done.stderr
