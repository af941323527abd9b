"""The one route map: Host -> app -> vassal socket, from an nginx ``server_name`` regex with a named group
``app`` and a socket template using ``$app`` (production's ``unix:/tmp/$app.api.sock``). Pure: used by the nginx
config and ``request``/``url``. ``emperor-dev check`` knows only the default layout (its ``--socket-dir``), so its
rules call ``convention.routed_socket``, which :meth:`RouteMap.for_domain` builds its template from."""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass

from pytest_emperor.convention import DEFAULT_DOMAIN, DEFAULT_SOCKET_DIR, routed_socket

__all__ = ["RouteMap"]

#: nginx's ``(?<name>...)`` (PCRE) spelled the Python way, ``(?P<name>...)``. nginx also accepts ``(?P<name>``.
_NGINX_NAMED_GROUP = re.compile(r"\(\?<([A-Za-z_][A-Za-z0-9_]*)>")
_TEMPLATE_VAR = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")


@dataclass(frozen=True)
class RouteMap:
    """Host -> socket, as an nginx server block with a regex ``server_name`` and ``uwsgi_pass unix:<template>``.

    ``server_name`` is nginx syntax: a leading ``~`` (optional here), PCRE's ``(?<app>...)`` or Python's
    ``(?P<app>...)``. ``socket_template`` may reference any named group as ``$name`` or ``${name}`` and may start
    with nginx's ``unix:``. ``host_template`` (``$app.api.localhost``) builds a Host for an app; it is derived from
    simple regexes and must be given for others.
    """

    server_name: str
    socket_template: str
    host_template: str = ""

    def __post_init__(self) -> None:
        regex = self.regex  # validates
        if "app" not in regex.groupindex:
            raise ValueError(f"server_name {self.server_name!r} has no named group 'app'")
        for name in self._template_names():
            if name not in regex.groupindex:
                raise ValueError(f"socket template uses ${name}, which server_name does not capture")
        if not self.host_template:
            object.__setattr__(self, "host_template", self._derive_host_template())
        probe = self.host_template.replace("$app", "probe")
        if self.match(probe) != "probe":
            raise ValueError(f"host template {self.host_template!r} does not match server_name {self.server_name!r}")

    @classmethod
    def for_domain(
        cls, domain: str = DEFAULT_DOMAIN, socket_dir: str | os.PathLike[str] = DEFAULT_SOCKET_DIR
    ) -> RouteMap:
        """``<app>.<domain>`` -> ``<socket_dir>/<app>.api.sock``, the production layout (the vassal ini binds
        ``/tmp/%n.api.sock``)."""
        domain = domain.strip(".").lower()
        return cls(
            server_name=rf"~^(?<app>[^.]+)\.{re.escape(domain)}$",
            socket_template=routed_socket("$app", socket_dir),
            host_template=f"$app.{domain}",
        )

    @functools.cached_property
    def pattern(self) -> str:
        """The regex in Python syntax (no ``~``, ``(?P<name>``)."""
        return _NGINX_NAMED_GROUP.sub(
            r"(?P<\1>", self.server_name[1:] if self.server_name[:1] == "~" else self.server_name
        )

    @property
    def nginx_server_name(self) -> str:
        """The regex as an nginx ``server_name`` value (``~`` prefix, PCRE named groups)."""
        return "~" + self.pattern.replace("(?P<", "(?<")

    @functools.cached_property
    def regex(self) -> re.Pattern[str]:
        """The compiled Python regex."""
        try:
            return re.compile(self.pattern)
        except re.error as exc:
            raise ValueError(f"server_name {self.server_name!r} is not a valid regex: {exc}") from exc

    @property
    def socket_path_template(self) -> str:
        """The template without nginx's ``unix:`` prefix, with leading slashes collapsed as the kernel reads them
        (a site's ``unix://tmp/$app.sock`` is ``/tmp/$app.sock``)."""
        path = self.socket_template[5:] if self.socket_template.startswith("unix:") else self.socket_template
        return "/" + path.lstrip("/") if path.startswith("/") else path

    def match(self, host: str) -> str | None:
        """The app name for a (validated, lowercased, port-less) host, or None when the regex does not match."""
        found = self.regex.search(host)
        return found.group("app") if found else None

    def socket_for_host(self, host: str) -> tuple[str, str] | None:
        """``(app, socket path)`` for a host, or None. The host must already be validated (no ``/``, ``..``)."""
        found = self.regex.search(host)
        if found is None:
            return None
        groups = {k: v or "" for k, v in found.groupdict().items()}
        path = _TEMPLATE_VAR.sub(lambda m: groups[m.group(1) or m.group(2)], self.socket_path_template)
        return groups["app"], path

    def socket_for(self, app: str) -> str:
        """The socket path the router uses for ``app``."""
        route = self.socket_for_host(self.host_for(app))
        if route is None:  # __post_init__ checked the template against the regex
            raise ValueError(f"app name {app!r} cannot be routed by {self.server_name!r}")
        return route[1]

    def host_for(self, app: str) -> str:
        """The Host that routes to ``app``."""
        return self.host_template.replace("$app", app)

    def mismatch(self, app: str, bound: Sequence[str]) -> str | None:
        """Why requests for ``app`` cannot reach it, given the unix sockets it binds (``bound``), or None when
        the routing sends its Host to one of them."""
        host = self.host_for(app)
        route = self.socket_for_host(host)
        routed = route[1] if route is not None and route[0] == app else None
        if routed is not None and os.path.normpath(routed) in {os.path.normpath(path) for path in bound}:
            return None
        would = f"sends Host {host} to unix:{routed}" if routed else f"does not route Host {host} to it"
        binds = f"it binds unix:{', unix:'.join(bound)}" if bound else "it binds no unix socket"
        return f"vassal {app!r}: the routing ({self.nginx_server_name}) {would}, but {binds}"

    def _template_names(self) -> list[str]:
        return [m.group(1) or m.group(2) for m in _TEMPLATE_VAR.finditer(self.socket_path_template)]

    def _derive_host_template(self) -> str:
        """``^(?P<app>...)\\.api\\.x\\.com$`` -> ``$app.api.x.com``: the app group plus literal (escaped) text."""
        found = re.fullmatch(r"\^?(.*?)\(\?P<app>(?:[^()]|\([^()]*\))*\)(.*?)\$?", self.pattern)
        if found is None:
            raise ValueError(f"cannot derive a host template from {self.server_name!r}: give host_template")
        parts = []
        for literal in found.groups():
            if re.search(r"(?<!\\)[\[\](){}*+?|^$]", literal):
                raise ValueError(f"cannot derive a host template from {self.server_name!r}: give host_template")
            parts.append(re.sub(r"\\(.)", r"\1", literal))
        return f"{parts[0]}$app{parts[1]}"
