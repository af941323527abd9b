"""Every option name of uWSGI 2.0 (core and plugins), from ``data/uwsgi_options.tsv``: the list the option rules
judge names against, since a binary's own ``--help`` lacks the options of features it was built without (PCRE,
SSL, plugins). The file says how it was generated (benchmarks/uwsgi_option_table.py, from uWSGI's option tables).
"""

from __future__ import annotations

from importlib import resources

__all__ = ["ALIASES", "FLAGS", "NUMERIC", "OPTIONS", "SIXTEEN_BIT", "SOURCES", "feature", "lacks"]

# handlers that parse the value with atoi/strtoul (core/uwsgi.c uwsgi_opt_set_int/_64bit/_16bit/_megabytes)
# (the loop engines' shortcuts `gevent`, `asyncio`, `tornado`, `coroae`, `goroutines` call uwsgi_opt_set_int)
_NUMERIC_HANDLERS = frozenset(
    {"uwsgi_opt_set_int", "uwsgi_opt_set_64bit", "uwsgi_opt_set_16bit", "uwsgi_opt_set_megabytes",
     "uwsgi_opt_set_rawint", "uwsgi_opt_setup_gevent", "uwsgi_opt_setup_asyncio", "uwsgi_opt_setup_tornado",
     "uwsgi_opt_setup_coroae", "uwsgi_opt_setup_goroutines"}
)
# handlers that set one variable: two names with the same handler and variable are one setting
_SCALAR_HANDLERS = frozenset({"uwsgi_opt_set_int", "uwsgi_opt_set_64bit", "uwsgi_opt_set_16bit",
                              "uwsgi_opt_set_megabytes", "uwsgi_opt_set_str"})
_FEATURE_NAMES = {"pcre": "PCRE", "routing": "routing (PCRE)", "ssl": "SSL", "xml": "XML", "yaml": "YAML",
                  "json": "JSON", "zlib": "zlib", "libcap": "libcap"}


def _load() -> list[list[str]]:
    text = resources.files("pytest_emperor.check").joinpath("data/uwsgi_options.tsv").read_text()
    return [line.split("\t") for line in text.splitlines() if line and not line.startswith("#")]


_ROWS = _load()
#: option name -> where it comes from: ``core``, ``core:<feature>``, ``plugin:<name>``
SOURCES: dict[str, str] = {row[0]: row[1] for row in _ROWS}
OPTIONS = frozenset(SOURCES)
NUMERIC = frozenset(row[0] for row in _ROWS if row[2] in _NUMERIC_HANDLERS)
#: 16-bit numbers: core/uwsgi.c uwsgi_opt_set_16bit clamps anything above 65535
SIXTEEN_BIT = frozenset(row[0] for row in _ROWS if row[2] == "uwsgi_opt_set_16bit")
#: on/off options (core/uwsgi.c uwsgi_opt_true: off only for false, off, no and 0)
FLAGS = frozenset(row[0] for row in _ROWS if row[2] == "uwsgi_opt_true")
#: option name -> the variable it sets, for the options that share one with another name (`processes`/`workers`)
ALIASES: dict[str, str] = {}
_by_variable: dict[tuple[str, str], list[str]] = {}
for _row in _ROWS:
    if _row[2] in _SCALAR_HANDLERS and _row[3].startswith("&"):
        _by_variable.setdefault((_row[2], _row[3]), []).append(_row[0])
for (_, _variable), _names in _by_variable.items():
    if len(_names) > 1:
        ALIASES.update(dict.fromkeys(_names, _variable))


def lacks(name: str) -> str:
    """What a build needs for option ``name``: "PCRE", "SSL", "the `http` plugin"; "" for a core option."""
    where, _, what = SOURCES.get(name, "").partition(":")
    if where == "plugin":
        return f"the `{what}` plugin"
    return _FEATURE_NAMES.get(what, what)


def feature(name: str) -> str:
    """The build feature or plugin option ``name`` needs, as production's facts name it (``pcre``, ``ssl``,
    ``http``); "" for a core option. Routing is compiled in with PCRE in uWSGI 2.0."""
    what = SOURCES.get(name, "").partition(":")[2]
    return "pcre" if what == "routing" else what
