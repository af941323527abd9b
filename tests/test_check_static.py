"""``emperor-dev check`` on configs nobody here wrote: what a static check runs (nothing), what it prints (no
secret), how long it takes on hostile input, and the rules that need files, commands or the environment."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_emperor.check.evaluate import pure_command
from pytest_emperor.engine.deploy_plan import (
    bound_sockets,
    deployed,
    plan_deploy,
    read_regular,
    run_bounded,
    socket_spec,
)
from pytest_emperor.errors import ConfigError

EXE = Path(sys.executable).parent / "emperor-dev"
VASSAL = "[uwsgi]\nsocket = /tmp/%n.api.sock\nvacuum = true\nneed-app = true\nmaster = true\n"


def check(cwd: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 60) -> tuple[int, dict]:
    full = {**{k: v for k, v in os.environ.items() if not k.startswith("UWSGI_")}, **(env or {})}
    done = subprocess.run(
        [str(EXE), "check", "--static", "--format", "json", *args],
        cwd=cwd,
        env=full,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode in (0, 1), done.stdout + done.stderr
    return done.returncode, json.loads(done.stdout)


def found(report: dict) -> list[str]:
    return [f["code"] for f in report["findings"]]


def test_static_runs_nothing_and_prints_no_secret(tmp_path: Path, uwsgi_bin: Path) -> None:
    app = tmp_path / "app"
    app.mkdir()
    (app / "secret.txt").write_text("file-secret-value\n")
    (app / "environ").write_bytes(b"FIRST=first-secret-value\0CI_TOKEN=tok-0123456789\0")  # as /proc/self/environ
    (app / "app.uwsgi.ini").write_text(
        VASSAL + f"chdir = @(exec://touch {tmp_path}/X; dirname $(realpath %P))\n"
        f"wsgi-file = $(CI_TOKEN)\npythonpath = @({app}/secret.txt)\nenv = K=@(/dev/stdin)\n"
        f"logto = @({app}/environ)/x.log\n"
    )
    _, report = check(tmp_path, "app", "--format", "json", env={"CI_TOKEN": "tok-0123456789"})
    text = json.dumps(report)
    assert not (tmp_path / "X").exists(), "a static check ran the config's command"
    assert "tok-0123456789" not in text and "file-secret-value" not in text and "first-secret" not in text
    assert "E310" in found(report)  # the log dir named by the secret is still judged, its name masked
    assert "I110" in found(report)  # the command is unknown here, and says so
    assert "E112" in found(report)  # /dev/stdin is no regular file: not read


def test_pure_idioms_are_evaluated_without_a_shell(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "l").symlink_to(tmp_path / "d" / "f.ini")
    (tmp_path / "d" / "f.ini").write_text("")
    assert pure_command(f"dirname $(realpath {tmp_path}/l)", str(tmp_path)) == f"{tmp_path}/d\n"
    assert pure_command("basename /a/b/", "/") == "b\n"
    assert pure_command("dirname /a/b/", "/") == "/a\n"
    assert pure_command("readlink -f l", str(tmp_path)) == f"{tmp_path}/d/f.ini\n"
    for shell in ("touch x", "dirname x; id", "echo `id`", "cat /etc/passwd", "dirname $(id)", "echo a > b"):
        assert pure_command(shell, str(tmp_path)) is None, shell


def test_exec_runs_commands_bounded_and_kills_their_group(tmp_path: Path) -> None:
    start = time.monotonic()
    assert run_bounded("sleep 30", str(tmp_path), timeout=1) == (None, b"")
    assert time.monotonic() - start < 20  # the 1 s deadline ended it, not the command's own 30 s
    # a command that leaves a child behind: the child goes with the command's process group
    assert run_bounded("sleep 30 >/dev/null & echo $! > pid", str(tmp_path)) == (0, b"")
    assert dies(int((tmp_path / "pid").read_text()))
    assert run_bounded("exit 3", str(tmp_path)) == (3, b"")


def gone_from_ps(marker: str, within: float = 10.0) -> bool:
    """Whether no process whose command line holds ``marker`` is left (but zombies) within ``within`` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        ps = subprocess.run(["ps", "-eo", "stat,args"], capture_output=True, text=True, check=True).stdout
        if not [line for line in ps.splitlines() if marker in line and not line.lstrip().startswith("Z")]:
            return True
        time.sleep(0.05)  # polling the process table, with a deadline
    return False


def dies(pid: int, within: float = 10.0) -> bool:
    """Whether ``pid`` is gone (or a zombie its new parent has not reaped) within ``within`` seconds: a SIGKILL
    takes effect when the target is next scheduled, which a loaded machine delays."""
    stat = Path(f"/proc/{pid}/stat")
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if stat.read_text().rpartition(")")[2].split()[0] == "Z":
                return True
        except FileNotFoundError:
            return True
        time.sleep(0.02)  # polling the process table, with a deadline
    return False


