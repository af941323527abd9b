"""A deploy that fails says why, in the test: check's static findings on the app's ini lead the error, and an
option uWSGI would ignore (a typo) is a warning of the run, with check's did-you-mean."""

from __future__ import annotations

import re
import signal
import textwrap
from pathlib import Path

import pytest
from conftest import EXAMPLES
from dev_helpers import Up, cli, copy_example, names_for_test, up_process, workspace
from dev_helpers import assert_nothing_left as assert_up_left_nothing
from plugin_helpers import Sandbox, assert_nothing_left

__all__ = ["up_process", "workspace"]  # fixtures of dev_helpers.py

# A Flask shop as a new user writes it: `module = app`, so uWSGI looks for `application` and finds only `app`.
FLASK_INI = """\
[uwsgi]
app_root = @(exec://dirname $(realpath %P))
chdir = %(app_root)
home = {venv}
socket = {sockets}/%n.api.sock
module = app
master = true
vacuum = true
need-app = true
proceses = 2
"""

FLASK_APP = """\
from flask import Flask

app = Flask(__name__)


@app.get("/")
def index():
    return "shop\\n"
"""


@pytest.mark.usefixtures("uwsgi_bin", "example_venvs")
def test_a_flask_app_without_its_callable_fails_saying_callable_app(
    pytester: pytest.Pytester, box: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    shop = pytester.path / "shop"
    shop.mkdir()
    monkeypatch.chdir(shop)  # runpytest_subprocess runs in the current directory
    (shop / "app.uwsgi.ini").write_text(
        FLASK_INI.format(venv=EXAMPLES / "service2" / "venv-flask", sockets=box.sockets)
    )
    (shop / "app.py").write_text(FLASK_APP)
    (shop / "pytest.ini").write_text("[pytest]\n")
    (shop / "test_shop.py").write_text(textwrap.dedent("""
        def test_index(app_vassal):
            assert app_vassal.request("GET", "/").text == "shop\\n"

        def test_deployed_by_the_test(deploy_app):
            deploy_app(".", "shop-copy")
    """))
    result = pytester.runpytest_subprocess("--emperor", "-p", "no:cacheprovider", timeout=90)
    result.assert_outcomes(failed=1, errors=1)
    out = result.stdout.str()
    for test in ("test_index", "test_deployed_by_the_test"):
        report = re.split(rf"_+ (?:ERROR at setup of )?{test} _+", out)[1]
        # the finding leads, at its file and line, then uWSGI's own verdict and log
        error = report[report.index("VassalCursed: "):]
        assert re.match(
            r"VassalCursed: app.uwsgi.ini:6: E508 .*`app.py` defines no `application` at module level; it defines "
            r"`app`: `callable = app`\n.*fix: .*\n"
            r".*vassal shop\S* \(.*\) was cursed by the emperor while starting \(pid \d+\); "
            r"the finding above is `emperor-dev check --static app.uwsgi.ini`'s\n",
            error,
        ), error
        # uWSGI's own line, in the vassal log, cannot tell which of the two it was
        assert "(callable not found or import error)" in error
        assert "E201" not in error.split("was cursed")[0]  # the typo is not why it failed: told apart
    # the typo: a warning of the run at its line, with check's did-you-mean, told once for the ini file
    assert re.search(r"app.uwsgi.ini:10: PytestWarning: pytest-emperor: .*`proceses`: uWSGI silently ignores it; "
                     r"did you mean `processes`\?", out), out
    assert out.count("did you mean `processes`") == 1
    assert_nothing_left(box)


def test_up_warns_of_a_typo_and_says_why_an_app_failed(workspace: Path, up_process: list[Up]) -> None:
    good, broken = names_for_test()
    app = copy_example(workspace, "service3", "service3")
    ini = app / "app.uwsgi.ini"
    ini.write_text(ini.read_text() + "proceses = 2\n")
    typo_line = len(ini.read_text().splitlines())
    copy_example(workspace, "broken-config", "broken-config")
    up = Up(workspace, f"{good}=service3", f"{broken}=broken-config")
    up_process.append(up)
    up.started()
    up.expect(rf"^warning: {good}: service3/app.uwsgi.ini:{typo_line}: .*`proceses`: .*did you mean `processes`\?$")
    after = up.expect(rf"^{broken} failed to start; emperor-dev check finds:$")
    assert re.match(r"broken-config/app.uwsgi.ini:5: E501 .*does-not-exist", up.lines[after]), up.lines[after:]
    # added later from another terminal: `emperor-dev add` says the same, its error led by the finding
    added = cli(workspace, "add", "broken-config", "--name", f"{broken}-again")
    assert added.returncode == 1
    assert re.match(r"emperor-dev: broken-config/app.uwsgi.ini:5: E501 .*does-not-exist.*\n    fix: ", added.stderr), (
        added.stderr
    )
    assert f"vassal {broken}-again " in added.stderr and "was cursed by the emperor" in added.stderr
    up.stopped(signal.SIGINT)
    assert_up_left_nothing(up, [good, broken, f"{broken}-again"])
