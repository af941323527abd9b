"""Create the example apps' own virtualenvs (never committed): service1/venv-bottle, service2/venv-flask.

Run it with the Python that your uwsgi binary embeds (the one of the virtualenv you installed pytest-emperor
into): a vassal's ``home =`` virtualenv must be built for that same Python, or the vassal dies at start with
``No module named 'encodings'``. Safe to run again: a virtualenv that already imports its package is kept.

    .venv/bin/python example_apps/make_venvs.py
"""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

HERE = Path(__file__).resolve().parent
VENVS = {HERE / "service1" / "venv-bottle": "bottle", HERE / "service2" / "venv-flask": "flask"}


def ensure(path: Path, package: str) -> None:
    """Create ``path`` as a virtualenv of this Python holding ``package``, unless it already has it."""
    python = path / "bin" / "python"
    same_python_with_package = f"import sys, {package}; assert sys.version_info[:2] == {sys.version_info[:2]}"
    check = subprocess.run([python, "-c", same_python_with_package], capture_output=True) if python.exists() else None
    if check is not None and check.returncode == 0:
        return
    venv.EnvBuilder(with_pip=True, clear=True).create(path)
    subprocess.run([python, "-m", "pip", "install", "--quiet", package], check=True)


def main() -> None:
    for path, package in VENVS.items():
        ensure(path, package)
        print(f"{path.relative_to(HERE.parent)}: ok ({package}, Python {sys.version.split()[0]})")


if __name__ == "__main__":
    main()
