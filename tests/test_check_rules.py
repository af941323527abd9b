"""Every static rule of ``emperor-dev check``, triggered and not triggered (pure: no file system, no binary)."""

from __future__ import annotations

from pathlib import Path

import pytest
from seed import SEED_INI

from pytest_emperor.check.paths import check_paths, venv_python_version
from pytest_emperor.check.rules import (
    RULES,
    AppConfig,
    Kind,
    Severity,
    apply_suppressions,
    check_app,
    check_apps,
    filter_codes,
)
from pytest_emperor.ini import MagicVars, parse_ini

OPTIONS = frozenset(
    [
        "chdir",
        "socket",
        "http-socket",
        "http",
        "module",
        "wsgi-file",
        "master",
        "vacuum",
        "need-app",
        "processes",
        "workers",
        "plugin",
        "need-plugin",
        "chmod-socket",
        "daemonize",
        "strict",
        "home",
        "pythonpath",
    ]
)
BASE = """[uwsgi]
chdir = /srv/app
socket = /tmp/%n.api.sock
module = app
master = true
vacuum = true
need-app = true
processes = 2
"""
SEED = SEED_INI


def app(text: str, name: str = "svc", **kw: object) -> AppConfig:
    magic = MagicVars.for_config(f"{name}.ini", cwd="/v", is_symlink=True, realpath="/srv/app/app.uwsgi.ini")
    ini = parse_ini(text, magic=magic)
    resolution = ini.resolve(env={}, at_resolver=lambda spec: "/srv/app")
    options = dict(
        path="app.uwsgi.ini",
        name=name,
        ini=ini,
        resolution=resolution,
        raw_text=text,
        known_options=OPTIONS,
        python_embedded=True,
        world_writable_dirs=frozenset({"/tmp"}),
    )
    options.update(kw)
    return AppConfig(**options)  # type: ignore[arg-type]


def codes(text: str, **kw: object) -> list[str]:
    return [f.code for f in check_app(app(text, **kw))]


def test_base_is_clean() -> None:
    assert check_app(app(BASE)) == []


def test_a_relative_socket_is_judged_where_uwsgi_binds_it() -> None:
    # in `chdir` (the deploy plan's prediction): /tmp/svc.api.sock is where the router looks
    in_tmp = BASE.replace("chdir = /srv/app", "chdir = /tmp")
    assert "W303" not in codes(in_tmp.replace("/tmp/%n.api.sock", "%n.api.sock"))
    assert "W303" in codes(BASE.replace("/tmp/%n.api.sock", "%n.api.sock"))


def test_protocol_http_is_for_socket_alone() -> None:
    assert "E308" in codes(BASE + "protocol = http\n")
    assert "E308" not in codes(BASE.replace("socket =", "uwsgi-socket =") + "protocol = http\n")


