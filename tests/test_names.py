"""Production's names: a vassal deployed under its app's own name (``%n`` = ``shop``, no run tag), refused while
another run holds that name or its socket, and free again for the next run once it is removed, stopped or killed.

Each test runs its emperors in a runs root and a socket dir of its own: the names here are production's plain
ones (``shop``), which other runs of this suite on the machine use too.
"""

from __future__ import annotations

import os
import pwd
import re
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from plugin_helpers import SYNC_PY, Run, Sandbox, assert_nothing_left, write_app

from pytest_emperor.engine.emperor import Emperor
from pytest_emperor.engine.processes import processes_with_marker
from pytest_emperor.engine.runs import socket_is_live
from pytest_emperor.errors import SocketInUse, VassalCursed

# The production style, with config chosen by name: each environment's file is `env/<%n>.ini`, so a copy
# deployed as `shop-uat` reads `env/shop-uat.ini`, and its socket is `<sockets>/shop-uat.api.sock`. (`include`
# is read as the file is parsed, before placeholders or `@(...)` are filled: its path is written out.)
BY_NAME_INI = """\
[uwsgi]
app_root = @(exec://dirname $(realpath %P))
chdir = %(app_root)
socket = {sockets}/%n.api.sock
module = app
master = true
vacuum = true
env = DEPLOYED_AS=%n
include = {app}/env/%n.ini
"""

BY_NAME_APP = '''
import os

def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [f"{os.environ['DEPLOYED_AS']}: {os.environ['DATABASE']}".encode()]
'''


@pytest.fixture
def shop(short_dir: Path) -> Path:
    """An app dir ``shop`` whose ini chooses its environment's settings by ``%n``."""
    app = short_dir / "shop"
    (app / "env").mkdir(parents=True)
    (app / "app.uwsgi.ini").write_text(BY_NAME_INI.format(sockets=short_dir, app=app))
    (app / "app.py").write_text(BY_NAME_APP)
    for name, database in (("shop", "prod.sqlite3"), ("shop-uat", "uat.sqlite3")):
        (app / "env" / f"{name}.ini").write_text(f"[uwsgi]\nenv = DATABASE={database}\n")
    return app


@pytest.fixture
def emperors(uwsgi_bin: Path, short_dir: Path) -> Iterator[list[Emperor]]:
    """Two running emperors (two runs) sharing this test's runs root, stopped after it."""
    started: list[Emperor] = []
    try:
        for _ in range(2):
            started.append(Emperor(uwsgi_bin, runs_root=short_dir / "runs", timeout=30).start())
        yield started
    finally:
        for emperor in started:
            emperor.stop()


def test_copies_deployed_by_name_read_their_own_config(emperors: list[Emperor], shop: Path, short_dir: Path) -> None:
    prod = emperors[0].deploy(shop, exact=True)
    uat = emperors[0].deploy(shop, "shop-uat", exact=True)
    assert (prod.name, prod.socket_path) == ("shop", f"{short_dir}/shop.api.sock")
    assert (uat.name, uat.socket_path) == ("shop-uat", f"{short_dir}/shop-uat.api.sock")
    assert prod.request("GET", "/").text == "shop: prod.sqlite3"
    assert uat.request("GET", "/").text == "shop-uat: uat.sqlite3"
    # the default, a run tag, keeps copies apart, and is no name config can be chosen by
    with pytest.raises(VassalCursed, match=rf"realpath\(\) of {shop}/env/shop-uat{emperors[0].name_suffix}.ini"):
        emperors[0].deploy(shop, "shop-uat")


def test_a_name_another_run_holds_is_refused_and_free_once_removed(emperors: list[Emperor], shop: Path) -> None:
    first, second = emperors
    held = first.deploy(shop, exact=True)
    with pytest.raises(SocketInUse, match=rf"app.uwsgi.ini: vassal name 'shop' is held by the run {first.run_dir} "
                                          rf"\(pid {os.getpid()}\) for its vassal 'shop'"):
        second.deploy(shop, exact=True)
    assert not any(second.vassal_dir.iterdir())
    held.remove(wait=False)  # released once the background removal is done: a deploy waits for nothing else
    first.finish_removals()
    assert second.deploy(shop, exact=True).request("GET", "/").text == "shop: prod.sqlite3"


def test_a_socket_another_run_holds_is_refused_under_any_name(emperors: list[Emperor], shop: Path,
                                                                short_dir: Path) -> None:
    # the same socket path from another name (a hard-coded socket): refused before either could bind, whether
    # the holder has bound it yet or not
    ini = shop / "app.uwsgi.ini"
    ini.write_text(ini.read_text().replace("%n.api.sock", "shop.api.sock"))
    first, second = emperors
    first.deploy(shop, exact=True, wait=False)
    with pytest.raises(SocketInUse, match=rf"app.uwsgi.ini:4: vassal 'shop-uat' would bind {short_dir}/shop.api.sock, "
                                          rf"which is held by the run {first.run_dir}"):
        second.deploy(shop, "shop-uat", exact=True)


