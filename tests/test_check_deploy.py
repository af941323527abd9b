"""Rules that need other files, the environment or this machine (includes, logic blocks, logto, uid/gid), run
through ``run_check`` on real files: each triggered once and not triggered once, pointing at the right file."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_emperor.check.runner import CheckSettings, run_check

GOOD = """[uwsgi]
chdir = @(exec://dirname $(realpath %P))
socket = /tmp/%n.api.sock
chmod-socket = 666
module = app
master = true
vacuum = true
need-app = true
"""


def check(tmp: Path, text: str, **files: str) -> list[tuple[str, str, int]]:
    app = tmp / "svc"
    app.mkdir(exist_ok=True)
    if "app.py" not in files:
        (app / "app.py").write_text("def application(e, s):\n    return []\n")
    (app / "app.uwsgi.ini").write_text(text)
    for name, body in files.items():
        (app / name.replace("__", "/")).parent.mkdir(parents=True, exist_ok=True)
        (app / name.replace("__", "/")).write_text(body)
    result = run_check([app], CheckSettings(boot=False))
    return [(Path(f.path).name, f.code, f.line) for f in result.findings]


def test_good_is_clean(tmp_path: Path) -> None:
    assert check(tmp_path, GOOD) == []


def test_socket_in_an_included_file_is_found_and_findings_point_into_it(tmp_path: Path) -> None:
    # include is immediate: no $/@/% expansion, and %d is the vassal dir: only an absolute path reaches the app dir
    text = GOOD.replace("socket = /tmp/%n.api.sock\n", f"include = {tmp_path}/svc/sockets.ini\n")
    found = check(tmp_path, text, **{"sockets.ini": "[uwsgi]\n; the routed one\nsocket = /tmp/%n.sock\n"})
    assert ("sockets.ini", "W303", 3) in found
    assert not any(code == "E301" for _, code, _ in found)


def test_relative_include_is_relative_to_the_vassal_dir(tmp_path: Path) -> None:
    text = GOOD.replace("socket = /tmp/%n.api.sock\n", "include = sockets.ini\n")
    found = check(tmp_path, text, **{"sockets.ini": "[uwsgi]\nsocket = /tmp/%n.api.sock\n"})
    assert ("app.uwsgi.ini", "E003", 3) in found


def test_dev_only_http_in_a_false_block_is_not_e304(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EMPEROR_DEV_ONLY", raising=False)
    text = GOOD + "if-env = EMPEROR_DEV_ONLY\nhttp = :8080\nendif =\n"
    assert check(tmp_path, text) == []
    monkeypatch.setenv("EMPEROR_DEV_ONLY", "1")
    assert ("app.uwsgi.ini", "E304", 10) in check(tmp_path, text)


def test_if_without_endif_makes_the_rest_conditional(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EMPEROR_DEV_ONLY", raising=False)
    text = "[uwsgi]\nif-env = EMPEROR_DEV_ONLY\nhttp = :8080\n" + GOOD.replace("[uwsgi]\n", "")
    found = check(tmp_path, text)
    assert ("app.uwsgi.ini", "E004", 2) in found and ("app.uwsgi.ini", "E301", 1) in found


def test_percent_x_and_for_underscore_are_known(tmp_path: Path) -> None:
    text = GOOD + "for = a b\nenv = K_%(_)=%x\nendfor =\n"
    assert check(tmp_path, text) == []


def test_logto_into_a_missing_dir(tmp_path: Path) -> None:
    assert ("app.uwsgi.ini", "E310", 9) in check(tmp_path, GOOD + f"logto = {tmp_path}/nope/app.log\n")
    assert check(tmp_path, GOOD + f"logto = {tmp_path}/app.log\n") == []
    assert check(tmp_path, GOOD + "logto = 127.0.0.1:1717\n") == []  # a UDP address


def test_unknown_uid_says_root_or_not(tmp_path: Path) -> None:
    assert ("app.uwsgi.ini", "E311", 9) in check(tmp_path, GOOD + "uid = no-such-user-x\n")
    message = next(f.message for f in run_check([tmp_path / "svc"], CheckSettings(boot=False)).findings)
    assert "a root emperor curses the vassal; a non-root one ignores" in message
    assert check(tmp_path, GOOD + "uid = root\ngid = 0\n") == []


def test_callable_missing(tmp_path: Path) -> None:
    assert ("app.uwsgi.ini", "E508", 5) in check(tmp_path, GOOD.replace("module = app", "module = app:nope"))
    assert check(tmp_path, GOOD.replace("module = app", "module = app:application")) == []
    # bound by an import, or under an `if`: not judged missing
    code = "from os import path as application\n"
    assert check(tmp_path, GOOD, **{"app.py": code}) == []
    assert check(tmp_path, GOOD, **{"app.py": "if True:\n    def application(e, s): return []\n"}) == []


def test_callable_missing_names_the_app_the_file_defines(tmp_path: Path) -> None:
    # a Flask app is `app`; uWSGI looks for `application`
    check(tmp_path, GOOD, **{"app.py": "import flask\nconfig = {}\napp = flask.Flask(__name__)\n"})
    [found] = run_check([tmp_path / "svc"], CheckSettings(boot=False)).findings
    assert found.code == "E508" and found.message.endswith("; it defines `app`: `callable = app`")
    check(tmp_path, GOOD, **{"app.py": "def wsgi_app(environ, start_response):\n    return []\n"})
    [found] = run_check([tmp_path / "svc"], CheckSettings(boot=False)).findings
    assert found.message.endswith("`callable = wsgi_app`")


def test_small_buffer_size_is_an_error(tmp_path: Path) -> None:
    # measured: `buffer-size = 32k` is 32 bytes, and uWSGI resets every request nginx sends
    check(tmp_path, GOOD + "buffer-size = 32k\nharakiri = 2m\n")
    found = run_check([tmp_path / "svc"], CheckSettings(boot=False)).findings
    assert [(f.code, str(f.severity), f.line) for f in found] == [("W107", "error", 9), ("W107", "warning", 10)]
    assert check(tmp_path, GOOD + "buffer-size = 32768\n") == []