TRIGGERS = {
    "E001": ("socket = /tmp/%n.api.sock\n", {}),
    "E002": (BASE + "= orphan\n", {}),
    "W101": (BASE.replace("processes = 2", "processes = 2 # cores"), {}),
    "E102": (BASE.replace("need-app = true", "; cpu at 100%\nneed-app = true"), {}),
    "W103": (BASE + "x-note = 5% off\n", {"known_options": None}),
    "E104": (BASE.replace("module = app", "module ="), {}),
    "E105": (BASE.replace("module = app", "module = %(nope)"), {}),
    "W106": (BASE + "processes = 4\n", {}),
    "E201": (BASE + "wsgi-fil = app.py\n", {}),
    "I202": (BASE.replace("chdir = /srv/app", "root = /srv\nchdir = %(root)/app"), {}),
    "E203": (BASE.replace("chdir = /srv/app", "strict = true\nroot = /srv\nchdir = %(root)/app"), {}),
    "E301": (BASE.replace("socket = /tmp/%n.api.sock\n", ""), {}),
    "W302": (BASE.replace("%n", "svc"), {}),
    "W303": (BASE.replace("%n.api.sock", "%n.sock"), {}),
    "E304": (BASE + "http = :8080\n", {}),
    "I305": (BASE + "daemonize = /tmp/x.log\n", {}),
    "W307": (BASE + "socket = /tmp/%n.admin.sock\nchmod-socket = 666\n", {}),
    "W005": (BASE + "if-env = PROD\nprocesses = 8\nendif =\n", {}),
    "W107": (BASE + "buffer-size = 32k\nharakiri = 2m\n", {}),
    "W108": (BASE + "env = APP_ENV=prod\npythonpath = /srv/$(APP_ENV)\n", {}),
    "E308": (BASE.replace("socket =", "http-socket ="), {}),
    "E309": (BASE + "wsgi-file = app.py\n", {}),
    "W401": (BASE.replace("vacuum = true\n", ""), {}),
    "W402": (BASE.replace("need-app = true\n", ""), {}),
    "E403": (BASE.replace("processes = 2", "processes = two"), {}),
    "I506": (BASE + "plugin = python3\n", {}),
    "W113": (BASE + "post-buffering = true\n", {}),
    "W312": (BASE + "mount = /=app\n", {}),
    "W116": (BASE + "alarm-backlog = logsentry\nalarm-segfault = logsentry\n", {}),
    "E117": (BASE + "cheaper = 2\n", {}),
    "W118": (BASE + "daemonize = true\n", {}),
    "W119": (BASE + "cheaper-initial = 1\n", {}),
    "W120": (BASE + "buffer-size = 400000\n", {}),
    "I114": (BASE + "route = ^/old redirect:/new\n", {}),
    "E507": (BASE + "need-plugin = python3\n", {}),
}
NOT_TRIGGERED = {
    "W101": BASE + "env = A=x;y\nlogformat = %%(status)#1\n",  # no blank before # / ;: not a comment
    "E102": BASE + "; cpu at 100%%\n",
    "E104": BASE + "master\n",  # a bare flag is fine
    "E105": BASE + "home = %(chdir)/venv\nlog-format = %(addr) %(method) %(uri) %(status)\n",
    "W106": BASE + "socket = /tmp/%n.second.sock\n".replace("second", "api"),  # socket is repeatable
    "E201": BASE.replace("chdir = /srv/app", "root = /srv\nchdir = %(root)/app"),
    "W302": BASE.replace("%n", "%N"),
    "W307": BASE + "chmod-socket = 666\n",  # the routed socket: nginx's worker must reach it in /tmp
    "W107": BASE + "buffer-size = 32768\nharakiri = 120\n",
    "W108": BASE + "env = APP_ENV=prod\npythonpath = /srv/prod\n",
    "E308": BASE + "http-socket = 127.0.0.1:0\n",  # an extra HTTP socket beside the routed uwsgi one
    "E309": BASE,
    "W303": BASE + "socket = /tmp/%n.admin.sock\n",  # a second socket beside the routed one
    "W401": BASE.replace("vacuum = true\n", "").replace("/tmp/%n.api.sock", "127.0.0.1:3031"),  # TCP only
    "E403": BASE.replace("processes = 2", "processes = 2 # cores"),
    "I506": BASE + "plugin = router_http\n",
    "W113": BASE + "post-buffering = 8192\nharakiri = 30\n",
    "W312": BASE + "mount = /admin=admin_app\n",
    "W116": BASE + "alarm = logsentry cmd:true\nalarm-backlog = logsentry\n",
    "E117": BASE + "cheaper = 1\n",
    "W118": BASE + "daemonize = /var/log/app.log\n",
    "W119": BASE + "cheaper = 1\ncheaper-initial = 1\n",
    "W120": BASE + "buffer-size = 65536\n",  # 64 KiB, as configs write the largest: 65535 is one byte less
}


@pytest.mark.parametrize("code", sorted(TRIGGERS))
def test_rule_triggers(code: str) -> None:
    text, kw = TRIGGERS[code]
    assert code in codes(text, **kw)


@pytest.mark.parametrize("code", sorted(NOT_TRIGGERED))
def test_rule_does_not_trigger(code: str) -> None:
    assert code not in codes(NOT_TRIGGERED[code])


def test_every_static_rule_has_a_trigger() -> None:
    # E003/E004 need other files or the environment, E310/E311 the machine (test_check_deploy.py), E6xx a
    # real user (test_check_privileges.py)
    machine = {"E306", "E003", "E004", "E310", "E311", "E601", "E602", "E603", "W604", "W605"}
    # decided by the runner, with files and the environment (test_check_static.py)
    machine |= {"I109", "W109", "I110", "W111", "E112", "E313", "I315", "I316"}
    static = {c for c in RULES if c[0] in "EWI" and not c.startswith("E5")} - machine
    assert static - set(TRIGGERS) == set()


