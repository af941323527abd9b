"""The boot check under the app's own options: one emperor, uwsgi-protocol probe, uWSGI's error line mapped back
to the option's file and line, no traceback. Each case booted for real by ``emperor-dev check``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CASES = Path(__file__).resolve().parent / "check_cases"
EXE = Path(sys.executable).parent / "emperor-dev"


def check(*args: str) -> tuple[int, list[dict[str, object]], str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("UWSGI_")}
    done = subprocess.run(
        [str(EXE), "check", "--format", "json", "--timeout", "60", *args],
        capture_output=True, text=True, timeout=240, env=env, check=False,
    )
    try:
        data = json.loads(done.stdout)
    except ValueError:
        pytest.fail(f"no JSON on stdout (exit {done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done.returncode, data["findings"], data["boot"].splitlines()[-1]  # after the rule sets line


@pytest.fixture
def app(tmp_path: Path) -> Path:
    app = tmp_path / "svc"
    shutil.copytree(CASES / "good", app)
    return app


def edit(app: Path, old: str, new: str) -> None:
    ini = app / "app.uwsgi.ini"
    text = ini.read_text()
    assert old in text
    ini.write_text(text.replace(old, new))


def codes_at(found: list[dict[str, object]]) -> set[tuple[object, object]]:
    return {(f["code"], f["line"]) for f in found}


def test_good_boots_clean(app: Path, uwsgi_bin: Path) -> None:
    rc, found, boot = check(str(app))
    assert (rc, found, boot) == (0, [], "boot check: ran on 1 app")


def test_an_app_dir_with_an_underscore_boots_as_up_names_it(tmp_path: Path, uwsgi_bin: Path) -> None:
    app = tmp_path / "my_shop"  # `up` and deploy_app run it as my-shop: one DNS label
    shutil.copytree(CASES / "good", app)
    rc, found, boot = check(str(app))
    assert (rc, found, boot) == (0, [], "boot check: ran on 1 app")


def test_cursed_points_at_the_option_uwsgi_names(app: Path, uwsgi_bin: Path) -> None:
    edit(app, "dirname $(realpath %P))", "dirname $(realpath %P))/gone")
    rc, found, _ = check(str(app))
    assert rc == 1 and ("B001", 3) in codes_at(found)


def test_a_missing_virtualenv_is_blamed_on_home_not_on_chdir(app: Path, tmp_path: Path, uwsgi_bin: Path) -> None:
    # every start logs `chdir() to <dir>`: only uWSGI's error lines may name the option
    edit(app, "need-app = true\n", f"need-app = true\nhome = {tmp_path}/no-such-venv\n")
    rc, found, _ = check(str(app))
    assert rc == 1 and ("B001", 11) in codes_at(found), found


def test_a_missing_callable_under_need_app_names_module_and_callable(app: Path, uwsgi_bin: Path) -> None:
    edit(app, "module = hello\n", "module = hello:nope\n")
    rc, found, _ = check(str(app))
    cursed = [f for f in found if f["code"] == "B001"]
    assert rc == 1 and cursed and "`hello` has no callable `nope`" in str(cursed[0]["message"]), found


def test_missing_logto_dir_is_cursed_not_overridden(app: Path, tmp_path: Path, uwsgi_bin: Path) -> None:
    edit(app, "need-app = true\n", f"need-app = true\nlogto = {tmp_path}/no-such-dir/app.log\n")
    rc, found, _ = check(str(app))
    assert rc == 1 and {("E310", 11), ("B001", 11)} <= codes_at(found)


def test_app_logto_is_kept_and_read(app: Path, tmp_path: Path, uwsgi_bin: Path) -> None:
    edit(app, "need-app = true\n", f"logto = {tmp_path}/app.log\n")
    edit(app, "module = hello", "module = hello:nope")
    rc, found, _ = check(str(app))
    assert rc == 1
    b002 = next(f for f in found if f["code"] == "B002")
    assert b002["line"] == 5 and "`hello` has no callable `nope`" in str(b002["message"])
    assert (tmp_path / "app.log").read_text()  # the vassal logged where its own config says


def test_http_socket_is_probed_with_the_uwsgi_protocol(app: Path, uwsgi_bin: Path) -> None:
    edit(app, "socket = /tmp/%n.api.sock", "http-socket = /tmp/%n.api.sock")
    rc, found, _ = check(str(app))
    assert rc == 1 and {("E308", 4), ("B003", 4)} <= codes_at(found)
    b003 = next(f for f in found if f["code"] == "B003")
    assert "uwsgi protocol" in str(b003["message"])


def test_included_config_boots_without_traceback(app: Path, uwsgi_bin: Path) -> None:
    (app / "common.ini").write_text("[uwsgi]\nmaster = true\nvacuum = true\nneed-app = true\n")
    edit(app, "master = true\nvacuum = true\nneed-app = true\n", f"include = {app}/common.ini\n")
    rc, found, _ = check(str(app))
    assert (rc, found) == (0, [])


def test_several_apps_boot_under_one_emperor(app: Path, tmp_path: Path, uwsgi_bin: Path) -> None:
    other = tmp_path / "other"
    shutil.copytree(app, other)
    edit(other, "module = hello", "module = hello_gone")
    rc, found, boot = check(str(app), str(other))
    assert rc == 1 and boot == "boot check: ran on 2 apps"
    assert {(Path(str(f["path"])).parent.name, f["code"]) for f in found if str(f["code"]).startswith("B")} == {
        ("other", "B001")
    }


def test_a_relative_socket_is_probed_where_uwsgi_binds_it(app: Path, uwsgi_bin: Path) -> None:
    # uWSGI binds a relative unix socket in `chdir` (here the app dir): the probe must look there, not in the
    # checker's own cwd
    edit(app, "socket = /tmp/%n.api.sock", "socket = %n.rel.sock")
    _, found, _ = check(str(app))
    assert not [f for f in found if str(f["code"]).startswith("B")], found
    assert not list(app.glob("*.sock"))  # vacuum removed it


def test_a_missing_import_of_the_app_is_named_not_blamed_on_module(app: Path, uwsgi_bin: Path) -> None:
    (app / "hello.py").write_text("import gevent_not_installed\n" + (app / "hello.py").read_text())
    rc, found, _ = check(str(app))
    cursed = next(f for f in found if f["code"] in ("B001", "B002"))
    assert rc == 1 and "`hello` imports `gevent_not_installed`, which is not installed" in str(cursed["message"])


def test_a_buffer_size_too_small_for_the_request_points_at_buffer_size(app: Path, uwsgi_bin: Path) -> None:
    edit(app, "need-app = true\n", "need-app = true\nbuffer-size = 32k\n")
    _, found, _ = check(str(app))
    assert ("B003", 11) in codes_at(found), found
