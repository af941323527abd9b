"""Nothing another local user can write makes the run delete, overwrite or read a path: the state dir of
``emperor-dev up`` and what it holds, a planted runs root, and, under an emperor that drops privileges
(``--uid``), the run dir's records and logs, which the vassals' user writes to.

The other side is a real unprivileged user, created for the test (test_security.py's fixture) and removed after.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_security import other_user, shared_dir  # noqa: F401 (fixtures)
from unprivileged import CLAIM_ROOTS_SOCKET, python_unusable_as

from pytest_emperor.dev.logs import LogTail
from pytest_emperor.dev.state import Instance, StateDir
from pytest_emperor.engine.bound_recorder import CLAIMS_DIR, CLAIMS_FILE, identity_line
from pytest_emperor.engine.emperor import Emperor
from pytest_emperor.engine.runs import RunDir
from pytest_emperor.errors import UnsafePath

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("useradd") is None,
                                reason="needs root and useradd to create the other local user")


def as_user(user: str, code: str, *args: str) -> None:
    """Run Python ``code`` as ``user`` (with ``args`` as sys.argv[1:]); it must succeed."""
    done = subprocess.run(["/usr/bin/python3", "-c", code, *args], user=user, capture_output=True, text=True,
                          timeout=60, cwd="/")
    assert done.returncode == 0, done.stderr


def plant_symlink(link: Path, target: Path, user: str) -> None:
    link.symlink_to(target)
    os.lchown(link, pwd.getpwnam(user).pw_uid, -1)


@pytest.fixture
def victim(shared_dir: Path) -> Path:  # noqa: F811
    """A directory of root's that looks like a run (a dir and its ``.lock``), with a dead socket beside it."""
    top = shared_dir / "victim"
    (top / "run").mkdir(parents=True)
    (top / "run" / "precious").write_text("root's data\n")
    (top / "run.lock").write_text("")
    return top


@pytest.fixture
def listening(shared_dir: Path) -> Iterator[Path]:  # noqa: F811
    """A live root-owned 0600 unix socket (another root service's)."""
    path = shared_dir / "root-only.sock"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(path))
        os.chmod(path, 0o600)
        server.listen()
        yield path


def planted_instance(victim: Path) -> Instance:
    return Instance(pid=2**22 + 1, control=str(victim / "control.sock"), run_dir=str(victim / "run"),
                    domain="localhost", router_host="127.0.0.1", router_port=1,
                    router_unix="")


def assert_untouched(victim: Path) -> None:
    assert (victim / "run" / "precious").read_text() == "root's data\n" and (victim / "run.lock").exists()


# -- the state dir --------------------------------------------------------------------------------------------


def test_recovery_never_removes_a_run_dir_or_socket_up_json_names(shared_dir: Path, victim: Path) -> None:  # noqa: F811
    with socket.socket(socket.AF_UNIX) as dead:
        dead.bind(str(victim / "control.sock"))  # a dead socket of root's: recovery would have unlinked it
        state = StateDir(shared_dir / "state")
        state.path.mkdir(mode=0o700)
        (state.path / "up.json").write_text(planted_instance(victim).to_json())  # a killed `up`'s, or planted
        done = state.acquire()
        try:
            assert done[0].startswith("recovered the state of a killed `up`"), done
            assert_untouched(victim)
            assert (victim / "control.sock").exists() and not state.state_file.exists()
        finally:
            state.release()


def test_a_state_dir_another_user_can_write_is_refused(shared_dir: Path, victim: Path, other_user: str) -> None:  # noqa: F811
    state = shared_dir / "state"
    state.mkdir(mode=0o777)
    shutil.chown(state, other_user)
    as_user(other_user, "import sys; open(sys.argv[1], 'w').write(sys.argv[2])", str(state / "up.json"),
            planted_instance(victim).to_json())
    with pytest.raises(UnsafePath, match=rf"the state dir {state} is not a private directory of yours"):
        StateDir(state).acquire()
    with pytest.raises(UnsafePath):
        StateDir(state).running()  # status, down ... follow nothing in it either
    assert_untouched(victim)
    # ours, but in a directory the other user can write (and so replace it in): refused as well
    open_dir = shared_dir / "open"
    open_dir.mkdir()
    open_dir.chmod(0o777)
    shutil.chown(open_dir, other_user)
    (open_dir / "state").mkdir(mode=0o700)
    with pytest.raises(UnsafePath, match=rf"is in {open_dir} .* where another user could replace it"):
        StateDir(open_dir / "state").acquire()


def test_a_planted_tmp_file_symlink_is_never_written_through(shared_dir: Path, victim: Path, other_user: str) -> None:  # noqa: F811
    target = victim / "run" / "precious"
    state = StateDir(shared_dir / "state")
    state.path.mkdir(mode=0o700)
    plant_symlink(state.path / "up.json.tmp", target, other_user)
    state.acquire()
    try:
        state.publish(planted_instance(victim))
        assert target.read_text() == "root's data\n"
        assert state.read() == planted_instance(victim) and not (state.path / "up.json.tmp").exists()
    finally:
        state.release()


