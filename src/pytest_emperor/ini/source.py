"""What reading other files and testing logic blocks asks of the machine: the reader's only way out of pure code."""

from __future__ import annotations

from typing import Protocol

from pytest_emperor.ini.magic import MagicVars

__all__ = ["ConfigSource"]


class ConfigSource(Protocol):
    """What reading other files and testing logic blocks asks of the machine (the engine's deploy plan answers).

    Paths are given as uWSGI gets them: relative ones are relative to the vassal's cwd.
    """

    def read(self, path: str) -> str:
        """The file's text; raises :class:`OSError` (uWSGI exits 1 then)."""

    def magic(self, path: str) -> MagicVars | None:
        """The lower-case magic letters for ``path`` (``first=False``); None when its realpath fails."""

    def real(self, path: str) -> str:
        """Where findings about ``path`` point (its real path)."""

    def getenv(self, name: str) -> str | None:
        """The vassal's environment variable ``name``."""

    def test(self, kind: str, path: str) -> bool:
        """``exists``, ``file`` or ``dir`` test of ``path``."""

    def glob(self, pattern: str) -> list[str]:
        """C ``glob(GLOB_MARK | GLOB_NOCHECK)``: matches (dirs with a ``/``), or the pattern itself."""

    def hostname(self) -> str:
        """This machine's host name (``if-hostname``)."""
