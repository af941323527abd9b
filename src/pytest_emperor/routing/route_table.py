"""Which apps the router routes, and what a Host that routes nowhere gets: the one place both are decided.

nginx running as root would otherwise be a confused deputy: its ``uwsgi_pass unix:/tmp/$app.api.sock`` connects
to whatever any local user put at that path for any Host (a socket of theirs, or a symlink to a root-only socket),
and passes the request on, cookies included. So the router's server block first asks this table, one file test
per request on a directory private to the run (docs/security.md):

- ``ready/<app>`` exists: the app is deployed and the socket at its routed path was verified as the one its
  vassal bound (engine/route_guard.py decides, at each of its "ready" events); the request goes to the socket;
- ``down/<app>`` exists: deployed but not serving (starting, cursed, stopping, or bound elsewhere): a 502 page
  says so, without connecting to the path, which may now hold anything;
- neither: a 404 page naming the Host and listing the apps that are deployed (``no-such-app.html``, with the Host
  and port put in by nginx's SSI, HTML-escaped).

A router may also serve a page of its own (``emperor-dev up``'s, dev/page.py: :meth:`RouteTable.serve_on` with a
directory) to the Hosts that name this machine rather than an app (``localhost``, ``127.0.0.1``, ``[::1]``): only
those, so a web page whose own name a DNS rebinding points at the router still gets the 404 page, not that page.

An update is a file created or removed (and, when an app comes or goes, the page rewritten): no nginx reload, so
a deploy pays well under a millisecond for it and the next request sees the change (benchmarks/route_table.py).
"""

from __future__ import annotations

import contextlib
import enum
import html
import os
import secrets
import threading
import weakref
from pathlib import Path

from pytest_emperor.routing.routes import RouteMap

__all__ = ["NOT_ROUTED_STATUS", "RouteState", "RouteTable"]

#: The private statuses the server block returns for a Host that routes nowhere (404) and for an app that is
#: deployed but not serving (502); their ``error_page`` turns them into those statuses and pages. Private codes,
#: so that a site's own 404s and 502s keep their own pages.
NOT_ROUTED_STATUS = 471
NOT_SERVING_STATUS = 472
PAGE = "no-such-app.html"
PAGE_URI = "/.pytest-emperor/not-routed"
#: The entry of ``ready/`` that lets the page's own request through (no app name starts with a dot).
PAGE_KEY = ".page"
#: Where a router's own page (``serve_on(port, own_page=...)``) is served from, internally.
OWN_PAGE_URI = "/.pytest-emperor/up/"
#: The Hosts that get the router's own page: this machine's names, as nginx's ``$host`` spells them (lowercase,
#: without the port). Never a name from outside: see the module's docstring.
OWN_PAGE_HOSTS = r"^(localhost|127\.0\.0\.1|\[::1\])$"
#: The own page's Content-Security-Policy: its own files only, no inline script, no framing by another site.
_OWN_PAGE_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


class RouteState(enum.Enum):
    """An app's entry in the table."""

    READY = "ready"  # its verified socket gets its requests
    DOWN = "down"  # deployed, not serving: 502 without connecting


_tables: weakref.WeakValueDictionary[Path, RouteTable] = weakref.WeakValueDictionary()
_tables_lock = threading.Lock()


