"""httpx transports over the same two paths as :mod:`pytest_emperor._protocol.client`'s requests adapters.

Imported only when a test asks for ``vassal.httpx`` (httpx is an optional dependency): a uwsgi-protocol
transport sharing the requests adapter's codec and exchange, HTTP to a fixed address (httpx's own ``uds=``
transport for a unix socket), and a transport that sends the run's domain to the router and the rest to the
network.
"""

from __future__ import annotations

from collections.abc import Callable

import httpx
import requests

from pytest_emperor._protocol.client import Address, ListenerCheck, UpstreamError, uwsgi_exchange, uwsgi_packet

__all__ = ["AddressTransport", "RoutingTransport", "UwsgiTransport", "direct_client", "routed_client"]


class UwsgiTransport(httpx.BaseTransport):
    """Each request over the uwsgi protocol to ``address``, with the vars nginx's ``uwsgi_params`` sends."""

    def __init__(self, address: Address, check: ListenerCheck | None = None) -> None:
        self.address = address
        self.check = check

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` and read the whole response (uWSGI ends it by closing the connection)."""
        timeouts = request.extensions.get("timeout", {})
        headers = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in request.headers.raw]
        try:
            packet = uwsgi_packet(request.method, str(request.url), headers, request.read())
        except ValueError as exc:
            raise httpx.UnsupportedProtocol(str(exc), request=request) from exc
        try:
            raw = uwsgi_exchange(
                self.address, packet, request.method,
                connect_timeout=timeouts.get("connect"), read_timeout=timeouts.get("read"), check=self.check,
            )
            try:
                body = raw.read()
            finally:
                raw.close()
        except UpstreamError as exc:
            raise httpx.ConnectError(str(exc), request=request) from exc
        except (requests.ReadTimeout, TimeoutError) as exc:
            raise httpx.ReadTimeout(str(exc), request=request) from exc
        return httpx.Response(
            raw.status,
            headers=raw.getheaders(),
            stream=httpx.ByteStream(body),  # still content-encoded: httpx decodes it like any response
            extensions={"reason_phrase": raw.reason.encode("latin-1"), "http_version": b"HTTP/1.1"},
        )


class AddressTransport(httpx.BaseTransport):
    """HTTP to the fixed ``address`` whatever the URL's host, which stays the Host header. ``reuse=False``: one
    connection per request, for uWSGI's http-socket, which closes each one unannounced (see client.py)."""

    def __init__(self, address: Address, *, reuse: bool = True) -> None:
        self.address = address
        limits = httpx.Limits() if reuse else httpx.Limits(max_keepalive_connections=0)
        uds = address if isinstance(address, str) else None
        self._transport = httpx.HTTPTransport(uds=uds, limits=limits)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` to ``address``."""
        if not isinstance(self.address, str):
            # httpx set the Host header from the URL when the request was built; only the connection moves.
            url = request.url.copy_with(host=self.address[0], port=self.address[1])
            request = httpx.Request(
                request.method, url, headers=request.headers, stream=request.stream, extensions=request.extensions
            )
        return self._transport.handle_request(request)

    def close(self) -> None:
        """Close pooled connections."""
        self._transport.close()


class RoutingTransport(httpx.BaseTransport):
    """Hosts ``routes`` accepts to ``routed``, the others to the network."""

    def __init__(self, routes: Callable[[str], bool], routed: httpx.BaseTransport) -> None:
        self._routes = routes
        self._routed = routed
        self._network = httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` where its host goes."""
        transport = self._routed if self._routes(request.url.host) else self._network
        return transport.handle_request(request)

    def close(self) -> None:
        """Close both transports."""
        self._routed.close()
        self._network.close()


def direct_client(
    address: Address, protocol: str, base_url: str, timeout: float, check: ListenerCheck | None = None
) -> httpx.Client:
    """An ``httpx.Client`` sending every request to a vassal's socket (``protocol`` ``"uwsgi"`` or ``"http"``);
    ``check`` vets the listener of a uwsgi socket (httpx opens an HTTP one itself, unchecked)."""
    transport = UwsgiTransport(address, check) if protocol == "uwsgi" else AddressTransport(address, reuse=False)
    return httpx.Client(base_url=base_url, transport=transport, timeout=timeout)


def routed_client(address: Address, routes: Callable[[str], bool], base_url: str, timeout: float) -> httpx.Client:
    """An ``httpx.Client`` sending the hosts ``routes`` accepts to the router at ``address``, others to the
    network."""
    transport = RoutingTransport(routes, AddressTransport(address))
    return httpx.Client(base_url=base_url, transport=transport, timeout=timeout)
