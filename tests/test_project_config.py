"""The one reader of emperor-dev settings (emperor-dev.toml, [tool.emperor-dev] and its check table) and the one
model every door resolves them by: which source wins, where each value came from, deprecated keys, and errors
that name the file and the key."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytest_emperor.engine.binary import find_uwsgi
from pytest_emperor.errors import ConfigError, ConfigFileError, EmperorError
from pytest_emperor.project_config import DEFAULTS, KEYS, Profile, Setting, find_profile, load_profile, resolve
from pytest_emperor.routing.nginx import find_nginx


def test_a_check_only_pyproject_configures_no_apps(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[tool.emperor-dev.check]\nstatic = true\n')
    profile = load_profile(tmp_path)
    assert profile.values == {} and resolve(profile)["apps"] is None
    assert profile.check.values == {"static": True}


def test_emperor_dev_toml_wins_key_by_key(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[tool.emperor-dev]\napps = ["a"]\nnginx-site = "site.conf"\n')
    (tmp_path / "emperor-dev.toml").write_text('nginx-site = "other.conf"\n')
    settings = resolve(load_profile(tmp_path))
    assert settings["apps"] == ["a"] and settings.source("apps") == f"{tmp_path / 'pyproject.toml'} [tool.emperor-dev]"
    assert settings["nginx-site"] == tmp_path / "other.conf"
    assert settings.source("nginx-site") == str(tmp_path / "emperor-dev.toml")


def test_settings_are_found_upwards_in_either_file(tmp_path: Path) -> None:
    nested = tmp_path / "a" / "b"
    nested.mkdir(parents=True)
    assert find_profile(nested).check.source is None and find_profile(nested).files == ()
    (tmp_path / "pyproject.toml").write_text('[tool.emperor-dev.check]\nignore = ["W402"]\n')
    assert find_profile(nested).check.source == tmp_path / "pyproject.toml"
    (tmp_path / "a" / "emperor-dev.toml").write_text('apps = ["x"]\n[check]\nstatic = true\n')
    found = find_profile(nested)
    assert (found.check.values, found.check.source) == ({"static": True}, tmp_path / "a" / "emperor-dev.toml")


def test_one_precedence_for_every_key_with_its_source(tmp_path: Path) -> None:
    """The command line, then the next layer given (pytest's ini), then the profile, then the default."""
    (tmp_path / "pyproject.toml").write_text(
        '[tool.emperor-dev]\ndomain = "profile.example"\ntimeout = 40\nuwsgi = "bin/uwsgi"\nnginx = "nginx"\n'
        'emperor-args = "--uid www-data --gid=www-data"\nnginx-user = "www-data"\nsocket-dir = "/run/apps"\n'
    )
    cli = {"domain": Setting("cli.example", "command line (--domain)")}
    ini = {"domain": Setting("ini.example", "pytest.ini"), "timeout": Setting(45.0, "pytest.ini")}
    settings = resolve(find_profile(tmp_path), cli, ini)
    assert list(settings.values) == list(KEYS)
    assert (settings["domain"], settings.source("domain")) == ("cli.example", "command line (--domain)")
    assert (settings["timeout"], settings.source("timeout")) == (45.0, "pytest.ini")
    assert settings["uwsgi"] == str(tmp_path / "bin" / "uwsgi")  # a path: from the file's directory
    assert settings["nginx"] == "nginx"  # a name: found on $PATH
    assert settings["emperor-args"] == ("--uid", "www-data", "--gid=www-data")
    assert (settings["socket-dir"], settings["nginx-user"]) == ("/run/apps", "www-data")
    assert (settings["nginx-site"], settings.source("nginx-site")) == (None, "default")
    assert settings.to_json()["emperor-args"] == {
        "value": ["--uid", "www-data", "--gid=www-data"], "source": f"{tmp_path / 'pyproject.toml'} [tool.emperor-dev]"
    }
    assert "timeout = 45" in "\n".join(settings.lines())


def test_moved_check_keys_still_work_with_a_warning_naming_the_new_key(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[tool.emperor-dev]\nemperor-args = "--uid a"\n[tool.emperor-dev.check]\nemperor-args = "--uid b"\n'
    )
    profile = load_profile(tmp_path)
    assert profile.deprecated == (
        f'{tmp_path / "pyproject.toml"}: "emperor-args" in [tool.emperor-dev.check] is deprecated: set emperor-args '
        "in [tool.emperor-dev] instead (read by pytest, up and check alike)",
    )
    assert resolve(profile, profile.check_layer())["emperor-args"] == ("--uid", "b")  # check: its own copy wins
    assert resolve(profile)["emperor-args"] == ("--uid", "a")


@pytest.mark.parametrize(
    ("file", "text", "message"),
    [
        ("pyproject.toml", "[tool.emperor-dev]\napp = ['a']\n", r": unknown key\(s\) in \[tool.emperor-dev\]: app "),
        ("emperor-dev.toml", "nginx_site = 'x'\n", r"emperor-dev.toml: unknown key\(s\) in the file: nginx_site "),
        ("pyproject.toml", "[tool.emperor-dev.check]\nignored = 1\n", r"in \[tool.emperor-dev.check\]: ignored$"),
        ("emperor-dev.toml", "[check]\nselct = []\n", r"emperor-dev.toml: unknown key\(s\) in \[check\]: selct$"),
        ("pyproject.toml", "[tool]\nemperor-dev = 3\n", r"pyproject.toml: \[tool.emperor-dev\] must be a table"),
        ("pyproject.toml", "[tool.emperor-dev]\ncheck = 1\n", r"\[tool.emperor-dev.check\] must be a table"),
        ("emperor-dev.toml", "apps = 'one'\n", r"emperor-dev.toml: \"apps\" must be a list"),
        ("emperor-dev.toml", "nginx-site = 3\n", r"emperor-dev.toml: \"nginx-site\" must be a path"),
        ("pyproject.toml", "[tool.emperor-dev]\ntimeout = -1\n", r"\[tool.emperor-dev\] \"timeout\" must be seconds"),
        ("emperor-dev.toml", "emperor-args = 3\n", r"\"emperor-args\" must be production's emperor flags such as"),
        ("emperor-dev.toml", "nginx-user = 33\n", r"\"nginx-user\" must be a user name such as \"www-data\", not 33"),
        ("pyproject.toml", "[tool.emperor-dev\n", r"pyproject.toml is not valid TOML"),
        ("pyproject.toml", "[tool.emperor-dev.check]\ntimeout = 'abc'\n", r"\] \"timeout\" must be seconds"),
        ("pyproject.toml", "[tool.emperor-dev.check]\nselect = 3\n", r"\"select\" must be a list of rule codes"),
        ("emperor-dev.toml", "[check]\nstatic = 'no'\n", r"\[check\] \"static\" must be true or false"),
        ("emperor-dev.toml", "[check]\npaths = 'app'\n", r"\"paths\" must be a list of paths"),
    ],
)
def test_errors_name_the_file_and_the_key(tmp_path: Path, file: str, text: str, message: str) -> None:
    (tmp_path / file).write_text(text)
    with pytest.raises(ConfigFileError, match=message) as info:
        find_profile(tmp_path)
    assert isinstance(info.value, ConfigError)  # `up` reports it as bad usage, like any other config error
    assert str(tmp_path / file) in str(info.value)


def found(find: Callable[[None], Path], variable: str) -> str:
    """What `emperor-dev config` says an unset binary finds here."""
    try:
        return str(find(None)) + (f" (${variable})" if os.environ.get(variable) else "")
    except EmperorError as exc:
        return "none: " + re.sub(r":\n\s*", ": ", str(exc)).replace("\n", "; ")


def config(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pytest_emperor.dev", "config", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=60, check=False)


def test_emperor_dev_config_prints_every_setting_and_where_it_came_from(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[tool.emperor-dev]\nemperor-args = "--uid www-data --gid www-data"\nnginx-site = "deploy/api.conf"\n'
        '[tool.emperor-dev.check]\ntimeout = 9\n'
    )
    below = tmp_path / "service"
    below.mkdir()
    done = config(below)  # the profile is found upwards, as every door finds it
    assert done.returncode == 0, done.stderr
    source = f"{tmp_path / 'pyproject.toml'} [tool.emperor-dev]"
    lines = done.stdout.splitlines()
    assert len({line.index("  # ") for line in lines}) == 1  # the sources in one column
    assert [tuple(part.strip() for part in line.split("  # ")) for line in lines] == [
        ("apps = (unset)", "default"),
        ('domain = "api.localhost"', "default"),
        ('socket-dir = "/tmp"', "default"),
        ("nginx = (unset)", f"default, finds {found(find_nginx, 'EMPEROR_NGINX')}"),  # the binary the doors would run
        (f'nginx-site = "{tmp_path}/deploy/api.conf"', source),
        ("uwsgi = (unset)", f"default, finds {found(find_uwsgi, 'EMPEROR_UWSGI')}"),
        ("timeout = 30", "default"),
        ('emperor-args = ["--uid", "www-data", "--gid", "www-data"]', source),
        ("nginx-user = (unset)", "default"),
        ("setup = (unset)", "default"),
        ("setup-inputs = (unset)", "default"),
    ]
    assert '"timeout" in [tool.emperor-dev.check] is deprecated: set timeout in [tool.emperor-dev]' in done.stderr
    document = json.loads(config(below, "--json").stdout)
    assert list(document) == list(KEYS)
    assert document["nginx-site"] == {"value": str(tmp_path / "deploy" / "api.conf"), "source": source}
    assert document["timeout"] == {"value": 30.0, "source": "default"}
    assert document["uwsgi"] == {"value": None, "source": "default", "found": found(find_uwsgi, "EMPEROR_UWSGI")}
    none = json.loads(subprocess.run([sys.executable, "-m", "pytest_emperor.dev", "config", "--json"], cwd=below,
                                     text=True, capture_output=True, timeout=60, check=True,
                                     env=dict(os.environ, EMPEROR_UWSGI=str(tmp_path / "no"))).stdout)["uwsgi"]
    assert none["found"] is None and none["problem"].startswith(f"no usable uwsgi binary: {tmp_path / 'no'} ")
    missing = subprocess.run([sys.executable, "-m", "pytest_emperor.dev", "config"], cwd=below, text=True,
                             capture_output=True, timeout=60, env=dict(os.environ, EMPEROR_UWSGI=str(tmp_path / "no")))
    nowhere = re.escape(str(tmp_path / "no"))
    assert re.search(rf"^uwsgi = \(unset\) +# default, finds none: no usable uwsgi binary: {nowhere} ", missing.stdout,
                     re.M), missing.stdout
    (tmp_path / "emperor-dev.toml").write_text("timeout = 'soon'\n")
    done = config(below)
    assert done.returncode == 2
    bad = tmp_path / "emperor-dev.toml"
    assert done.stderr == f"emperor-dev: {bad}: \"timeout\" must be seconds, such as 30, not 'soon'\n"


_LAYER = st.dictionaries(st.sampled_from(KEYS), st.integers(), max_size=len(KEYS))


@given(layers=st.lists(_LAYER, max_size=3), profile=_LAYER)
def test_the_first_layer_that_sets_a_key_wins_then_the_profile_then_the_default(
    layers: list[dict[str, int]], profile: dict[str, int]
) -> None:
    given_layers = [{k: Setting(v, f"layer {i}") for k, v in layer.items()} for i, layer in enumerate(layers)]
    settings = resolve(Profile(Path("/"), {k: Setting(v, "profile") for k, v in profile.items()}), *given_layers)
    for key in KEYS:
        setters = [i for i, layer in enumerate(layers) if key in layer]
        if setters:
            expected = (layers[setters[0]][key], f"layer {setters[0]}")
        elif key in profile:
            expected = (profile[key], "profile")
        else:
            expected = (DEFAULTS[key], "default")
        assert (settings[key], settings.source(key)) == expected