def test_exec_option_runs_the_command_and_reports_its_failure(tmp_path: Path, uwsgi_bin: Path) -> None:
    (tmp_path / "app.uwsgi.ini").write_text(VASSAL + "pythonpath = @(exec://false)\nchdir = @(exec://pwd; touch Y)\n")
    _, report = check(tmp_path, "--exec", "app.uwsgi.ini")
    w111 = [f for f in report["findings"] if f["code"] == "W111"]
    assert [f["line"] for f in w111] == [6] and "exit status 1" in w111[0]["message"]


@pytest.mark.parametrize("kind", ["dev-zero", "fifo", "junk", "ini-dev-zero", "for-readline", "big-ini"])
def test_hostile_input_ends_with_a_finding(tmp_path: Path, kind: str, uwsgi_bin: Path) -> None:
    # Each takes 0.2-4 s on an idle 2-core machine; unbounded reads and quadratic passes took minutes, so the
    # check's 60 s subprocess timeout tells them apart even on a loaded machine (a 10 s bound did not, at load 12).
    app = tmp_path / "app.uwsgi.ini"
    if kind == "dev-zero":
        app.write_text(VASSAL + "pythonpath = @(/dev/zero)\n")
    elif kind == "fifo":
        os.mkfifo(tmp_path / "pipe")
        app.write_text(VASSAL + f"pythonpath = @({tmp_path}/pipe)\n")
    elif kind == "ini-dev-zero":
        app.write_text(VASSAL + "ini = /dev/zero\n")
    elif kind == "for-readline":
        app.write_text(VASSAL + "for-readline = /dev/zero\nenv = %(_)\nendfor =\n")
    elif kind == "big-ini":  # 450 KB: 6000 sockets, comments, placeholders and stray %s (quadratic: minutes)
        block = "socket = /tmp/%n.api.sock\nenv = K=v # c\nx_y = %q %(z)\nchdir = %(x_y)\n; note\n"
        app.write_text(VASSAL + block * 6000)
    else:
        app.write_bytes(b"[uwsgi]\n" + os.urandom(2 * 1024 * 1024))
    _, report = check(tmp_path, "app.uwsgi.ini", timeout=60)
    assert report["findings"], report


def test_suppressions_are_linear(tmp_path: Path, uwsgi_bin: Path) -> None:
    # 48000 findings (W101 on every line) over 48000 lines (1 MB): ~5 s on an idle 2-core machine; quadratic took
    # 18 s at 16000 lines and 61 s at 32000 (about 4 minutes at 48000), so the bound holds at load 12 too
    lines = "".join(f"env = K{i}=v # note\n" for i in range(48000))
    (tmp_path / "app.uwsgi.ini").write_text(VASSAL + lines)
    start = time.monotonic()
    check(tmp_path, "app.uwsgi.ini", timeout=120)
    assert time.monotonic() - start < 60


def test_ci_is_not_production(tmp_path: Path, uwsgi_bin: Path) -> None:
    (tmp_path / ".git").mkdir()
    (tmp_path / "uwsgi.ini").write_text(
        "[uwsgi]\nhttp = :8000\nchdir = /srv/nowhere-here\nmodule = app\nuid = searxng\npythonpath = $(APP_HOME)\n"
    )
    code, report = check(tmp_path, "uwsgi.ini")
    assert code == 0 and sorted(found(report)) == ["I109", "I315", "I315"], report
    assert "uWSGI config rules: uwsgi.ini" in report["boot"]
    # production's facts stated: the same checks are real again
    code, report = check(tmp_path, "uwsgi.ini", "--prod-path", "/opt", "--prod-user", "www-data", "--prod-env", "X=1")
    assert code == 1 and {"E501", "E311", "W109"} <= set(found(report)), report


def test_relative_paths_are_reported_as_production_resolves_them(tmp_path: Path, uwsgi_bin: Path) -> None:
    (tmp_path / "app.uwsgi.ini").write_text(VASSAL + "wsgi-file = nope.py\n")
    _, report = check(tmp_path, "app.uwsgi.ini")
    e502 = next(f for f in report["findings"] if f["code"] == "E502")
    assert "<vassal dir>/nope.py" in e502["message"] and "emperor-check-" not in e502["message"]