def test_a_planted_lock_symlink_is_a_clear_error(shared_dir: Path, victim: Path, other_user: str) -> None:  # noqa: F811
    target = victim / "run" / "precious"
    state = StateDir(shared_dir / "state")
    state.path.mkdir(mode=0o700)
    plant_symlink(state.path / "up.lock", target, other_user)
    with pytest.raises(UnsafePath, match=r"up.lock is not a lock file of yours \(l"):
        state.acquire()
    assert target.read_text() == "root's data\n"


def test_a_planted_up_json_symlink_is_not_read(shared_dir: Path, other_user: str) -> None:  # noqa: F811
    secret = shared_dir / "secret.json"
    secret.write_text(planted_instance(shared_dir).to_json())
    secret.chmod(0o600)
    state = StateDir(shared_dir / "state")
    state.path.mkdir(mode=0o700)
    plant_symlink(state.state_file, secret, other_user)
    with pytest.raises(UnsafePath, match="is a symlink: not followed"):
        state.read()


@pytest.fixture
def planted_tmp(shared_dir: Path, other_user: str) -> Path:  # noqa: F811
    """A sticky TMPDIR where the other user planted this user's runs root as a symlink into a dir of ours."""
    tmp = shared_dir / "tmp"
    tmp.mkdir()
    tmp.chmod(0o1777)
    mine = shared_dir / "mine"
    mine.mkdir(mode=0o700)
    plant_symlink(tmp / f"pytest-emperor-{os.getuid()}", mine, other_user)
    return tmp


def test_up_refuses_a_planted_runs_root_without_a_traceback(shared_dir: Path, planted_tmp: Path) -> None:  # noqa: F811
    app = shared_dir / "apps" / "hello"
    app.mkdir(parents=True)
    (app / "app.uwsgi.ini").write_text("[uwsgi]\nsocket = /tmp/%n.api.sock\nmodule = app\n")
    (app / "app.py").write_text("def application(environ, start_response): return []\n")
    env = dict(os.environ, TMPDIR=str(planted_tmp), EMPEROR_DEV_STATE_DIR=str(shared_dir / "state"))
    done = subprocess.run([sys.executable, "-m", "pytest_emperor.dev", "up", str(app)], env=env, cwd=shared_dir,
                          capture_output=True, text=True, timeout=120)
    root = planted_tmp / f"pytest-emperor-{os.getuid()}"
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr and f"the runs root {root} is a symlink" in done.stderr, done.stderr
    assert list((shared_dir / "mine").iterdir()) == []


