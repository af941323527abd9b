"""The deployment convention, set in one place: an app dir holds ``app.uwsgi.ini``; nginx routes
``<app>.<domain>`` to the unix socket ``<socket dir>/<app>.api.sock``, which the app's ini binds with
``socket = /tmp/%n.api.sock``; requests bodies up to 1 MiB pass (nginx's ``client_max_body_size`` default);
waits last 30 s unless told otherwise.

The plugin's option help, ``emperor-dev up``'s and ``check``'s defaults, :meth:`RouteMap.for_domain` and the
check rules all read these names; this module imports nothing, so the plugin can at load time.
"""

from __future__ import annotations

import os

#: The file an app dir keeps its uWSGI config in.
APP_INI = "app.uwsgi.ini"
#: Apps answer at ``<app>.<DEFAULT_DOMAIN>`` (``*.localhost`` resolves to loopback).
DEFAULT_DOMAIN = "api.localhost"
#: Where the apps' inis bind their sockets, and so where nginx looks for them.
DEFAULT_SOCKET_DIR = "/tmp"
#: An app's socket is ``<socket dir>/<app><SOCKET_SUFFIX>``.
SOCKET_SUFFIX = ".api.sock"
#: nginx's ``uwsgi_pass`` target for the default socket dir, ``$app`` being the app's name.
DEFAULT_SOCKET_TEMPLATE = f"{DEFAULT_SOCKET_DIR}/$app{SOCKET_SUFFIX}"
#: Where the router listens unless told otherwise: loopback, as nothing but this machine is meant to reach it.
ROUTER_HOST = "127.0.0.1"
#: ``client_max_body_size``: nginx's default, 1 MiB; a larger body gets a 413.
MAX_BODY_SIZE = 1024 * 1024
#: How long a wait lasts unless a caller says otherwise, in seconds: for the emperor, a vassal or the router to
#: start, stop or answer (``--emperor-timeout``, ``emperor-dev up/check --timeout``).
DEFAULT_TIMEOUT = 30.0


def routed_socket(name: str, socket_dir: str | os.PathLike[str] = DEFAULT_SOCKET_DIR) -> str:
    """The socket nginx sends app ``name``'s requests to: ``<socket_dir>/<name>.api.sock``."""
    return f"{os.fspath(socket_dir).rstrip('/')}/{name}{SOCKET_SUFFIX}"