def test_a_socket_path_holding_a_file_is_an_error_and_never_deployed(tmp_path: Path, uwsgi_bin: Path) -> None:
    precious = tmp_path / "data.sock"
    precious.write_text("keep me")
    (tmp_path / "app.uwsgi.ini").write_text(VASSAL.replace("/tmp/%n.api.sock", str(precious)))
    _, report = check(tmp_path, "app.uwsgi.ini")
    assert "E313" in found(report)
    link_dir = tmp_path / "vassals"
    link_dir.mkdir()
    with pytest.raises(ConfigError, match="holds a regular file, not a socket"):
        plan_deploy(tmp_path / "app.uwsgi.ini", link_dir / "app.ini")
    assert precious.read_text() == "keep me" and not list(link_dir.iterdir())


def test_an_app_dir_is_judged_under_the_name_the_engine_deploys_it_as(tmp_path: Path, uwsgi_bin: Path) -> None:
    # `My_App/` deploys as `my-app` (engine/naming.py), so its routed socket is /tmp/my-app.api.sock
    app = tmp_path / "My_App"
    app.mkdir()
    (app / "app.uwsgi.ini").write_text(VASSAL.replace("/tmp/%n.api.sock", "/tmp/my-app.api.sock"))
    _, report = check(tmp_path, "My_App")
    assert "W303" not in found(report)
    (app / "app.uwsgi.ini").write_text(VASSAL.replace("/tmp/%n.api.sock", "/tmp/My_App.api.sock"))
    _, report = check(tmp_path, "My_App")
    assert [f["message"] for f in report["findings"] if f["code"] == "W303"] == [
        "the socket is not `<socket dir>/<name>.api.sock`, where the router looks: `/tmp/My_App.api.sock` for name "
        "`my-app` (want `/tmp/my-app.api.sock`)"
    ]


def test_check_binds_the_sockets_the_deploy_plan_predicts(tmp_path: Path) -> None:
    # one prediction: which options bind, the protocol each speaks, where a relative path binds
    app = tmp_path / "app"
    app.mkdir()
    ini = app / "app.uwsgi.ini"
    ini.write_text(
        f"[uwsgi]\nchdir = {app}\nprotocol = http\nsocket = svc.sock\nuwsgi-socket = /tmp/u-%n.sock\n"
        "http-socket = 127.0.0.1:0\nset-ph = socket=/tmp/not-a-socket.sock\n"
    )
    vassals = tmp_path / "vassals"
    vassals.mkdir()
    plan = plan_deploy(ini, vassals / "svc.ini", env={})
    plan.discard()
    with deployed(ini, "svc", vassal_dir=vassals, env={}) as d:
        checked = bound_sockets(d.ini.resolve(env={}), str(d.vassal_dir))
    assert checked == plan.sockets
    # `protocol` is for `socket` alone: uwsgi-socket keeps uwsgi (docs/uwsgi-behaviour.md)
    assert [(s.address, s.option, s.protocol) for s in checked] == [
        (f"{app}/svc.sock", "socket", "http"),
        ("/tmp/u-svc.sock", "uwsgi-socket", "uwsgi"),
        ("127.0.0.1:0", "http-socket", "http"),
    ]


@pytest.mark.parametrize(
    ("option", "protocol", "speaks"),
    [
        ("socket", "", "uwsgi"),
        ("socket", "http", "http"),
        ("socket", "https", "uwsgi"),
        ("uwsgi-socket", "http", "uwsgi"),
        ("http-socket", "", "http"),
        ("http-socket", "uwsgi", "http"),
    ],
)
def test_a_socket_speaks_its_own_protocol_or_the_default_one(option: str, protocol: str, speaks: str) -> None:
    assert socket_spec(option, "/tmp/a.sock", 3, protocol=protocol, bind_dir="/v").protocol == speaks


def test_a_relative_socket_binds_in_the_bind_dir_while_it_fits_sun_path() -> None:
    assert socket_spec("socket", "a.sock", 1, protocol="", bind_dir="/srv/app").address == "/srv/app/a.sock"
    assert socket_spec("socket", "127.0.0.1:80", 1, protocol="", bind_dir="/srv/app").address == "127.0.0.1:80"
    deep = "/" + "d" * 120
    assert socket_spec("socket", "a.sock", 1, protocol="", bind_dir=deep).address == "a.sock"


def test_read_regular_refuses_devices_fifos_and_big_files(tmp_path: Path) -> None:
    with pytest.raises(OSError, match="character device"):
        read_regular("/dev/zero")
    os.mkfifo(tmp_path / "p")
    with pytest.raises(OSError, match="FIFO"):
        read_regular(str(tmp_path / "p"))
    (tmp_path / "big").write_bytes(b"x" * 11)
    with pytest.raises(OSError, match="over the 10-byte limit"):
        read_regular(str(tmp_path / "big"), limit=10)