def test_inline_comment_in_a_path_is_an_error() -> None:
    found = check_app(app(BASE.replace("/tmp/%n.api.sock", "/tmp/%n.api.sock ; main")))
    assert [(f.code, f.severity) for f in found if f.code == "W101"] == [("W101", Severity.ERROR)]


def test_did_you_mean_and_stray_percent_message() -> None:
    f = next(f for f in check_app(app(BASE + "wsgi-fil = app.py\n")) if f.code == "E201")
    assert "did you mean `wsgi-file`" in f.message and f.line == 9
    swallowed = next(f for f in check_app(app(TRIGGERS["E102"][0])) if f.code == "E102")
    assert "`need-app = true` is lost" in swallowed.message


def test_repeated_option_says_which_wins() -> None:
    f = next(f for f in check_app(app(BASE + "processes = 4\n")) if f.code == "W106")
    assert f.line == 9 and "first on line 8" in f.message


def test_seed_real_findings_and_no_false_alarms() -> None:
    found = {f.code: f for f in check_app(app(SEED, name="service1"))}
    # the production ini's real problems
    assert {"W101", "W402", "I506"} <= set(found)
    assert found["W101"].line == 9
    # its valid idioms are no alarms: @(exec://...), %(app_root) (only the strict note), %n, and 666 on the
    # routed socket (nginx's worker runs as another user and the router looks in /tmp)
    assert set(found) - {"W101", "W402", "I506", "I202"} == set()
    assert found["I202"].severity is Severity.INFO and "set-placeholder" in found["I202"].hint


def test_socket_collision_across_apps() -> None:
    a = app(BASE.replace("%n", "shared"), name="a")
    b = app(BASE.replace("%n", "shared"), name="b")
    assert [f.code for f in check_apps([a, b]) if f.code == "E306"] == ["E306"]
    assert [f.code for f in check_apps([app(BASE, name="a"), app(BASE, name="b")]) if f.code == "E306"] == []


def test_suppression_comment_above_the_line() -> None:
    text = BASE.replace("processes = 2", "; emperor-dev: ignore[W101]\nprocesses = 2 # cores")
    a = app(text)
    assert apply_suppressions(check_app(a), {a.path: text}) == []
    # file-level findings point at the header: a comment above it covers them
    text2 = "; emperor-dev: ignore[w402, W401]\n" + BASE.replace("need-app = true\n", "").replace("vacuum = true\n", "")
    a2 = app(text2)
    assert apply_suppressions(check_app(a2), {a2.path: text2}) == []
    # an inline "comment" is part of the value and suppresses nothing
    text3 = BASE.replace("processes = 2", "processes = 2 ; emperor-dev: ignore[W101]")
    a3 = app(text3)
    assert [f.code for f in apply_suppressions(check_app(a3), {a3.path: text3})] == ["W101"]


def test_select_and_ignore_prefixes() -> None:
    found = check_app(app(BASE.replace("vacuum = true\n", "").replace("need-app = true\n", "")))
    assert [f.code for f in filter_codes(found, ("W4",), ("W402",))] == ["W401"]
    assert filter_codes(found, (), ("W",)) == []


# --- the path rules (real files under tmp_path) ---------------------------------------------------------


WSGI = "def application(environ, start_response):\n    return []\n"


def path_codes(tmp_path: Path, text: str, python: str = "3.11.7") -> list[str]:
    a = app(text.replace("/srv/app", str(tmp_path)))
    return [f.code for f in check_paths(a, cwd=tmp_path, python_version=python)]