class RouteTable:
    """The apps a run's router routes, as files under ``directory`` that nginx tests per request."""

    def __init__(self, directory: Path, route_map: RouteMap) -> None:
        self.directory = directory
        self.route_map = route_map
        self.port: int | None = None  # the router's TCP port, for the page's links (see serve_on)
        self.own_page: Path | None = None  # the directory of the router's own page, if it serves one
        self._lock = threading.Lock()
        # No parents: a table is never made for a run dir that is gone (an event read after the run closed).
        directory.mkdir(mode=0o700, exist_ok=True)
        for state in RouteState:
            (directory / state.value).mkdir(mode=0o700, exist_ok=True)
        (directory / RouteState.READY.value / PAGE_KEY).touch()
        if not (directory / PAGE).exists():
            self._write_page()

    @classmethod
    def of_run(cls, run_dir: Path, route_map: RouteMap) -> RouteTable:
        """The table of the run in ``run_dir`` (one object per run, shared by its emperor and its router)."""
        directory = run_dir / "routes"
        with _tables_lock:
            table = _tables.get(directory)
            if table is None:
                table = _tables[directory] = cls(directory, route_map)
            return table

    def serve_on(self, port: int, own_page: Path | None = None) -> None:
        """The router listens on ``port``: the page's links name it. With ``own_page`` (a directory), the Hosts
        of this machine get the files in it (``index.html`` for ``/``), and the 404 page links to it."""
        with self._lock:
            self.port = port
            self.own_page = own_page
            self._write_page()

    def set(self, name: str, state: RouteState | None) -> None:
        """Route ``name`` as ``state`` (None: not at all)."""
        if not name or "/" in name or name.startswith(".") or "\0" in name:
            raise ValueError(f"{name!r} is not an app name the router can route")
        with self._lock:
            before = self.states()
            if before.get(name) is state:
                return
            # The new entry is made before the old one goes: a deployed app changing state is never absent from
            # the table, which would answer its requests with the "no such app" page meanwhile. While both are
            # there, nginx's config tests DOWN first: the app is not served until it is READY alone.
            if state is not None:
                # O_EXCL|O_NOFOLLOW: the directory is the run's, but a file is never created through a link.
                with contextlib.suppress(FileExistsError):
                    os.close(os.open(self.directory / state.value / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL
                                     | os.O_NOFOLLOW, 0o600))
            for other in RouteState:
                if other is not state:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(self.directory / other.value / name)
            if (name in before) != (state is not None):  # the page lists names: a state change leaves it be
                self._write_page()

    def states(self) -> dict[str, RouteState]:
        """Every app in the table and its state, by name."""
        found: dict[str, RouteState] = {}
        for state in RouteState:
            with contextlib.suppress(FileNotFoundError):
                found.update(
                    (name, state) for name in os.listdir(self.directory / state.value) if not name.startswith(".")
                )
        return dict(sorted(found.items()))

    def server_directives(self) -> str:
        """The nginx directives, for the routing server block, that apply the table (before any location)."""
        # The page is an internal redirect (error_page to a URI: nginx turns a POST into a GET only for those),
        # which runs these directives again: the page's own URI is let through, to its internal location.
        return f"""\
# Route only the run's own apps (pytest-emperor's route table, docs/security.md).
set $pytest_emperor_route $app;
if ($uri = {PAGE_URI}) {{
    set $pytest_emperor_route {PAGE_KEY};
}}
{self._own_page_directives()}if (-f "{self.directory}/{RouteState.DOWN.value}/$pytest_emperor_route") {{
    return {NOT_SERVING_STATUS};
}}
if (!-f "{self.directory}/{RouteState.READY.value}/$pytest_emperor_route") {{
    return {NOT_ROUTED_STATUS};
}}
error_page {NOT_ROUTED_STATUS} =404 {PAGE_URI};
error_page {NOT_SERVING_STATUS} =502 {PAGE_URI};
location = {PAGE_URI} {{
    internal;
    default_type text/html;
    ssi on;
    alias "{self.directory}/{PAGE}";
}}
"""

    def _own_page_directives(self) -> str:
        """The directives that serve the router's own page to this machine's Hosts, if it serves one."""
        if self.own_page is None:
            return ""
        # How nginx reads these (docs/uwsgi-behaviour.md, "Serving up's page"): `rewrite ... last` at the server
        # level skips the tests below and picks the page's internal location; "/" is rewritten to the file itself,
        # as the index module's internal redirect would run these directives again; the types are listed, as the
        # config includes no mime.types; ETags are second-granular, and the JSON changes several times a second.
        # The page reads only files of its own directory; its headers forbid every other source (no inline
        # script, nothing from elsewhere), so a name or log line that slipped past its escaping still cannot run,
        # and no other site may frame it.
        return f"""\
if ($host ~ "{OWN_PAGE_HOSTS}") {{
    rewrite ^/$ {OWN_PAGE_URI}index.html last;
    rewrite ^(.*)$ {OWN_PAGE_URI.rstrip("/")}$1 last;
}}
location ^~ {OWN_PAGE_URI} {{
    internal;
    alias "{self.own_page}/";
    types {{
        text/html html;
        text/css css;
        text/javascript js;
        application/json json;
    }}
    etag off;
    if_modified_since off;
    add_header Cache-Control "no-store" always;
    add_header X-Content-Type-Options "nosniff" always;
    add_header Referrer-Policy "no-referrer" always;
    add_header Content-Security-Policy "{_OWN_PAGE_POLICY}" always;
}}
"""

    def _write_page(self) -> None:
        """Rewrite the page of a Host that routes nowhere, atomically (nginx may be serving it): the page is a
        symlink swapped to a new file. Renaming a new regular file over the old one cost 2-4 ms on the emperor's
        reader thread for each app deployed (ext4's ``auto_da_alloc``; docs/uwsgi-behaviour.md)."""
        page = self.directory / PAGE
        fresh = f"page-{secrets.token_hex(6)}.html"
        with open(self.directory / fresh, "x") as f:
            f.write(render_page(self.route_map, list(self.states()), self.port, own_page=self.own_page is not None))
        try:
            old = os.readlink(page)
        except OSError:  # the first page
            old = None
        link = self.directory / f".{fresh}.link"
        os.symlink(fresh, link)
        os.replace(link, page)
        if old is not None and "/" not in old:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.directory / old)


def render_page(route_map: RouteMap, names: list[str], port: int | None, *, own_page: bool = False) -> str:
    """The page for a request the router does not route, listing the apps deployed (``names``) with links to
    the router's ``port`` (and, with ``own_page``, to the router's own page, which shows their states); nginx's SSI
    fills in the Host (as HTML entities) and says whether the Host's app is deployed but not serving."""
    rows = "".join(
        f'<li><a href="http://{html.escape(route_map.host_for(name))}{f":{port}" if port else ""}/">'
        f"{html.escape(name)}</a></li>\r\n"
        for name in names
    )
    listing = f"<p>Apps deployed here:</p>\r\n<ul>\r\n{rows}</ul>" if rows else "<p>No app is deployed here.</p>"
    if own_page:
        home = f"http://localhost{f':{port}' if port else ''}/"
        listing += f'\r\n<p>Their states and errors: <a href="{home}">{home}</a></p>'
    return (
        '<!--# if expr="$status = 502" --><!--# set var="title" value="502 Bad Gateway" -->'
        '<!--# else --><!--# set var="title" value="404 Not Found" --><!--# endif -->'
        '<html>\r\n<head><title><!--# echo var="title" --></title></head>\r\n<body>\r\n'
        '<center><h1><!--# echo var="title" --></h1></center>\r\n'
        '<!--# if expr="$status = 502" -->'
        "<p>app '<!--# echo var=\"app\" -->' is deployed but not serving on its socket (starting, failed or "
        "stopping: see `emperor-dev status` or its log); the router does not connect to its socket meanwhile.</p>"
        "<!--# else -->"
        '<p>no such app: Host \'<!--# echo var="host" -->\' routes to no app of this run.</p>'
        "<!--# endif -->\r\n"
        f"{listing}\r\n"
        '<hr><center>nginx/<!--# echo var="nginx_version" --></center>\r\n</body>\r\n</html>\r\n'
    )