def test_emperor_configs_and_their_fragments_are_not_vassals(tmp_path: Path, uwsgi_bin: Path) -> None:
    (tmp_path / "emperor.ini").write_text("[uwsgi]\nemperor = /etc/uwsgi/vassals\nvassals-include = base.ini\n")
    (tmp_path / "base.ini").write_text("[uwsgi]\nmaster = true\nprocesses = 2\n")
    code, report = check(tmp_path, "emperor.ini", "base.ini")
    assert code == 0, report
    assert "emperor config rules: emperor.ini" in report["boot"]
    assert "vassals-include fragment rules: base.ini" in report["boot"]


def test_a_missing_include_of_a_config_run_elsewhere_is_info_and_reading_goes_on(
    tmp_path: Path, uwsgi_bin: Path
) -> None:
    # City-of-Helsinki/hauki deploy/uwsgi.ini:6: `include = uwsgi-base.ini`, a file of the image
    (tmp_path / "uwsgi.ini").write_text("[uwsgi]\nhttp = :8000\ninclude = uwsgi-base.ini\nvaccum = true\n")
    _, report = check(tmp_path, "uwsgi.ini")
    assert [(f["code"], f["line"]) for f in report["findings"]] == [("I315", 3), ("E201", 4)], report
    # unbit/uwsgi.it emperor.ini:2,34 and 20tab production.ini:2: what the unread file defines, uses or reads
    (tmp_path / "e.ini").write_text(
        "[uwsgi]\nini = /etc/uwsgi/not-here.ini\nsocket = :80\nhook-as-root = exec:ip %(public_ip)\nmy_name = x\n"
    )
    code, report = check(tmp_path, "e.ini")
    assert code == 0 and sorted(found(report)) == ["E105", "I202", "I315"], report
    # as a vassal of the convention, uWSGI exits there: fatal, as before
    _, report = check(tmp_path, "--convention", "uwsgi.ini")
    assert "E003" in found(report) and "E201" not in found(report)


def test_the_boot_check_never_binds_a_path_that_holds_a_file(tmp_path: Path, uwsgi_bin: Path) -> None:
    precious = tmp_path / "data.sock"
    precious.write_text("keep me")
    (tmp_path / "app.uwsgi.ini").write_text(VASSAL.replace("/tmp/%n.api.sock", str(precious)))
    full = {k: v for k, v in os.environ.items() if not k.startswith("UWSGI_")}
    done = subprocess.run(
        [str(EXE), "check", "--format", "json", "app.uwsgi.ini"],
        cwd=tmp_path, env=full, capture_output=True, text=True, timeout=120,
    )
    codes = [f["code"] for f in json.loads(done.stdout)["findings"]]
    assert done.returncode == 1 and "E313" in codes and "X001" in codes, done.stdout
    assert precious.read_text() == "keep me"


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet="ab/.", min_size=1, max_size=12))
def test_pure_dirname_and_basename_agree_with_coreutils(path: str) -> None:
    for tool in ("dirname", "basename"):
        real = subprocess.run([tool, "--", path], capture_output=True, text=True, check=True).stdout
        assert pure_command(f"{tool} {path}", "/") == real, (tool, path)


def test_the_whole_check_has_a_deadline_and_kills_what_it_ran(tmp_path: Path, uwsgi_bin: Path) -> None:
    marker = f"gate-deadline-{os.getpid()}"
    (tmp_path / "app.uwsgi.ini").write_text(VASSAL + f"pythonpath = @(exec://sleep 60; echo {marker})\n")
    start = time.monotonic()
    code, report = check(tmp_path, "--exec", "--check-timeout", "1", "app.uwsgi.ini")
    assert code == 1 and time.monotonic() - start < 30  # the 1 s deadline ended it, not the command's 60 s
    assert "X003" in [f["code"] for f in report["findings"]], report
    assert gone_from_ps(marker)  # its command went with it
    assert not list(Path(tempfile.gettempdir()).glob(f"emperor-check-*/{tmp_path.name}.ini"))  # nor its vassal dir


def test_sigterm_unwinds_the_check(tmp_path: Path, uwsgi_bin: Path) -> None:
    marker = f"gate-sigterm-{os.getpid()}"
    (tmp_path / "app.uwsgi.ini").write_text(VASSAL + f"pythonpath = @(exec://sleep 20; echo {marker})\n")
    proc = subprocess.Popen(
        [str(EXE), "check", "--static", "--exec", "app.uwsgi.ini"], cwd=tmp_path, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 30
    while marker not in subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout:
        assert time.monotonic() < deadline and proc.poll() is None, "the command never started"
        time.sleep(0.05)  # polling for the command to appear, with a deadline
    proc.terminate()
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 130 and "interrupted" in err
    assert gone_from_ps(marker)
    assert not list(Path(tempfile.gettempdir()).glob(f"emperor-check-*/{tmp_path.name}.ini"))
