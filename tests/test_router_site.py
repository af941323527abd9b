"""A team's own nginx site file as the router (--emperor-nginx-site): parsing and rewriting (pure, on files), then
real nginx running it in front of a real emperor, then the pytest option as users give it."""

from __future__ import annotations

import os
import re
import signal
import textwrap
import uuid
from pathlib import Path

import pytest
from dev_helpers import Up, cli, copy_example, up_process, workspace  # noqa: F401 (fixtures this module's last test uses)
from plugin_helpers import SYNC_PY, Sandbox, assert_nothing_left, write_app
from router_fixtures import fronted

from pytest_emperor.engine.emperor import Emperor
from pytest_emperor.errors import ConfigError, RouteMismatch
from pytest_emperor.project_config import load_profile, resolve
from pytest_emperor.routing.nginx_site import SiteError, load_site, render_site

SEED = Path(__file__).parent / "sites" / "seed.conf"
ECHO = Path(__file__).parent / "apps" / "echo"


def write_site(tmp_path: Path, text: str, name: str = "api.conf") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


# -- parsing and rewriting (pure) -------------------------------------------------------------------------------


def test_the_seed_site_gives_the_routing() -> None:
    route_map = load_site(SEED).route_map
    assert route_map.nginx_server_name == r"~^(?<app>[^.]+)\.api\.mycompany\.com$"
    assert route_map.host_for("svc") == "svc.api.mycompany.com"
    assert route_map.socket_for("svc") == "/tmp/svc.api.sock"  # unix://tmp/... as nginx reads it


