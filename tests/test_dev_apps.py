"""Which apps ``emperor-dev up`` runs: APP arguments, names, the configured list, discovery."""

from __future__ import annotations

from pathlib import Path

import pytest
from plugin_helpers import write_app

from pytest_emperor.check.runner import find_inis
from pytest_emperor.dev.apps import (
    default_apps,
    resolve_apps,
    split_app_arg,
)
from pytest_emperor.engine.naming import app_inis
from pytest_emperor.errors import ConfigError
from pytest_emperor.project_config import load_profile

# -- apps: arguments and config -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arg", "expected"),
    [
        ("service1", (None, "service1")),
        ("beta=service1", ("beta", "service1")),
        ("beta=../x/service1", ("beta", "../x/service1")),
        ("./a=b", (None, "./a=b")),  # a path that holds '=': the part before it has a '/'
        ("dir/app.uwsgi.ini", (None, "dir/app.uwsgi.ini")),
        ("=service1", (None, "=service1")),
    ],
)
def test_split_app_arg(arg: str, expected: tuple[str | None, str]) -> None:
    assert split_app_arg(arg) == expected


def test_resolve_apps_names_dirs_files_and_aliases(tmp_path: Path) -> None:
    write_app(tmp_path / "My_App", tmp_path, "hello")
    write_app(tmp_path / "other", tmp_path, "hello")
    specs = resolve_apps(["My_App", "beta=My_App", "other/app.uwsgi.ini"], tmp_path)
    assert [s.name for s in specs] == ["my-app", "beta", "other"]
    assert specs[0].ini == specs[1].ini == tmp_path / "My_App" / "app.uwsgi.ini"
    assert specs[2].app_dir == tmp_path / "other"


def test_resolve_apps_refuses_two_apps_under_one_name(tmp_path: Path) -> None:
    write_app(tmp_path / "a" / "svc", tmp_path, "hello")
    write_app(tmp_path / "b" / "svc", tmp_path, "hello")
    with pytest.raises(ConfigError, match=r"two apps would be named 'svc'.*NAME=PATH"):
        resolve_apps(["a/svc", "b/svc"], tmp_path)


def test_resolve_apps_says_what_is_missing(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"has no app\.uwsgi\.ini"):
        resolve_apps(["empty"], tmp_path)
    with pytest.raises(ConfigError, match="does not exist"):
        resolve_apps(["x=nowhere"], tmp_path)


def test_default_apps_prefers_emperor_dev_toml_then_pyproject_then_discovery(tmp_path: Path) -> None:
    write_app(tmp_path / "one", tmp_path, "hello")
    write_app(tmp_path / "two", tmp_path, "hello")
    write_app(tmp_path / ".hidden", tmp_path, "hello")
    (tmp_path / "notanapp").mkdir()
    assert app_inis(tmp_path) == [tmp_path / "one" / "app.uwsgi.ini", tmp_path / "two" / "app.uwsgi.ini"]
    assert [s.name for s in default_apps(tmp_path)] == ["one", "two"]
    (tmp_path / "pyproject.toml").write_text('[tool.emperor-dev]\napps = ["two", "b=one"]\n')
    assert [s.name for s in default_apps(tmp_path)] == ["two", "b"]
    (tmp_path / "emperor-dev.toml").write_text('apps = ["one"]\n')
    assert [s.name for s in default_apps(tmp_path)] == ["one"]
    assert load_profile(tmp_path).values["apps"].base == tmp_path


def test_config_errors_name_the_file(tmp_path: Path) -> None:
    (tmp_path / "emperor-dev.toml").write_text("apps = 'one'\n")
    with pytest.raises(ConfigError, match=r"emperor-dev.toml: \"apps\" must be a list"):
        default_apps(tmp_path)
    (tmp_path / "emperor-dev.toml").write_text("apps = [\n")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        default_apps(tmp_path)


@pytest.mark.parametrize(
    "pyproject", ["[project]\nname = 'x'\n", "[tool.emperor-dev.check]\nfail-on = 'error'\n"]
)  # without the table, or with check's table only
def test_pyproject_without_apps_falls_back_to_discovery(tmp_path: Path, pyproject: str) -> None:
    (tmp_path / "pyproject.toml").write_text(pyproject)
    with pytest.raises(ConfigError, match="no apps to run"):
        default_apps(tmp_path)
    write_app(tmp_path / "svc", tmp_path, "hello")
    assert [s.name for s in default_apps(tmp_path)] == ["svc"]


def test_an_app_dir_runs_its_own_app(tmp_path: Path) -> None:
    """As ``emperor-dev check`` reads it: ``up`` in an app's own dir runs that app, named after the dir."""
    app = tmp_path / "shop"
    write_app(app, tmp_path, "hello")
    [spec] = default_apps(app)
    assert spec.name == "shop" and spec.ini == app / "app.uwsgi.ini"


def test_up_and_check_find_the_same_apps(tmp_path: Path) -> None:
    # An app dir whose code has an app of its own below it: the dir is the app, for `up` as for `check`.
    for directory in (tmp_path, tmp_path / "vendored", tmp_path / ".hidden"):
        directory.mkdir(exist_ok=True)
        (directory / "app.uwsgi.ini").write_text("[uwsgi]\nmodule = app\n")
    assert find_inis(tmp_path) == app_inis(tmp_path) == [tmp_path / "app.uwsgi.ini"]
    assert [spec.ini for spec in default_apps(tmp_path)] == [tmp_path / "app.uwsgi.ini"]
    (tmp_path / "app.uwsgi.ini").unlink()
    assert find_inis(tmp_path) == app_inis(tmp_path) == [tmp_path / "vendored" / "app.uwsgi.ini"]
    assert [spec.name for spec in default_apps(tmp_path)] == ["vendored"]
