"""Find the ``uwsgi`` binary to run, and refuse one that cannot run vassals.

Order: an explicit path (``--emperor-uwsgi``), then ``$EMPEROR_UWSGI``, then the ``uwsgi`` installed beside the
running Python (what ``pip install uwsgi`` puts in a virtualenv's ``bin/``), then ``$PATH``. The ``pyuwsgi`` wheel
also installs a ``uwsgi`` console script, but it is a Python shim: an emperor started from it execs the Python
interpreter as the vassal binary and every vassal is cursed in a loop, so it is rejected with that reason.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from pytest_emperor.errors import UwsgiNotFound

INSTALL_HINT = (
    "install the uWSGI sdist (it compiles a real binary; needs gcc and the Python headers): "
    "`pip install uwsgi`, or point `uwsgi` in [tool.emperor-dev] (--emperor-uwsgi for pytest, --uwsgi for "
    "emperor-dev, or $EMPEROR_UWSGI) at a uwsgi binary"
)


def candidates(explicit: str | os.PathLike[str] | None = None) -> list[tuple[str, Path]]:
    """Where a uwsgi binary is looked for, in order, each with where the idea came from."""
    found: list[tuple[str, Path]] = []
    if explicit:
        found.append(("--emperor-uwsgi", Path(explicit)))
    env = os.environ.get("EMPEROR_UWSGI")
    if env:  # a bare name is looked up on $PATH, as a shell (and the profile's `uwsgi`) would
        found.append(("EMPEROR_UWSGI", Path(shutil.which(env) or env) if os.sep not in env else Path(env)))
    # Not resolved: a venv's python is a symlink to the base interpreter, and uwsgi lives in the venv's bin/.
    found.append(("beside the running Python", Path(sys.executable).parent / "uwsgi"))
    on_path = shutil.which("uwsgi")
    if on_path:
        found.append(("$PATH", Path(on_path)))
    return found


def _problem(path: Path) -> str | None:
    """Why ``path`` is not a usable uwsgi binary, or None if it is one."""
    if not path.exists():
        return "does not exist"
    if not os.access(path, os.X_OK) or path.is_dir():
        return "is not an executable file"
    with path.open("rb") as f:
        head = f.read(4)
    if head != b"\x7fELF":
        return (
            "is a script, not the compiled uWSGI (the pyuwsgi wheel's shim: an emperor started from it execs "
            "Python as the vassal binary and curses every vassal)"
        )
    return None


def find_uwsgi(explicit: str | os.PathLike[str] | None = None) -> Path:
    """Return the first usable uwsgi binary; raise UwsgiNotFound naming everything tried and how to install one.

    An explicit choice (option or environment variable) that is unusable is an error, not skipped over: the user
    asked for that binary.
    """
    tried: list[str] = []
    for origin, path in candidates(explicit):
        problem = _problem(path)
        if problem is None:
            return path.absolute()
        tried.append(f"  {path} ({origin}): {problem}")
        if origin in ("--emperor-uwsgi", "EMPEROR_UWSGI"):
            break
    raise UwsgiNotFound("no usable uwsgi binary:\n" + "\n".join(tried) + "\nFix: " + INSTALL_HINT)


def uwsgi_version(binary: Path) -> str:
    """The binary's version string (``uwsgi --version``); raises UwsgiNotFound if it does not run."""
    try:
        out = subprocess.run(
            [str(binary), "--version"], capture_output=True, text=True, timeout=30, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise UwsgiNotFound(f"{binary} does not run (`{binary} --version`: {exc}). Fix: {INSTALL_HINT}") from exc
    return out.strip()
