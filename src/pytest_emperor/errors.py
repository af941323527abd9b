"""Every error pytest-emperor raises on purpose, one family under :class:`EmperorError`.

One subclass per kind of failure; each message names the file, path or vassal and says how to fix it. Where a
caller of the standard library would already catch a built-in class (``ValueError`` for bad bytes or text,
``AssertionError`` for a failed assertion), the error is that class too.
:class:`~pytest_emperor._protocol.client.UpstreamError` is also a ``requests.ConnectionError`` and lives
with the client, so that this module imports nothing heavy.

The functions that raise them on a user's behalf set ``__tracebackhide__``: pytest then shows the error at the
user's own line, not deep in this package (docs/architecture.md, "Errors in the user's frame").
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Sequence
from typing import Any


class EmperorError(Exception):
    """Base class of every error this project raises on purpose."""


class UwsgiNotFound(EmperorError):
    """No usable ``uwsgi`` binary (missing, not executable, or the ``pyuwsgi`` wheel's Python shim)."""


class ConfigError(EmperorError):
    """Bad input: a missing app, a dangling symlink, an unroutable name, a socket path over the AF_UNIX limit."""


class SocketInUse(EmperorError):
    """A vassal would bind a unix socket that another live process is serving (it is never unlinked), or take a
    name or socket another run holds (a vassal deployed under production's name, ``exact=True``)."""


class UnsafePath(EmperorError, PermissionError):
    """A directory or file the run would trust (runs root, state dir, lock, record) that another local user could
    have planted or could replace: a symlink, not the caller's, or writable by others. Nothing is done through it."""


class VassalError(EmperorError):
    """A vassal did not reach the state a caller waited for; ``lines`` holds its own log lines."""

    def __init__(self, message: str, lines: Sequence[str] = ()) -> None:
        self.reason = message  # the message without the log lines
        self.lines = list(lines)
        if self.lines:
            message += "\n--- vassal log ---\n" + "\n".join(self.lines)
        super().__init__(message)


class VassalCursed(VassalError):
    """The emperor cursed the vassal (it died during start-up or was killed)."""


class VassalTimeout(VassalError):
    """A wait on a vassal ran out of time."""


class IsolationError(EmperorError, AssertionError):
    """A healthy vassal noticed what happened to the others."""


class RouterError(EmperorError, RuntimeError):
    """A router could not be configured, started or stopped."""


class RouteMismatch(RouterError):
    """The routing sends a vassal's Host to a socket the vassal does not bind: every request would get a 502."""


class NginxNotFound(RouterError):
    """No usable nginx binary: the message names the ways to get one."""


class SiteError(RouterError):
    """The site file cannot be run: names the file, the line and the fix."""


class ControlProtocolError(EmperorError, ValueError):
    """A line on ``emperor-dev``'s control socket that is not one JSON object."""


class ConfigFileError(ConfigError, ValueError):
    """An emperor-dev settings table (``emperor-dev.toml``, ``[tool.emperor-dev]``) is malformed: unknown key,
    wrong type, invalid TOML; the message names the file and the key."""


class RevisionError(ConfigError):
    """A revision that cannot be deployed: the path is not in a git repository, the revision does not exist there,
    or the app is not in it at that revision; the message names the path and the revision."""


class SetupError(RevisionError):
    """A revision's ``setup`` command failed in its checkout; the message carries the command's output."""


class AnswersDiffer(EmperorError, AssertionError):
    """Two copies of an app answered the same requests differently; ``differences`` holds each difference."""

    def __init__(self, message: str, differences: Sequence[Any] = ()) -> None:
        self.differences = list(differences)
        super().__init__(message)


class InputError(EmperorError):
    """A path that is neither an app dir, a dir of app dirs, nor a readable ini file (``check`` exit code 2)."""


@functools.cache
def _uwsgi_protocol_error() -> type[EmperorError]:
    """The deprecated UwsgiProtocolError, made on first access only: nothing raises it any more."""

    class UwsgiProtocolError(EmperorError, ValueError):
        """Deprecated: malformed uwsgi request bytes or a malformed HTTP response head from the app."""

    UwsgiProtocolError.__module__ = __name__
    return UwsgiProtocolError


def __getattr__(name: str) -> Any:
    if name == "UwsgiProtocolError":
        warnings.warn(
            "pytest_emperor.errors.UwsgiProtocolError is deprecated: nothing raises it any more",
            DeprecationWarning,
            stacklevel=2,
        )
        return _uwsgi_protocol_error()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