def test_paths_all_present(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(WSGI)
    (tmp_path / "venv").mkdir()
    (tmp_path / "venv" / "pyvenv.cfg").write_text("home = /x\nversion = 3.11.2\n")
    text = BASE + "home = /srv/app/venv\nwsgi-file = app.py\n"
    assert path_codes(tmp_path, text) == []


def test_paths_missing(tmp_path: Path) -> None:
    assert path_codes(tmp_path, BASE.replace("/srv/app", "/srv/app/nope")) == ["E501"]
    text = BASE + "home = /srv/app/venv\nwsgi-file = app.py\n"
    assert path_codes(tmp_path, text) == ["E504", "E502", "E503"]


def test_module_found_as_package_and_in_venv(tmp_path: Path) -> None:
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "__init__.py").write_text(WSGI)
    assert path_codes(tmp_path, BASE.replace("module = app", "module = app:application")) == []
    site = tmp_path / "venv" / "lib" / "python3.11" / "site-packages"
    site.mkdir(parents=True)
    (site / "lib_app.py").write_text(WSGI)
    assert path_codes(tmp_path, BASE.replace("module = app", "module = lib_app") + "home = /srv/app/venv\n") == []


def test_venv_for_another_python(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(WSGI)
    (tmp_path / "venv" / "lib" / "python3.9").mkdir(parents=True)
    assert venv_python_version(tmp_path / "venv") == "3.9"
    assert path_codes(tmp_path, BASE + "home = /srv/app/venv\n") == ["E505"]


# --- facts of uWSGI the rules once had wrong, and the rule sets by kind of file -------------------------------


def test_aliases_set_one_variable() -> None:
    f = next(f for f in check_app(app(BASE + "workers = 8\n")) if f.code == "W106")
    assert "`processes = 2` (line 8)" in f.message and "numproc" in f.message
    assert "W106" not in codes(BASE + "workers = 2\n")  # the same value: nothing changes


def test_time_and_path_component_magic_are_known() -> None:
    assert "W103" not in codes(BASE + "logto = /tmp/%0-%9-%t-%T.log\n", known_options=None)


def test_unknown_option_under_strict_is_fatal_and_module_wins() -> None:
    f = next(f for f in check_app(app(BASE + "strict = true\nwsgi-fil = app.py\n")) if f.code == "E201")
    assert "exits at start" in f.message
    f = next(
        f for f in check_app(app(BASE.replace("module = app", "wsgi-file = a.py\nmodule = app"))) if f.code == "E309"
    )
    assert f.line == 4 and "`wsgi-file = a.py` is skipped" in f.message and "`module = app` (line 5)" in f.message


def test_option_of_a_feature_the_binary_lacks() -> None:
    f = next(f for f in check_app(app(BASE + "ssl-socket = :443,a.crt,a.key\n")) if f.code == "I114")
    assert "lacks SSL" in f.message
    assert "I114" not in codes(BASE + "ssl-socket = :443,a.crt,a.key\n", features=frozenset({"ssl"}))


def test_a_plain_uwsgi_config_gets_only_the_rules_of_every_config() -> None:
    front = "[uwsgi]\nhttp = :8000\nmodule = app\ndaemonize = /var/log/app.log\nprocesses = 4\n"
    assert codes(front, kind=Kind.UWSGI, known_options=OPTIONS | {"daemonize"}) == []
    assert {"E304", "I305", "W402", "E301"} <= set(codes(front))  # as a vassal of the convention
    emperor = "[uwsgi]\nemperor = /etc/uwsgi/vassals\nvassals-include = /etc/uwsgi/base.ini\n"
    assert codes(emperor, kind=Kind.EMPEROR, known_options=OPTIONS | {"emperor", "vassals-include"}) == []


def test_real_patterns_of_configs_run_elsewhere() -> None:
    # UTS-eResearch/pbsweb confs/pbsweb.ini:9,13: the wsgi-file mounted again by its module name
    pbsweb = "[uwsgi]\nchdir = /var/www/pbsweb\nwsgi-file = /var/www/pbsweb/pbsweb.py\nmount = /status=pbsweb:app\n"
    assert "W312" in codes(pbsweb, kind=Kind.UWSGI)
    # City-of-Helsinki/kerrokantasi deploy/uwsgi.ini:55-57: one finding per alarm name, at its first use
    alarms = [f.line for f in check_app(app(TRIGGERS["W116"][0])) if f.code == "W116"]
    assert alarms == [9]
    # asoucase/flask-prometheus-metrics uwsgi/uwsgi.ini:16-17: processes from the core count is a warning
    computed = next(f for f in check_app(app(BASE + "cheaper = 4\nprocesses = %(%k + 1)\n")) if f.code == "E117")
    assert computed.severity is Severity.WARNING
    # 20tab global.ini: a file that serves nothing uses the placeholders of the file including it
    fragment = "[uwsgi]\nchdir = %(project_root)\nmodule = %(project_name).wsgi\n"
    severities = {f.severity for f in check_app(app(fragment, kind=Kind.UWSGI)) if f.code == "E105"}
    assert severities == {Severity.INFO}
    assert {f.severity for f in check_app(app(fragment)) if f.code == "E105"} == {Severity.ERROR}


def test_more_real_patterns() -> None:
    # krisek/audioloader app.ini:12,22,25: workers (the last of the alias pair) is what cheaper is below
    assert "E117" not in codes(BASE.replace("processes = 2", "processes = 8") + "workers = 64\ncheaper = 8\n")
    # the same config's `module = wsgi` + `mount = /=application:app`: two apps on the root
    assert "W312" in codes(BASE + "mount = /=application:app\n")
    # ckan/ckan ckan-uwsgi.ini:6,8: module and wsgi-file naming the same file is redundant, not broken
    same = "[uwsgi]\nhttp = :5000\nwsgi-file = /etc/ckan/default/wsgi.py\nmodule = wsgi:application\n"
    assert [f.severity for f in check_app(app(same, kind=Kind.UWSGI)) if f.code == "E309"] == [Severity.INFO]
    # Dispatcharr docker/uwsgi.ini:45: the gevent plugin reads its number with atoi, the comment changes nothing
    gevent = "[uwsgi]\nhttp = :8000\ngevent = 400  # greenlets\n"
    assert [f.severity for f in check_app(app(gevent, kind=Kind.UWSGI)) if f.code == "W101"] == [Severity.INFO]
    # City-of-Helsinki/kerrokantasi deploy/uwsgi.ini:55: alarms in a block production enables
    block = "[uwsgi]\nhttp = :8000\nif-env = SENTRY\nalarm-backlog = logsentry\nendif =\n"
    assert "W116" in codes(block, kind=Kind.UWSGI)
    # searxng's installer template: `${VAR:-x}` is filled by a shell before uWSGI ever reads it
    assert {"E403", "W113", "W106"}.isdisjoint(codes(BASE + "workers = ${UWSGI_WORKERS:-%k}\n", kind=Kind.UWSGI))


def test_need_plugin_is_the_binarys_problem_on_a_config_run_elsewhere() -> None:
    text = "[uwsgi]\nhttp = :8000\nneed-plugin = python3\nmodule = app\n"
    found = [f.severity for f in check_app(app(text, kind=Kind.UWSGI)) if f.code == "E507"]
    assert found == [Severity.INFO]


def test_templates_and_unknown_options_values_are_not_judged() -> None:
    # ReutersMedia/pyword2vec conf/uwsgi.ini:9: a build-time template
    assert {"E403", "W113"}.isdisjoint(codes(BASE + "processes = __NUM_PYTHON_PROCESSES__\n", kind=Kind.UWSGI))
    # Dispatcharr docker/uwsgi.ini:70: `log-buffering` is no option: its inline comment changes nothing
    assert codes(BASE + "log-buffering = 1024  # note\n").count("W101") == 0


def test_holdout_patterns() -> None:
    # Coleridge-Initiative-org/dfadmin deploy/uwsgi.ini:13,32: the same value twice overrides nothing
    assert "W106" not in codes(BASE.replace("master = true", "master = true\nchdir = /srv/app"), kind=Kind.UWSGI)
    assert "W106" not in codes(BASE + "chdir =  /srv/app\n")
    # aabele/octa-latvija deploy/uwsgi.ini:11: `emperor=True` starts an emperor watching ./True
    assert "W118" in codes("[uwsgi]\nhttp = :8000\nemperor = True\n", kind=Kind.EMPEROR)
    # anehx/anonboard tools/uwsgi/anonboard.ini:13: an HTTP router option without an HTTP router does nothing
    keepalive = "[uwsgi]\nsocket = :3031\nhttp-keepalive = True\n"
    assert [f.severity for f in check_app(app(keepalive, kind=Kind.UWSGI)) if f.code == "W113"] == [Severity.INFO]