def test_rewrites_only_listeners_logs_temp_paths_and_includes(tmp_path: Path) -> None:
    path = write_site(tmp_path, r"""
        map $http_x_canary $pool { default main; canary canary; }
        server {
            listen 80 default_server;
            listen [::]:80 default_server;
            listen 443 ssl default_server;
            ssl_certificate /etc/letsencrypt/live/api/fullchain.pem;
            ssl_certificate_key /etc/letsencrypt/live/api/privkey.pem;
            server_name ~^(?<app>[^.]+)\.api\.example\.org$;
            access_log /var/log/nginx/api.log main;
            error_log /var/log/nginx/api.err warn;
            client_body_temp_path /var/lib/nginx/body 1 2;
            location / {
                include uwsgi_params;
                include snippets/limits.conf;
                uwsgi_pass unix:/run/uwsgi/$app.sock;
            }
        }
        server {
            listen 80;
            server_name health.example.org;
            location = /health { return 200 "ok"; }
        }
        """)
    site = load_site(path)
    assert site.route_map.socket_for("svc") == "/run/uwsgi/svc.sock"
    text = render_site(
        site, listen_tcp="127.0.0.1:5000", listen_unix="unix:/r/router.sock", uwsgi_params=Path("/p/uwsgi_params"),
        run_dir=Path("/run-dir"),
    )
    first, second = text.split("server {")[1:]
    assert "listen 127.0.0.1:5000 default_server reuseport;\n" in first
    assert "listen unix:/r/router.sock default_server;\n" in first
    # "listen 443", not "443": the rendered includes hold pytest's temp dir, which is pytest-443 one run in a few
    # hundred (it failed so, once, in a stress series)
    assert "listen 80" not in text and "[::]" not in text and "listen 443" not in text
    assert "ssl" not in first  # its TLS side is not run: the plain side is, as production serves it on port 80
    assert "listen 127.0.0.1:5000;\n" in second and "reuseport" not in second  # once per address, or nginx -t fails
    assert "access_log /run-dir/access.log;" in first  # its format lives in production's nginx.conf
    assert "error_log /run-dir/error.log warn;" in first
    assert "client_body_temp_path /run-dir/tmp/client_body 1 2;" in first
    assert "include /p/uwsgi_params;" in first
    assert f"include {tmp_path}/snippets/limits.conf;" in first
    # As written: the routing under test, and everything else.
    assert "server_name '~^(?<app>[^.]+)\\.api\\.example\\.org$';" in first
    assert "uwsgi_pass unix:/run/uwsgi/$app.sock;" in first
    assert "map $http_x_canary $pool {" in text and "return 200 ok;" in second


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "server {\n  listen 443 ssl;\n  server_name ~^(?<app>.+)\\.x$;\n"
            "  location / { uwsgi_pass unix:/t/$app; }\n}\n",
            r"api.conf:2: `listen 443 ssl`: this server serves only TLS.*also listens without TLS",
        ),
        (
            "server {\n  listen 443 ssl;\n  listen [::]:443 ssl http2;\n  server_name ~^(?<app>.+)\\.x$;\n}\n",
            r"api.conf:2: `listen 443 ssl`: this server serves only TLS",
        ),
        ("events {}\nhttp { server { } }\n", r"api.conf:1: `events` belongs to nginx.conf; give the site file"),
        ("upstream x { server 127.0.0.1:1; }\n", r"api.conf: no server block"),
        (
            "server {\n  server_name api.x;\n  location / { uwsgi_pass unix:/t/a.sock; }\n}\n",
            r"api.conf: no server block has both a regex server_name with a named group app",
        ),
        (
            "server {\n  server_name ~^(?<app>.+)\\.(x|y)$;\n  location / {\n    uwsgi_pass unix:/t/$app;\n  }\n}\n",
            r"api.conf:4: cannot route by this server block: cannot derive a host template.*--emperor-host-template",
        ),
        ("server {\n  listen 80;\n", r"api.conf:\d+: not valid nginx syntax: unexpected end of file, expecting \"}\""),
    ],
)
def test_a_site_that_cannot_run_is_refused_naming_file_line_and_fix(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(SiteError, match=message):
        load_site(write_site(tmp_path, text))


def test_missing_site_file(tmp_path: Path) -> None:
    with pytest.raises(SiteError, match=r"nginx site file .*nope.conf does not exist"):
        load_site(tmp_path / "nope.conf")


def test_emperor_dev_reads_nginx_site_from_its_config(tmp_path: Path) -> None:
    assert resolve(load_profile(tmp_path))["nginx-site"] is None
    (tmp_path / "pyproject.toml").write_text('[tool.emperor-dev]\napps = ["a"]\nnginx-site = "deploy/api.conf"\n')
    assert resolve(load_profile(tmp_path))["nginx-site"] == tmp_path / "deploy" / "api.conf"
    (tmp_path / "emperor-dev.toml").write_text("apps = []\nnginx-site = 3\n")
    with pytest.raises(ConfigError, match=r"emperor-dev.toml: \"nginx-site\" must be a path"):
        load_profile(tmp_path)


# -- real nginx running a site ----------------------------------------------------------------------------------


def test_vassals_follow_the_site_server_name_through_real_nginx(tmp_path: Path) -> None:
    path = write_site(tmp_path, r"""
        server {
            listen 80;
            listen 443 ssl;
            ssl_certificate /etc/ssl/nowhere/svc.pem;  # not run: nginx would refuse the missing file
            server_name ~^(?<app>[^.]+)\.svc\.internal$;
            location / {
                include uwsgi_params;
                uwsgi_pass unix:/tmp/$app.api.sock;
            }
            location = /ping { return 204; }
        }
        """)
    site = load_site(path)
    with Emperor(route_map=site.route_map) as emperor, fronted(emperor, site=site) as router:
        echo = emperor.deploy(ECHO)
        assert echo.host == f"{echo.name}.svc.internal"
        assert echo.url == f"http://{echo.name}.svc.internal:{router().tcp_address[1]}/"
        environ = echo.http.get("/a/b").json()["environ"]
        # What a browser opening echo.url sends: the host with the router's port (nginx's $http_host).
        assert (environ["HTTP_HOST"], environ["PATH_INFO"]) == (f"{echo.host}:{router().tcp_address[1]}", "/a/b")
        assert environ["SERVER_NAME"] == r"~^(?<app>[^.]+)\.svc\.internal$"
        assert environ["REMOTE_ADDR"] == "127.0.0.1"  # through nginx's TCP listener, as production traffic comes
        assert echo.http.get("/ping").status_code == 204  # the site's own location, as written
        assert (router().directory / "access.log").read_text().count("GET /a/b") == 1


def test_a_site_routing_elsewhere_is_reported_before_any_request(tmp_path: Path) -> None:
    path = write_site(tmp_path, r"""
        server {
            server_name ~^(?<app>[^.]+)\.api\.mycompany\.com$;
            location / { include uwsgi_params; uwsgi_pass unix:/run/uwsgi/$app.sock; }
        }
        """)
    site = load_site(path)
    with Emperor(route_map=site.route_map) as emperor, fronted(emperor, site=site):
        echo = emperor.deploy(ECHO)
        expected = (
            rf"vassal '{echo.name}': the routing \(.*\) sends Host {echo.name}\.api\.mycompany\.com to "
            rf"unix:/run/uwsgi/{echo.name}\.sock, but it binds unix:/tmp/{echo.name}\.api\.sock"
        )
        with pytest.raises(RouteMismatch, match=expected):
            echo.http  # noqa: B018


# -- the pytest option ------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("uwsgi_bin")
def test_pytest_reads_the_site_file_from_the_profile(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    box = Sandbox.create()
    try:
        for name, value in box.env().items():
            monkeypatch.setenv(name, value)
        for name in os.environ:
            if name.startswith(("PYTEST_XDIST", "PYTEST_CURRENT")):
                monkeypatch.delenv(name)
        repo = pytester.path / "hello"
        write_app(repo, box.sockets, "repo app")
        (repo / "pe_sync.py").write_text(SYNC_PY)
        (repo / "deploy").mkdir()
        (repo / "deploy" / "api.conf").write_text(
            "server {\n    listen 443;\n    server_name ~^(?<app>[^.]+)\\.api\\.mycompany\\.com$;\n"
            f"    location / {{ include uwsgi_params; uwsgi_pass unix:{box.sockets}/$app.api.sock; }}\n}}\n"
        )
        # once, in the profile pytest shares with up and check
        (repo / "pyproject.toml").write_text('[tool.emperor-dev]\nnginx-site = "deploy/api.conf"\n')
        (repo / "test_site.py").write_text(
            "def test_through_the_site(app_vassal):\n"
            "    assert app_vassal.host.endswith('.api.mycompany.com')\n"
            "    assert app_vassal.http.get('/x').text == 'repo app at /x\\n'\n"
        )
        monkeypatch.chdir(repo)
        pytester.runpytest_subprocess("--emperor", timeout=90).assert_outcomes(passed=1)
        # the deprecated ini key still works (and wins over the profile) for one release
        (repo / "pytest.ini").write_text("[pytest]\nemperor_nginx_site = deploy/missing.conf\n")
        result = pytester.runpytest_subprocess("--emperor", timeout=90)
        assert result.ret == pytest.ExitCode.USAGE_ERROR
        result.stderr.fnmatch_lines(["*pytest-emperor routing: nginx site file *deploy/missing.conf does not exist*"])
        assert_nothing_left(box)
    finally:
        box.remove()


# -- emperor-dev up ----------------------------------------------------------------------------------------------


def test_emperor_dev_up_routes_by_the_site_from_pyproject(
    workspace: Path,  # noqa: F811
    up_process: list[Up],  # noqa: F811
) -> None:
    name = f"st-{uuid.uuid4().hex[:6]}"
    copy_example(workspace, "service3", "service3")
    apps = workspace / "apps"
    (apps / "deploy").mkdir()
    (apps / "deploy" / "api.conf").write_text(SEED.read_text())
    (apps / "pyproject.toml").write_text(
        f'[tool.emperor-dev]\napps = ["{name}=service3"]\nnginx-site = "deploy/api.conf"\n'
    )
    up = Up(workspace)
    up_process.append(up)
    up.started()
    assert re.search(rf"^{name}\s+http://{name}\.api\.mycompany\.com:\d+/\s+ready", "\n".join(up.lines), re.M)
    answer = cli(workspace, "request", name, "/via-site", "-i")
    assert answer.returncode == 0, answer.stderr
    assert answer.stdout.startswith("HTTP/1.1 200 OK\n") and answer.stdout.endswith("at /via-site\n")
    up.stopped(signal.SIGINT)
    assert not Path(f"/tmp/{name}.api.sock").exists()
