"""A vassal's clients: ``requests`` sessions and ``httpx`` clients straight to its socket or through the router a
front door runs before the emperor, each answer counted so that the vassal's log can await its line."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

from pytest_emperor.engine.deploy_plan import DeployPlan
from pytest_emperor.errors import ConfigError, RouteMismatch
from pytest_emperor.routing.routes import RouteMap

if TYPE_CHECKING:
    import requests
    from httpx import Client as HttpxClient

    from pytest_emperor._protocol.client import EmperorSession


class Front(Protocol):
    """What a vassal needs of the router a front door runs before its emperor (``routing.router.Router`` is one)."""

    @property
    def tcp_address(self) -> tuple[str, int]:
        """The router's loopback TCP address."""

    def url_for(self, app: str, path: str = "/") -> str:
        """The URL a browser opens for ``app``."""


class VassalClients:
    """The clients handed out for the vassal ``name`` deployed by ``plan``, closed together."""

    def __init__(
        self,
        name: str,
        plan: DeployPlan,
        route_map: RouteMap,
        timeout: float,
        *,
        front: Callable[[], Front],
        check: Callable[[int, int], str | None],
        answered: Callable[[str, str], None],
    ) -> None:
        self._name = name
        self._ini = plan.ini
        self._socket = plan.sockets[0] if plan.sockets else None
        self._socket_paths = [s.address for s in plan.sockets if s.is_unix]
        self._route_map = route_map
        self._host = route_map.host_for(name)
        self._timeout = timeout
        self._front_door = front
        self._check = check  # the listener of the vassal's socket must be the run's (engine/route_guard.py)
        self._answered = answered
        self._http: EmperorSession | None = None
        self._session: EmperorSession | None = None
        self._httpx: dict[bool, HttpxClient] = {}

    @property
    def url(self) -> str:
        """The vassal's URL through the router, for a browser or curl (starts the router if needed)."""
        return self._front().url_for(self._name)

    def _front(self) -> Front:
        """The router in front, once it is known to reach this vassal: RouteMismatch before any request when
        every request through it would get a 502."""
        __tracebackhide__ = True
        problem = self._route_map.mismatch(self._name, self._socket_paths)
        if problem is not None:
            raise RouteMismatch(f"{problem}: every request through the router would get a 502")
        return self._front_door()

    @property
    def session(self) -> requests.Session:
        """A ``requests.Session`` straight to the vassal's socket (uwsgi protocol for ``socket =``, HTTP for
        ``http-socket =``), sending what nginx would: relative URLs (``session.get("/x")``) get this vassal's
        Host; an absolute URL's host becomes the Host header, and it goes to this socket all the same."""
        if self._session is None:
            from pytest_emperor._protocol.client import direct_session  # requests: 0.1 s that `up` need not wait

            if self._socket is None:
                raise ConfigError(f"{self._ini} declares no socket, http-socket or uwsgi-socket to send requests to")
            self._session = direct_session(
                self._socket.connect_address(), self._socket.protocol, f"http://{self._host}/", self._timeout,
                self._check,
            )
            self._session.hooks["response"].append(self._count_answer)
        return self._session

    @property
    def http(self) -> requests.Session:
        """A ``requests.Session`` through the router, as production traffic arrives (starts the router if
        needed): relative URLs are taken from ``url``, and any ``http://`` URL of the run's domain
        (``vassal.url + "x"``, another vassal's ``url``) goes to the router's loopback port with its Host. TCP,
        not the router's unix listener: the app then sees what production traffic gives it (REMOTE_ADDR an IP,
        SERVER_PORT a port), and what a browser opening ``url`` gives it."""
        if self._http is None:
            from pytest_emperor._protocol.client import routed_session

            self._http = routed_session(self._front().tcp_address, self._routed, self.url, self._timeout)
            self._http.hooks["response"].append(self._count_answer)
        return self._http

    def httpx(self, *, direct: bool) -> HttpxClient:
        """An ``httpx.Client`` straight to the socket (``direct``) or through the router."""
        if direct not in self._httpx:
            try:
                from pytest_emperor._protocol import httpx_transport  # httpx is optional
            except ModuleNotFoundError as exc:
                if exc.name != "httpx":
                    raise
                raise ModuleNotFoundError(
                    f"vassal.{'httpx_direct' if direct else 'httpx'} needs httpx, which is not installed: "
                    "pip install 'pytest-emperor[httpx]' (or use vassal.session / vassal.http, requests Sessions)",
                    name="httpx",
                ) from None

            if direct:
                if self._socket is None:
                    raise ConfigError(f"{self._ini} declares no socket, http-socket or uwsgi-socket")
                client = httpx_transport.direct_client(
                    self._socket.connect_address(), self._socket.protocol, f"http://{self._host}/", self._timeout,
                    self._check,
                )
            else:
                client = httpx_transport.routed_client(
                    self._front().tcp_address, self._routed, self.url, self._timeout
                )
            client.event_hooks["response"].append(self._count_answer)
            self._httpx[direct] = client
        return self._httpx[direct]

    def _routed(self, host: str) -> bool:
        # The router serves every host its server_name matches (the run's domain), not only this vassal's.
        return self._route_map.match(host) is not None

    def _count_answer(self, response: Any, *args: Any, **kwargs: Any) -> None:
        # VassalLog.sync() waits for the log line of each response the vassal itself gave (not the router's 502/504).
        # A requests.Response or an httpx.Response: both have .request.method; the URI is what was sent as
        # REQUEST_URI, which nginx passes on unchanged ($request_uri) and the uwsgi adapters send as is.
        if urlsplit(str(response.url)).hostname != self._host or response.status_code in (502, 504):
            return
        request = response.request
        uri = request.path_url if hasattr(request, "path_url") else request.url.raw_path.decode("ascii")
        self._answered(request.method, uri)

    def close(self) -> None:
        """Close the sessions and clients handed out (their pooled connections)."""
        for client in (self._session, self._http, *self._httpx.values()):
            if client is not None:
                client.close()
        self._session = self._http = None
        self._httpx.clear()
