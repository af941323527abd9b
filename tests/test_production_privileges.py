"""Production's privilege drop in the test and dev doors: ``emperor-args = "--uid U --gid U"`` in the project's
``[tool.emperor-dev]`` runs the emperor of ``pytest --emperor`` and ``emperor-dev up`` as production runs it, so an
app that writes where its user may not fails its test as it fails in production. Real users, real uWSGI, real
nginx; run as root (as CI is), with a throwaway user made for the test."""

from __future__ import annotations

import os
import pwd
import secrets
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from dev_helpers import Up, assert_nothing_left, cli, up_process, workspace  # noqa: F401 (fixtures)
from plugin_helpers import Sandbox
from plugin_helpers import assert_nothing_left as assert_nothing_left_in
from unprivileged import dropped_box, python_unusable_as, throwaway_user  # noqa: F401 (a fixture)

from pytest_emperor._protocol.client import direct_session
from pytest_emperor.engine.privileges import drop_of
from pytest_emperor.engine.processes import processes_with_marker
from pytest_emperor.errors import ConfigError

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root")
RUN_TIMEOUT = 180

# GET / says who serves it; POST /orders writes into DATA, a directory only root may write (as a shop writing its
# sqlite database next to code deployed by root): production's user gets EACCES there.
APP_PY = """\
import os
import pwd

DATA = {data!r}


def application(environ, start_response):
    if environ["REQUEST_METHOD"] == "POST":
        with open(os.path.join(DATA, "orders.txt"), "a") as f:
            f.write("one order\\n")
        start_response("201 Created", [("Content-Type", "text/plain")])
        return [b"ordered"]
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [("served by " + pwd.getpwuid(os.geteuid()).pw_name).encode()]
"""

APP_INI = """\
[uwsgi]
chdir = {app}
socket = {sockets}/%n.api.sock
module = shop
master = true
vacuum = true
processes = 2
"""

TESTS_PY = """\
import os


def test_get(app_vassal):
    response = app_vassal.http.get("/")
    assert response.text == "served by {user}"
    # every process of the vassal (its master and workers) runs as production's user
    master = app_vassal.pid
    children = open(f"/proc/{{master}}/task/{{master}}/children").read().split()
    assert len(children) == 2
    assert {{os.stat(f"/proc/{{pid}}").st_uid for pid in [master, *children]}} == {{{uid}}}


def test_post(app_vassal):
    response = app_vassal.http.post("/orders")
    assert response.status_code == 201, response.text
"""


def make_user() -> Iterator[str]:
    """A real unprivileged user and its group, deleted after the test."""
    yield from throwaway_user("pe")


user = pytest.fixture(make_user)
other_user = pytest.fixture(make_user)


def write_shop(app: Path, sockets: Path) -> Path:
    """The shop app in ``app`` (readable by everyone, as deployed code is), its data dir root's: returns that."""
    data = app.parent / "data"
    data.mkdir(mode=0o755)
    app.mkdir(mode=0o755)
    (app / "shop.py").write_text(APP_PY.format(data=str(data)))
    (app / "app.uwsgi.ini").write_text(APP_INI.format(app=app, sockets=sockets))
    return data


