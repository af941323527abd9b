"""The ini room: a pure reader of uWSGI's ini files, exactly as uWSGI 2.0 reads them (docs/architecture.md).

It imports nothing else of the package and does no I/O but through a :class:`ConfigSource` its caller gives it
(the engine's deploy plan). :func:`read_config` (or :func:`parse_ini`, other files not followed) yields an
:class:`IniFile`, the options as written; :meth:`IniFile.resolve` runs uWSGI's ``$``/``@``/``%`` passes into a
:class:`Resolution`. Both answer the same queries (:class:`OptionQueries`): ``last`` (the value uWSGI applies),
``first`` (what ``%(key)`` sees), ``option`` (the applied occurrence, with its file and line), ``all``, ``lines``.
"""

from pytest_emperor.ini.magic import MagicVars, djb33x_hex
from pytest_emperor.ini.options import (
    IMMEDIATE_OPTIONS,
    SOCKET_OPTIONS,
    IniOption,
    IniProblem,
    OptionQueries,
    Resolution,
    ResolvedOption,
)
from pytest_emperor.ini.passes import AtResolver
from pytest_emperor.ini.reader import IniFile, parse_ini, read_config
from pytest_emperor.ini.source import ConfigSource

__all__ = [
    "IMMEDIATE_OPTIONS",
    "SOCKET_OPTIONS",
    "AtResolver",
    "ConfigSource",
    "IniFile",
    "IniOption",
    "IniProblem",
    "MagicVars",
    "OptionQueries",
    "Resolution",
    "ResolvedOption",
    "djb33x_hex",
    "parse_ini",
    "read_config",
]
