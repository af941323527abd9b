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

from pytest_emperor.routing.routes import RouteMap

__all__ = ["LoopbackNames", "RoutedNames", "addresses_for", "install", "open_hint"]

#: Where the router listens unless told otherwise (``NginxRouter.start``'s ``host``).
ROUTER_HOST = "127.0.0.1"
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
    return name == domain or name.endswith("." + domain)


@dataclass(frozen=True)
class RoutedNames:
    """Which names a run answers itself: every ``*.localhost`` name (RFC 6761 6.3; ``localhost`` itself is left to
    /etc/hosts, which answers it without DNS and may give more than the router's address), every name
    under the route map's domain (the literal text after ``$app.`` in its host template: ``api.localhost``,
    ``api.mycompany.com``) and every name its ``server_name`` regex matches (what the router routes)."""

    domains: tuple[str, ...]
    route_map: RouteMap | None = None

    @classmethod
    def of(cls, route_map: RouteMap | None) -> RoutedNames:
        """The names of a run routed by ``route_map`` (None: the ``*.localhost`` names only); a domain under
        ``localhost`` adds nothing to them."""
        domains = []
        template = route_map.host_template.lower() if route_map is not None else ""
        if template.startswith("$app.") and "$" not in template[5:]:
            domain = template[5:].rstrip(".")
            if domain and not _under(domain, _LOCALHOST):
                domains.append(domain)
        return cls(tuple(domains), route_map)

    def answers(self, host: object) -> bool:
        """Whether ``host`` (as given to getaddrinfo) is one of the run's names."""
        name = _normalise(host)
        if name is None:
            return False
        if name.endswith("." + _LOCALHOST) or any(_under(name, domain) for domain in self.domains):
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
        f"these names are production's, which DNS does not send to this machine: open a URL with "
        f"`curl --resolve '*:{port}:{address}' URL` (curl 7.64+), or in Chromium started with "
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


def install(route_map: RouteMap | None, listen_host: str = ROUTER_HOST) -> LoopbackNames:
    """Answer the names of a run routed by ``route_map`` with the loopback address of a router on ``listen_host``
    in this process, until :meth:`LoopbackNames.uninstall`."""
    return LoopbackNames(RoutedNames.of(route_map), addresses_for(listen_host)).install()