def test_pytest_runs_the_vassals_as_the_profiles_user(
    pytester: pytest.Pytester, user: str, other_user: str, dropped_box: Sandbox,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    repo = dropped_box.root / "repo"
    repo.mkdir(mode=0o755)
    data = write_shop(repo / "shop", dropped_box.sockets)
    (repo / "pyproject.toml").write_text(
        f'[tool.emperor-dev]\napps = ["shop"]\nemperor-args = "--uid {user} --gid {user}"\n'
        f'socket-dir = "{dropped_box.sockets}"\n'
    )
    uid = pwd.getpwnam(user).pw_uid
    (repo / "test_shop.py").write_text(TESTS_PY.format(user=user, uid=uid))
    monkeypatch.chdir(repo)
    result = pytester.runpytest_subprocess("--emperor", "-p", "no:cacheprovider", timeout=RUN_TIMEOUT)
    result.assert_outcomes(passed=1, failed=1)
    # The header says who the apps run as and which setting said so; the failing test's report holds the
    # app's own error, naming the path production's user may not write.
    result.stdout.fnmatch_lines([
        f"pytest-emperor: the emperor drops to {user} (emperor-args from {repo / 'pyproject.toml'}*",
        "*test_post*",
        "*assert 502 == 201*",  # uWSGI answers nothing when the app raises before start_response: nginx 502s
        f"*PermissionError: [[]Errno 13[]] Permission denied: '{data}/orders.txt'*",
    ])
    assert not (data / "orders.txt").exists()
    # the same run as root (--emperor-args '' overrides the profile): the POST passes, hiding the problem
    result = pytester.runpytest_subprocess(
        "--emperor", "--emperor-args", "", "-p", "no:cacheprovider", "-k", "post", timeout=RUN_TIMEOUT
    )
    result.assert_outcomes(passed=1, deselected=1)
    assert (data / "orders.txt").read_text() == "one order\n"
    # nginx's workers as another user: the app's socket (the user's, 755 from the umask) refuses them, as it
    # would production's nginx, and the report has nginx's own line saying so
    with (repo / "pyproject.toml").open("a") as f:
        f.write(f'nginx-user = "{other_user}"\n')
    result = pytester.runpytest_subprocess("--emperor", "-p", "no:cacheprovider", "-k", "get", timeout=RUN_TIMEOUT)
    result.assert_outcomes(failed=1, deselected=1)
    result.stdout.fnmatch_lines([
        "*502 Bad Gateway*",
        f"*connect() to unix:{dropped_box.sockets}/shop-*.api.sock failed (13: Permission denied)*",
    ])
    assert_nothing_left_in(dropped_box)
    shared = dropped_box.tmpdir / f"pytest-emperor-{os.getuid()}-shared"
    assert sorted(p.name for p in shared.iterdir()) == []


def test_up_runs_the_apps_as_the_profiles_user(
    workspace: Path, user: str, uwsgi_bin: Path, up_process: list[Up]  # noqa: F811
) -> None:
    why = python_unusable_as(user, uwsgi_bin)
    if why:
        pytest.skip(why)
    workspace.chmod(0o755)
    apps = workspace / "apps"
    apps.chmod(0o755)
    name = f"shop{secrets.token_hex(3)}"
    data = write_shop(apps / name, Path("/tmp"))
    (apps / "pyproject.toml").write_text(
        f'[tool.emperor-dev]\nemperor-args = ["--uid", "{user}", "--gid", "{user}"]\nnginx-user = "{user}"\n'
    )
    up = Up(workspace)
    up_process.append(up)
    up.started()
    assert up.get(name) == (200, f"served by {user}")
    assert up.instance is not None
    marked = processes_with_marker(up.instance.run_dir)
    # the emperor, the app's master and its 2 workers: every one production's user (up and nginx are unmarked)
    assert len(marked) == 4 and {os.stat(f"/proc/{pid}").st_uid for pid in marked} == {pwd.getpwnam(user).pw_uid}
    nginx = int((Path(up.instance.run_dir) / "nginx" / "nginx.pid").read_text())
    workers = Path(f"/proc/{nginx}/task/{nginx}/children").read_text().split()
    assert workers and {os.stat(f"/proc/{pid}").st_uid for pid in workers} == {pwd.getpwnam(user).pw_uid}
    socket = Path(f"/tmp/{name}.api.sock")
    assert socket.stat().st_uid == pwd.getpwnam(user).pw_uid
    router = ("127.0.0.1", up.instance.router_port)
    with direct_session(router, "http", f"http://{name}.api.localhost/", timeout=30) as session:
        assert session.post("/orders").status_code == 502  # as in production: the app raised, uWSGI sent nothing
    # up's page, served by nginx's workers as that user: its files are readable by their group (no one else's)
    with direct_session(router, "http", "http://localhost/", timeout=30) as session:
        assert [session.get(path).status_code for path in ("/", "/page.js", "/up.json")] == [200, 200, 200]
    page = Path(up.instance.run_dir) / "page"
    assert {(p.stat().st_gid, p.stat().st_mode & 0o007) for p in [page, *page.iterdir()]} == {
        (pwd.getpwnam(user).pw_gid, 0)
    }
    # straight to the app's socket: its listener is production's user, and one of up's
    assert cli(workspace, "request", name, "/", "--direct").stdout == f"served by {user}"
    up.expect(rf"{name}.*PermissionError: \[Errno 13\] Permission denied: '{data}/orders.txt'")
    up.stopped()
    assert not (data / "orders.txt").exists()
    assert_nothing_left(up, [name])


def test_a_drop_needs_root_and_says_so(user: str) -> None:
    """Not root: a clear error naming the user, where the setting came from and the fix, never a silent run of the
    apps as the caller. Checked in a process that gave up root for real (its effective uid)."""
    entry = pwd.getpwnam(user)
    code = textwrap.dedent(f"""\
        import os
        from pytest_emperor.engine.privileges import drop_of, nginx_worker_of
        from pytest_emperor.errors import ConfigError
        os.setegid({entry.pw_gid}); os.seteuid({entry.pw_uid})
        for check, value in ((drop_of, ["--uid", "www-data"]), (nginx_worker_of, "www-data")):
            try:
                check(value, "pyproject.toml [tool.emperor-dev]")
            except ConfigError as exc:
                print(exc)
        """)
    with tempfile.TemporaryDirectory() as cwd:
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=cwd)
    dropped, worker = done.stdout.splitlines()
    assert dropped.startswith(
        "emperor-args (pyproject.toml [tool.emperor-dev]) drop privileges to www-data (--uid), which only root can "
        f"do; this runs as {user}: run as root"
    ), done.stdout + done.stderr
    assert worker.startswith(
        "nginx-user (pyproject.toml [tool.emperor-dev]) runs nginx's workers as www-data, which only root can do; "
        f"this runs as {user}: run as root"
    )
    assert drop_of(["--uid", user, "--gid", user], "x") is not None  # root: the drop is made
    assert drop_of(["--processes", "2"], "x") is None
    with pytest.raises(ConfigError, match=r"emperor-args \(x\) drop to --uid nosuchuser9, which this machine does"):
        drop_of(["--uid", "nosuchuser9"], "x")


def test_up_refuses_coverage_under_a_drop(tmp_path: Path, user: str) -> None:
    """Coverage inside vassals that dropped privileges is not supported yet: a clear refusal, not data lost."""
    (tmp_path / "pyproject.toml").write_text(f'[tool.emperor-dev]\nemperor-args = "--uid {user}"\n')
    write_shop(tmp_path / "shop", Path("/tmp"))
    done = subprocess.run([sys.executable, "-m", "pytest_emperor.dev", "up", "--cov", "x"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert done.stderr == (
        f"emperor-dev: --cov is not supported yet with emperor-args that drop privileges ({tmp_path}/pyproject.toml "
        "[tool.emperor-dev]): run without --cov, or with --emperor-args ''\n"
    )
