"""What the actual ``uwsgi`` binary knows: its option names (``uwsgi --help``) and its embedded Python.

Builds differ (plugins compiled in, PCRE routing or not), so unknown-option checks must ask the binary that
will run the app, not a list copied from the docs. Both answers are cached per binary path + mtime + size, in
memory and in ``$XDG_CACHE_HOME/pytest-emperor/`` (a rebuilt binary gets a new mtime, hence a new entry).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from pytest_emperor.engine.binary import uwsgi_version

__all__ = ["BinaryFacts", "binary_facts", "parse_help"]

# `    -s|--socket      bind to ...` / `    --strict    enable strict mode ...` (core/uwsgi.c uwsgi_help)
_HELP_LINE = re.compile(r"^\s+(?:-\S\|)?--([A-Za-z0-9][A-Za-z0-9_.-]*)\s")


@dataclass(frozen=True)
class BinaryFacts:
    """The option names a binary accepts, its version (``%V``) and the Python it embeds ("" if none)."""

    options: frozenset[str]
    python_version: str
    version: str = ""

    @property
    def python_embedded(self) -> bool:
        """True when the python plugin is compiled in (a monolithic build such as ``pip install uwsgi``)."""
        return "wsgi-file" in self.options


def parse_help(text: str) -> frozenset[str]:
    """The long option names listed by ``uwsgi --help``."""
    return frozenset(m.group(1) for m in map(_HELP_LINE.match, text.splitlines()) if m)


def _cache_file(binary: Path, st: os.stat_result) -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pytest-emperor"
    key = hashlib.sha256(f"{binary.resolve()}\0{st.st_mtime_ns}\0{st.st_size}".encode()).hexdigest()[:24]
    return base / f"uwsgi-binary-{key}.json"


# the mtime and size are only the cache key: a rebuilt binary is asked again
@functools.lru_cache(maxsize=8)
def _facts(binary: str, _mtime_ns: int, _size: int) -> BinaryFacts:
    path = Path(binary)
    cache = _cache_file(path, os.stat(path))
    try:
        data = json.loads(cache.read_text())
        return BinaryFacts(frozenset(data["options"]), str(data["python_version"]), str(data["version"]))
    except (OSError, ValueError, KeyError, TypeError):
        pass
    run = functools.partial(subprocess.run, capture_output=True, text=True, timeout=60, check=False)
    options = parse_help(run([binary, "--help"]).stdout)
    python = ""
    if "python-version" in options:
        out = run([binary, "--python-version"]).stdout.strip().splitlines()
        python = out[-1].strip() if out else ""
    facts = BinaryFacts(options, python, uwsgi_version(path))
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".{os.getpid()}.tmp")
        data = {"options": sorted(options), "python_version": python, "version": facts.version}
        tmp.write_text(json.dumps(data))
        tmp.replace(cache)  # atomic: parallel checkers never read half a file
    except OSError:
        pass  # a read-only home only costs the next run one `uwsgi --help`
    return facts


def binary_facts(binary: Path) -> BinaryFacts:
    """The facts for ``binary``, from cache when the binary has not changed."""
    st = os.stat(binary)
    return _facts(str(binary), st.st_mtime_ns, st.st_size)
