"""Exceptions raised by pytest-emperor: each message names the file, path or vassal and says how to fix it."""

from __future__ import annotations

from collections.abc import Sequence


class EmperorError(Exception):
    """Base class of every error this project raises on purpose."""


class UwsgiNotFound(EmperorError):
    """No usable ``uwsgi`` binary (missing, not executable, or the ``pyuwsgi`` wheel's Python shim)."""


class ConfigError(EmperorError):
    """Bad input: a missing app, a dangling symlink, an unroutable name, a socket path over the AF_UNIX limit."""


class SocketInUse(EmperorError):
    """A vassal would bind a unix socket that another live process is serving; it is never unlinked."""


class VassalError(EmperorError):
    """A vassal did not reach the state a caller waited for; ``lines`` holds its own log lines."""

    def __init__(self, message: str, lines: Sequence[str] = ()) -> None:
        self.lines = list(lines)
        if self.lines:
            message += "\n--- vassal log ---\n" + "\n".join(self.lines)
        super().__init__(message)


class VassalCursed(VassalError):
    """The emperor cursed the vassal (it died during start-up or was killed)."""


class VassalTimeout(VassalError):
    """A wait on a vassal ran out of time."""
