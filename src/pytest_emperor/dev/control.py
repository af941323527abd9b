"""How other terminals talk to the running ``up``: one JSON request and one JSON response per connection, each a
single line, on a unix socket only its user can open (like docker's or overmind's control sockets).

The codec is pure (``encode``/``decode``); :class:`ControlServer` serves it from a thread of ``up`` and
:func:`call` is the client. Requests are ``{"cmd": "status" | "add" | "wait" | "rm" | "reload" | "down", ...}``;
responses are ``{"ok": true, ...}`` or ``{"ok": false, "error": "..."}``.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import socket
import socketserver
import stat
import struct
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from pytest_emperor.dev.state import NotRunning
from pytest_emperor.errors import ControlProtocolError

Message = dict[str, Any]
Handler = Callable[[Message], Message]

# A request is a command and a path or a name; anything this long is not one of ours.
MAX_LINE = 64 * 1024


def encode(message: Message) -> bytes:
    """One message as one line (JSON never contains a raw newline: it escapes them)."""
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


def decode(line: bytes) -> Message:
    """Parse one line; ControlProtocolError unless it is a complete JSON object."""
    if not line.endswith(b"\n"):
        raise ControlProtocolError(f"incomplete line ({len(line)} bytes, no newline)")
    try:
        message = json.loads(line)
    except ValueError as exc:
        raise ControlProtocolError(f"not JSON: {exc}") from None
    if not isinstance(message, dict):
        raise ControlProtocolError(f"not a JSON object: {type(message).__name__}")
    return message


@dataclass(frozen=True)
class AppStatus:
    """One row of ``emperor-dev status``, as sent over the control socket and printed by ``--json``."""

    name: str
    url: str
    state: str  # a VassalState value, or "error" when it could not be deployed at all
    pid: int | None
    ini: str
    socket: str | None  # the main socket's address
    protocol: str | None  # "uwsgi" or "http"
    errors: list[str] = field(default_factory=list)  # why it is not ready, from its own log
    #: The router sends its Host to its socket: deployed, ready, and that socket verified as its own (a Host that
    #: is not routed gets the router's own 404/502 page, see routing/route_table.py).
    routed: bool = False

    def to_dict(self) -> Message:
        """As JSON-ready data."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Message) -> AppStatus:
        """From :meth:`to_dict`'s output."""
        return cls(**data)


POLL_INTERVAL = 0.02  # seconds; an idle server wakes this often, which costs nothing measurable


class _Server(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True  # a client that never sends its line must not hold up the shutdown of ``up``
    block_on_close = False

    def __init__(self, path: str, handler: Handler) -> None:
        self.handler = handler
        self.path = path
        super().__init__(path, _RequestHandler)

    def server_bind(self) -> None:
        super().server_bind()
        # Before listen(): whoever can connect can deploy (and so run) any code as this user.
        os.chmod(self.path, 0o600)


class _RequestHandler(socketserver.StreamRequestHandler):
    server: _Server

    def handle(self) -> None:
        line = self.rfile.readline(MAX_LINE)
        if not line:
            return  # a liveness probe (StateDir.running): connected, sent nothing, closed
        # The socket's mode (0600) already keeps other users out; the peer's credentials make sure of it even if
        # the file's mode was loosened (or the client is root).
        _, uid, _ = struct.unpack("3i", self.request.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
        if uid != os.getuid():
            response: Message = {"ok": False, "error": f"refused: uid {uid} is not this instance's user"}
        else:
            response = self._respond(line)
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the client gave up waiting
            self.wfile.write(encode(response))

    def _respond(self, line: bytes) -> Message:
        try:
            request = decode(line)
        except ControlProtocolError as exc:
            return {"ok": False, "error": f"bad request: {exc}"}
        return self.server.handler(request)


class ControlServer:
    """Serves ``handler`` on the unix socket ``path`` from a background thread until :meth:`stop`."""

    def __init__(self, path: str, handler: Handler) -> None:
        self.path = path
        self._server = _Server(path, handler)
        # socketserver notices shutdown() only at its next poll, by default every 0.5 s: half of up's 1 s stop.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": POLL_INTERVAL}, name="emperor-dev-control",
            daemon=True,
        )

    def start(self) -> ControlServer:
        """Start serving."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop accepting, close the socket and remove its file."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


def denied(path: str) -> str:
    """What to tell a user who may not open ``path`` (the control socket or the state file of an ``up``)."""
    try:
        st = os.stat(path)
    except OSError as exc:
        return f"permission denied on {path} ({exc.strerror})"
    try:
        owner = f"{pwd.getpwuid(st.st_uid).pw_name} (uid {st.st_uid})"
    except KeyError:
        owner = f"uid {st.st_uid}"
    return (
        f"permission denied on {path} (owner {owner}, mode {stat.filemode(st.st_mode)}): that `up` belongs to "
        f"another user; run this command as {owner}, or start your own `up` with another --state-dir"
    )


def call(path: str, request: Message, timeout: float | None = 120.0) -> Message:
    """Send one request to the control socket at ``path`` and return the response; NotRunning if nobody listens.

    ``timeout`` bounds the whole exchange: ``add`` and ``reload`` answer once the app is ready (or failed).
    PermissionError (saying whose it is) if this user may not open it.
    """
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(path)
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise NotRunning(f"no emperor-dev instance answers on {path} ({exc.strerror})") from None
        except PermissionError:
            raise PermissionError(denied(path)) from None
        sock.sendall(encode(request))
        with sock.makefile("rb") as reader:
            line = reader.readline(MAX_LINE)
    if not line:
        raise NotRunning(f"the emperor-dev instance on {path} closed the connection without answering (stopping?)")
    return decode(line)
