"""The pytest session's machinery: its settings (the command line, pytest's ini, the project's profile), its
emperor and router (started on first use) and the apps deployed once for it; ``plugin/__init__.py`` holds only
the options, fixtures and hooks, and imports this module's machinery lazily (nothing heavy at import time)."""

from __future__ import annotations

import signal
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import pytest

from pytest_emperor.convention import APP_INI
from pytest_emperor.errors import ConfigError, EmperorError, UnsafePath

if TYPE_CHECKING:
    from pytest_emperor.dev.attach import AttachedEmperor
    from pytest_emperor.engine.emperor import Emperor
    from pytest_emperor.engine.privileges import User
    from pytest_emperor.engine.vassal import Vassal
    from pytest_emperor.project_config import Settings as ProjectSettings
    from pytest_emperor.routing.router import Router
    from pytest_emperor.routing.routes import RouteMap
    from pytest_emperor.testing.coverage import VassalCoverage


#: The shared settings (project_config.KEYS) pytest has a command-line option for: key -> option dest.
OPTIONS = {
    "apps": "emperor_app", "domain": "emperor_domain", "nginx": "emperor_nginx", "nginx-site": "emperor_nginx_site",
    "uwsgi": "emperor_uwsgi", "timeout": "emperor_timeout", "emperor-args": "emperor_args",
}
#: The ini keys of shared settings, deprecated in favour of the profile: key -> ini name.
DEPRECATED_INI = {
    "apps": "emperor_apps", "uwsgi": "emperor_uwsgi", "timeout": "emperor_timeout", "domain": "emperor_domain",
    "nginx": "emperor_nginx", "nginx-site": "emperor_nginx_site",
}


def shared_settings(config: pytest.Config) -> ProjectSettings:
    """The settings pytest shares with ``up`` and ``check`` (project_config.resolve): the command line, then the
    deprecated ini keys (each a DeprecationWarning naming the profile key), then the profile found from the
    rootdir upwards, then the defaults."""
    from pytest_emperor.dev.apps import split_app_arg
    from pytest_emperor.project_config import Setting, emperor_args_of, find_profile, resolve

    # Command-line paths are the caller's (relative to where pytest was started), ini paths the ini file's.
    here = config.invocation_params.dir
    command_line: dict[str, Setting] = {}
    for key, dest in OPTIONS.items():
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
    for key, name in DEPRECATED_INI.items():
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
class PytestSettings:
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
    drop_user: User | None = None  # who that is: a revision's checkout is given to its group
    drop: str | None = None  # who that is and which setting said so, for the report header

    @classmethod
    def from_config(cls, config: pytest.Config) -> PytestSettings:
        from pytest_emperor.engine.privileges import drop_of, nginx_worker_of
        from pytest_emperor.routing.routes import RouteMap

        def pick(option: str, ini: str) -> Any:
            value = config.getoption(option)
            return config.getini(ini) if value is None else value

        shared = shared_settings(config)
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
            drop_user=user,
            drop=f"{user.name} (emperor-args from {shared.source('emperor-args')})" if user is not None else None,
        )


@dataclass
class Session:
    """The session's emperor (started on first use), the router in front of it (started on first use of a
    vassal's ``url``, ``http`` or ``httpx``) and the app vassals deployed once for it."""

    settings: PytestSettings
    rootpath: Path
    emperor: Emperor | None = None
    router: Router | None = None
    apps: dict[Path, Vassal] = field(default_factory=dict)
    failed: dict[Path, EmperorError] = field(default_factory=dict)
    kept: list[Path] = field(default_factory=list)
    warned: set[tuple[Path, int, int]] = field(default_factory=set)  # ini files whose ignored options were told
    cov_config: pytest.Config | None = None  # set when pytest-cov measures: the vassals are measured too
    current_test: Path | None = None  # the file of the test being set up (base_url's app is that test's)
    attached: AttachedEmperor | None = None  # --emperor-attach: the running `up`'s emperor, instead of our own
    coverage: tuple[VassalCoverage, Path] | None = None  # their coverage dir, and pytest-cov's data file

    @property
    def running(self) -> Emperor | None:
        """The emperor the tests use, once started (or attached to)."""
        # The attached one answers what the hooks and fixtures ask of an Emperor (deploy, run_dir, timeout,
        # vassals, last_seq): dev/attach.py.
        return cast("Emperor", self.attached) if self.attached is not None else self.emperor

    def get_emperor(self) -> Emperor:
        if self.attached is not None:
            return cast("Emperor", self.attached)
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
                if self.attached is not None:  # the app up runs, never deployed again
                    self.apps[key] = cast("Vassal", self.attached.app(app))
                else:
                    vassal = self.deploy(app, None, exact=self.settings.exact_names)
                    self.apps[key] = ready(vassal, self.get_emperor().uwsgi, None, remove=True)
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
        if self.attached is not None:
            self.attached.stop()  # what this session deployed; up's own apps are left running
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


def ready(vassal: Vassal, uwsgi: Path, timeout: float | None, *, remove: bool) -> Vassal:
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
