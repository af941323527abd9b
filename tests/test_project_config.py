"""The one reader of emperor-dev settings (emperor-dev.toml, [tool.emperor-dev] and its check table): which source
wins, and errors that name the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_emperor.errors import ConfigError, ConfigFileError
from pytest_emperor.project_config import load_check, load_project


def test_a_check_only_pyproject_configures_no_apps(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[tool.emperor-dev.check]\nstatic = true\n')
    project = load_project(tmp_path)
    assert (project.apps, project.apps_source, project.nginx_site) == (None, None, None)
    assert load_check(tmp_path).values == {"static": True}


def test_emperor_dev_toml_wins_key_by_key(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[tool.emperor-dev]\napps = ["a"]\nnginx-site = "site.conf"\n')
    (tmp_path / "emperor-dev.toml").write_text('nginx-site = "other.conf"\n')
    project = load_project(tmp_path)
    assert project.apps == ["a"] and project.apps_source == tmp_path / "pyproject.toml"
    assert project.nginx_site == tmp_path / "other.conf"


def test_check_settings_are_found_upwards_in_either_file(tmp_path: Path) -> None:
    nested = tmp_path / "a" / "b"
    nested.mkdir(parents=True)
    assert load_check(nested).source is None
    (tmp_path / "pyproject.toml").write_text('[tool.emperor-dev.check]\nignore = ["W402"]\n')
    assert load_check(nested).source == tmp_path / "pyproject.toml"
    (tmp_path / "a" / "emperor-dev.toml").write_text('apps = ["x"]\n[check]\nstatic = true\n')
    found = load_check(nested)
    assert (found.values, found.source) == ({"static": True}, tmp_path / "a" / "emperor-dev.toml")


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
        load_project(tmp_path)
    assert isinstance(info.value, ConfigError)  # `up` reports it as bad usage, like any other config error
    assert str(tmp_path / file) in str(info.value)