def test_a_live_socket_of_a_real_deployment_refuses_the_name(emperors: list[Emperor], shop: Path,
                                                               short_dir: Path) -> None:
    path = short_dir / "shop.api.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as production:
        production.bind(str(path))
        production.listen()
        me = pwd.getpwuid(os.getuid()).pw_name
        holder = rf"pid {os.getpid()} \({me}: .*\)"  # who to stop: this process
        with pytest.raises(SocketInUse, match=rf"would bind {path}, which another live process is serving \({holder}"):
            emperors[0].deploy(shop, exact=True)
        assert socket_is_live(path)
    # refused, the name was given up again: the next deploy gets it
    assert emperors[1].deploy(shop, exact=True).name == "shop"


KILLED_RUN = textwrap.dedent("""
    import sys, threading
    from pathlib import Path
    from pytest_emperor.engine.emperor import Emperor

    emperor = Emperor(runs_root=Path(sys.argv[1])).start()
    vassal = emperor.deploy(sys.argv[2], exact=True)
    print(emperor.run_dir, vassal.socket_path, flush=True)
    threading.Event().wait()
""")


def test_a_killed_runs_name_is_taken_over_after_its_recovery(uwsgi_bin: Path, shop: Path, short_dir: Path) -> None:
    root = short_dir / "runs"
    with Emperor(uwsgi_bin, runs_root=root, timeout=30) as emperor:  # started first: its own start recovers nothing
        owner = subprocess.Popen([sys.executable, "-c", KILLED_RUN, str(root), str(shop)], stdout=subprocess.PIPE,
                                 text=True)
        assert owner.stdout is not None
        run_dir, socket_path = owner.stdout.readline().split()
        with pytest.raises(SocketInUse, match=rf"held by the run {run_dir} \(pid {owner.pid}\)"):
            emperor.deploy(shop, exact=True)
        owner.send_signal(signal.SIGKILL)
        owner.wait(timeout=10)
        vassal = emperor.deploy(shop, exact=True)  # the dead run is recovered first: its vassal may still serve
        assert not processes_with_marker(run_dir) and not Path(run_dir).exists()
        assert vassal.socket_path == socket_path and vassal.request("GET", "/").text == "shop: prod.sqlite3"
    assert sorted(p.name for p in root.iterdir()) == []  # no reservation left behind, the dead run's neither


HOLDING_TEST = """
import os

from pe_sync import await_records, publish


def test_holds(app_vassal, deploy_app):
    uat = deploy_app(".", "shop-uat", exact=True)
    publish("holding", name=app_vassal.name, socket=app_vassal.socket_path, uat=uat.request("GET", "/").text)
    await_records(lambda r: "refused" in r, "the other run's refusal")
    assert os.environ["PE_RUN"] != "holding", "a failing test gives its names up all the same"
"""

REFUSED_TEST = """
import pytest

from pe_sync import publish
from pytest_emperor import SocketInUse


def test_refused(request):
    with pytest.raises(SocketInUse) as refused:
        request.getfixturevalue("app_vassal")
    publish("refused", refused=str(refused.value))
"""


@pytest.mark.usefixtures("uwsgi_bin")
def test_exact_names_in_pytest_one_run_at_a_time(box: Sandbox, tmp_path: Path) -> None:
    repo = tmp_path / "shop"
    write_app(repo, box.sockets, "shop")
    (repo / "pe_sync.py").write_text(SYNC_PY)
    (repo / "pytest.ini").write_text("[pytest]\nemperor_exact_names = true\n")
    (repo / "test_holds.py").write_text(HOLDING_TEST)
    (repo / "test_refused.py").write_text(REFUSED_TEST)
    holding = Run.start(box, repo, ["--emperor", "test_holds.py"], "holding")
    try:
        record = holding.wait_for_record(box, "holding")
        assert record == {"name": "shop", "socket": f"{box.sockets}/shop.api.sock", "uat": "shop at /\n"}
        refused = Run.start(box, repo, ["--emperor", "test_refused.py"], "refused")
        assert (refused.wait(), holding.wait()) == (0, 1), refused.text() + holding.text()
        message = box.records()["refused"]["refused"]
        assert re.search(rf"vassal name 'shop' is held by the run {box.runs_root}/\w+ \(pid \d+\)", message), message
    finally:
        holding.kill()
    # released at the end of the test (deploy_app's) and of the run (app_vassal's): the next one gets both names
    (box.out / "refused.json").write_text('{"refused": ""}')  # nobody to wait for this time
    again = Run.start(box, repo, ["--emperor", "test_holds.py"], "again")
    assert again.wait() == 0, again.text()
    assert_nothing_left(box)
