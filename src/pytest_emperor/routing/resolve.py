"""The names a run routes resolve to the router's loopback address in this process, before any DNS is asked.

glibc's resolver (``hosts: files dns``) sends ``app.api.localhost`` to the network's DNS server and fails (RFC 6761
6.3 says resolvers should answer ``*.localhost`` with loopback; curl and browsers do, glibc does not:
docs/uwsgi-behaviour.md). A site file's ``shop.api.mycompany.com`` is production's name, which DNS sends to
production or nowhere. So under ``pytest --emperor``, :func:`install` wraps :func:`socket.getaddrinfo`, the call
every Python client connects through (requests/urllib3, httpx, http.client, asyncio), for the session: a name
:class:`RoutedNames` answers gets the router's loopback address, looked up numerically (``AI_NUMERICHOST``) so that
libc still applies the caller's family, type, proto, flags and port exactly as for any other name; every other name
goes to the system resolver untouched.

Only this process is changed: each pytest-xdist worker installs its own (the plugin runs in every worker), while a
subprocess (another Python, ``curl``) resolves on its own (curl answers ``*.localhost`` itself; for other names
:func:`open_hint` says how ``emperor-dev up`` users open these names).
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pytest_emperor.convention import ROUTER_HOST
from pytest_emperor.routing.nginx_site import NginxSite
from pytest_emperor.routing.routes import RouteMap

__all__ = ["LoopbackNames", "RoutedNames", "addresses_for", "install", "open_hint", "site_names"]

_LOCALHOST = "localhost"


def _normalise(host: object) -> str | None:
    """``host`` as getaddrinfo may receive it (str, bytes, None), lowercased without a trailing dot; None when it
    is no name (None, empty, not ASCII, or an IP literal, which libc answers without DNS anyway)."""
    if isinstance(host, (bytes, bytearray)):
        try:
            host = bytes(host).decode("ascii")
        except UnicodeDecodeError:
            return None
    if not isinstance(host, str):
        return None
    name = host.rstrip(".").lower()
    if not name or not name.isascii():
        return None
    try:
        ipaddress.ip_address(name.split("%", 1)[0])  # "fe80::1%eth0" is an address too
    except ValueError:
        return name
    return None


def _under(name: str, domain: str) -> bool:
    """``name`` is ``domain`` or below it; a ``*.domain`` (nginx's wildcard name) only below it."""
    if domain.startswith("*."):
        return name.endswith(domain[1:])
    return name == domain or name.endswith("." + domain)


def site_names(site: NginxSite) -> tuple[frozenset[str], tuple[str, ...]]:
    """The names a site file's server blocks serve besides its routing regex: exact ``server_name`` values, and
    nginx's wildcard forms (``*.x``: below x; ``.x``: x and below). Other regexes, ``_``, ``""`` and
    ``www.x.*`` name nothing this process can list."""
    exact: set[str] = set()
    domains: list[str] = []
    for server in (d for d in site.directives if d["directive"] == "server" and "block" in d):
        for directive in (d for d in server["block"] if d["directive"] == "server_name"):
            for arg in (str(a).lower().rstrip(".") for a in directive["args"]):
                if arg.startswith("~") or arg in ("", "_") or "$" in arg or arg.endswith("*"):
                    continue
                if arg.startswith("."):
                    domains.append(arg[1:])
                elif arg.startswith("*."):
                    domains.append(arg)
                else:
                    exact.add(arg)
    return frozenset(exact), tuple(domains)


@dataclass(frozen=True)
class RoutedNames:
    """Which names a run answers itself: every ``*.localhost`` name (RFC 6761 6.3; ``localhost`` itself is left to
    /etc/hosts, which answers it without DNS and may give more than the router's address), every name
    under the route map's domain (the literal text after ``$app.`` in its host template: ``api.localhost``,
    ``api.mycompany.com``), every name its ``server_name`` regex matches (what the router routes) and, with a site
    file, the names its other server blocks serve (:func:`site_names`)."""

    domains: tuple[str, ...]
    route_map: RouteMap | None = None
    hosts: frozenset[str] = frozenset()

    @classmethod
    def of(cls, route_map: RouteMap | None, site: NginxSite | None = None) -> RoutedNames:
        """The names of a run routed by ``route_map`` and ``site`` (None, None: the ``*.localhost`` names only); a
        domain under ``localhost`` adds nothing to them."""
        domains = []
        template = route_map.host_template.lower() if route_map is not None else ""
        if template.startswith("$app.") and "$" not in template[5:]:
            domains.append(template[5:].rstrip("."))
        hosts, site_domains = site_names(site) if site is not None else (frozenset(), ())
        domains += site_domains
        kept = tuple(d for d in domains if d.strip("*.") and not _under(d.lstrip("*."), _LOCALHOST))
        return cls(kept, route_map, frozenset(h for h in hosts if not _under(h, _LOCALHOST)))

    def answers(self, host: object) -> bool:
        """Whether ``host`` (as given to getaddrinfo) is one of the run's names."""
        name = _normalise(host)
        if name is None:
            return False
        if name.endswith("." + _LOCALHOST) or name in self.hosts or any(_under(name, d) for d in self.domains):
            return True
        return self.route_map is not None and self.route_map.match(name) is not None


def addresses_for(listen_host: str) -> tuple[str, ...]:
    """The addresses a client on this machine reaches a router listening on ``listen_host`` at: that address when
    it is one, loopback for a wildcard (``0.0.0.0``: IPv4's; ``::``, which also accepts IPv4 on Linux: both)."""
    if listen_host in ("", "0.0.0.0"):
        return ("127.0.0.1",)
    if listen_host == "::":
        return ("::1", "127.0.0.1")
    return (listen_host.strip("[]"),)


def open_hint(route_map: RouteMap, port: int, listen_host: str = ROUTER_HOST) -> str | None:
    """How to open the router's URLs with curl and a browser on this machine, or None when its names are
    ``*.localhost`` (which both answer with loopback themselves). Production's names are kept, not aliased: the app
    must see the Host production sends (its ``ALLOWED_HOSTS``, the site's ``server_name``), so the client is told
    where the name is instead."""
    if route_map.host_for("app").endswith("." + _LOCALHOST):
        return None
    address = addresses_for(listen_host)[0]
    address = f"[{address}]" if ":" in address else address
    domains = RoutedNames.of(route_map).domains
    names = f"*.{domains[0]}" if domains else "*"
    return (
        f"these names are not *.localhost, so this machine's resolver asks DNS for them: open a URL with "
        f"`curl --resolve '*:{port}:{address}' URL`, or in Chromium started with "
        f"--host-resolver-rules='MAP {names} {address}'"
    )


class LoopbackNames:
    """A :func:`socket.getaddrinfo` that answers ``names`` with ``addresses`` (numerically, so the caller's family,
    type, proto, flags and port apply as libc applies them) and passes every other name to the one it replaced."""

    def __init__(self, names: RoutedNames, addresses: Sequence[str]) -> None:
        self.names = names
        self.addresses = tuple(addresses)
        self._original = socket.getaddrinfo
        self._installed = False
        self._lock = threading.Lock()

    def getaddrinfo(
        self, host: Any, port: Any, family: int = 0, type: int = 0, proto: int = 0, flags: int = 0
    ) -> list[Any]:
        """:func:`socket.getaddrinfo`'s signature and results."""
        if not (self._installed and self.names.answers(host)):
            return list(self._original(host, port, family, type, proto, flags))
        found: list[Any] = []
        refused: socket.gaierror | None = None
        for address in self.addresses:
            try:
                found += self._original(address, port, family, type, proto, flags | socket.AI_NUMERICHOST)
            except socket.gaierror as exc:  # the family asked for is not this address's
                refused = exc
        if not found and refused is not None:
            raise refused
        if found and flags & socket.AI_CANONNAME:  # the name asked for, as /etc/hosts would give it
            found[0] = (*found[0][:3], _normalise(host) or "", found[0][4])
        return found

    def install(self) -> LoopbackNames:
        """Put :meth:`getaddrinfo` in place of ``socket.getaddrinfo``."""
        with self._lock:
            if not self._installed:
                self._original = socket.getaddrinfo
                self._installed = True
                socket.getaddrinfo = self.getaddrinfo
        return self

    def uninstall(self) -> None:
        """Put the replaced function back, unless someone replaced ours since: theirs stays, and ours, still
        called by it, passes every name through from now on. Safe to call twice."""
        with self._lock:
            if self._installed:
                self._installed = False
                if socket.getaddrinfo == self.getaddrinfo:
                    socket.getaddrinfo = self._original

    def __enter__(self) -> LoopbackNames:
        return self.install()

    def __exit__(self, *exc: object) -> None:
        self.uninstall()


def install(
    route_map: RouteMap | None, site: NginxSite | None = None, *, listen_host: str = ROUTER_HOST
) -> LoopbackNames:
    """Answer the names of a run routed by ``route_map`` (and ``site``, when the router runs a site file) with the
    address of a router on ``listen_host`` in this process, until :meth:`LoopbackNames.uninstall`."""
    return LoopbackNames(RoutedNames.of(route_map, site), addresses_for(listen_host)).install()
