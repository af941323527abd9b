"""``emperor-dev check`` run as a subprocess, as CI runs it: exit codes, formats, config, boot check."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CASES = Path(__file__).resolve().parent / "check_cases"
EXAMPLES = ROOT / "example_apps"
EXE = Path(sys.executable).parent / "emperor-dev"


def run(*args: str, cwd: Path = ROOT, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    if not EXE.exists():
        pytest.fail(f"{EXE} is missing: `pip install -e .` installs the emperor-dev script")
    env = {k: v for k, v in os.environ.items() if not k.startswith("UWSGI_")}
    return subprocess.run([str(EXE), "check", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def codes(out: str) -> list[tuple[str, str]]:
    return [(Path(f["path"]).parent.name, f["code"]) for f in json.loads(out)["findings"]]


def test_clean_app_exits_0(uwsgi_bin: Path) -> None:
    done = run("--static", str(CASES / "good"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 file checked: 0 errors, 0 warnings, 0 infos" in done.stdout


def test_findings_exit_1_with_codes_and_lines(uwsgi_bin: Path) -> None:
    done = run("--static", "--format", "json", str(CASES))
    assert done.returncode == 1
    assert sorted(codes(done.stdout)) == [
        ("bad-import", "W402"),
        ("collide-b", "E306"),
        ("stray-percent", "E102"),
        ("stray-percent", "W402"),
        ("typo", "E201"),
    ]
    typo = next(f for f in json.loads(done.stdout)["findings"] if f["code"] == "E201")
    assert typo["line"] == 4 and "did you mean `wsgi-file`" in typo["message"]


def test_fail_on_and_select_ignore(uwsgi_bin: Path) -> None:
    assert run("--static", "--fail-on", "error", str(CASES / "bad-import")).returncode == 0
    assert run("--static", "--fail-on", "info", str(CASES / "bad-import")).returncode == 1
    assert run("--static", "--ignore", "W402", str(CASES / "bad-import")).returncode == 0
    assert run("--static", "--select", "E", str(CASES / "bad-import")).returncode == 0


@pytest.mark.parametrize(
    "args",
    [
        ("--static", "no/such/dir"),
        ("--static", "--select", "Z999", str(CASES / "good")),
        ("--static", "--format", "yaml", str(CASES / "good")),
        ("--static", "--name", "x", str(CASES)),
    ],
)
def test_usage_errors_exit_2(args: tuple[str, ...]) -> None:
    done = run(*args)
    assert done.returncode == 2, done.stdout + done.stderr


def test_pyproject_config_and_default_path(tmp_path: Path, uwsgi_bin: Path) -> None:
    shutil.copytree(CASES / "bad-import", tmp_path / "svc")
    (tmp_path / "pyproject.toml").write_text('[tool.emperor-dev.check]\nignore = ["W402"]\nstatic = true\n')
    assert run(cwd=tmp_path / "svc").returncode == 0  # default path ./app.uwsgi.ini, W402 ignored
    (tmp_path / "pyproject.toml").write_text('[tool.emperor-dev.check]\nignored = ["W402"]\n')
    assert run("--static", cwd=tmp_path / "svc").returncode == 2


def test_shared_settings_come_from_the_profile_and_the_old_check_keys_warn(tmp_path: Path, uwsgi_bin: Path) -> None:
    """socket-dir set once in [tool.emperor-dev] (as pytest and up read it) is check's too; its old place in the
    check table still works for one release, with a warning naming the new key."""
    shutil.copytree(CASES / "good", tmp_path / "svc")
    (tmp_path / "pyproject.toml").write_text('[tool.emperor-dev]\nsocket-dir = "/run/apps"\n')
    done = run("--static", "--format", "json", "svc", cwd=tmp_path)
    [found] = json.loads(done.stdout)["findings"]
    assert found["code"] == "W303" and "/run/apps/svc.api.sock" in found["message"], done.stderr
    (tmp_path / "pyproject.toml").write_text('[tool.emperor-dev]\n[tool.emperor-dev.check]\nsocket-dir = "/run/x"\n')
    done = run("--static", "--format", "json", "svc", cwd=tmp_path)
    assert "/run/x/svc.api.sock" in json.loads(done.stdout)["findings"][0]["message"]
    assert done.stderr.startswith(
        f'warning: {tmp_path / "pyproject.toml"}: "socket-dir" in [tool.emperor-dev.check] is deprecated: set '
        "socket-dir in [tool.emperor-dev] instead"
    ), done.stderr
    # the site file given once in the profile: check judges the socket by where it routes
    (tmp_path / "api.conf").write_text(
        "server {\n    listen 80;\n    server_name ~^(?<app>[^.]+)\\.api\\.example\\.com$;\n"
        "    location / { include uwsgi_params; uwsgi_pass unix:/run/site/$app.api.sock; }\n}\n"
    )
    (tmp_path / "pyproject.toml").write_text('[tool.emperor-dev]\nnginx-site = "api.conf"\n')
    done = run("--static", "--format", "json", "svc", cwd=tmp_path)
    assert "/run/site/svc.api.sock" in json.loads(done.stdout)["findings"][0]["message"], done.stderr
    (tmp_path / "pyproject.toml").write_text('[tool.emperor-dev]\nemperor-args = 3\n')
    done = run("--static", "svc", cwd=tmp_path)
    assert done.returncode == 2
    assert '[tool.emperor-dev] "emperor-args" must be production\'s emperor flags' in done.stderr


def test_default_path_above_app_dirs_checks_each_of_them(tmp_path: Path, uwsgi_bin: Path) -> None:
    """Where `emperor-dev up` finds its apps (the dirs below), `check` without a path checks them too."""
    for name in ("good", "bad-import"):
        shutil.copytree(CASES / name, tmp_path / name)
    done = run("--static", "--format", "json", cwd=tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    checked = {Path(f["path"]).parent.name for f in json.loads(done.stdout)["findings"]}
    assert checked == {"bad-import"} and "2 files checked" in run("--static", cwd=tmp_path).stdout


def test_name_decides_the_socket(uwsgi_bin: Path) -> None:
    done = run("--static", "--format", "json", "--socket-dir", "/run/apps", "--name", "beta", str(CASES / "good"))
    found = json.loads(done.stdout)["findings"]
    assert [f["code"] for f in found] == ["W303"]
    assert "/tmp/beta.api.sock" in found[0]["message"] and "/run/apps/beta.api.sock" in found[0]["message"]


def test_sarif_to_file(tmp_path: Path, uwsgi_bin: Path) -> None:
    out = tmp_path / "check.sarif"
    done = run("--static", "--format", "sarif", "-o", str(out), str(CASES / "typo"))
    assert done.returncode == 1 and done.stdout == ""
    assert "1 error" in done.stderr
    assert json.loads(out.read_text())["runs"][0]["results"][0]["ruleId"] == "E201"


def test_list_rules() -> None:
    done = run("--list-rules")
    assert done.returncode == 0 and "W101" in done.stdout and "B001" in done.stdout


def test_boot_check_reports_uwsgis_own_lines(uwsgi_bin: Path) -> None:
    done = run("--format", "json", "--timeout", "60", str(CASES / "good"), str(CASES / "bad-import"))
    found = json.loads(done.stdout)["findings"]
    assert done.returncode == 1
    assert sorted({(Path(f["path"]).parent.name, f["code"]) for f in found}) == [
        ("bad-import", "B002"),
        ("bad-import", "B003"),
        ("bad-import", "W402"),
    ]
    no_app = next(f for f in found if f["code"] == "B002")
    assert any("module_that_does_not_exist" in line for line in no_app["details"])
    # nothing was written into the app dirs
    assert sorted(p.name for p in (CASES / "good").iterdir() if p.name != "__pycache__") == [
        "app.uwsgi.ini",
        "hello.py",
    ]


def test_boot_check_cursed_vassal(tmp_path: Path, uwsgi_bin: Path) -> None:
    app = tmp_path / "svc"
    shutil.copytree(CASES / "good", app)
    ini = app / "app.uwsgi.ini"
    ini.write_text(ini.read_text().replace("dirname $(realpath %P))", "dirname $(realpath %P))/gone"))
    done = run("--format", "json", "--timeout", "60", str(app))
    found = json.loads(done.stdout)["findings"]
    assert {f["code"] for f in found} == {"E501", "B001"}
    cursed = next(f for f in found if f["code"] == "B001")
    assert any("chdir()" in line for line in cursed["details"])


def test_example_apps(uwsgi_bin: Path, example_venvs: None) -> None:
    """CI gate over example_apps/: the broken examples fail, the good ones pass (at --fail-on error)."""
    apps = sorted(p.parent for p in EXAMPLES.glob("*/app.uwsgi.ini"))
    if not apps:
        pytest.fail(f"no example apps under {EXAMPLES}")
    results = {a.name: run("--fail-on", "error", "--timeout", "60", str(a)).returncode for a in apps}
    assert {n: rc for n, rc in results.items() if n.startswith("broken-")} == {
        n: (0 if n == "broken-crash" else 1) for n in results if n.startswith("broken-")
    }
    assert {n: rc for n, rc in results.items() if not n.startswith("broken-")} == {
        n: 0 for n in results if not n.startswith("broken-")
    }