def test_pytest_refuses_a_planted_runs_root_without_a_traceback(
    pytester: pytest.Pytester, planted_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile("def test_uses_the_emperor(emperor):\n    pass\n")
    monkeypatch.setenv("TMPDIR", str(planted_tmp))
    result = pytester.runpytest_subprocess("--emperor", "-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    out = result.stdout.str()
    root = planted_tmp / f"pytest-emperor-{os.getuid()}"
    assert f"pytest-emperor: the runs root {root} is a symlink" in out and "raise UnsafePath" not in out, out


# -- a run whose emperor drops privileges -----------------------------------------------------------------------

# The vassal's app, running as the other user: it claims a socket of root's as one it bound, in every record
# of the run it can reach (appended, or the file replaced through its directory), and swaps its own log for a
# symlink to a root-only file, then serves.
HOSTILE_APP = CLAIM_ROOTS_SOCKET + """log = os.path.join(run, "logs", NAME + ".log")
try:
    os.replace(log, log + ".old")
    os.symlink(SECRET, log)
except OSError:
    pass

def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hostile"]
"""


@pytest.fixture
def dropped(shared_dir: Path, other_user: str, uwsgi_bin: Path) -> Iterator[tuple[Emperor, str]]:  # noqa: F811
    """A real emperor that drops to the other user, as ``check --emperor-args "--uid U --gid U"`` starts it."""
    why = python_unusable_as(other_user, uwsgi_bin)
    if why:
        pytest.skip(why)
    entry = pwd.getpwnam(other_user)
    root = shared_dir / "runs"
    root.mkdir(mode=0o711)  # searchable: the dropped emperor enters the run dir handed to it
    args = ("--uid", other_user, "--gid", str(entry.pw_gid))
    with Emperor(uwsgi_bin, runs_root=root, timeout=60, extra_args=args, run_owner=(entry.pw_uid, entry.pw_gid),
                 name_suffix="") as emperor:
        yield emperor, other_user


def test_vassals_that_dropped_privileges_cannot_make_root_unlink_or_read(
    shared_dir: Path,  # noqa: F811
    dropped: tuple[Emperor, str],
    listening: Path,
) -> None:
    emperor, user = dropped
    secret = shared_dir / "secret"
    secret.write_text("root's secret line\n")
    secret.chmod(0o600)
    app = shared_dir / "apps" / "hostile"
    app.mkdir(parents=True)
    app.parent.chmod(0o755)
    name = f"hostile{os.getpid()}"
    socks = shared_dir / "socks"  # where the vassals' user may bind
    socks.mkdir()
    shutil.chown(socks, user)
    (app / "app.uwsgi.ini").write_text(textwrap.dedent(f"""\
        [uwsgi]
        chdir = {app}
        socket = {socks}/%n.sock
        chmod-socket = 666
        module = app
        master = true
        vacuum = true
        """))
    code = f"CLAIMED = {str(listening)!r}\nSECRET = {str(secret)!r}\nNAME = {name!r}\n" + HOSTILE_APP
    (app / "app.py").write_text(code)
    vassal = emperor.deploy(app / "app.uwsgi.ini", name=name)
    assert vassal.request().text == "hostile"
    assert (emperor.run_dir / "logs" / f"{name}.log").is_symlink()  # the app did what it set out to
    log = emperor.run_dir / "logs" / f"{name}.log"
    assert vassal.log_text() == f"(not read: {log} is a symlink: not followed (another user may have planted it))\n"
    # the run dir and its own records stay root's: the vassals' user could neither write nor replace them
    assert emperor.run_dir.stat().st_uid == 0 and (emperor.run_dir / "sockets").stat().st_uid == 0
    assert str(listening) not in (emperor.run_dir / "sockets").read_text()
    claims = (emperor.run_dir / CLAIMS_DIR / CLAIMS_FILE).read_text()
    assert str(listening) in claims  # claimed, never trusted
    assert f"{socks}/{name}.sock\t" in claims  # the master's own record (bound_recorder.py) works as that user
    emperor.stop()
    assert listening.exists()


def test_a_claim_on_a_predicted_path_holding_roots_socket_is_refused(
    shared_dir: Path,  # noqa: F811
    other_user: str,  # noqa: F811
    listening: Path,
) -> None:
    entry = pwd.getpwnam(other_user)
    root = shared_dir / "runs"
    root.mkdir(mode=0o711)
    run = RunDir.create(root)
    try:
        for name in ("vassals", "logs"):
            (run.path / name).mkdir(mode=0o700)
        run.hand_over((entry.pw_uid, entry.pw_gid))
        run.record_socket(str(listening))  # the app's config names it: the run predicts it
        claim = identity_line(str(listening), os.lstat(listening))
        as_user(other_user, "import sys; open(sys.argv[1], 'a').write(sys.argv[2])",
                str(run.path / CLAIMS_DIR / CLAIMS_FILE), claim)
        run.record_bound([str(listening)])  # the run's own readiness record: a file not the vassals' user's
        assert run.kill_and_unlink() == ([], []) and not run.unlink_dead_socket(str(listening))
        assert listening.exists()
    finally:
        run.close()


def test_up_log_stream_never_shows_a_symlinked_log(shared_dir: Path, other_user: str) -> None:  # noqa: F811
    secret = shared_dir / "secret"
    secret.write_text("root's secret line\n")
    secret.chmod(0o600)
    run = shared_dir / "run"
    (run / "logs").mkdir(parents=True)
    shutil.chown(run / "logs", other_user)  # handed to the vassals' user, as under a privilege drop
    plant_symlink(run / "logs" / "shop.log", secret, other_user)
    (run / "logs" / "ok.log").write_text("served\n")
    tail = LogTail(run)
    assert [(line.app, line.text) for line in tail.read()] == [
        ("ok", "served"),
        ("shop", f"(not shown: {run}/logs/shop.log is a symlink: not followed (another user may have planted it))"),
    ]
    assert tail.read() == []  # said once


# The dropped user's stand-in for the emperor's stats socket: the real one moved aside, its own bound in its place,
# answering a made-up document (no vassals) to whoever connects.
IMPOSTOR = """
import os, socket, sys
path = sys.argv[1]
os.rename(path, path + ".real")
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(path)
s.listen(8)
print("listening", flush=True)
while True:
    c, _ = s.accept()
    c.sendall(b'{"pid": 1, "vassals": [], "blacklist": []}')
    c.close()
"""


def test_a_swapped_stats_socket_is_not_read(dropped: tuple[Emperor, str]) -> None:
    emperor, user = dropped
    path = emperor.stats_path
    assert emperor.stats().pid == emperor.pid
    impostor = subprocess.Popen(["/usr/bin/python3", "-c", IMPOSTOR, str(path)], user=user, cwd="/",
                                stdout=subprocess.PIPE, text=True)
    try:
        assert impostor.stdout is not None and impostor.stdout.readline() == "listening\n"
        with pytest.raises(UnsafePath, match=rf"the stats socket {path} is served by pid {impostor.pid} \(uid "
                           rf"{pwd.getpwnam(user).pw_uid}\), not by the emperor \(pid {emperor.pid}\): not read"):
            emperor.stats()
    finally:
        impostor.kill()
        impostor.wait()
    os.replace(f"{path}.real", path)  # the emperor's own again, for its stop
    assert emperor.stats().pid == emperor.pid
