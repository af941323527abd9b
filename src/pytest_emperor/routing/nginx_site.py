"""A team's own nginx site file (``--emperor-nginx-site``), run as written behind the test's listeners.

Production routes ``<app>.api.<domain>`` to ``/tmp/<app>.api.sock`` with a server block in a site file that its
nginx.conf includes inside ``http {}``. :func:`load_site` parses that file with nginx-crossplane (nginx's own
grammar, not regexes), finds the routing (the regex ``server_name`` with a named group ``app`` and the
``uwsgi_pass`` beside it) as a :class:`~.routes.RouteMap`, and :func:`render_site` rebuilds the server blocks with
only what cannot run in a test rewritten:

- ``listen``: replaced by the run's loopback TCP and unix listeners (``default_server`` is kept where written);
- ``access_log`` / ``error_log`` / ``*_temp_path``: into the run dir;
- ``include uwsgi_params``: the copy shipped with pytest-emperor (a wheel-installed nginx has no /etc/nginx);
  other relative includes are taken from the site file's directory.

A server that listens both with and without TLS (``listen 80; listen 443 ssl;``) runs its plain-HTTP side, as
production serves it on port 80: its ``ssl_*`` directives, which only its TLS listeners use, are dropped. A server
that listens only with TLS is refused with a clear message: serving it over plain HTTP would test another config
than production's (``$https``, ``$scheme``).
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_emperor.errors import SiteError
from pytest_emperor.routing.routes import RouteMap

__all__ = ["NginxSite", "SiteError", "load_site", "render_site"]

Directive = dict[str, Any]  # crossplane's parsed form: {"directive", "line", "args", "block"?}

_APP_GROUP = re.compile(r"\(\?P?<app>")
#: Directives of the main or events context: the file is a whole nginx.conf, not a site.
_MAIN_ONLY = {"http", "events", "worker_processes", "pid", "user", "daemon", "master_process", "stream", "mail"}
_TLS_LISTEN = {"ssl", "quic", "http3"}
_GUARD_MARK = " pytest-emperor: the route table goes here"


@dataclass(frozen=True)
class NginxSite:
    """A parsed site file: its top-level directives (``server`` blocks, maps, upstreams) and its routing."""

    path: Path
    directives: list[Directive]
    route_map: RouteMap
    #: The index in ``directives`` of the server block that routes (where the route table is applied).
    route_server: int


def load_site(path: str | os.PathLike[str], host_template: str = "") -> NginxSite:
    """Parse ``path`` and find its routing; :class:`SiteError` (file, line, fix) when it cannot be run.

    ``host_template`` (``$app.api.mycompany.com``) is needed only when the ``server_name`` regex is too complex to
    derive a Host from.
    """
    import crossplane  # the parser is needed only for a site file

    path = Path(path).resolve()
    if not path.is_file():
        raise SiteError(
            f"nginx site file {path} does not exist (--emperor-nginx-site / nginx-site in [tool.emperor-dev])"
        )
    payload = crossplane.parse(str(path), single=True, check_ctx=False, check_args=False, comments=False)
    if payload["errors"]:
        error = payload["errors"][0]
        raise SiteError(f"{path}:{error.get('line') or '?'}: not valid nginx syntax: {error['error']}")
    directives: list[Directive] = payload["config"][0]["parsed"]
    for directive in directives:
        if directive["directive"] in _MAIN_ONLY:
            raise SiteError(
                f"{path}:{directive['line']}: `{directive['directive']}` belongs to nginx.conf; give the site file "
                "that nginx.conf includes inside http {} (the file holding the server blocks)"
            )
    servers = [d for d in directives if d["directive"] == "server" and "block" in d]
    if not servers:
        raise SiteError(f"{path}: no server block; give the file that holds the routing `server {{ ... }}` block")
    for server in servers:
        _refuse_tls(path, server)
    route_map, server = _route_map(path, servers, host_template)
    return NginxSite(path, directives, route_map, directives.index(server))


def render_site(
    site: NginxSite, *, listen_tcp: str, listen_unix: str, uwsgi_params: Path, run_dir: Path, guard: str = ""
) -> str:
    """The site's directives as nginx text for the run's ``http {}``: listeners, logs, temp paths and includes
    rewritten (module docstring), everything else as written, and ``guard`` (nginx text: the route table's
    directives) first in the routing server block. ``listen_tcp`` is ``127.0.0.1:PORT``."""
    import crossplane

    rewritten: list[Directive] = []
    first_server = True
    for index, directive in enumerate(site.directives):
        directive = copy.deepcopy(directive)
        if directive["directive"] == "server" and "block" in directive:
            directive["block"] = _rewrite_server(
                directive["block"], listen_tcp, listen_unix, reuseport=first_server
            )
            first_server = False
            if index == site.route_server and guard:
                directive["block"].insert(0, {"directive": "#", "line": 0, "args": [], "comment": _GUARD_MARK})
        rewritten.append(directive)
    for directive in _walk(rewritten):
        name, args = directive["directive"], directive["args"]
        if name == "include" and args:
            if Path(args[0]).name == "uwsgi_params":
                directive["args"] = [str(uwsgi_params)]
            elif not os.path.isabs(args[0]):
                directive["args"] = [str(site.path.parent / args[0])]
        elif name == "access_log" and args and args[0] != "off":
            # The format named beside the path is defined in production's nginx.conf, which is not run here.
            directive["args"] = [str(run_dir / "access.log")]
        elif name == "error_log":
            directive["args"] = [str(run_dir / "error.log"), *args[1:]]
        elif name.endswith("_temp_path") and args:
            directive["args"] = [str(run_dir / "tmp" / name[: -len("_temp_path")]), *args[1:]]
    text: str = crossplane.build(rewritten)
    # crossplane has no directive for raw text: the guard replaces a comment line placed for it.
    lines = text.splitlines(keepends=True)
    for number, line in enumerate(lines):
        if line.strip() == "#" + _GUARD_MARK:
            indent = line[: len(line) - len(line.lstrip())]
            lines[number] = "".join(f"{indent}{guard_line}\n" for guard_line in guard.splitlines())
    return "".join(lines)


def _rewrite_server(block: list[Directive], tcp: str, unix: str, *, reuseport: bool) -> list[Directive]:
    """``listen`` directives replaced by the run's two, where the first one was written; ``ssl_*`` dropped (only
    the TLS listeners, which are not run, use them: :func:`_refuse_tls` made sure a plain one exists)."""
    block = [d for d in block if not d["directive"].startswith("ssl_")]
    listens = [d for d in block if d["directive"] == "listen"]
    flags = ["default_server"] if any("default_server" in d["args"] for d in listens) else []
    # reuseport may be set once per address (nginx: "duplicate listen options"), so on the first server only.
    ours = [
        {"directive": "listen", "line": 0, "args": [tcp, *flags, *(["reuseport"] if reuseport else [])]},
        {"directive": "listen", "line": 0, "args": [unix, *flags]},
    ]
    at = block.index(listens[0]) if listens else 0
    rest = [d for d in block if d["directive"] != "listen"]
    return rest[:at] + ours + rest[at:]


def _refuse_tls(path: Path, server: Directive) -> None:
    """SiteError for a server that listens only with TLS (one without ``listen`` serves plain HTTP on 80)."""
    listens = [d for d in server["block"] if d["directive"] == "listen"]
    tls = [d for d in listens if _TLS_LISTEN & set(d["args"])]
    if tls and len(tls) == len(listens):
        raise SiteError(
            f"{path}:{tls[0]['line']}: `listen {' '.join(tls[0]['args'])}`: this server serves only TLS, which "
            "pytest-emperor does not run (the test router listens on plain HTTP on loopback). Keep the routing "
            "(server_name, locations) in a server block that also listens without TLS (e.g. `listen 80;` as "
            "production's port-80 block does), or point --emperor-nginx-site at a file holding such a block"
        )


def _route_map(path: Path, servers: Sequence[Directive], host_template: str) -> tuple[RouteMap, Directive]:
    """The first server with a regex ``server_name`` capturing ``app`` and a ``uwsgi_pass``: the routing, and that
    server."""
    for server in servers:
        names = [d for d in server["block"] if d["directive"] == "server_name"]
        regexes = [arg for d in names for arg in d["args"] if arg.startswith("~") and _APP_GROUP.search(arg)]
        passes = _uwsgi_passes(server["block"])
        if not regexes or not passes:
            continue
        uwsgi_pass = passes[0]
        try:
            return RouteMap(regexes[0], uwsgi_pass["args"][0], host_template), server
        except ValueError as exc:
            hint = " (give the Host with --emperor-host-template)" if "host template" in str(exc) else ""
            raise SiteError(f"{path}:{uwsgi_pass['line']}: cannot route by this server block: {exc}{hint}") from None
    raise SiteError(
        f"{path}: no server block has both a regex server_name with a named group app "
        "(server_name ~^(?<app>[^.]+)\\.api\\.mycompany\\.com$;) and a uwsgi_pass: pytest-emperor cannot tell "
        "which Host reaches which vassal"
    )


def _uwsgi_passes(block: list[Directive]) -> list[Directive]:
    """``uwsgi_pass`` directives of a server, ``location /``'s first (where a request for ``/`` goes)."""

    def rank(directive: Directive, location: str) -> tuple[int, int]:
        return (0 if location == "/" else 1, directive["line"])

    found: list[tuple[tuple[int, int], Directive]] = []

    def visit(block: list[Directive], location: str) -> None:
        for directive in block:
            if directive["directive"] == "uwsgi_pass" and directive["args"]:
                found.append((rank(directive, location), directive))
            elif "block" in directive:
                inner = " ".join(directive["args"]) if directive["directive"] == "location" else location
                visit(directive["block"], inner)

    visit(block, "")
    return [directive for _, directive in sorted(found, key=lambda pair: pair[0])]


def _walk(block: list[Directive]) -> Iterator[Directive]:
    for directive in block:
        yield directive
        if "block" in directive:
            yield from _walk(directive["block"])
