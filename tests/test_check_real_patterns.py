"""``emperor-dev check`` on the patterns found in real uWSGI configs (benchmarks/gate_corpus/): each real problem
is reported on its line, and a config with no problem gets no error or warning.

Every case is a minimal reproduction written here (not a copy), citing the public repository and line it comes
from; the judgment of each (what uWSGI 2.0 does with it) is in benchmarks/gate_corpus/SOURCES.toml. The files are
named ``uwsgi.ini``, not ``app.uwsgi.ini``: configs of other deployments, checked statically at the default
settings, the way a CI job meets a config it did not write.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pytest_emperor.check.rules import Severity
from pytest_emperor.check.runner import CheckSettings, run_check


@dataclass(frozen=True)
class Case:
    """A config and the error/warning findings it must get: line -> the rule codes that may report it."""

    name: str
    source: str  # repository path:line the pattern comes from
    text: str
    expected: dict[int, frozenset[str]] = field(default_factory=dict)


def case(name: str, source: str, text: str, **expected: str) -> Case:
    """``expected`` as ``line_N="CODE1 CODE2"``: a finding of one of these codes on line N."""
    lines = {int(key.removeprefix("line_")): frozenset(codes.split()) for key, codes in expected.items()}
    return Case(name, source, text, lines)


PROBLEMS = [
    case(
        "misspelt-option",
        "mozilla/addons-server docker/uwsgi.ini:11 (`vaccum = true`)",
        "[uwsgi]\nmodule = olympia.wsgi:application\nsocket = :8001\nvaccum = true\n",
        line_4="E201",
    ),
    case(
        "misspelt-option-dev-template",
        "pyfarm/pyfarm-master resources/dev/nginx_uwsgi/uwsgi.ini.template:7 (`py-autorelaod = true`)",
        "[uwsgi]\nmaster = true\npy-autorelaod = true\nsocket = /tmp/farm.sock\nmodule = farm.entrypoints\n",
        line_3="E201",
    ),
    case(
        "misspelt-socket-mode",
        "d-salt/nginx_uwsgi_django_mysql uwsgi/uwsgi.ini:13 (`chmod-sockert = 666`)",
        "[uwsgi]\nmodule = myproject.wsgi\nsocket = /uwsgi/%n.sock\nchmod-sockert = 666\nmaster = true\n",
        line_4="E201",
    ),
    case(
        "misspelt-uid-keeps-root",
        "IlyaGusev/PoetryCorpus conf/uwsgi.ini:10 (`zuid =  www-data`)",
        "[uwsgi]\nchdir = /code/\nwsgi-file = /code/poetry/wsgi.py\nsocket = /tmp/uwsgi.sock\nzuid =  www-data\n"
        "gid = www-data\n",
        line_5="E201",
    ),
    case(
        "doc-heading-as-option",
        "WengChaoxi/flask-mvc uwsgi/uwsgi.ini:3 (`workers/processes = 16`)",
        "[uwsgi]\nsocket = 127.0.0.1:8080\nworkers/processes = 16\nwsgi-file = manager.py\ncallable = app\n",
        line_3="E201",
    ),
    case(
        "callable-named-application",
        "HengfengLi/nginx-uwsgi-flask-demo uwsgi/uwsgi.ini:3 (`application = app`)",
        "[uwsgi]\nwsgi-file = app/app.py\napplication = app\ncallable = app\nsocket = 0.0.0.0:9000\n",
        line_3="E201",
    ),
    case(
        "label-that-is-no-option",
        "Cray-HPE/bos config/uwsgi.ini:8 (`app=bos`)",
        "[uwsgi]\nhttp-socket=:9000\napp=bos\nmodule=bos.server.__main__\ncallable=app\n",
        line_3="E201",
    ),
    case(
        "word-for-a-number",
        "1ibrary/1ibrary-gzhu uwsgi.ini:13 (`threads = true`)",
        "[uwsgi]\nwsgi-file = /app/manage.py\ncallable = app\nsocket = 0.0.0.0:80\nprocesses = 2\nthreads = true\n",
        line_6="W113 E403",
    ),
    case(
        "boolean-for-milliseconds",
        "APSL/docker-puput conf/uwsgi.ini:21 (`log-slow = True`)",
        "[uwsgi]\nhttp = :8000\nmodule = blog.wsgi\nlog-4xx = True\nlog-slow = True\n",
        line_5="W113 E403",
    ),
    case(
        "boolean-for-a-size",
        "amks1/k8s-test uwsgi/uwsgi.ini:6 (`post-buffering = true`)",
        "[uwsgi]\nstrict = true\nhttp-socket = 0.0.0.0:7654\nbuffer-size = 32768\npost-buffering = true\n"
        "wsgi-file = flask_app.py\ncallable = app\n",
        line_5="W113 E403",
    ),
    case(
        "boolean-for-the-cheaper-count",
        "HumanSignal/label-studio deploy/uwsgi.ini:6 (`cheaper = true`)",
        "[uwsgi]\nchdir = /label-studio/label_studio\nhttp = 0.0.0.0:8080\nmodule = core.wsgi:application\n"
        "master = true\ncheaper = true\nprocesses = 4\n",
        line_6="W113 E403",
    ),
    case(
        "cheaper-initial-without-cheaper",
        "SEED-platform/seed docker/uwsgi.ini:7,11 (`processes = 4`, `cheaper-initial = 1`, no `cheaper`)",
        "[uwsgi]\nsocket = /tmp/uwsgi-seed.sock\nmaster = true\nprocesses = 4\ncheaper-initial = 1\n"
        "chdir = /seed\nmodule = config.wsgi:application\n",
        line_5="W119",
    ),
    case(
        "module-and-wsgi-file-naming-two-files",
        "DonkeyOatie/django_docker_template conf/uwsgi.ini:6-8 (`chdir = /code/g`, `module = wsgi:application`, "
        "`wsgi-file = /code/<project_name>/wsgi.py`)",
        "[uwsgi]\nsocket = /var/run/uwsgi.sock\nchdir = /code/g\nmodule = wsgi:application\n"
        "wsgi-file = /code/project/wsgi.py\n",
        line_5="E309",
    ),
    case(
        "same-app-mounted-twice",
        "UTS-eResearch/pbsweb confs/pbsweb.ini:9,13 (`wsgi-file = .../pbsweb.py` and `mount = /statuspbs=pbsweb:app`)",
        "[uwsgi]\nsocket = /run/uwsgi/pbsweb.sock\nchdir = /var/www/apps/pbsweb/\n"
        "wsgi-file = /var/www/apps/pbsweb/pbsweb.py\nmount = /statuspbs=pbsweb:app\nmanage-script-name = true\n",
        line_5="W312",
    ),
    case(
        "inline-comment-in-module",
        "105306006/flask-heroku uwsgi.ini:5 (`module = app:app ;...`)",
        "[uwsgi]\nhttp-socket = :$(PORT)\nmaster = true\nmodule = app:app ;the file, then the variable\n",
        line_4="W101",
    ),
    case(
        "alarm-used-never-defined",
        "City-of-Helsinki/kerrokantasi deploy/uwsgi.ini:55-57 (alarm `logsentry` used, `alarm =` missing)",
        "[uwsgi]\nhttp = :8000\nwsgi-file = app/wsgi.py\nmaster = true\nalarm-backlog = logsentry\n"
        "alarm-segfault = logsentry\n",
        line_5="W116",
    ),
    case(
        "alarm-never-defined-in-a-block-production-enables",
        "City-of-Helsinki/kerrokantasi deploy/uwsgi.ini:51-58 (alarm lines in `if-env = ENABLE_SENTRY_UWSGI_PLUGIN`)",
        "[uwsgi]\nhttp = :8000\nwsgi-file = app/wsgi.py\nmaster = true\nif-env = ENABLE_SENTRY_UWSGI_PLUGIN\n"
        "plugin = sentry\nalarm-backlog = logsentry\nalarm-segfault = logsentry\nendif =\n",
        line_7="W116",
    ),
    case(
        "strict-mode-is-no-option",
        "Subscribie/subscribie emperor.ini:2 (`strict-mode = true`)",
        "[uwsgi]\nstrict-mode = true\nmaster = true\nemperor = ./vassals/*/*.ini\n",
        line_2="E201",
    ),
    case(
        "processes-then-workers",
        "krisek/audioloader app.ini:12,22 (`processes = 8`, then `workers = 64` and `cheaper = 8` below it)",
        "[uwsgi]\nmodule = wsgi\nhttp = 127.0.0.1:3400\nmaster = true\nprocesses = 8\nworkers = 64\n"
        "cheaper-algo = spare\ncheaper = 8\n",
        line_6="W106",
    ),
    case(
        "module-and-mount-on-root",
        "krisek/audioloader app.ini:2,10 (`module = wsgi`, `mount = /=application:app`)",
        "[uwsgi]\nmodule = wsgi\nchdir = /var/www/audioloader\nhttp = 127.0.0.1:3400\nmount = /=application:app\n",
        line_5="W312 E309",
    ),
    case(
        "option-uwsgi-2-lacks",
        "krisek/audioloader app.ini:28 (`cheaper-idle = 60`)",
        "[uwsgi]\nmodule = wsgi\nhttp = 127.0.0.1:3400\nprocesses = 8\ncheaper = 2\ncheaper-idle = 60\n",
        line_6="E201",
    ),
    case(
        "emperor-as-a-flag",
        "aabele/octa-latvija deploy/uwsgi.ini:11 (`emperor=True` in an app's config)",
        "[uwsgi]\nchdir=/home/octa/project\nwsgi-file=/home/octa/project/app.py\ncallable=app\n"
        "socket=/home/octa/octa.sock\nemperor=True\nmaster=True\n",
        line_6="W118",
    ),
    case(
        "buffer-size-above-its-maximum",
        "aabele/octa-latvija deploy/uwsgi.ini:7 (`buffer-size=400000`, clamped to 65535)",
        "[uwsgi]\nchdir=/home/octa/project\nwsgi-file=/home/octa/project/app.py\nsocket=/home/octa/octa.sock\n"
        "buffer-size=400000\n",
        line_5="W120",
    ),
    case(
        "cheaper-not-below-processes",
        "asoucase/flask-prometheus-metrics uwsgi/uwsgi.ini:16-17 (`cheaper = 4`, `processes = %(%k + 1)`)",
        "[uwsgi]\nhttp-socket = :6001\nmodule = app:app\nmaster = true\ncheaper = 4\nprocesses = 3\n",
        line_5="E117",
    ),
    case(
        "daemonize-to-a-file-named-true",
        "ashcrow/four04 uwsgi/uwsgi.ini:8 (`daemonize = true`)",
        "[uwsgi]\nhttp = 127.0.0.1:8080\nwsgi-file = app.py\nmaster = true\ndaemonize = true\n",
        line_5="W118",
    ),
]

NO_PROBLEM = [
    case(
        "docker-http-socket-front-end",
        "healthchecks/healthchecks docker/uwsgi.ini (http-socket :8000, chdir /opt/..., no vacuum)",
        "[uwsgi]\nstrict\nmaster\ndie-on-term\nhttp-socket = :8000\nharakiri = 10\nprocesses = 4\nenable-threads\n"
        "chdir = /opt/healthchecks\nmodule = hc.wsgi:application\nthunder-lock\n",
    ),
    case(
        "docker-unix-socket-for-the-image-nginx",
        "ajnisbet/opentopodata docker/uwsgi.ini (socket /tmp/uwsgi.sock, users of the image)",
        "[uwsgi]\nstrict = true\nneed-app = true\nsocket = /tmp/uwsgi.sock\nchown-socket = www-data:www-data\n"
        "chmod-socket = 664\nvacuum = true\nuid = www-data\ngid = www-data\nmaster = true\n"
        "wsgi-file = /app/opentopodata/api.py\ncallable = app\n",
    ),
    case(
        "http-router-and-cpu-count",
        "HumanSignal/label-studio deploy/uwsgi.ini (`http =`, `processes = %(%k * 2)`, `pidfile = /tmp/%n.pid`)",
        "[uwsgi]\nchdir = /label-studio/label_studio\nhttp = 0.0.0.0:8080\nmodule = core.wsgi:application\n"
        "master = true\nprocesses = %(%k * 2)\npidfile = /tmp/%n.pid\nneed-app = true\n",
    ),
    case(
        "emperor",
        "unbit/uwsgi.it emperor.ini; nicktimko/nginx-uwsgi-python emperor.ini",
        "[uwsgi]\nmaster = true\nemperor = /etc/uwsgi/services\nvassal-set = processes=2\nvassal-set = vacuum=true\n"
        "die-on-term = true\n",
    ),
    case(
        "request-log-variables",
        "APSL/sauron docker/uwsgi.ini:15 (`logformat = ... %(host) %(method) %(uri) %(status)`)",
        "[uwsgi]\nhttp = :8000\nchdir = /app\nmodule = main.wsgi\n"
        "logformat = [%(ltime)] %(host) %(method) %(uri) %(status) %(msecs) ms %(rssM) MB\n",
    ),
    case(
        "inline-comment-after-a-number-or-boolean",
        "MIT-LCP/physionet-build docker/uwsgi.ini:58-61; City-of-Helsinki/hauki deploy/uwsgi.ini:3",
        "[uwsgi]\nstrict = true  # Fail if any option is unknown\nhttp-socket = :8000\nmodule = physionet.wsgi\n"
        "max-requests = 1000                  ; Restart workers after this many requests\n"
        "worker-reload-mercy = 60             ; How long to wait\n",
    ),
    case(
        "inline-comment-after-a-plugin-number",
        "Dispatcharr/Dispatcharr docker/uwsgi.ini:45 (`gevent = 400  # Each unused greenlet costs ...`)",
        "[uwsgi]\nhttp = 0.0.0.0:5656\nchdir = /app\nmodule = dispatcharr.wsgi:application\n"
        "gevent = 400  # Each unused greenlet costs memory\n",
    ),
    case(
        "module-and-wsgi-file-naming-the-same-file",
        "ckan/ckan ckan-uwsgi.ini:6,8; Kansea/vue_ros_interface uwsgi/uwsgi.ini:2-5 (the module is the wsgi-file)",
        "[uwsgi]\nchdir = /app\nmodule = robot_site.wsgi:application\nsocket = :8080\n"
        "wsgi-file = /app/robot_site/wsgi.py\nmaster = true\n",
    ),
    case(
        "cheaper-default-for-a-block-production-enables",
        "kobotoolbox/kobocat docker/uwsgi.ini:26-43 (`cheaper` only in an if-env block, a cheaper-* default beside it)",
        "[uwsgi]\nmodule = onadata.apps.main.wsgi\nsocket = 0.0.0.0:8001\nmaster = true\nworkers = 2\n"
        "if-env = KC_UWSGI_CHEAPER_WORKERS_COUNT\ncheaper = %(_)\nendif =\n"
        "if-not-env = KC_UWSGI_CHEAPER_RSS_LIMIT_SOFT\ncheaper-rss-limit-soft = %(2 * 1024 * 1024 * 1024)\nendif =\n",
    ),
    case(
        "installer-template-values",
        "searxng/searxng utils/templates/etc/uwsgi/apps-available/searxng.ini:54-55 (`${UWSGI_WORKERS:-%k}`)",
        "[uwsgi]\nmodule = searx.webapp\nhttp = ${SEARXNG_INTERNAL_HTTP}\nworkers = ${UWSGI_WORKERS:-%k}\n"
        "threads = ${UWSGI_THREADS:-4}\n",
    ),
    case(
        "build-template-values",
        "ReutersMedia/pyword2vec conf/uwsgi.ini:9,11 (`processes = __NUM_PYTHON_PROCESSES__`)",
        "[uwsgi]\nmodule = w2vserver.index\nmaster = true\nprocesses = __NUM_PYTHON_PROCESSES__\n"
        "threads = __NUM_UWSGI_THREADS__\nsocket = /tmp/uwsgi.sock\n",
    ),
    case(
        "http-option-without-an-http-router",
        "anehx/anonboard tools/uwsgi/anonboard.ini:13 (`http-keepalive = True` beside a unix socket only)",
        "[uwsgi]\nchdir = /usr/share/anonboard/backend\nsocket = /usr/share/anonboard/anonboard.sock\n"
        "module = anonboard.wsgi:application\nmaster = True\nhttp-keepalive = True\n",
    ),
    case(
        "same-value-set-twice",
        "Coleridge-Initiative-org/dfadmin deploy/uwsgi.ini:13,32 (`chdir = /webapp/` in [uwsgi] and in [base])",
        "[uwsgi]\nini = :base\nsocket = /webapp/app.sock\nchdir=/webapp/\nmodule=data_facility.wsgi:application\n"
        "master = true\nmaster = true\n\n[base]\n chdir = /webapp/\n",
    ),
    case(
        "routing-options-of-a-pcre-build",
        "City-of-Helsinki/mvj deploy/uwsgi.ini:15-16 (`route = ^/healthz$ donotlog:`)",
        "[uwsgi]\nhttp-socket = :8080\nchdir = /app\nmodule = mvj.wsgi\nroute = ^/readiness$ donotlog:\n"
        "route = ^/healthz$ donotlog:\n",
    ),
    case(
        "vacuum-off-on-purpose",
        "redimp/otterwiki docker/uwsgi.ini:18 (`vacuum = false`)",
        "[uwsgi]\nmodule = otterwiki.server\ncallable = app\nsocket = /tmp/uwsgi.sock\nchdir = /app\nvacuum = false\n",
    ),
    case(
        "magic-variables-in-comments",
        "20tab/django-uwsgi-template-legacy uwsgiconf/local/global.ini:40-44 (`# %t unix time`)",
        "[uwsgi]\nsocket = 127.0.0.1:3031\nmodule = site.wsgi\n# %t      unix time (in seconds)\n"
        "# %T      unix time (in microseconds)\n# %0..%9  a component of the config's directory path\n",
    ),
]


def errors_and_warnings(tmp_path: Path, text: str, uwsgi_bin: Path) -> dict[int, set[str]]:
    """Line -> codes of the error/warning findings of a static check of ``text`` as ``uwsgi.ini``."""
    ini = tmp_path / "uwsgi.ini"
    ini.write_text(text)
    result = run_check([ini], CheckSettings(boot=False, uwsgi=uwsgi_bin))
    found: dict[int, set[str]] = {}
    for f in result.findings:
        if f.severity >= Severity.WARNING:
            found.setdefault(f.line, set()).add(f.code)
    return found


@pytest.mark.parametrize("pattern", PROBLEMS, ids=lambda c: c.name)
def test_real_problem_is_reported_on_its_line(pattern: Case, tmp_path: Path, uwsgi_bin: Path) -> None:
    found = errors_and_warnings(tmp_path, pattern.text, uwsgi_bin)
    for line, codes in pattern.expected.items():
        assert line in found, f"{pattern.source}: nothing reported on line {line}; found {found}"
        assert found[line] & codes, f"{pattern.source}: line {line} got {found[line]}, want one of {codes}"
    extra = {line: codes for line, codes in found.items() if line not in pattern.expected}
    assert not extra, f"{pattern.source}: findings on lines with no problem: {extra}"


@pytest.mark.parametrize("pattern", NO_PROBLEM, ids=lambda c: c.name)
def test_config_with_no_problem_gets_no_error_or_warning(pattern: Case, tmp_path: Path, uwsgi_bin: Path) -> None:
    found = errors_and_warnings(tmp_path, pattern.text, uwsgi_bin)
    assert not found, f"{pattern.source}: {found}"
